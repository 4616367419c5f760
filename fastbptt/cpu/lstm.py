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

    Each gate block is taken as its own 1-D view and each loop reads one or two of them and
    writes one: such loops vectorise (LLVM adds runtime alias checks). Indexing one big row
    at offsets (``out[3 * H + j]``) did not, and ran the transcendentals scalar (about 3x
    slower at H = 128).
    """
    B = cur.shape[0]
    for r in range(B):
        z = pre[r]
        out = cur[r]
        zi, zf, zg, zo = z[:H], z[H:2 * H], z[2 * H:3 * H], z[3 * H:4 * H]
        h, c = out[:H], out[H:2 * H]
        gi, gf, gg, go = out[2 * H:3 * H], out[3 * H:4 * H], out[4 * H:5 * H], out[5 * H:6 * H]
        cp = prev[r][H:2 * H]
        for j in range(H):
            gi[j] = sigmoid_s(zi[j])
        for j in range(H):
            gf[j] = sigmoid_s(zf[j])
        for j in range(H):
            gg[j] = tanh_s(zg[j])
        for j in range(H):
            go[j] = sigmoid_s(zo[j])
        for j in range(H):
            c[j] = gf[j] * cp[j] + gi[j] * gg[j]
        for j in range(H):
            h[j] = go[j] * tanh_s(c[j])


@njit(**_JIT)
def backward_pointwise(dstate, cur, prev, delta, H, act):
    """dstate [B, 2H] (dh, dc) in; delta [B, 4H] out; dstate out = (0, dc ⊙ f).

    tanh(c_t) is recomputed in a loop of its own (parked in the o block of delta), so the
    transcendental loop vectorises; the other loops work on per-gate 1-D views, as forward.
    """
    B = cur.shape[0]
    one = cur.dtype.type(1)
    zero = cur.dtype.type(0)
    for r in range(B):
        ds = dstate[r]
        row = cur[r]
        d = delta[r]
        dh, dcs = ds[:H], ds[H:2 * H]
        c = row[H:2 * H]
        gi, gf, gg, go = row[2 * H:3 * H], row[3 * H:4 * H], row[4 * H:5 * H], row[5 * H:6 * H]
        di, df, dg, do = d[:H], d[H:2 * H], d[2 * H:3 * H], d[3 * H:4 * H]
        cp = prev[r][H:2 * H]
        for j in range(H):
            do[j] = tanh_s(c[j])                                # tc, parked
        # dc = dc_in + dh ⊙ o ⊙ (1 - tc²), parked in dg's block
        for j in range(H):
            tc = do[j]
            dg[j] = dcs[j] + dh[j] * go[j] * (one - tc * tc)
        for j in range(H):
            do[j] = dh[j] * do[j] * go[j] * (one - go[j])
        for j in range(H):
            di[j] = dg[j] * gg[j] * gi[j] * (one - gi[j])
        for j in range(H):
            df[j] = dg[j] * cp[j] * gf[j] * (one - gf[j])
        for j in range(H):
            dcs[j] = dg[j] * gf[j]
        for j in range(H):
            dg[j] = dg[j] * gi[j] * (one - gg[j] * gg[j])
        for j in range(H):
            dh[j] = zero
