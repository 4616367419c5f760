"""Drop-in sequence functions of the deep-learning specialization's "Building your Recurrent
Neural Network - Step by Step" (course 5, week 1).

Column layout, as the assignment: ``x (n_x, m, T_x)``, ``a0 (n_a, m)``, ``parameters`` a dict.
RNN: ``Wax (n_a, n_x)``, ``Waa (n_a, n_a)``, ``Wya (n_y, n_a)``, ``ba (n_a, 1)``, ``by (n_y, 1)``.
LSTM: ``Wf, Wi, Wc, Wo (n_a, n_a + n_x)`` acting on ``[a_prev; x_t]``, ``bf, bi, bc, bo (n_a, 1)``,
``Wy (n_y, n_a)``, ``by (n_y, 1)``.
``caches`` is ``(list of per-step caches, x)`` with the assignment's entries (views of
fastbptt's states); the backward functions take T from ``da``, as the assignment's do.
Outputs and gradients are float64 (the assignment's ``np.zeros`` buffers).
"""
from __future__ import annotations

import numpy as np

from .. import api
from ._check import compute_dtype, float64_layer, pad_time, real_array


class _Steps(list):
    """The list of per-step caches, carrying fastbptt's layer cache for the backward pass."""

    __slots__ = ("layer", "shape")       # shape: (T_x, m, n_a) of the forward pass


def _softmax_columns(z):
    """Softmax over axis 0 of ``z (n_y, ...)``, shifted per column (never 0/0)."""
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def _get(parameters, names):
    if not hasattr(parameters, "__getitem__"):
        raise TypeError(f"parameters must be a dict; got {type(parameters).__name__}")
    missing = [k for k in names if k not in parameters]
    if missing:
        raise KeyError(f"parameters has no {missing[0]!r} (needs {', '.join(names)})")
    return [np.asarray(parameters[k]) for k in names]


def _inputs(x, a0):
    x = real_array("x", x, ndim=3)
    n_x, m, T_x = x.shape
    a0 = real_array("a0", a0, shape=(None, m))
    if 0 in x.shape or a0.shape[0] == 0:
        raise ValueError(f"x (n_x, m, T_x) and a0 (n_a, m) must be non-empty; got x {x.shape}, a0 {a0.shape}")
    return x, a0, a0.shape[0]


def rnn_forward(x, a0, parameters):
    """The assignment's ``rnn_forward``: ``a_t = tanh(Waa a_{t-1} + Wax x_t + ba)``,
    ``y_t = softmax(Wya a_t + by)``.

    Parameters
    ----------
    x : array (n_x, m, T_x)
    a0 : array (n_a, m)
    parameters : dict
        ``Wax (n_a, n_x)``, ``Waa (n_a, n_a)``, ``Wya (n_y, n_a)``, ``ba (n_a, 1)``, ``by (n_y, 1)``.

    Returns
    -------
    a : float64 array (n_a, m, T_x)
    y_pred : float64 array (n_y, m, T_x)
    caches : tuple
        ``(caches, x)`` where ``caches[t] = (a_next, a_prev, xt, parameters)``.
    """
    x, a0, n_a = _inputs(x, a0)
    n_x, m, T_x = x.shape
    Wax, Waa, Wya, ba, by = _get(parameters, ("Wax", "Waa", "Wya", "ba", "by"))
    real_array("parameters['Wax']", Wax, shape=(n_a, n_x))
    real_array("parameters['Waa']", Waa, shape=(n_a, n_a))
    real_array("parameters['Wya']", Wya, shape=(None, n_a))
    real_array("parameters['ba']", ba, shape=(n_a, 1))
    real_array("parameters['by']", by, shape=(Wya.shape[0], 1))
    dt = compute_dtype(x, a0, Wax, Waa, ba)
    # [n_x, m, T] -> time-major rows [T, m, n_x]; Wax is U, Waa is W
    hs, layer = api.rnn_forward(x.transpose(2, 1, 0).astype(dt), a0.T.astype(dt),
                                Wax.astype(dt, copy=False), Waa.astype(dt, copy=False),
                                ba.reshape(n_a).astype(dt), backend="cpu")
    z = np.matmul(hs, Wya.T) + by.reshape(-1)             # [T, m, n_y]
    y_pred = np.ascontiguousarray(_softmax_columns(z.transpose(2, 1, 0)), dtype=np.float64)
    a = np.ascontiguousarray(hs.transpose(2, 1, 0), dtype=np.float64)
    steps = _Steps((hs[t].T, a0 if t == 0 else hs[t - 1].T, x[:, :, t], parameters)
                   for t in range(T_x))
    steps.layer, steps.shape = layer, (T_x, m, n_a)
    return a, y_pred, (steps, x)


def rnn_backward(da, caches):
    """The assignment's ``rnn_backward``.

    Parameters
    ----------
    da : array (n_a, m, T)
        Upstream gradient of every hidden state; T <= T_x (the loop runs over ``da``'s T).
    caches : tuple
        From :func:`rnn_forward`.

    Returns
    -------
    gradients : dict
        ``dx (n_x, m, T)``, ``da0 (n_a, m)``, ``dWax``, ``dWaa``, ``dba (n_a, 1)``, float64.
    """
    steps, x = caches
    if not isinstance(steps, _Steps):      # caches built elsewhere: rerun the forward pass
        a1, a0, x1, parameters = steps[0]
        steps = rnn_forward(x, a0, parameters)[2][0]
    dhs, T = _da(da, steps.shape)
    dx, dh0, dU, dW, db = api.rnn_backward(dhs, float64_layer(steps.layer))
    return {"dx": np.ascontiguousarray(dx[:T].transpose(2, 1, 0)), "da0": dh0.T.copy(),
            "dWax": dU, "dWaa": dW, "dba": db.reshape(-1, 1)}


def _da(da, shape):
    """``da (n_a, m, T)`` as float64 time-major ``[T_x, m, n_a]`` (zero past T), and T."""
    T_x, m, n_a = shape
    da = real_array("da", da, ndim=3)
    if da.shape[:2] != (n_a, m):
        raise ValueError(f"da must have shape ({n_a}, {m}, T) like a; got shape {da.shape}")
    return pad_time("da", da.transpose(2, 1, 0), T_x, axis=0), da.shape[2]


_GATES = ("i", "f", "c", "o")     # the assignment's names of fastbptt's gates i, f, g, o


def lstm_forward(x, a0, parameters):
    """The assignment's ``lstm_forward`` (c0 = 0).

    Parameters
    ----------
    x : array (n_x, m, T_x)
    a0 : array (n_a, m)
    parameters : dict
        ``Wf, Wi, Wc, Wo (n_a, n_a + n_x)`` acting on ``[a_prev; x_t]``, ``bf, bi, bc, bo
        (n_a, 1)``, ``Wy (n_y, n_a)``, ``by (n_y, 1)``.

    Returns
    -------
    a : float64 (n_a, m, T_x)
    y : float64 (n_y, m, T_x)
        ``softmax(Wy a_t + by)``.
    c : float64 (n_a, m, T_x)
        Cell states.
    caches : tuple
        ``(caches, x)`` where ``caches[t] = (a_next, c_next, a_prev, c_prev, ft, it, cct, ot,
        xt, parameters)``.
    """
    x, a0, n_a = _inputs(x, a0)
    n_x, m, T_x = x.shape
    names = [f"{w}{g}" for g in _GATES for w in "Wb"] + ["Wy", "by"]
    P = dict(zip(names, _get(parameters, names)))
    for g in _GATES:
        real_array(f"parameters['W{g}']", P[f"W{g}"], shape=(n_a, n_a + n_x))
        real_array(f"parameters['b{g}']", P[f"b{g}"], shape=(n_a, 1))
    real_array("parameters['Wy']", P["Wy"], shape=(None, n_a))
    real_array("parameters['by']", P["by"], shape=(P["Wy"].shape[0], 1))
    # W_g [a_prev; x] + b_g for g in i, f, c, o  ==  x Uᵀ + h Wᵀ + b, gates stacked as rows
    f64 = {k: v.astype(np.float64, copy=False) for k, v in P.items()}
    U = np.concatenate([f64[f"W{g}"][:, n_a:] for g in _GATES])
    W = np.concatenate([f64[f"W{g}"][:, :n_a] for g in _GATES])
    b = np.concatenate([f64[f"b{g}"][:, 0] for g in _GATES])
    hs, layer = api.lstm_forward(x.transpose(2, 1, 0).astype(np.float64), a0.T.astype(np.float64),
                                 None, U, W, b, backend="cpu")
    rows = _lstm_rows(layer)                              # [T+1, m, 6 n_a]: h | c | i f g o
    z = np.matmul(hs, f64["Wy"].T) + f64["by"][:, 0]      # [T, m, n_y]
    y = np.ascontiguousarray(_softmax_columns(z.transpose(2, 1, 0)))
    a = np.ascontiguousarray(hs.transpose(2, 1, 0), dtype=np.float64)
    c = np.ascontiguousarray(rows[1:, :, n_a:2 * n_a].transpose(2, 1, 0))
    H = n_a

    def blk(t, k):
        return rows[t][:, k * H:(k + 1) * H].T

    steps = _Steps((blk(t + 1, 0), blk(t + 1, 1), a0 if t == 0 else blk(t, 0), blk(t, 1),
                    blk(t + 1, 3), blk(t + 1, 2), blk(t + 1, 4), blk(t + 1, 5), x[:, :, t], parameters)
                   for t in range(T_x))
    steps.layer, steps.shape = layer, (T_x, m, n_a)
    return a, y, c, (steps, x)


def lstm_backward(da, caches):
    """The assignment's ``lstm_backward``, with the correct gradient flow between steps.

    Parameters
    ----------
    da : array (n_a, m, T)
        Upstream gradient of every hidden state; T <= T_x (the loop runs over ``da``'s T).
    caches : tuple
        From :func:`lstm_forward`.

    Returns
    -------
    gradients : dict
        ``dx (n_x, m, T)``, ``da0 (n_a, m)``, ``dWf, dWi, dWc, dWo (n_a, n_a + n_x)``,
        ``dbf, dbi, dbc, dbo (n_a, 1)``, float64.
    """
    steps, x = caches
    if not isinstance(steps, _Steps):      # caches built elsewhere: rerun the forward pass
        first = steps[0]
        steps = lstm_forward(x, first[2], first[9])[3][0]
    dhs, T = _da(da, steps.shape)
    dx, dh0, _, dU, dW, db = api.lstm_backward(dhs, steps.layer)
    H = steps.shape[2]
    out = {"dx": np.ascontiguousarray(dx[:T].transpose(2, 1, 0)), "da0": dh0.T.copy()}
    for k, g in enumerate(_GATES):
        rows = slice(k * H, (k + 1) * H)
        out[f"dW{g}"] = np.concatenate([dW[rows], dU[rows]], axis=1)
        out[f"db{g}"] = db[rows].reshape(H, 1)
    return out


def _lstm_rows(layer):
    """The layer's saved state rows [T+1, B, 6H]: h | c | i f g o."""
    return layer.rows
