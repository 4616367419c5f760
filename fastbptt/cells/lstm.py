"""The LSTM cell, PyTorch's equations and gate order (i, f, g, o)::

    z_t = x_t Uᵀ + h_{t-1} Wᵀ + b                      [B, 4H]
    i = σ(z_i)   f = σ(z_f)   g = tanh(z_g)   o = σ(z_o)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    h_t = o ⊙ tanh(c_t)

Backward, with dh = ∂L/∂h_t and dc = ∂L/∂c_t arriving from later steps::

    dc  += dh ⊙ o ⊙ (1 − tanh²(c_t))
    dz   = [dc ⊙ g ⊙ i(1−i),  dc ⊙ c_{t-1} ⊙ f(1−f),  dc ⊙ i ⊙ (1−g²),  dh ⊙ tanh(c_t) ⊙ o(1−o)]
    ∂L/∂h_{t-1} = dz W,   ∂L/∂c_{t-1} = dc ⊙ f

Per step the backends keep the row ``[h | c | i f g o]`` (K = 6; tanh(c_t) is recomputed)
and the delta ``dz`` (D = 4).
"""
import numpy as np

from ._math import dsigmoid, dtanh, sigmoid

NAME = "lstm"
G, S, K, D = 4, 2, 6, 4
SPLIT = False
# input-side deltas as (delta column, U row, width) blocks, in units of H; and the delta
# column block whose sum is the gradient of ``bn`` (-1: none)
XBLOCKS = ((0, 0, 4),)
BN_COL = -1
EXTRA = ()


def forward(pre, state, W, extra, activation):
    """One step. pre [B, 4H] = x_t Uᵀ + b; state = (h_{t-1}, c_{t-1})."""
    h_prev, c_prev = state
    H = h_prev.shape[1]
    z = pre + h_prev @ W.T
    i, f = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H])
    g, o = np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
    c = f * c_prev + i * g
    h = o * np.tanh(c)
    return (h, c), (i, f, g, o, c)


def backward(dstate, cache, state, W, extra, activation):
    """One step back: ((∂L/∂h_t, ∂L/∂c_t), cache, (h_{t-1}, c_{t-1})) -> (dz, dz, state delta)."""
    dh, dc = dstate
    i, f, g, o, c = cache
    _, c_prev = state
    tc = np.tanh(c)
    dc = dc + dh * o * dtanh(tc)
    dz = np.concatenate([dc * g * dsigmoid(i), dc * c_prev * dsigmoid(f),
                         dc * i * dtanh(g), dh * tc * dsigmoid(o)], axis=1)
    return dz, dz, (dz @ W, dc * f)


def bias_grads(dpre_x, dpre_h):
    return {"b": dpre_x.sum(axis=0)}
