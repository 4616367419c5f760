"""The LSTM cell on CUDA (PyTorch's gate order i, f, g, o).

``z = x Uᵀ + h_{t-1} Wᵀ + b``; i = σ, f = σ, g = tanh, o = σ; ``c_t = f c_{t-1} + i g``;
``h_t = o tanh(c_t)``. Shapes: n steps, B batch, H hidden, G = 4H gate rows.

* ``pre [n, B, 4H]``: x Uᵀ + b, and the recurrent product is accumulated into it in place.
* ``rows [n+1, B, 6H]``: ``[h | c | i f g o]`` (activated gates), row 0 holds h0, c0.
* ``delta [n, B, 4H]``: ``[dz_i dz_f dz_g dz_o]``, ∂L/∂z; input and recurrent side alike.
* ``dstate [B, 2H]``: ∂L/∂h, ∂L/∂c entering a step from later steps.

The pointwise math of one unit is written once (:func:`build`'s ``cell_forward`` and
``cell_backward``) and used by the per-step kernels (after a tiled product) and by the
persistent kernels (W in shared memory, the whole time loop in one block); the backward
kernels around ``unit_backward`` come from :mod:`.gated`.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ..cells.lstm import D, G      # gate rows G·H, delta rows D·H (the cell's numbers)
from . import activations, config, gated
from .activations import nbfloat


@functools.lru_cache(maxsize=None)
def build(dtype):  # noqa: C901 - one closure per kernel
    """The LSTM device functions and kernels for float ``dtype``."""
    DT = nbfloat(dtype)
    A = activations.build(dtype)
    sigmoid, tanh, dsigmoid, dtanh = A.sigmoid, A.tanh, A.dsigmoid, A.dtanh
    zero = np.dtype(dtype).type(0)

    @cuda.jit(device=True)
    def cell_forward(zi, zf, zg, zo, c_prev):
        """(i, f, g, o, c, h) of one unit from its gate pre-activations and c_{t-1}."""
        i = sigmoid(zi)
        f = sigmoid(zf)
        g = tanh(zg)
        o = sigmoid(zo)
        c = f * c_prev + i * g
        return i, f, g, o, c, o * tanh(c)

    @cuda.jit(device=True)
    def cell_backward(dh, dc, i, f, g, o, c, c_prev):
        """(dz_i, dz_f, dz_g, dz_o, ∂L/∂c_{t-1}) of one unit from ∂L/∂h_t, ∂L/∂c_t (later
        steps only) and the saved activations."""
        tc = tanh(c)
        dct = dc + dh * o * dtanh(tc)               # ∂L/∂c_t, both paths
        return (dct * g * dsigmoid(i), dct * c_prev * dsigmoid(f), dct * i * dtanh(g),
                dh * tc * dsigmoid(o), dct * f)

    @cuda.jit(device=True)
    def unit_forward(rows, t, b, j, H, zi, zf, zg, zo):
        """rows[t+1, b] columns of unit j = [h | c | i f g o] from z and c_{t-1} in rows[t]."""
        i, f, g, o, c, h = cell_forward(zi, zf, zg, zo, rows[t, b, H + j])
        rows[t + 1, b, j] = h
        rows[t + 1, b, H + j] = c
        rows[t + 1, b, 2 * H + j] = i
        rows[t + 1, b, 3 * H + j] = f
        rows[t + 1, b, 4 * H + j] = g
        rows[t + 1, b, 5 * H + j] = o

    @cuda.jit(device=True)
    def unit_backward(delta, rows, dstate, dhe, inj0, t, b, j, H):
        """delta[t, b] columns of unit j; dstate[b] leaves with the direct paths: h 0, c dc·f."""
        dh = dstate[b, j]
        if t >= inj0:
            dh += dhe[t - inj0, b, j]
        r = t + 1
        dzi, dzf, dzg, dzo, dcp = cell_backward(
            dh, dstate[b, H + j], rows[r, b, 2 * H + j], rows[r, b, 3 * H + j],
            rows[r, b, 4 * H + j], rows[r, b, 5 * H + j], rows[r, b, H + j], rows[t, b, H + j])
        delta[t, b, j] = dzi
        delta[t, b, H + j] = dzf
        delta[t, b, 2 * H + j] = dzg
        delta[t, b, 3 * H + j] = dzo
        dstate[b, j] = zero
        dstate[b, H + j] = dcp

    # ----------------------------------------------------------------- per step
    @cuda.jit
    def forward_pointwise(pre, rows, t):
        """rows[t+1] from pre[t] (x Uᵀ + b + h_{t-1} Wᵀ) and rows[t]; one thread per (b, j).

        pre [n, B, 4H], rows [n+1, B, 6H]."""
        B, H = rows.shape[1], pre.shape[2] // 4
        e = cuda.grid(1)
        if e < B * H:
            b = e // H
            j = e - b * H
            unit_forward(rows, t, b, j, H, pre[t, b, j], pre[t, b, H + j],
                         pre[t, b, 2 * H + j], pre[t, b, 3 * H + j])

    # ----------------------------------------------------------------- persistent (one block)
    @cuda.jit
    def persistent_forward(pre, rows, W):
        """The whole forward time loop in one block, Wᵀ [H, 4H] in dynamic shared memory.

        pre [n, B, 4H] (x Uᵀ + b, read only), rows [n+1, B, 6H], W [4H, H]. Each thread owns
        units (b, j) and computes their four gate dot products itself."""
        sW = cuda.shared.array(0, DT)               # sW[k * 4H + r] = W[r, k]
        n, B = pre.shape[0], rows.shape[1]
        GH = pre.shape[2]
        H = GH // 4
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        for e in range(tid, GH * H, nt):
            k = e // GH
            sW[e] = W[e - k * GH, k]
        cuda.syncthreads()
        for t in range(n):
            for e in range(tid, B * H, nt):
                b = e // H
                j = e - b * H
                zi = pre[t, b, j]
                zf = pre[t, b, H + j]
                zg = pre[t, b, 2 * H + j]
                zo = pre[t, b, 3 * H + j]
                for k in range(H):
                    hk = rows[t, b, k]
                    base = k * GH + j
                    zi += hk * sW[base]
                    zf += hk * sW[base + H]
                    zg += hk * sW[base + 2 * H]
                    zo += hk * sW[base + 3 * H]
                unit_forward(rows, t, b, j, H, zi, zf, zg, zo)
            cuda.syncthreads()

    loop = gated.build_backward(dtype, unit_backward, G, D)
    return SimpleNamespace(cell_forward=cell_forward, cell_backward=cell_backward,
                           forward_pointwise=forward_pointwise,
                           persistent_forward=persistent_forward,
                           backward_pointwise=loop.backward_pointwise,
                           persistent_backward=loop.persistent_backward)


def forward(dev, pre, rows, w):
    """rows[1:] from rows[0] and pre [n, B, 4H] (overwritten on the per-step path).

    w.W [4H, H]. Per step: pre[t] += h_{t-1} Wᵀ (tiled product into the strided h columns),
    then the pointwise kernel; or the persistent kernel when W fits in shared memory."""
    k = build(dev.dtype)
    n, B, GH = pre.shape
    H = GH // 4
    if dev.recurrent_path(B, H, GH * H) == "persistent":
        smem = GH * H * dev.dtype.itemsize
        k.persistent_forward[1, config.PERSISTENT_THREADS, 0, smem](pre, rows, w.W)
        return
    grid = dev.blocks(B * H)
    for t in range(n):
        dev.gemm(rows[t][:, :H], w.W, pre[t], tb=1, beta=1.0)
        k.forward_pointwise[grid, dev.NT](pre, rows, t)


def backward(dev, dhe, inj0, rows, dstate, delta, w):
    """delta [n, B, 4H] for every step; dstate [B, 2H]: ∂L/∂(h, c) (see :func:`.gated.backward`)."""
    return gated.backward(dev, build(dev.dtype), G, dhe, inj0, rows, dstate, delta, w)


def ptx_specs(dtype):
    """(name, kernel, signature) of this module's kernels, for ``numba.cuda.compile_ptx``."""
    from numba import types as nt
    f = nbfloat(dtype)
    i8 = nt.int64
    c2, c3 = f[:, ::1], f[:, :, ::1]
    k = build(dtype)
    sigs = {
        "forward_pointwise": (c3, c3, i8),
        "persistent_forward": (c3, c3, c2),
    }
    return ([(name, getattr(k, name).py_func, sig) for name, sig in sigs.items()]
            + gated.ptx_specs(k, dtype))
