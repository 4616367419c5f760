"""Drop-in sequence functions of the deep-learning specialization's "Building your Recurrent
Neural Network - Step by Step" (course 5, week 1).

Column layout, as the assignment: ``x (n_x, m, T_x)``, ``a0 (n_a, m)``, ``parameters`` a dict.
RNN: ``Wax (n_a, n_x)``, ``Waa (n_a, n_a)``, ``Wya (n_y, n_a)``, ``ba (n_a, 1)``, ``by (n_y, 1)``.
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
