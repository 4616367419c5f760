"""WildML RNN tutorial (Denny Britz), ``RNNNumpy``: a bias-free tanh RNN over word ids.

``s_t = tanh(U[:, x_t] + W s_{t-1})``, ``o_t = softmax(V s_t)``; ``U (H, vocab)``,
``V (vocab, H)``, ``W (H, H)``. The states live in ``s`` of T+1 rows whose last row stays 0,
so ``s[-1]`` is the initial state. ``bptt`` backpropagates each output's loss through steps
t, t-1, ..., max(0, t - bptt_truncate) only.
"""
import numpy as np


def softmax(x):
    e = np.exp(x - np.max(x))
    return e / np.sum(e)


def forward_propagation(x, U, V, W):
    T = len(x)
    H, vocab = U.shape
    s = np.zeros((T + 1, H))          # s[-1] (= s[T]) is the zero initial state
    o = np.zeros((T, vocab))
    for t in range(T):
        s[t] = np.tanh(U[:, x[t]] + W.dot(s[t - 1]))
        o[t] = softmax(V.dot(s[t]))
    return o, s


def calculate_loss(x, y, U, V, W):
    o, _ = forward_propagation(x, U, V, W)
    return -np.sum(np.log(o[np.arange(len(y)), y]))


def bptt(x, y, U, V, W, bptt_truncate=4):
    T = len(y)
    o, s = forward_propagation(x, U, V, W)
    dLdU, dLdV, dLdW = np.zeros(U.shape), np.zeros(V.shape), np.zeros(W.shape)
    delta_o = o
    delta_o[np.arange(len(y)), y] -= 1.0
    for t in np.arange(T)[::-1]:
        dLdV += np.outer(delta_o[t], s[t].T)
        delta_t = V.T.dot(delta_o[t]) * (1 - s[t] ** 2)
        for step in np.arange(max(0, t - bptt_truncate), t + 1)[::-1]:
            dLdW += np.outer(delta_t, s[step - 1])     # s[-1] is the zero initial state
            dLdU[:, x[step]] += delta_t
            delta_t = W.T.dot(delta_t) * (1 - s[step - 1] ** 2)
    return [dLdU, dLdV, dLdW]
