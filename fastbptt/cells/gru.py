"""The GRU cell, PyTorch's equations and gate order (r, z, n)::

    r = σ(x U_rᵀ + h_{t-1} W_rᵀ + b_r)
    z = σ(x U_zᵀ + h_{t-1} W_zᵀ + b_z)
    n = tanh(x U_nᵀ + b_n + r ⊙ (h_{t-1} W_nᵀ + bn))
    h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}

``b`` [3H] holds PyTorch's ``b_ih + b_hh`` for r and z and ``b_in`` for n; ``bn`` [H] is
``b_hn``, which r multiplies. Because r multiplies only the recurrent part of the new gate,
the recurrent product ``h_{t-1} Wᵀ`` is kept apart from the input projection (split), and the
backward pass has two pre-activation gradients that differ in the n block::

    dn_x = dh ⊙ (1−z) ⊙ (1−n²)          gradient of the n pre-activation (input side)
    dhn  = dn_x ⊙ r                      gradient of hn = h_{t-1} W_nᵀ + bn (recurrent side)
    dr   = dn_x ⊙ hn ⊙ r(1−r)
    dz   = dh ⊙ (h_{t-1} − n) ⊙ z(1−z)
    ∂L/∂h_{t-1} = dh ⊙ z + [dr, dz, dhn] W

Per step the backends keep the row ``[h | r z n | hn]`` (K = 5) and the delta
``[dr dz dhn | dn_x]`` (D = 4): its first 3H columns are the recurrent side.
"""
import numpy as np

from ._math import dsigmoid, dtanh, sigmoid

NAME = "gru"
G, S, K, D = 3, 1, 5, 4
SPLIT = True
# input-side deltas as (delta column, U row, width) blocks, in units of H; and the delta
# column block whose sum is the gradient of ``bn`` (-1: none)
XBLOCKS = ((0, 0, 2), (3, 2, 1))
BN_COL = 2
EXTRA = ("bn",)


def forward(pre, state, W, extra, activation):
    """One step. pre [B, 3H] = x_t Uᵀ + b; state = (h_{t-1},); extra = {"bn": [H]}."""
    (h_prev,) = state
    H = h_prev.shape[1]
    rec = h_prev @ W.T
    r = sigmoid(pre[:, :H] + rec[:, :H])
    z = sigmoid(pre[:, H:2 * H] + rec[:, H:2 * H])
    hn = rec[:, 2 * H:] + extra["bn"]
    n = np.tanh(pre[:, 2 * H:] + r * hn)
    h = (1 - z) * n + z * h_prev
    return (h,), (r, z, n, hn)


def backward(dstate, cache, state, W, extra, activation):
    """One step back -> (dpre_x [B, 3H], dpre_h [B, 3H], (∂L/∂h_{t-1},))."""
    (dh,) = dstate
    r, z, n, hn = cache
    (h_prev,) = state
    dn_x = dh * (1 - z) * dtanh(n)
    dr = dn_x * hn * dsigmoid(r)
    dz = dh * (h_prev - n) * dsigmoid(z)
    dpre_x = np.concatenate([dr, dz, dn_x], axis=1)
    dpre_h = np.concatenate([dr, dz, dn_x * r], axis=1)
    return dpre_x, dpre_h, (dh * z + dpre_h @ W,)


def bias_grads(dpre_x, dpre_h):
    H = dpre_h.shape[1] // 3
    return {"b": dpre_x.sum(axis=0), "bn": dpre_h[:, 2 * H:].sum(axis=0)}
