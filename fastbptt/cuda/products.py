"""Tiled matrix products and column sums: the input projection, the output head and every
weight gradient of the CUDA backend.

Kernels are built per (dtype, TILE): the shared-memory tiles need their shape and element type
as compile-time constants, and the simulator tests shrink TILE (:mod:`fastbptt.cuda.config`).
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

from numba import cuda

from .activations import nbfloat

@functools.lru_cache(maxsize=None)
def build(dtype, TL):
    """``gemm`` and ``colsum_add`` for float ``dtype`` with TL x TL tiles."""
    DT = nbfloat(dtype)
    TLP = TL + 1                      # padded tile rows: transposed stores avoid bank conflicts

    @cuda.jit
    def gemm(A, Bm, C, ta, tb, beta, bias, has_bias):
        """C [M, N] = op(A) @ op(Bm) (+ beta*C) (+ bias[N]); op transposes when ta / tb is 1.

        A is [M, K] (or [K, M] when ta), Bm is [K, N] (or [N, K] when tb); A, Bm and C may
        have any row stride (a state row's h columns). Blocks of TILE x TILE threads each own
        a TILE x TILE tile of C and march over K in tiles staged in shared memory; loads are
        coalesced for both layouts of each operand.
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

    return SimpleNamespace(gemm=gemm, colsum_add=colsum_add)


def ptx_specs(dtype):
    """(name, kernel, signature) of this module's kernels, for ``numba.cuda.compile_ptx``."""
    from numba import types as nt
    f = nbfloat(dtype)
    i8 = nt.int64
    k = build(dtype, 16)
    return [("gemm", k.gemm.py_func, (f[:, ::1], f[:, ::1], f[:, ::1], i8, i8, nt.float64, f[::1], i8)),
            ("gemm_strided", k.gemm.py_func, (f[:, :], f[:, :], f[:, :], i8, i8, nt.float64, f[::1], i8)),
            ("colsum_add", k.colsum_add.py_func, (f[:, ::1], f[::1])),
            ("colsum_add_strided", k.colsum_add.py_func, (f[:, :], f[::1]))]
