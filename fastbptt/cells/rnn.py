"""The Elman cell: ``h_t = f(x_t Uᵀ + h_{t-1} Wᵀ + b)`` with f = tanh, sigmoid or relu.

Per step the backends keep the row ``[h]`` (K = 1) and the delta ``[da]`` (D = 1):
``da = dh ⊙ f'(a)`` with f' from the saved h; ``∂L/∂h_{t-1} = da W``.
"""
from ._math import ACTIVATE, DERIVATIVE

NAME = "rnn"
G, S, K, D = 1, 1, 1, 1
SPLIT = False
# input-side deltas as (delta column, U row, width) blocks, in units of H; and the delta
# column block whose sum is the gradient of ``bn`` (-1: none)
XBLOCKS = ((0, 0, 1),)
BN_COL = -1
EXTRA = ()


def forward(pre, state, W, extra, activation):
    """One step. pre [B, H] = x_t Uᵀ + b; state = (h_{t-1},). Returns ((h_t,), cache)."""
    (h_prev,) = state
    h = ACTIVATE[activation](pre + h_prev @ W.T)
    return (h,), h


def backward(dstate, cache, state, W, extra, activation):
    """One step back. dstate = (∂L/∂h_t,) -> (dpre_x, dpre_h, (∂L/∂h_{t-1},))."""
    (dh,) = dstate
    da = dh * DERIVATIVE[activation](cache)
    return da, da, (da @ W,)


def bias_grads(dpre_x, dpre_h):
    return {"b": dpre_x.sum(axis=0)}
