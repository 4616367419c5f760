"""The deep-learning specialization's "Building your Recurrent Neural Network - Step by Step".

Column layout: ``x (n_x, m, T_x)``, ``a0 (n_a, m)``. RNN: ``Wax (n_a, n_x)``,
``Waa (n_a, n_a)``, ``Wya (n_y, n_a)``, ``ba (n_a, 1)``, ``by (n_y, 1)``. LSTM: ``Wf, Wi, Wc, Wo
(n_a, n_a + n_x)`` acting on ``[a_prev; x_t]``, ``bf, bi, bc, bo (n_a, 1)``, ``Wy (n_y, n_a)``,
``by (n_y, 1)``. ``caches`` is ``(list of per-step caches, x)``; the backward functions take T
from ``da``. :func:`lstm_backward` is the correct one (the gradients w.r.t. ``a`` and ``c`` flow
between steps); :func:`lstm_backward_popular` is the variant of many public solutions in which
no gradient flows between steps: it reproduces the notebook's published expected output.
"""
import numpy as np


def softmax(x):
    e_x = np.exp(x - np.max(x))
    return e_x / e_x.sum(axis=0)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def rnn_cell_forward(xt, a_prev, parameters):
    Wax, Waa, Wya = parameters["Wax"], parameters["Waa"], parameters["Wya"]
    ba, by = parameters["ba"], parameters["by"]
    a_next = np.tanh(np.dot(Waa, a_prev) + np.dot(Wax, xt) + ba)
    yt_pred = softmax(np.dot(Wya, a_next) + by)
    cache = (a_next, a_prev, xt, parameters)
    return a_next, yt_pred, cache


def rnn_forward(x, a0, parameters):
    caches = []
    n_x, m, T_x = x.shape
    n_y, n_a = parameters["Wya"].shape
    a = np.zeros((n_a, m, T_x))
    y_pred = np.zeros((n_y, m, T_x))
    a_next = a0
    for t in range(T_x):
        a_next, yt_pred, cache = rnn_cell_forward(x[:, :, t], a_next, parameters)
        a[:, :, t] = a_next
        y_pred[:, :, t] = yt_pred
        caches.append(cache)
    caches = (caches, x)
    return a, y_pred, caches


def rnn_cell_backward(da_next, cache):
    (a_next, a_prev, xt, parameters) = cache
    Wax, Waa = parameters["Wax"], parameters["Waa"]
    dtanh = (1 - a_next ** 2) * da_next
    dxt = np.dot(Wax.T, dtanh)
    dWax = np.dot(dtanh, xt.T)
    da_prev = np.dot(Waa.T, dtanh)
    dWaa = np.dot(dtanh, a_prev.T)
    dba = np.sum(dtanh, axis=1, keepdims=True)
    return {"dxt": dxt, "da_prev": da_prev, "dWax": dWax, "dWaa": dWaa, "dba": dba}


def rnn_backward(da, caches):
    (caches, x) = caches
    (a1, a0, x1, parameters) = caches[0]
    n_a, m, T_x = da.shape
    n_x, m = x1.shape
    dx = np.zeros((n_x, m, T_x))
    dWax = np.zeros((n_a, n_x))
    dWaa = np.zeros((n_a, n_a))
    dba = np.zeros((n_a, 1))
    da0 = np.zeros((n_a, m))
    da_prevt = np.zeros((n_a, m))
    for t in reversed(range(T_x)):
        gradients = rnn_cell_backward(da[:, :, t] + da_prevt, caches[t])
        dx[:, :, t] = gradients["dxt"]
        da_prevt = gradients["da_prev"]
        dWax += gradients["dWax"]
        dWaa += gradients["dWaa"]
        dba += gradients["dba"]
    da0 = da_prevt
    return {"dx": dx, "da0": da0, "dWax": dWax, "dWaa": dWaa, "dba": dba}


def lstm_cell_forward(xt, a_prev, c_prev, parameters):
    Wf, bf, Wi, bi = parameters["Wf"], parameters["bf"], parameters["Wi"], parameters["bi"]
    Wc, bc, Wo, bo = parameters["Wc"], parameters["bc"], parameters["Wo"], parameters["bo"]
    Wy, by = parameters["Wy"], parameters["by"]
    concat = np.concatenate((a_prev, xt), axis=0)
    ft = sigmoid(np.dot(Wf, concat) + bf)
    it = sigmoid(np.dot(Wi, concat) + bi)
    cct = np.tanh(np.dot(Wc, concat) + bc)
    c_next = ft * c_prev + it * cct
    ot = sigmoid(np.dot(Wo, concat) + bo)
    a_next = ot * np.tanh(c_next)
    yt_pred = softmax(np.dot(Wy, a_next) + by)
    cache = (a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters)
    return a_next, c_next, yt_pred, cache


def lstm_forward(x, a0, parameters):
    caches = []
    n_x, m, T_x = x.shape
    n_y, n_a = parameters["Wy"].shape
    a = np.zeros((n_a, m, T_x))
    c = np.zeros((n_a, m, T_x))
    y = np.zeros((n_y, m, T_x))
    a_next = a0
    c_next = np.zeros(a_next.shape)
    for t in range(T_x):
        a_next, c_next, yt, cache = lstm_cell_forward(x[:, :, t], a_next, c_next, parameters)
        a[:, :, t] = a_next
        c[:, :, t] = c_next
        y[:, :, t] = yt
        caches.append(cache)
    caches = (caches, x)
    return a, y, c, caches


def lstm_cell_backward(da_next, dc_next, cache):
    (a_next, c_next, a_prev, c_prev, ft, it, cct, ot, xt, parameters) = cache
    n_a, m = a_next.shape
    tc = np.tanh(c_next)
    dc = dc_next + ot * (1 - tc ** 2) * da_next         # total gradient on c_next
    dot = da_next * tc * ot * (1 - ot)
    dcct = dc * it * (1 - cct ** 2)
    dit = dc * cct * it * (1 - it)
    dft = dc * c_prev * ft * (1 - ft)
    concat = np.concatenate((a_prev, xt), axis=0)
    grads = {"dWf": np.dot(dft, concat.T), "dWi": np.dot(dit, concat.T),
             "dWc": np.dot(dcct, concat.T), "dWo": np.dot(dot, concat.T),
             "dbf": np.sum(dft, axis=1, keepdims=True), "dbi": np.sum(dit, axis=1, keepdims=True),
             "dbc": np.sum(dcct, axis=1, keepdims=True), "dbo": np.sum(dot, axis=1, keepdims=True)}
    Wf, Wi, Wc, Wo = parameters["Wf"], parameters["Wi"], parameters["Wc"], parameters["Wo"]
    dconcat = np.dot(Wf.T, dft) + np.dot(Wi.T, dit) + np.dot(Wc.T, dcct) + np.dot(Wo.T, dot)
    grads["da_prev"] = dconcat[:n_a]
    grads["dc_prev"] = dc * ft
    grads["dxt"] = dconcat[n_a:]
    return grads


def _lstm_backward(da, caches, carry):
    (caches, x) = caches
    (a1, c1, a0, c0, f1, i1, cc1, o1, x1, parameters) = caches[0]
    n_a, m, T_x = da.shape
    n_x, m = x1.shape
    dx = np.zeros((n_x, m, T_x))
    da_prevt = np.zeros((n_a, m))
    dc_prevt = np.zeros((n_a, m))
    grads = {k: np.zeros((n_a, n_a + n_x)) for k in ("dWf", "dWi", "dWc", "dWo")}
    grads.update({k: np.zeros((n_a, 1)) for k in ("dbf", "dbi", "dbc", "dbo")})
    for t in reversed(range(T_x)):
        if carry:
            g = lstm_cell_backward(da[:, :, t] + da_prevt, dc_prevt, caches[t])
        else:
            g = lstm_cell_backward(da[:, :, t], np.zeros((n_a, m)), caches[t])
        dx[:, :, t] = g["dxt"]
        for k in grads:
            grads[k] += g[k]
        da_prevt, dc_prevt = g["da_prev"], g["dc_prev"]
    da0 = da_prevt
    return {"dx": dx, "da0": da0, **grads}


def lstm_backward(da, caches):
    return _lstm_backward(da, caches, carry=True)


def lstm_backward_popular(da, caches):
    """The widespread wrong variant: each step sees only its own ``da``, nothing from later steps."""
    return _lstm_backward(da, caches, carry=False)
