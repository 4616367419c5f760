"""Drop-in ``rnn_forward`` / ``rnn_backward`` for CS231n's ``rnn_layers.py`` (assignment 3).

Batch-first, with weights stored ``(in, out)`` as in the assignment: ``x (N, T, D)``,
``h0 (N, H)``, ``Wx (D, H)``, ``Wh (H, H)``, ``b (H,)``; ``h_t = tanh(x_t Wx + h_{t-1} Wh + b)``.
"""
from __future__ import annotations

import numpy as np

from .. import api
from ._check import float_array, same_dtype


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
    h : array (N, T, H)
        Hidden states of every step (a new, writable array, as the original's).
    cache : object
        Opaque; pass it to :func:`rnn_backward`. It references ``x``: leave ``x`` unchanged
        until the backward pass.
    """
    x = float_array("x", x, ndim=3)
    N, T, D = x.shape
    h0 = float_array("h0", h0, shape=(N, None))
    H = h0.shape[1]
    Wx = float_array("Wx", Wx, shape=(D, H))
    Wh = float_array("Wh", Wh, shape=(H, H))
    b = float_array("b", b, shape=(H,))
    same_dtype(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b)
    if N == 0 or T == 0 or D == 0 or H == 0:
        raise ValueError(f"x (N, T, D) and h0 (N, H) must be non-empty; got x {x.shape}, h0 {h0.shape}")
    # x_t Wx + h Wh  ==  x_t Uᵀ + h Wᵀ  with U = Wxᵀ, W = Whᵀ (views; fastbptt copies them)
    hs, cache = api.rnn_forward(x, h0, Wx.T, Wh.T, b, batch_first=True, backend="cpu")
    return np.array(hs, order="C"), cache          # a writable copy, like the original's


def rnn_backward(dh, cache):
    """Backward pass through the whole sequence (the assignment's ``rnn_backward``).

    Parameters
    ----------
    dh : array (N, T, H)
        Upstream gradient of every hidden state.
    cache : object
        From :func:`rnn_forward`.

    Returns
    -------
    dx : (N, T, D), dh0 : (N, H), dWx : (D, H), dWh : (H, H), db : (H,)
    """
    if not isinstance(cache, api.LayerCache):
        raise TypeError(f"cache must come from fastbptt.compat.cs231n.rnn_forward; got {type(cache).__name__}")
    dh = float_array("dh", dh, ndim=3)
    dx, dh0, dU, dW, db = api.rnn_backward(dh, cache)
    return dx, dh0, np.ascontiguousarray(dU.T), np.ascontiguousarray(dW.T), db
