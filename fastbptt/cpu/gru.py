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

    Per-gate 1-D views, one short loop each, so each vectorises (as the LSTM's).
    """
    B = cur.shape[0]
    one = cur.dtype.type(1)
    for b in range(B):
        x = pre[b]
        hr = rec[b]
        out = cur[b]
        xr, xz, xn = x[:H], x[H:2 * H], x[2 * H:3 * H]
        rr, rz, rn = hr[:H], hr[H:2 * H], hr[2 * H:3 * H]
        h, r, z, n, hn = out[:H], out[H:2 * H], out[2 * H:3 * H], out[3 * H:4 * H], out[4 * H:5 * H]
        hp = prev[b][:H]
        for j in range(H):
            r[j] = sigmoid_s(xr[j] + rr[j])
        for j in range(H):
            z[j] = sigmoid_s(xz[j] + rz[j])
        for j in range(H):
            hn[j] = rn[j] + bn[j]
        for j in range(H):
            n[j] = tanh_s(xn[j] + r[j] * hn[j])
        for j in range(H):
            h[j] = (one - z[j]) * n[j] + z[j] * hp[j]


@njit(**_JIT)
def backward_pointwise(dstate, cur, prev, delta, H, act):
    """dstate [B, H] (dh) in, out: the direct path dh ⊙ z; delta [B, 4H] out."""
    B = cur.shape[0]
    one = cur.dtype.type(1)
    for b in range(B):
        dh = dstate[b]
        row = cur[b]
        d = delta[b]
        r, z, n, hn = row[H:2 * H], row[2 * H:3 * H], row[3 * H:4 * H], row[4 * H:5 * H]
        dr, dz, dhn, dnx = d[:H], d[H:2 * H], d[2 * H:3 * H], d[3 * H:4 * H]
        hp = prev[b][:H]
        for j in range(H):
            dnx[j] = dh[j] * (one - z[j]) * (one - n[j] * n[j])
        for j in range(H):
            dr[j] = dnx[j] * hn[j] * r[j] * (one - r[j])
        for j in range(H):
            dz[j] = dh[j] * (hp[j] - n[j]) * z[j] * (one - z[j])
        for j in range(H):
            dhn[j] = dnx[j] * r[j]
        for j in range(H):
            dh[j] = dh[j] * z[j]
