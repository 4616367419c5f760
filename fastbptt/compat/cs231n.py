"""Drop-in sequence functions for CS231n's ``rnn_layers.py`` (assignment 3).

Batch-first, weights stored ``(in, out)`` as in the assignment: ``x (N, T, D)``, ``h0 (N, H)``;
RNN ``Wx (D, H)``, ``Wh (H, H)``, ``b (H,)`` with ``h_t = tanh(x_t Wx + h_{t-1} Wh + b)``;
LSTM ``Wx (D, 4H)``, ``Wh (H, 4H)``, ``b (4H,)`` with gate columns i, f, o, g and c0 = 0.
``from fastbptt.compat.cs231n import *`` replaces the four sequence functions.

Like the assignment's loops, the outputs and gradients are float64 (they start from
``np.zeros``) whatever the inputs' dtypes; the forward pass computes in the dtype NumPy promotes
the inputs to (float32 when all are float32) and the backward pass in float64; ``dh`` with
fewer time steps than the forward pass backpropagates through those steps only.
"""
from __future__ import annotations

import numpy as np

from .. import api

__all__ = ["rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward"]
from ._check import compute_dtype, float64_layer, ifog_to_ifgo, pad_time, real_array


class Cache:
    """What :func:`rnn_backward` needs (opaque; the assignment's is a list of step caches)."""

    __slots__ = ("layer", "shape")

    def __init__(self, layer, shape):
        self.layer, self.shape = layer, shape       # shape: (N, T, H) of h


def rnn_forward(x, h0, Wx, Wh, b):
    """Run a vanilla tanh RNN over a whole sequence (the assignment's ``rnn_forward``).

    Parameters
    ----------
    x : array (N, T, D)
    h0 : array (N, H)
    Wx : array (D, H)
    Wh : array (H, H)
    b : array (H,)

    Returns
    -------
    h : float64 array (N, T, H)
        Hidden states of every step (a new, writable array, as the original's).
    cache : Cache
        Pass it to :func:`rnn_backward`. It references ``x``: leave ``x`` unchanged until
        the backward pass.
    """
    x = real_array("x", x, ndim=3)
    N, T, D = x.shape
    h0 = real_array("h0", h0, shape=(N, None))
    H = h0.shape[1]
    Wx = real_array("Wx", Wx, shape=(D, H))
    Wh = real_array("Wh", Wh, shape=(H, H))
    b = real_array("b", b, shape=(H,))
    if N == 0 or T == 0 or D == 0 or H == 0:
        raise ValueError(f"x (N, T, D) and h0 (N, H) must be non-empty; got x {x.shape}, h0 {h0.shape}")
    dt = compute_dtype(x, h0, Wx, Wh, b)
    x, h0, Wx, Wh, b = (a.astype(dt, copy=False) for a in (x, h0, Wx, Wh, b))
    # x_t Wx + h Wh  ==  x_t Uᵀ + h Wᵀ  with U = Wxᵀ, W = Whᵀ (views; fastbptt copies them)
    hs, layer = api.rnn_forward(x, h0, Wx.T, Wh.T, b, batch_first=True, backend="cpu")
    return hs.astype(np.float64, copy=False), Cache(layer, (N, T, H))   # hs: a fresh C-contiguous copy


def rnn_backward(dh, cache):
    """Backward pass through the whole sequence (the assignment's ``rnn_backward``).

    Parameters
    ----------
    dh : array (N, T', H)
        Upstream gradient of every hidden state; T' <= T steps (the assignment loops over
        ``dh``'s own T).
    cache : Cache
        From :func:`rnn_forward`.

    Returns
    -------
    dx : (N, T', D), dh0 : (N, H), dWx : (D, H), dWh : (H, H), db : (H,), all float64
    """
    layer = _layer(cache, "rnn_forward")
    N, T, H = cache.shape
    dh, Td = _dh(dh, N, H, T)
    dx, dh0, dU, dW, db = api.rnn_backward(dh, float64_layer(layer))
    return np.ascontiguousarray(dx[:, :Td]), dh0, np.ascontiguousarray(dU.T), np.ascontiguousarray(dW.T), db


def _layer(cache, fn):
    if not isinstance(cache, Cache):
        raise TypeError(f"cache must come from fastbptt.compat.cs231n.{fn}; got {type(cache).__name__}")
    return cache.layer


def _dh(dh, N, H, T):
    """dh as float64 (N, T, H), zero-padded past its own time steps, and its own T."""
    dh = real_array("dh", dh, ndim=3)
    if dh.shape[0] != N or dh.shape[2] != H:
        raise ValueError(f"dh must have shape ({N}, T, {H}) like h; got shape {dh.shape}")
    return pad_time("dh", dh, T, axis=1), dh.shape[1]


def lstm_forward(x, h0, Wx, Wh, b):
    """Run an LSTM over a whole sequence (the assignment's ``lstm_forward``), c0 = 0.

    Parameters
    ----------
    x : array (N, T, D)
    h0 : array (N, H)
    Wx : array (D, 4H)
    Wh : array (H, 4H)
    b : array (4H,)
        Gate columns in the assignment's order i, f, o, g:
        ``a = x_t Wx + h_{t-1} Wh + b``, ``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``.

    Returns
    -------
    h : float64 array (N, T, H)
    cache : Cache
        Pass it to :func:`lstm_backward`; leave ``x`` unchanged until then.
    """
    x = real_array("x", x, ndim=3)
    N, T, D = x.shape
    h0 = real_array("h0", h0, shape=(N, None))
    H = h0.shape[1]
    Wx = real_array("Wx", Wx, shape=(D, 4 * H))
    Wh = real_array("Wh", Wh, shape=(H, 4 * H))
    b = real_array("b", b, shape=(4 * H,))
    if N == 0 or T == 0 or D == 0 or H == 0:
        raise ValueError(f"x (N, T, D) and h0 (N, H) must be non-empty; got x {x.shape}, h0 {h0.shape}")
    dt = compute_dtype(x, h0, Wx, Wh, b)
    x, h0, Wx, Wh, b = (a.astype(dt, copy=False) for a in (x, h0, Wx, Wh, b))
    p = ifog_to_ifgo(H)
    # columns i f o g of (in, 4H) weights -> rows i f g o of PyTorch-style (4H, in) weights
    hs, layer = api.lstm_forward(x, h0, None, Wx.T[p], Wh.T[p], b[p], batch_first=True, backend="cpu")
    return hs.astype(np.float64, copy=False), Cache(layer, (N, T, H))   # hs: a fresh C-contiguous copy


def lstm_backward(dh, cache):
    """Backward pass through the whole sequence (the assignment's ``lstm_backward``).

    Parameters
    ----------
    dh : array (N, T', H)
        Upstream gradient of every hidden state; T' <= T steps.
    cache : Cache
        From :func:`lstm_forward`.

    Returns
    -------
    dx : (N, T', D), dh0 : (N, H), dWx : (D, 4H), dWh : (H, 4H), db : (4H,), all float64,
    gate columns i, f, o, g.
    """
    layer = _layer(cache, "lstm_forward")
    N, T, H = cache.shape
    dh, Td = _dh(dh, N, H, T)
    dx, dh0, _, dU, dW, db = api.lstm_backward(dh, float64_layer(layer))
    p = ifog_to_ifgo(H)
    return (np.ascontiguousarray(dx[:, :Td]), dh0, np.ascontiguousarray(dU[p].T),
            np.ascontiguousarray(dW[p].T), db[p])
