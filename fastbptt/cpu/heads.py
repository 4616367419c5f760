"""Output heads (fused softmax + cross-entropy, MSE) and id gathers/scatters.

Each head overwrites the logits ``o [R, K]`` with the loss weights times ∂ℓ/∂o, in place,
and returns the weighted loss summed in float64.
"""
from __future__ import annotations

import numpy as np

from .._jit import njit

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def _exp_shift_f32(row, m, nb):
    """row[k] = exp(row[k] - m) in place for a float32 row whose max is m (so row - m <= 0).

    A vectorisable Cephes-style ``expf`` (2^n · e^r, |r| <= ln2/2, degree-6 polynomial, under
    2 ulp; tests/test_cpu_kernels.py pins it): Numba's np.exp is a scalar libm call per element
    and was the largest cost of the head. nb is int32 scratch [K] for the exponents. Returns
    the row's sum in float64. NaN stays NaN; arguments below -87 give 2^-126·e^r, not 0.
    """
    K = row.shape[0]
    for k in range(K):
        t = row[k] - m
        t = np.float32(-87.0) if t < np.float32(-87.0) else t   # NaN passes through
        n = np.floor(t * np.float32(1.44269504088896341) + np.float32(0.5))
        r = t - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
        p = r * np.float32(1.9875691500e-4) + np.float32(1.3981999507e-3)
        p = r * p + np.float32(8.3334519073e-3)
        p = r * p + np.float32(4.1665795894e-2)
        p = r * p + np.float32(1.6666665459e-1)
        p = r * p + np.float32(5.0000001201e-1)
        row[k] = (r * r) * p + r + np.float32(1)
        nb[k] = np.int32(n) if n == n else 0
    for k in range(K):
        nb[k] = (nb[k] + 127) << 23                                 # the bits of 2^n
    scale = nb.view(np.float32)
    s = 0.0
    for k in range(K):
        row[k] *= scale[k]
        s += row[k]
    return s


@njit(**_JIT)
def softmax_xent_ids(o, y, w):
    """Fused, stable softmax + NLL over rows; o [R, K] is overwritten with w·(p − onehot(y)).

    Returns Σ_r w_r · (logsumexp(o_r) − o_r[y_r]), accumulated in float64. One exponential
    per logit (p = e/Σe); float32 rows use :func:`_exp_shift_f32`, float64 rows np.exp.
    """
    R, K = o.shape
    total = 0.0
    nb = np.empty(K, np.int32)
    for r in range(R):
        row = o[r]
        m = row[0]
        for k in range(1, K):
            if row[k] > m:
                m = row[k]
        oy = row[y[r]]
        if o.itemsize == 4:
            s = _exp_shift_f32(row, m, nb)
        else:
            s = 0.0
            for k in range(K):
                e = np.exp(row[k] - m)
                row[k] = e
                s += e
        total += w[r] * (m + np.log(s) - oy)
        f = row.dtype.type(w[r] / s)
        for k in range(K):
            row[k] = row[k] * f
        row[y[r]] -= w[r]
    return total


@njit(**_JIT)
def softmax_xent_probs(o, y, w):
    """As :func:`softmax_xent_ids` with target rows y [R, K]: loss −Σ y log p, delta p·Σy − y."""
    R, K = o.shape
    total = 0.0
    for r in range(R):
        m = o[r, 0]
        for k in range(1, K):
            if o[r, k] > m:
                m = o[r, k]
        s = 0.0
        for k in range(K):
            s += np.exp(o[r, k] - m)
        lse = m + np.log(s)
        ysum = 0.0
        for k in range(K):
            # −log p = lse − o is finite for finite logits (log domain), so y = 0 adds 0;
            # with NaN/inf logits it adds NaN, as the reference does (never hide a NaN)
            total += w[r] * y[r, k] * (lse - o[r, k])
            ysum += y[r, k]
        for k in range(K):
            o[r, k] = w[r] * (np.exp(o[r, k] - lse) * ysum - y[r, k])
    return total


@njit(**_JIT)
def mse_rows(o, y, w):
    """½‖o − y‖² per row; o is overwritten with w·(o − y)."""
    R, K = o.shape
    total = 0.0
    for r in range(R):
        s = 0.0
        for k in range(K):
            d = o[r, k] - y[r, k]
            s += d * d
            o[r, k] = w[r] * d
        total += 0.5 * w[r] * s
    return total


# --------------------------------------------------------------------------- ids
@njit(**_JIT)
def gather_rows_bias(table, ids, bias, out):
    """out[r] = table[ids[r]] + bias: the one-hot input projection without a one-hot array."""
    for r in range(ids.shape[0]):
        row = table[ids[r]]
        for j in range(out.shape[1]):
            out[r, j] = row[j] + bias[j]


@njit(**_JIT)
def scatter_add_rows(dst, ids, src):
    """dst[ids[r]] += src[r]; repeated ids accumulate."""
    for r in range(ids.shape[0]):
        i = ids[r]
        for j in range(src.shape[1]):
            dst[i, j] += src[r, j]

