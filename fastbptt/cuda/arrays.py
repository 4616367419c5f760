"""Row, id and layout kernels of the CUDA backend: one-hot projection, gathers and (atomic)
scatters of rows, the capture of final states, fills, layout conversion and id checks.

They have no shared memory and no typed constants, so they are plain module-level kernels that
numba-cuda specialises lazily for the dtypes they meet (also the caller's integer arrays).
"""
from __future__ import annotations

import numpy as np
from numba import cuda, int64


@cuda.jit
def onehot_proj(U, ids, bias, out):
    """out[r, j] = U[j, ids[r]] + bias[j]: x Uᵀ + b for one-hot x, without the one-hot."""
    R, H = out.shape
    i = cuda.grid(1)
    if i < R * H:
        r = i // H
        j = i - r * H
        out[r, j] = U[j, ids[r]] + bias[j]


@cuda.jit
def gather_rows(src, idx, out):
    """out[r] = src[idx[r]]."""
    R, N = out.shape
    i = cuda.grid(1)
    if i < R * N:
        r = i // N
        out[r, i - r * N] = src[idx[r], i - r * N]


@cuda.jit
def scatter_rows(dst, idx, src):
    """dst[idx[r]] = src[r] for distinct idx."""
    R, N = src.shape
    i = cuda.grid(1)
    if i < R * N:
        r = i // N
        dst[idx[r], i - r * N] = src[r, i - r * N]


@cuda.jit
def scatter_add_rows(dst, idx, src):
    """dst[idx[r]] += src[r], atomically: repeated ids accumulate (dE)."""
    R, N = src.shape
    i = cuda.grid(1)
    if i < R * N:
        r = i // N
        cuda.atomic.add(dst, (idx[r], i - r * N), src[r, i - r * N])


@cuda.jit
def scatter_add_cols(dst, idx, src):
    """dst[:, idx[r]] += src[r], atomically (dU for one-hot ids, straight into [H, n_in])."""
    R, N = src.shape
    i = cuda.grid(1)
    if i < R * N:
        r = i // N
        cuda.atomic.add(dst, (i - r * N, idx[r]), src[r, i - r * N])


@cuda.jit
def capture(h_last, hs, steps, sel):
    """h_last[sel[s]] = hs[steps[s], sel[s], :S·H] for the sequences that end in this run.

    h_last [B, S·H], hs [n+1, B, K·H] state rows (only their first S·H columns are state)."""
    n_sel = sel.shape[0]
    H = h_last.shape[1]
    i = cuda.grid(1)
    if i < n_sel * H:
        s = i // H
        j = i - s * H
        h_last[sel[s], j] = hs[steps[s], sel[s], j]

@cuda.jit
def fill(a, v):
    """a[:] = v (1-D)."""
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] = v


@cuda.jit
def add_into(dst, src):
    """dst += src (1-D)."""
    i = cuda.grid(1)
    if i < dst.shape[0]:
        dst[i] += src[i]


@cuda.jit
def to_time_major2(src, dst, swap):
    """dst [T, B] = src (swap 0) or srcᵀ (swap 1, batch-first input); casts to dst's dtype.

    src may have any strides (a transposed or sliced device array)."""
    T, B = dst.shape
    i = cuda.grid(1)
    if i < T * B:
        t = i // B
        b = i - t * B
        dst[t, b] = src[b, t] if swap else src[t, b]


@cuda.jit
def to_time_major3(src, dst, swap):
    """dst [T, B, F] = src (swap 0) or src with the first two axes swapped (swap 1)."""
    T, B, F = dst.shape
    i = cuda.grid(1)
    if i < T * B * F:
        t = i // (B * F)
        rem = i - t * B * F
        b = rem // F
        f = rem - b * F
        dst[t, b, f] = src[b, t, f] if swap else src[t, b, f]


@cuda.jit
def id_range(ids, out):
    """out[0] = min, out[1] = max of the 2-D integer array ids (any strides), by atomics.

    out must hold (large, small) on entry."""
    R, C = ids.shape
    i = cuda.grid(1)
    if i < R * C:
        r = i // C
        v = int64(ids[r, i - r * C])
        cuda.atomic.min(out, 0, v)
        cuda.atomic.max(out, 1, v)


def ptx_specs(dtype):
    """(name, kernel, signature) of this module's kernels, for ``numba.cuda.compile_ptx``."""
    from numba import types as nt
    f = nt.float32 if np.dtype(dtype) == np.float32 else nt.float64
    i8, l1 = nt.int64, nt.int64[::1]
    c1, c2, c3 = f[::1], f[:, ::1], f[:, :, ::1]
    return [
        ("onehot_proj", onehot_proj.py_func, (c2, l1, c1, c2)),
        ("gather_rows", gather_rows.py_func, (c2, l1, c2)),
        ("gather_rows_strided", gather_rows.py_func, (f[:, :], l1, c2)),      # h columns of rows
        ("scatter_rows", scatter_rows.py_func, (c2, l1, c2)),
        ("scatter_add_rows", scatter_add_rows.py_func, (c2, l1, c2)),
        ("scatter_add_cols", scatter_add_cols.py_func, (c2, l1, c2)),
        ("scatter_add_cols_strided", scatter_add_cols.py_func, (c2, l1, f[:, :])),   # a delta block
        ("capture", capture.py_func, (c2, c3, l1, l1)),
        ("fill", fill.py_func, (c1, f)),
        ("add_into", add_into.py_func, (c1, c1)),
        ("to_time_major2", to_time_major2.py_func, (nt.int32[:, :], nt.int64[:, ::1], i8)),
        ("copy_into_cols", to_time_major2.py_func, (c2, f[:, :], i8)),   # into a column block
        ("copy_from_cols", to_time_major2.py_func, (f[:, :], c2, i8)),   # out of a column block
        ("copy_cols", to_time_major2.py_func, (f[:, :], f[:, :], i8)),
        ("to_time_major3", to_time_major3.py_func, (f[:, :, :], c3, i8)),
        ("id_range", id_range.py_func, (nt.int32[:, :], nt.int64[::1])),
    ]
