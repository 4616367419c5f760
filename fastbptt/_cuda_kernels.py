"""CUDA kernels of the CUDA backend (numba-cuda). Imported only by :mod:`fastbptt.cuda`.

Kernels are built by :func:`build` for one (dtype, THREADS, TILE) combination and cached:
shared-memory arrays need their shape and element type as compile-time constants, and the
tests shrink THREADS and TILE (see :mod:`fastbptt.config`). Building is cheap — numba-cuda
compiles a kernel lazily, on its first launch with given argument types — so nothing is
compiled at import. The activation is an integer code (0 tanh, 1 sigmoid, 2 relu), as on CPU.

Layouts: every array is row-major; ``[T, B, H]`` time-major like the rest of fastbptt.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from numba import cuda, float32, float64, int64

_NB = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}


_CACHE: dict = {}


def build(dtype, threads: int, tile: int):
    """Every kernel for float ``dtype`` with ``threads`` per 1-D block and ``tile``-sized tiles."""
    key = (np.dtype(dtype), int(threads), int(tile))
    if key not in _CACHE:
        _CACHE[key] = _build(*key)
    return _CACHE[key]


def _build(dtype, NT, TL):  # noqa: C901 - one closure per kernel, on purpose
    DT = _NB[dtype]
    TLP = TL + 1                      # padded tile rows: transposed stores avoid bank conflicts
    one = dtype.type(1)               # typed constants keep float32 kernels in float32
    zero = dtype.type(0)

    # Activations are written out inline in each kernel rather than as device functions:
    # numba-cuda compiles a called device function for the *current* device, which needs a
    # GPU and would keep compile_ptx (the PTX tests) from working on a CPU-only machine.
    # f(a): tanh, 1/(1+e^-a), max(a, 0); f'(a) from h = f(a): 1-h², h(1-h), [h > 0].

    # ----------------------------------------------------------------- matrix product
    @cuda.jit
    def gemm(A, Bm, C, ta, tb, beta, bias, has_bias):
        """C [M, N] = op(A) @ op(Bm) (+ beta*C) (+ bias[N]); op transposes when ta / tb is 1.

        A is [M, K] (or [K, M] when ta), Bm is [K, N] (or [N, K] when tb). Blocks of
        TILE x TILE threads each own a TILE x TILE tile of C and march over K in tiles
        staged in shared memory; loads are coalesced for both layouts of each operand.
        """
        sA = cuda.shared.array((TL, TLP), DT)     # sA[i, k]: op(A) rows i, columns k of the tile
        sB = cuda.shared.array((TL, TLP), DT)     # sB[k, j]
        M, N = C.shape
        K = A.shape[0] if ta else A.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        r0 = cuda.blockIdx.x * TL                 # rows on grid x: T*B rows may pass 65535 tiles
        c0 = cuda.blockIdx.y * TL
        acc = DT(0)
        for k0 in range(0, K, TL):
            if ta:                                # A[k, i]: consecutive tx read consecutive i
                k, i = k0 + ty, r0 + tx
                sA[tx, ty] = A[k, i] if (k < K and i < M) else DT(0)
            else:                                 # A[i, k]: consecutive tx read consecutive k
                i, k = r0 + ty, k0 + tx
                sA[ty, tx] = A[i, k] if (k < K and i < M) else DT(0)
            if tb:                                # Bm[j, k]
                j, k = c0 + ty, k0 + tx
                sB[tx, ty] = Bm[j, k] if (k < K and j < N) else DT(0)
            else:                                 # Bm[k, j]
                k, j = k0 + ty, c0 + tx
                sB[ty, tx] = Bm[k, j] if (k < K and j < N) else DT(0)
            cuda.syncthreads()
            for kk in range(TL):
                acc += sA[ty, kk] * sB[kk, tx]
            cuda.syncthreads()
        i, j = r0 + ty, c0 + tx
        if i < M and j < N:
            if has_bias:
                acc += bias[j]
            if beta != 0:
                acc += DT(beta) * C[i, j]
            C[i, j] = acc

    # ----------------------------------------------------------------- per-step recurrence
    @cuda.jit
    def step_forward(xu, hs, WT, t, act):
        """hs[t+1] = f(xu[t] + hs[t] @ WT): product, input term, activation and cache write.

        xu [n, B, H] (x Uᵀ + b), hs [n+1, B, H], WT [H, H] = Wᵀ; one thread per (b, j):
        threads of a warp share b (broadcast reads of hs[t, b]) and read WT coalesced.
        """
        B, H = hs.shape[1], hs.shape[2]
        i = cuda.grid(1)
        if i < B * H:
            b = i // H
            j = i - b * H
            acc = xu[t, b, j]
            for k in range(H):
                acc += hs[t, b, k] * WT[k, j]
            if act == 0:
                h = math.tanh(acc)
            elif act == 1:
                h = one / (one + math.exp(-acc))
            else:
                h = acc if acc > zero else zero
            hs[t + 1, b, j] = h

    @cuda.jit
    def step_backward(da, hs, W, dhe, inj0, dh, t, act):
        """da[t] = (∂L/∂h_t) * f'(a_t), with ∂L/∂h_t = da[t+1] @ W (dh at the last step) + dhe[t-inj0].

        da [n, B, H] (written at t), hs [n+1, B, H], W [H, H], dhe [m, B, H] (injected for
        t >= inj0), dh [B, H] the delta entering from later steps. The hidden delta of a step
        lives only in a register: the chain runs through da, so one launch per step suffices.
        """
        n = da.shape[0]
        B, H = da.shape[1], da.shape[2]
        i = cuda.grid(1)
        if i < B * H:
            b = i // H
            j = i - b * H
            if t == n - 1:
                v = dh[b, j]
            else:
                v = DT(0)
                for k in range(H):
                    v += da[t + 1, b, k] * W[k, j]
            if t >= inj0:
                v += dhe[t - inj0, b, j]
            h = hs[t + 1, b, j]
            if act == 0:
                d = one - h * h
            elif act == 1:
                d = h * (one - h)
            else:
                d = one if h > zero else zero
            da[t, b, j] = v * d

    # ----------------------------------------------------------------- persistent (one block)
    @cuda.jit
    def persistent_forward(xu, hs, WT, act):
        """The whole forward time loop in one launch of one block, Wᵀ in shared memory.

        xu [n, B, H], hs [n+1, B, H] (hs[0] read, hs[1:] written), WT [H, H]. Dynamic shared
        memory: H*H elements. __syncthreads between steps makes h_t (global) visible to the
        block before step t+1 reads it.
        """
        sW = cuda.shared.array(0, DT)
        n = xu.shape[0]
        B, H = hs.shape[1], hs.shape[2]
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        for e in range(tid, H * H, nt):
            sW[e] = WT[e // H, e % H]
        cuda.syncthreads()
        for t in range(n):
            for e in range(tid, B * H, nt):
                b = e // H
                j = e - b * H
                acc = xu[t, b, j]
                for k in range(H):
                    acc += hs[t, b, k] * sW[k * H + j]
                if act == 0:
                    h = math.tanh(acc)
                elif act == 1:
                    h = one / (one + math.exp(-acc))
                else:
                    h = acc if acc > zero else zero
                hs[t + 1, b, j] = h
            cuda.syncthreads()

    @cuda.jit
    def persistent_backward(da, hs, W, dhe, inj0, dh, act):
        """The whole backward time loop in one launch of one block, W in shared memory.

        Same arrays as :func:`step_backward`; at the end dh [B, H] is overwritten with the delta
        leaving step 0 (da[0] @ W). Dynamic shared memory: H*H elements.
        """
        sW = cuda.shared.array(0, DT)
        n = da.shape[0]
        B, H = da.shape[1], da.shape[2]
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        for e in range(tid, H * H, nt):
            sW[e] = W[e // H, e % H]
        cuda.syncthreads()
        for s in range(n):
            t = n - 1 - s
            for e in range(tid, B * H, nt):
                b = e // H
                j = e - b * H
                if t == n - 1:
                    v = dh[b, j]
                else:
                    v = DT(0)
                    for k in range(H):
                        v += da[t + 1, b, k] * sW[k * H + j]
                if t >= inj0:
                    v += dhe[t - inj0, b, j]
                h = hs[t + 1, b, j]
                if act == 0:
                    d = one - h * h
                elif act == 1:
                    d = h * (one - h)
                else:
                    d = one if h > zero else zero
                da[t, b, j] = v * d
            cuda.syncthreads()
        for e in range(tid, B * H, nt):
            b = e // H
            j = e - b * H
            v = DT(0)
            for k in range(H):
                v += da[0, b, k] * sW[k * H + j]
            dh[b, j] = v

    # ----------------------------------------------------------------- persistent (grid)
    @cuda.jit
    def coop_forward(xu, hs, WT, act, cols):
        """The forward time loop in one cooperative launch of G = ceil(H / cols) blocks.

        Block g owns hidden units j in [g*cols, g*cols + cols) and keeps those columns of Wᵀ
        ([H, cols]) in dynamic shared memory; a grid-wide sync after each step publishes
        h_t to every block. For W too large for one block's shared memory (Persistent RNNs).
        """
        sW = cuda.shared.array(0, DT)
        grid = cuda.cg.this_grid()
        n = xu.shape[0]
        B, H = hs.shape[1], hs.shape[2]
        j0 = cuda.blockIdx.x * cols
        nc = min(cols, H - j0)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        for e in range(tid, H * nc, nt):
            k = e // nc
            sW[e] = WT[k, j0 + e - k * nc]          # sW[k, jj] = Wᵀ[k, j0 + jj]
        cuda.syncthreads()
        for t in range(n):
            for e in range(tid, B * nc, nt):
                b = e // nc
                jj = e - b * nc
                acc = xu[t, b, j0 + jj]
                for k in range(H):
                    acc += hs[t, b, k] * sW[k * nc + jj]
                if act == 0:
                    h = math.tanh(acc)
                elif act == 1:
                    h = one / (one + math.exp(-acc))
                else:
                    h = acc if acc > zero else zero
                hs[t + 1, b, j0 + jj] = h
            grid.sync()

    @cuda.jit
    def coop_backward(da, hs, W, dhe, inj0, dh, act, cols):
        """The backward time loop in one cooperative launch (as :func:`coop_forward`).

        Block g owns columns j of W (∂L/∂h_{t-1}[:, j] = da[t] @ W[:, j]) and of da; the
        arrays are those of :func:`step_backward`, dh ends as the delta leaving step 0.
        """
        sW = cuda.shared.array(0, DT)
        grid = cuda.cg.this_grid()
        n = da.shape[0]
        B, H = da.shape[1], da.shape[2]
        j0 = cuda.blockIdx.x * cols
        nc = min(cols, H - j0)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        for e in range(tid, H * nc, nt):
            k = e // nc
            sW[e] = W[k, j0 + e - k * nc]           # sW[k, jj] = W[k, j0 + jj]
        cuda.syncthreads()
        for s in range(n):
            t = n - 1 - s
            for e in range(tid, B * nc, nt):
                b = e // nc
                jj = e - b * nc
                j = j0 + jj
                if t == n - 1:
                    v = dh[b, j]
                else:
                    v = DT(0)
                    for k in range(H):
                        v += da[t + 1, b, k] * sW[k * nc + jj]
                if t >= inj0:
                    v += dhe[t - inj0, b, j]
                h = hs[t + 1, b, j]
                if act == 0:
                    d = one - h * h
                elif act == 1:
                    d = h * (one - h)
                else:
                    d = one if h > zero else zero
                da[t, b, j] = v * d
            grid.sync()
        for e in range(tid, B * nc, nt):
            b = e // nc
            jj = e - b * nc
            v = DT(0)
            for k in range(H):
                v += da[0, b, k] * sW[k * nc + jj]
            dh[b, j0 + jj] = v

    # ----------------------------------------------------------------- fused output heads
    @cuda.jit
    def head_loss(o, sel, has_sel, base, w, tgt, yrows, ymap, has_map, mode, loss):
        """Fused loss and logit deltas, one block per row; o [R, K] becomes w·∂loss/∂o.

        Row r is step (t, b) with flat index g = sel[r] (has_sel) or base + r; its weight is
        w[g]. mode 0: softmax + NLL of class tgt[g]; mode 1: softmax + cross-entropy against
        yrows[ymap[g] or g] (loss −Σy log p, delta p·Σy − y); mode 2: ½‖o − y‖². The row's
        loss is reduced in shared memory (float64) and added atomically to loss[0]. Softmax
        is stabilised by the row max, so logits of ±1e4 stay finite.
        """
        s1 = cuda.shared.array(NT, float64)
        s2 = cuda.shared.array(NT, float64)
        r = cuda.blockIdx.x
        t = cuda.threadIdx.x
        K = o.shape[1]
        g = sel[r] if has_sel else base + r
        wr = float64(w[g])
        yr = ymap[g] if has_map else g
        if mode == 2:
            acc = 0.0
            for k in range(t, K, NT):
                d = o[r, k] - yrows[yr, k]
                acc += float64(d) * float64(d)
                o[r, k] = DT(wr) * d
            s1[t] = acc
            cuda.syncthreads()
            step = NT // 2
            while step > 0:
                if t < step:
                    s1[t] += s1[t + step]
                cuda.syncthreads()
                step //= 2
            if t == 0:
                cuda.atomic.add(loss, 0, 0.5 * wr * s1[0])
            return
        m = -math.inf
        for k in range(t, K, NT):
            m = max(m, float64(o[r, k]))
        s1[t] = m
        cuda.syncthreads()
        step = NT // 2
        while step > 0:
            if t < step:
                s1[t] = max(s1[t], s1[t + step])
            cuda.syncthreads()
            step //= 2
        m = s1[0]
        cuda.syncthreads()
        acc = 0.0
        for k in range(t, K, NT):
            acc += math.exp(float64(o[r, k]) - m)
        s1[t] = acc
        cuda.syncthreads()
        step = NT // 2
        while step > 0:
            if t < step:
                s1[t] += s1[t + step]
            cuda.syncthreads()
            step //= 2
        lse = m + math.log(s1[0])
        cuda.syncthreads()
        if mode == 0:
            y = tgt[g]
            if t == 0:
                cuda.atomic.add(loss, 0, wr * (lse - float64(o[r, y])))
            cuda.syncthreads()                    # o[r, y] is read before it is overwritten
            for k in range(t, K, NT):
                p = math.exp(float64(o[r, k]) - lse)
                o[r, k] = DT(wr * (p - 1.0) if k == y else wr * p)
        else:
            acc = 0.0
            ys = 0.0
            for k in range(t, K, NT):
                yk = float64(yrows[yr, k])
                if yk != 0:                       # 0·log 0 is 0, not NaN
                    acc += yk * (lse - float64(o[r, k]))
                ys += yk
            s1[t] = acc
            s2[t] = ys
            cuda.syncthreads()
            step = NT // 2
            while step > 0:
                if t < step:
                    s1[t] += s1[t + step]
                    s2[t] += s2[t + step]
                cuda.syncthreads()
                step //= 2
            if t == 0:
                cuda.atomic.add(loss, 0, wr * s1[0])
            ys = s2[0]
            for k in range(t, K, NT):
                p = math.exp(float64(o[r, k]) - lse)
                o[r, k] = DT(wr * (p * ys - float64(yrows[yr, k])))

    # ----------------------------------------------------------------- reductions
    @cuda.jit
    def colsum_add(X, out):
        """out[N] += Σ_r X[r, :] (db, dc): TILE x TILE blocks, a column per tx, rows strided
        over ty and the grid's y dimension, a shared-memory tree over ty, one atomic per column
        and block."""
        s = cuda.shared.array((TL, TLP), DT)
        R, N = X.shape
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        j = cuda.blockIdx.x * TL + tx
        acc = DT(0)
        if j < N:
            for r in range(cuda.blockIdx.y * TL + ty, R, cuda.gridDim.y * TL):
                acc += X[r, j]
        s[ty, tx] = acc
        cuda.syncthreads()
        step = TL // 2
        while step > 0:
            if ty < step:
                s[ty, tx] += s[ty + step, tx]
            cuda.syncthreads()
            step //= 2
        if ty == 0 and j < N:
            cuda.atomic.add(out, j, s[0, tx])

    # ----------------------------------------------------------------- ids and rows
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
        """h_last[sel[s]] = hs[steps[s], sel[s]] for the sequences that end in this run."""
        S = sel.shape[0]
        H = h_last.shape[1]
        i = cuda.grid(1)
        if i < S * H:
            s = i // H
            j = i - s * H
            h_last[sel[s], j] = hs[steps[s], sel[s], j]

    # ----------------------------------------------------------------- elementwise
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

    kernels = {k: v for k, v in dict(locals()).items() if hasattr(v, "py_func")}
    return SimpleNamespace(**kernels, dtype=dtype, NT=NT, TL=TL)


# --------------------------------------------------------------------------- dtype-generic
# Layout conversion and id checks are used on arrays of any dtype (the caller's device arrays),
# so they are plain lazily-specialised kernels without dtype-dependent shared memory.
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


GENERIC = SimpleNamespace(to_time_major2=to_time_major2, to_time_major3=to_time_major3,
                          id_range=id_range)


def ptx_specs(dtype):
    """(name, python function, signature) of every kernel for float ``dtype``: the PTX tests
    compile each with ``numba.cuda.compile_ptx`` for the real target."""
    from numba import types as nt
    f = _NB[np.dtype(dtype)]
    i8 = nt.int64
    a3 = f[:, :, :]                                # any strides (a caller's device array)
    c1, c2, c3 = f[::1], f[:, ::1], f[:, :, ::1]   # the C-contiguous arrays the backend passes
    l1 = i8[::1]
    k = build(dtype, 256, 16)
    sigs = {
        "gemm": (c2, c2, c2, i8, i8, nt.float64, c1, i8),
        "step_forward": (c3, c3, c2, i8, i8),
        "step_backward": (c3, c3, c2, c3, i8, c2, i8, i8),
        "persistent_forward": (c3, c3, c2, i8),
        "persistent_backward": (c3, c3, c2, c3, i8, c2, i8),
        "coop_forward": (c3, c3, c2, i8, i8),
        "coop_backward": (c3, c3, c2, c3, i8, c2, i8, i8),
        "head_loss": (c2, l1, i8, i8, c1, l1, c2, l1, i8, i8, nt.float64[::1]),
        "colsum_add": (c2, c1),
        "onehot_proj": (c2, l1, c1, c2),
        "gather_rows": (c2, l1, c2),
        "scatter_rows": (c2, l1, c2),
        "scatter_add_rows": (c2, l1, c2),
        "scatter_add_cols": (c2, l1, c2),
        "capture": (c2, c3, l1, l1),
        "fill": (c1, f),
        "add_into": (c1, c1),
    }
    out = [(name, getattr(k, name).py_func, sig) for name, sig in sigs.items()]
    out += [
        ("to_time_major2", to_time_major2.py_func, (nt.int32[:, :], nt.int64[:, ::1], i8)),
        ("to_time_major3", to_time_major3.py_func, (a3, c3, i8)),
        ("id_range", id_range.py_func, (nt.int32[:, :], nt.int64[::1])),
    ]
    return out
