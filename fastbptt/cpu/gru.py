"""The GRU cell's pointwise kernels (equations and backward derivation: fastbptt/cells/gru.py).

Row ``[h | r z n | hn]`` (K = 5), delta ``[dr dz dhn | dn_x]`` (D = 4; the first 3H columns
are the recurrent side). The recurrent product arrives apart from the input projection
(split), because r multiplies only its n block. Arrays are [B, ·] for one step.
"""
from __future__ import annotations

from .._jit import njit
from .activations import sigmoid_s, tanh_s

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def forward_pointwise(pre, rec, prev, cur, bn, H, act):
    """pre [B, 3H] = x Uᵀ + b, rec [B, 3H] = h_{t-1} Wᵀ, bn [H]; prev/cur [B, 5H] rows.

    One simple loop per gate, so each vectorises (as the LSTM's).
    """
    B = cur.shape[0]
    one = cur.dtype.type(1)
    for b in range(B):
        x = pre[b]
        hr = rec[b]
        p = prev[b]
        out = cur[b]
        for j in range(H):
            out[H + j] = sigmoid_s(x[j] + hr[j])                    # r
        for j in range(H):
            out[2 * H + j] = sigmoid_s(x[H + j] + hr[H + j])        # z
        for j in range(H):
            out[4 * H + j] = hr[2 * H + j] + bn[j]                  # hn
        for j in range(H):
            out[3 * H + j] = tanh_s(x[2 * H + j] + out[H + j] * out[4 * H + j])   # n
        for j in range(H):
            z = out[2 * H + j]
            out[j] = (one - z) * out[3 * H + j] + z * p[j]


@njit(**_JIT)
def backward_pointwise(dstate, cur, prev, delta, H, act):
    """dstate [B, H] (dh) in, out: the direct path dh ⊙ z; delta [B, 4H] out."""
    B = cur.shape[0]
    one = cur.dtype.type(1)
    for b in range(B):
        ds = dstate[b]
        row = cur[b]
        p = prev[b]
        d = delta[b]
        for j in range(H):
            dh = ds[j]
            r = row[H + j]
            z = row[2 * H + j]
            n = row[3 * H + j]
            hn = row[4 * H + j]
            dn_x = dh * (one - z) * (one - n * n)
            d[j] = dn_x * hn * r * (one - r)
            d[H + j] = dh * (p[j] - n) * z * (one - z)
            d[2 * H + j] = dn_x * r
            d[3 * H + j] = dn_x
            ds[j] = dh * z
