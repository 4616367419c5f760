"""Drop-in ``bptt`` for the WildML RNN tutorial's ``RNNNumpy`` (Denny Britz).

The tutorial's model has no biases and no explicit initial state:
``s_t = tanh(U[:, x_t] + W s_{t-1})`` with ``s_{-1} = 0``, ``o_t = softmax(V s_t)``, with
``U (H, vocab)``, ``V (vocab, H)``, ``W (H, H)`` and the loss summed over steps.
"""
from __future__ import annotations

import numpy as np

from .. import api
from ._check import float_array, id_sequence, same_dtype


def bptt(x, y, U, V, W, bptt_truncate=4):
    """Gradients of ``RNNNumpy.bptt``: ``[dLdU, dLdV, dLdW]``.

    Parameters
    ----------
    x, y : sequences of int
        Input and target word ids of one sentence (equal lengths).
    U : array (H, vocab)
    V : array (vocab, H)
    W : array (H, H)
    bptt_truncate : int, default 4
        The tutorial's truncation: the loss of output t flows back through steps
        t, t-1, ..., max(0, t - bptt_truncate) only (``bptt_truncate + 1`` steps).
        fastbptt's ``truncate=(1, bptt_truncate + 1)``.

    Returns
    -------
    list of arrays
        ``[dLdU (H, vocab), dLdV (vocab, H), dLdW (H, H)]``.

    Examples
    --------
    In ``RNNNumpy``, make the method call the adapter::

        def bptt(self, x, y): return fastbptt.compat.wildml.bptt(x, y, self.U, self.V, self.W, self.bptt_truncate)
    """
    W = float_array("W", W, ndim=2)
    H = W.shape[0]
    U = float_array("U", U, shape=(H, None))
    vocab = U.shape[1]
    V = float_array("V", V, shape=(vocab, H))
    if W.shape != (H, H) or H == 0 or vocab == 0:
        raise ValueError(f"W must be square (H, H) with H > 0 and U (H, vocab) with vocab > 0; "
                         f"got W {W.shape}, U {U.shape}")
    dtype = same_dtype(U=U, V=V, W=W)
    if isinstance(bptt_truncate, (bool, np.bool_)) or not isinstance(bptt_truncate, (int, np.integer)) \
            or bptt_truncate < 0:
        raise ValueError(f"bptt_truncate must be an int >= 0; got {bptt_truncate!r}")
    ids = id_sequence("x", x, vocab)
    tgt = id_sequence("y", y, vocab)
    if tgt.shape != ids.shape:
        raise ValueError(f"y must have one id per input: got {tgt.shape[0]} targets for {ids.shape[0]} inputs")
    T = ids.shape[0]
    if T == 0:
        return [np.zeros(U.shape, dtype), np.zeros(V.shape, dtype), np.zeros(W.shape, dtype)]
    return _bptt(ids, tgt, U, V, W, int(bptt_truncate), dtype)


def _bptt(ids, tgt, U, V, W, k, dtype):
    """Exact truncated BPTT with the output layer batched over all steps.

    ``loss_and_grad(..., truncate=(1, k + 1))`` gives the same numbers, but it runs the
    output layer once per one-step block: with vocab 8000 that is T separate products with
    the 6.4 MB ``V`` and T separate ``dV`` updates, which is what the original spends its
    time on. Here the softmax layer is three large matrix products over all T steps, and the
    recurrent part is fastbptt's layer API run once over a batch of T windows:

    window t holds steps a_t .. a_t + L - 1 with a_t = max(0, t - k), L = min(k + 1, T),
    starts from the state s_{a_t - 1} and receives ∂L_t/∂s_t at its step t - a_t only.
    Steps of a window after t get no gradient and so contribute exactly zero.
    """
    T = ids.shape[0]
    H = W.shape[0]
    eye = np.eye(H, dtype=dtype)
    zero_b = np.zeros(H, dtype=dtype)
    x_rows = U.T[ids]                                  # [T, H] = U[:, x_t]: the one-hot input's projection

    # forward over the sentence: s_0 .. s_{T-1}, s_{-1} = 0 (identity input weights, no bias)
    s, _ = api.rnn_forward(x_rows[:, None, :], None, eye, W, zero_b, backend="cpu")
    s = s[:, 0, :]                                     # [T, H]

    # softmax output layer over all steps at once
    o = s @ V.T                                        # [T, vocab]
    o -= o.max(axis=1, keepdims=True)
    np.exp(o, out=o)
    o /= o.sum(axis=1, keepdims=True)                  # probabilities
    o[np.arange(T), tgt] -= 1.0                        # ∂L/∂(V s_t)
    dV = o.T @ s                                       # [vocab, H]
    g = o @ V                                          # [T, H] = ∂L_t/∂s_t

    # the truncated recurrent part: one batch of T windows of L steps
    L = min(k + 1, T)
    t = np.arange(T)
    a = np.maximum(0, t - k)                           # first step of each window  [T]
    steps = a[None, :] + np.arange(L)[:, None]         # [L, T] step index of (j, window)
    h0 = np.zeros((T, H), dtype=dtype)
    h0[a > 0] = s[a[a > 0] - 1]
    dhs = np.zeros((L, T, H), dtype=dtype)
    dhs[t - a, t] = g
    _, cache = api.rnn_forward(x_rows[steps], h0, eye, W, zero_b, backend="cpu")
    dx, _, _, dW, _ = api.rnn_backward(dhs, cache)     # dx = da (identity input weights)

    # dU[:, x_t] += da_t: sum the rows per distinct id first (repeats add), then write columns
    uniq, inv = np.unique(ids[steps].ravel(), return_inverse=True)
    cols = np.zeros((uniq.shape[0], H), dtype=dtype)
    np.add.at(cols, inv.ravel(), dx.reshape(-1, H))
    dU = np.zeros(U.shape, dtype=dtype)
    dU[:, uniq] = cols.T
    return [dU, dV, dW]
