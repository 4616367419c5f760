"""The layer API: one recurrent layer of any cell, forward and backward, on explicit state.

``rnn_forward``/``lstm_forward``/``gru_forward`` run the layer over a sequence and return the
hidden states and an opaque cache; the matching ``*_backward`` take ∂L/∂h_t for every step
(and optionally the gradient on the final state, for seq2seq encoders) and return every
gradient. One generic implementation serves every cell and backend; the public functions in
:mod:`fastbptt.api` only name the arguments.
"""
from __future__ import annotations

import numpy as np

from . import _validate as V
from . import cells as _cells


class LayerCache:
    """What a layer's backward pass needs from its forward pass (treat it as opaque).

    Attributes
    ----------
    h_last : array [B, H]
        The state after the last step. ``c_last`` too for the LSTM.
    """

    __slots__ = ("cell", "x", "rows", "U", "W", "b", "bn", "act", "activation", "backend",
                 "batch_first", "h_last", "c_last", "device")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


def _check_flag(name, v):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {v!r}")


def forward(cell, x, h0, c0, U, W, b, bn=None, *, activation="tanh", batch_first=False,
            backend="cpu", alloc=None):
    """Validate, then run the layer; returns (hs [T, B, H] or [B, T, H], LayerCache).

    ``alloc(shape, dtype)`` (CPU only, for fastbptt's own stacked models): the cache's state
    rows come from it, and hs is then a view of them (time-major), not a copy.
    """
    cl = _cells.get(cell)
    V.check_activation(activation, cl)
    V.check_choice("backend", backend, ("cpu", "numpy", "cuda"))
    _check_flag("batch_first", batch_first)
    if backend == "cuda":
        from . import cuda
        hs, f = cuda.layer_forward(cl, x, h0, c0, U, W, b, bn, activation=activation,
                                   batch_first=batch_first)
        return hs, LayerCache(cell=cl, activation=activation, backend="cuda",
                              batch_first=batch_first, **f)
    U, W, b = (V.as_array(n, a) for n, a in (("U", U), ("W", W), ("b", b)))
    extra = {"bn": ("bn", V.as_array("bn", bn))} if "bn" in cl.extra else {}
    n_in, H, dtype = V.check_weights(U, W, b, cell=cl, extra=extra)
    x = V.as_array("x", x)
    if x.ndim != 3:
        raise ValueError(f"x must be 3-D [{'B, T' if batch_first else 'T, B'}, n_in]; got shape {x.shape}")
    if x.dtype != dtype:
        raise TypeError(f"x has dtype {x.dtype} but the weights have {dtype}; "
                        "cast explicitly, fastbptt does not mix precisions")
    if batch_first:
        x = x.transpose(1, 0, 2)
    T, B, nx = x.shape
    if nx != n_in:
        raise ValueError(f"x must have n_in = {n_in} features (columns of U); got shape "
                         f"{x.transpose(1, 0, 2).shape if batch_first else x.shape}")
    if T == 0 or B == 0:
        raise ValueError(f"x must have T > 0 and B > 0; got T={T}, B={B}")
    plain = _cells.CELLS["rnn"]                       # one [B, H] array or None each
    h0a = V.validate_state("h0", h0, B, H, dtype, plain)[0]
    c0a = V.validate_state("c0", c0, B, H, dtype, plain)[0] if cl.S == 2 else None
    if cl.S == 1 and c0 is not None:
        raise TypeError(f"c0 applies to the LSTM only; this is a {cl.name} layer")
    x = np.ascontiguousarray(x)
    U, W, b = (np.ascontiguousarray(a) for a in (U, W, b))
    bn = np.ascontiguousarray(extra["bn"][1]) if extra else None
    act = V.ACTIVATIONS[activation]
    state0 = h0a if cl.S == 1 else np.concatenate([h0a, c0a], axis=1)
    if backend == "numpy":
        from .reference import layer_forward
        rows = layer_forward(cl, x, state0, U, W, b, bn, activation)   # (states, caches)
        hs = np.stack([s[0] for s in rows[0][1:]])
        last = np.concatenate(rows[0][-1], axis=1)
    else:
        from .cpu.layer import forward as cpu_forward
        rows = cpu_forward(cl, x, state0, U, W, b, bn, act, alloc)
        hs = rows[1:, :, :H]
        if alloc is None:
            hs = hs.copy()                           # a copy: the cache stays the layer's own
        last = rows[T, :, :cl.S * H]
    cache = LayerCache(cell=cl, x=x, rows=rows, U=U, W=W, b=b, bn=bn, act=act,
                       activation=activation, backend=backend, batch_first=batch_first,
                       h_last=last[:, :H].copy(), c_last=last[:, H:].copy() if cl.S == 2 else None)
    if batch_first:
        hs = np.ascontiguousarray(hs.transpose(1, 0, 2))
    return hs, cache


def backward(cell, dhs, cache, dh_last=None, dc_last=None, input_grad=True):
    """Validate, then backpropagate; returns (dx, dstate0 [B, S·H], dU, dW, db, dbn).

    ``input_grad=False``: dx is None and its product (δ U, as big as the input projection)
    is not computed, e.g. for a first layer fed by data.
    """
    if not isinstance(cache, LayerCache) or cache.cell is None or cache.cell.name != cell:
        want = {"rnn": "rnn_forward", "lstm": "lstm_forward", "gru": "gru_forward"}[cell]
        got = (f"a cache of {cache.cell.name}_forward" if isinstance(cache, LayerCache)
               else type(cache).__name__)
        raise TypeError(f"cache must be the cache returned by {want}; got {got}")
    if not isinstance(input_grad, (bool, np.bool_)):
        raise TypeError(f"input_grad must be a bool; got {input_grad!r}")
    input_grad = bool(input_grad)
    if cache.backend == "cuda":
        from . import cuda
        return cuda.layer_backward(dhs, cache, dh_last, dc_last, input_grad=input_grad)
    cl, rows = cache.cell, cache.rows
    T, B = cache.x.shape[:2]
    H = cache.W.shape[1]
    dtype = cache.W.dtype
    dhs = V.as_array("dhs", dhs)
    if dhs.dtype != dtype:
        raise TypeError(f"dhs has dtype {dhs.dtype} but the layer runs in {dtype}")
    want = (B, T, H) if cache.batch_first else (T, B, H)
    if dhs.shape != want:
        raise ValueError(f"dhs must be {list(want)}, the shape of hs; got shape {dhs.shape}")
    if cache.batch_first:
        dhs = dhs.transpose(1, 0, 2)
    dhs = np.ascontiguousarray(dhs)
    dstate = np.zeros((B, cl.S * H), dtype=dtype)
    for j, (name, d) in enumerate((("dh_last", dh_last), ("dc_last", dc_last))):
        if d is None:
            continue
        if j == 1 and cl.S == 1:
            raise TypeError(f"dc_last applies to the LSTM only; this is a {cl.name} layer")
        d = V.as_array(name, d)
        if d.dtype != dtype:
            raise TypeError(f"{name} has dtype {d.dtype} but the layer runs in {dtype}")
        if d.shape != (B, H):
            raise ValueError(f"{name} must be [B, H] = [{B}, {H}]; got shape {d.shape}")
        dstate[:, j * H:(j + 1) * H] = d
    if cache.backend == "numpy":
        from .reference import layer_backward
        dx, dstate, dU, dW, db, dbn = layer_backward(cl, dhs, dstate, cache.x, rows, cache.U,
                                                     cache.W, cache.b, cache.bn, cache.activation,
                                                     input_grad)
    else:
        from .cpu.layer import backward as cpu_backward
        dx, dU, dW, db, dbn = cpu_backward(cl, dhs, dstate, cache.x, rows, cache.U, cache.W,
                                           cache.bn, cache.act, input_grad)
    if cache.batch_first and dx is not None:
        dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
    return dx, dstate, dU, dW, db, dbn
