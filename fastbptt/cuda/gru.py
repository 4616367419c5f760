"""The GRU cell on CUDA (PyTorch's gate order r, z, n).

``r = σ(x U_rᵀ + h W_rᵀ + b_r)``, ``z = σ(x U_zᵀ + h W_zᵀ + b_z)``,
``n = tanh(x U_nᵀ + b_n + r ⊙ (h W_nᵀ + bn))``, ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``.
The new gate multiplies only the recurrent part by r, so the recurrent product is kept apart
from the input projection (a "split" cell). Shapes: n steps, B batch, H hidden, G = 3H.

* ``pre [n, B, 3H]``: x Uᵀ + b (never modified).
* ``rec [B, 3H]``: h_{t-1} Wᵀ of the current step (per-step path scratch).
* ``rows [n+1, B, 5H]``: ``[h | r z n | hn]``, hn = h_{t-1} W_nᵀ + bn; row 0 holds h0.
* ``delta [n, B, 4H]``: ``[dr dz dhn | dn_x]`` (∂L/∂ pre-activations; dhn = dn_x ⊙ r). The
  first 3H columns are the recurrent side (dW, dbn, ∂L/∂h_{t-1}); the input side (dU, db, dx)
  is ``[dr dz dn_x]``.
* ``dstate [B, H]``: ∂L/∂h entering a step from later steps.

The pointwise math of one unit is written once (``cell_forward``, ``cell_backward``) and used
by the per-step kernels (after a tiled product) and by the persistent kernels; the backward
kernels around ``unit_backward`` come from :mod:`.gated`.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ..cells.gru import D, G      # gate rows G·H, delta rows D·H (the cell's numbers)
from . import activations, config, gated
from .activations import nbfloat


@functools.lru_cache(maxsize=None)
def build(dtype):  # noqa: C901 - one closure per kernel
    """The GRU device functions and kernels for float ``dtype``."""
    DT = nbfloat(dtype)
    A = activations.build(dtype)
    sigmoid, tanh, dsigmoid, dtanh = A.sigmoid, A.tanh, A.dsigmoid, A.dtanh
    one = np.dtype(dtype).type(1)

    @cuda.jit(device=True)
    def cell_forward(xr, xz, xn, hr, hz, hn, h_prev):
        """(r, z, n, h) of one unit from its input-side (x U + b) and recurrent-side
        (h W + bn for n) pre-activations and h_{t-1}."""
        r = sigmoid(xr + hr)
        z = sigmoid(xz + hz)
        n = tanh(xn + r * hn)
        return r, z, n, (one - z) * n + z * h_prev

    @cuda.jit(device=True)
    def cell_backward(dh, r, z, n, hn, h_prev):
        """(dr, dz, dhn, dn_x, ∂L/∂h_{t-1} via the direct path) of one unit from ∂L/∂h_t."""
        dn_x = dh * (one - z) * dtanh(n)
        return dn_x * hn * dsigmoid(r), dh * (h_prev - n) * dsigmoid(z), dn_x * r, dn_x, dh * z

    @cuda.jit(device=True)
    def unit_forward(rows, t, b, j, H, xr, xz, xn, hr, hz, hn):
        """rows[t+1, b] columns of unit j = [h | r z n | hn]; h_{t-1} from rows[t]."""
        r, z, n, h = cell_forward(xr, xz, xn, hr, hz, hn, rows[t, b, j])
        rows[t + 1, b, j] = h
        rows[t + 1, b, H + j] = r
        rows[t + 1, b, 2 * H + j] = z
        rows[t + 1, b, 3 * H + j] = n
        rows[t + 1, b, 4 * H + j] = hn

    @cuda.jit(device=True)
    def unit_backward(delta, rows, dstate, dhe, inj0, t, b, j, H):
        """delta[t, b] columns of unit j; dstate[b, j] leaves with the direct path dh·z."""
        dh = dstate[b, j]
        if t >= inj0:
            dh += dhe[t - inj0, b, j]
        r = t + 1
        dr, dz, dhn, dnx, direct = cell_backward(
            dh, rows[r, b, H + j], rows[r, b, 2 * H + j], rows[r, b, 3 * H + j],
            rows[r, b, 4 * H + j], rows[t, b, j])
        delta[t, b, j] = dr
        delta[t, b, H + j] = dz
        delta[t, b, 2 * H + j] = dhn
        delta[t, b, 3 * H + j] = dnx
        dstate[b, j] = direct

    # ----------------------------------------------------------------- per step
    @cuda.jit
    def forward_pointwise(pre, rec, bn, rows, t):
        """rows[t+1] from pre[t] (x Uᵀ + b), rec (h_{t-1} Wᵀ), bn and rows[t].

        pre [n, B, 3H], rec [B, 3H], bn [H], rows [n+1, B, 5H]; one thread per (b, j)."""
        B, H = rows.shape[1], bn.shape[0]
        e = cuda.grid(1)
        if e < B * H:
            b = e // H
            j = e - b * H
            unit_forward(rows, t, b, j, H, pre[t, b, j], pre[t, b, H + j], pre[t, b, 2 * H + j],
                         rec[b, j], rec[b, H + j], rec[b, 2 * H + j] + bn[j])

    # ----------------------------------------------------------------- persistent (one block)
    @cuda.jit
    def persistent_forward(pre, rows, W, bn):
        """The whole forward time loop in one block, Wᵀ [H, 3H] in dynamic shared memory.

        pre [n, B, 3H], rows [n+1, B, 5H], W [3H, H], bn [H]."""
        sW = cuda.shared.array(0, DT)               # sW[k * 3H + r] = W[r, k]
        n, B = pre.shape[0], rows.shape[1]
        GH = pre.shape[2]
        H = GH // 3
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
                hr = DT(0)
                hz = DT(0)
                hn = bn[j]
                for k in range(H):
                    hk = rows[t, b, k]
                    base = k * GH + j
                    hr += hk * sW[base]
                    hz += hk * sW[base + H]
                    hn += hk * sW[base + 2 * H]
                unit_forward(rows, t, b, j, H, pre[t, b, j], pre[t, b, H + j],
                             pre[t, b, 2 * H + j], hr, hz, hn)
            cuda.syncthreads()

    loop = gated.build_backward(dtype, unit_backward, G, D)
    return SimpleNamespace(cell_forward=cell_forward, cell_backward=cell_backward,
                           forward_pointwise=forward_pointwise,
                           persistent_forward=persistent_forward,
                           backward_pointwise=loop.backward_pointwise,
                           persistent_backward=loop.persistent_backward)


def forward(dev, pre, rows, w):
    """rows[1:] from rows[0] and pre [n, B, 3H].

    w.W [3H, H], w.bn [H]. Per step: rec = h_{t-1} Wᵀ (tiled product from the strided h
    columns), then the pointwise kernel; or the persistent kernel when W fits in shared memory."""
    k = build(dev.dtype)
    n, B, GH = pre.shape
    H = GH // 3
    if dev.recurrent_path(B, H, GH * H) == "persistent":
        smem = GH * H * dev.dtype.itemsize
        k.persistent_forward[1, config.PERSISTENT_THREADS, 0, smem](pre, rows, w.W, w.bn)
        return
    grid = dev.blocks(B * H)
    rec = dev.empty((B, GH))                        # [B, 3H]
    for t in range(n):
        dev.gemm(rows[t][:, :H], w.W, rec, tb=1)
        k.forward_pointwise[grid, dev.NT](pre, rec, w.bn, rows, t)


def backward(dev, dhe, inj0, rows, dstate, delta, w):
    """delta [n, B, 4H] for every step; dstate [B, H]: ∂L/∂h (see :func:`.gated.backward`)."""
    return gated.backward(dev, build(dev.dtype), G, dhe, inj0, rows, dstate, delta, w)


def ptx_specs(dtype):
    """(name, kernel, signature) of this module's kernels, for ``numba.cuda.compile_ptx``."""
    from numba import types as nt
    f = nbfloat(dtype)
    i8 = nt.int64
    c1, c2, c3 = f[::1], f[:, ::1], f[:, :, ::1]
    k = build(dtype)
    sigs = {
        "forward_pointwise": (c3, c2, c1, c3, i8),
        "persistent_forward": (c3, c3, c2, c1),
    }
    return ([(name, getattr(k, name).py_func, sig) for name, sig in sigs.items()]
            + gated.ptx_specs(k, dtype))
