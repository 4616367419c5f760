"""The fused output heads of the CUDA backend: softmax + cross-entropy (class ids or
probability rows) and mean squared error, loss and logit deltas in one kernel.

Built per (dtype, THREADS): the block-wide reductions use shared arrays of THREADS entries.
"""
from __future__ import annotations

import functools
import math
from types import SimpleNamespace

from numba import cuda, float64

from .activations import nbfloat

@functools.lru_cache(maxsize=None)
def build(dtype, NT):
    """``head_loss`` for float ``dtype`` with NT threads per block (a power of two)."""
    DT = nbfloat(dtype)

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

    return SimpleNamespace(head_loss=head_loss)


def ptx_specs(dtype):
    """(name, kernel, signature) of this module's kernels, for ``numba.cuda.compile_ptx``."""
    from numba import types as nt
    f = nbfloat(dtype)
    i8, l1 = nt.int64, nt.int64[::1]
    k = build(dtype, 256)
    return [("head_loss", k.head_loss.py_func,
             (f[:, ::1], l1, i8, i8, f[::1], l1, f[:, ::1], l1, i8, i8, nt.float64[::1]))]
