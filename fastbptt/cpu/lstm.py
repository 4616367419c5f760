"""The LSTM cell's pointwise kernels (equations and backward derivation: fastbptt/cells/lstm.py).

Row ``[h | c | i f g o]`` (K = 6, gates activated), delta ``[dz_i dz_f dz_g dz_o]`` (D = 4),
state delta ``[dh | dc]`` (S = 2). Arrays are [B, ·] for one step.
"""
from __future__ import annotations

from .._jit import njit
from .activations import sigmoid_s, tanh_s

_JIT = dict(cache=True, nogil=True, error_model="numpy")
# per-step kernels are inlined into their time loops: a call per step cost ~0.5 µs
_INLINE = dict(_JIT, inline="always")


@njit(**_INLINE)
def forward_pointwise(pre, rec, prev, cur, bn, H, act):
    """pre [B, 4H] = z_t (x Uᵀ + b + h Wᵀ); prev/cur [B, 6H] rows t-1 and t."""
    B = cur.shape[0]
    for r in range(B):
        z = pre[r]
        p = prev[r]
        out = cur[r]
        for j in range(H):
            i = sigmoid_s(z[j])
            f = sigmoid_s(z[H + j])
            g = tanh_s(z[2 * H + j])
            o = sigmoid_s(z[3 * H + j])
            c = f * p[H + j] + i * g
            out[j] = o * tanh_s(c)
            out[H + j] = c
            out[2 * H + j] = i
            out[3 * H + j] = f
            out[4 * H + j] = g
            out[5 * H + j] = o


@njit(**_INLINE)
def backward_pointwise(dstate, cur, prev, delta, H, act):
    """dstate [B, 2H] (dh, dc) in; delta [B, 4H] out; dstate out = (0, dc ⊙ f)."""
    B = cur.shape[0]
    one = cur.dtype.type(1)
    for r in range(B):
        ds = dstate[r]
        row = cur[r]
        p = prev[r]
        d = delta[r]
        for j in range(H):
            dh = ds[j]
            c = row[H + j]
            i = row[2 * H + j]
            f = row[3 * H + j]
            g = row[4 * H + j]
            o = row[5 * H + j]
            tc = tanh_s(c)
            dc = ds[H + j] + dh * o * (one - tc * tc)
            d[j] = dc * g * i * (one - i)
            d[H + j] = dc * p[H + j] * f * (one - f)
            d[2 * H + j] = dc * i * (one - g * g)
            d[3 * H + j] = dh * tc * o * (one - o)
            ds[j] = 0
            ds[H + j] = dc * f
