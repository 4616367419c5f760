"""The Elman cell's pointwise kernels (equations: fastbptt/cells/rnn.py).

Row ``[h]`` (K = 1), delta ``[da]`` (D = 1). Arrays are [B, ·] for one step.
"""
from __future__ import annotations

from .._jit import njit
from .activations import SIGMOID, TANH, sigmoid_s, tanh_s

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def forward_pointwise(pre, rec, prev, cur, bn, H, act):
    """cur = [f(pre)]; pre [B, H] already holds x_t Uᵀ + b + h_{t-1} Wᵀ.

    The activation's branch sits outside the loops, so each loop vectorises.
    """
    B = cur.shape[0]
    zero = cur.dtype.type(0)
    if act == TANH:
        for i in range(B):
            for j in range(H):
                cur[i, j] = tanh_s(pre[i, j])
    elif act == SIGMOID:
        for i in range(B):
            for j in range(H):
                cur[i, j] = sigmoid_s(pre[i, j])
    else:
        for i in range(B):
            for j in range(H):
                a = pre[i, j]
                cur[i, j] = zero if a <= 0 else a    # NaN stays NaN, as np.maximum(a, 0)


@njit(**_JIT)
def backward_pointwise(dstate, cur, prev, delta, H, act):
    """delta = dh ⊙ f'(a) from the saved h; the direct state gradient is 0."""
    B = cur.shape[0]
    one = cur.dtype.type(1)
    zero = cur.dtype.type(0)
    # the branch outside the loops, so each loop vectorises
    if act == TANH:
        for i in range(B):
            for j in range(H):
                delta[i, j] = dstate[i, j] * (one - cur[i, j] * cur[i, j])
    elif act == SIGMOID:
        for i in range(B):
            for j in range(H):
                delta[i, j] = dstate[i, j] * (cur[i, j] * (one - cur[i, j]))
    else:
        for i in range(B):
            for j in range(H):
                delta[i, j] = dstate[i, j] * (one if cur[i, j] > 0 else zero)   # 0·inf is NaN, as the reference
    for i in range(B):
        for j in range(H):
            dstate[i, j] = zero
