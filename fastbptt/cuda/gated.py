"""The backward time loop the gated cells share, around each cell's ``unit_backward``.

A cell (:mod:`.lstm`, :mod:`.gru`) writes its pointwise math once as device functions; its
backward step is then always the same two phases: every unit's ``unit_backward`` (reads the
delta-state and the saved rows, writes the unit's delta-row columns and leaves the direct-path
gradient in the delta-state), then ``dstate[:, :H] += delta[t, :, :G·H] W``. Shapes: delta
[n, B, D·H], rows [n+1, B, K·H], dstate [B, S·H], dhe [m, B, H], W [G·H, H].
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

from numba import cuda

from . import config
from .activations import nbfloat

@functools.lru_cache(maxsize=None)
def build_backward(dtype, unit_backward, G, D):
    """``backward_pointwise`` and ``persistent_backward`` around a cell's ``unit_backward``
    (a device function ``(delta, rows, dstate, dhe, inj0, t, b, j, H)``) for G gates and
    delta rows of D·H columns."""
    DT = nbfloat(dtype)

    @cuda.jit
    def backward_pointwise(delta, rows, dstate, dhe, inj0, t):
        """delta[t] from dstate (+ dhe[t - inj0] when t >= inj0), rows[t+1] and rows[t]."""
        B, H = rows.shape[1], delta.shape[2] // D
        e = cuda.grid(1)
        if e < B * H:
            b = e // H
            unit_backward(delta, rows, dstate, dhe, inj0, t, b, e - b * H, H)

    @cuda.jit
    def persistent_backward(delta, rows, W, dhe, inj0, dstate):
        """The whole backward time loop in one block, W [G·H, H] in dynamic shared memory."""
        sW = cuda.shared.array(0, DT)               # sW[r * H + j] = W[r, j]
        n, B = delta.shape[0], rows.shape[1]
        H = delta.shape[2] // D
        GH = G * H
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        for e in range(tid, GH * H, nt):
            r = e // H
            sW[e] = W[r, e - r * H]
        cuda.syncthreads()
        for s in range(n):
            t = n - 1 - s
            for e in range(tid, B * H, nt):
                b = e // H
                unit_backward(delta, rows, dstate, dhe, inj0, t, b, e - b * H, H)
            cuda.syncthreads()
            for e in range(tid, B * H, nt):         # ∂L/∂h_{t-1} += δ_rec W, unit (b, j)
                b = e // H
                j = e - b * H
                acc = dstate[b, j]
                for r in range(GH):
                    acc += delta[t, b, r] * sW[r * H + j]
                dstate[b, j] = acc
            cuda.syncthreads()

    return SimpleNamespace(backward_pointwise=backward_pointwise,
                           persistent_backward=persistent_backward)


def backward(dev, k, G, dhe, inj0, rows, dstate, delta, w):
    """delta [n, B, D·H] for every step with the kernels ``k`` of :func:`build_backward`;
    dstate [B, S·H] enters as ∂L/∂state_n from later steps and leaves as ∂L/∂state_0. dhe
    [m, B, H] (or None): the output layer's ∂L/∂h_t for t >= inj0. w.W [G·H, H]."""
    n, B = delta.shape[:2]
    H = w.W.shape[1]
    GH = G * H
    if dhe is None:
        dhe, inj0 = dev.dummy3, n
    if dev.recurrent_path(B, H, GH * H) == "persistent":
        smem = GH * H * dev.dtype.itemsize
        k.persistent_backward[1, config.PERSISTENT_THREADS, 0, smem](
            delta, rows, w.W, dhe, int(inj0), dstate)
        return delta
    grid = dev.blocks(B * H)
    dh = dstate[:, :H]
    for t in range(n - 1, -1, -1):
        k.backward_pointwise[grid, dev.NT](delta, rows, dstate, dhe, int(inj0), t)
        dev.gemm(delta[t][:, :GH], w.W, dh, beta=1.0)   # ∂L/∂h_{t-1} += δ_rec W
    return delta


def ptx_specs(k, dtype):
    """(name, kernel, signature) of the kernels ``k`` of :func:`build_backward`."""
    from numba import types as nt
    f = nbfloat(dtype)
    i8 = nt.int64
    c2, c3 = f[:, ::1], f[:, :, ::1]
    return [("backward_pointwise", k.backward_pointwise.py_func, (c3, c3, c2, c3, i8, i8)),
            ("persistent_backward", k.persistent_backward.py_func, (c3, c3, c2, c3, i8, c2))]
