"""The LSTM cell's pointwise kernels (equations and backward derivation: fastbptt/cells/lstm.py).

Row ``[h | c | i f g o]`` (K = 6, gates activated), delta ``[dz_i dz_f dz_g dz_o]`` (D = 4),
state delta ``[dh | dc]`` (S = 2). Arrays are [B, ·] for one step.
"""
from __future__ import annotations

from .._jit import njit
from .activations import sigmoid_s, tanh_s

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def forward_pointwise(pre, rec, prev, cur, bn, H, act):
    """pre [B, 4H] = z_t (x Uᵀ + b + h Wᵀ); prev/cur [B, 6H] rows t-1 and t.

    One simple loop per gate: loops over two arrays vectorise (with runtime alias checks),
    one loop writing six places did not (measured 2x slower forward at H = 128).
    """
    B = cur.shape[0]
    for r in range(B):
        z = pre[r]
        p = prev[r]
        out = cur[r]
        for j in range(H):
            out[2 * H + j] = sigmoid_s(z[j])
        for j in range(H):
            out[3 * H + j] = sigmoid_s(z[H + j])
        for j in range(H):
            out[4 * H + j] = tanh_s(z[2 * H + j])
        for j in range(H):
            out[5 * H + j] = sigmoid_s(z[3 * H + j])
        for j in range(H):
            c = out[3 * H + j] * p[H + j] + out[2 * H + j] * out[4 * H + j]
            out[H + j] = c
            out[j] = out[5 * H + j] * tanh_s(c)


@njit(**_JIT)
def backward_pointwise(dstate, cur, prev, delta, H, act):
    """dstate [B, 2H] (dh, dc) in; delta [B, 4H] out; dstate out = (0, dc ⊙ f).

    tanh(c_t) is recomputed in a loop of its own (parked in the o block of delta), so the
    transcendental loop vectorises.
    """
    B = cur.shape[0]
    one = cur.dtype.type(1)
    zero = cur.dtype.type(0)
    for r in range(B):
        ds = dstate[r]
        row = cur[r]
        p = prev[r]
        d = delta[r]
        for j in range(H):
            d[3 * H + j] = tanh_s(row[H + j])
        for j in range(H):
            dh = ds[j]
            tc = d[3 * H + j]
            i = row[2 * H + j]
            f = row[3 * H + j]
            g = row[4 * H + j]
            o = row[5 * H + j]
            dc = ds[H + j] + dh * o * (one - tc * tc)
            d[j] = dc * g * i * (one - i)
            d[H + j] = dc * p[H + j] * f * (one - f)
            d[2 * H + j] = dc * i * (one - g * g)
            d[3 * H + j] = dh * tc * o * (one - o)
            ds[j] = zero
            ds[H + j] = dc * f
