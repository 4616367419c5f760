"""Drop-in ``bptt`` for the WildML RNN tutorial's ``RNNNumpy`` (Denny Britz).

The tutorial's model has no biases and no explicit initial state:
``s_t = tanh(U[:, x_t] + W s_{t-1})`` with ``s_{-1} = 0``, ``o_t = softmax(V s_t)``, with
``U (H, vocab)``, ``V (vocab, H)``, ``W (H, H)`` and the loss summed over steps.
"""
from __future__ import annotations

import numpy as np

from .. import api
from ._check import python_ids, real_array


def bptt(x, y, U, V, W, bptt_truncate=4):
    """Gradients of ``RNNNumpy.bptt``: ``[dLdU, dLdV, dLdW]``.

    Parameters
    ----------
    x, y : sequences of int
        Input and target word ids of one sentence. As in the tutorial, negative ids count
        from the end, the loss covers the first ``len(y)`` steps (a longer ``x`` is run but
        its extra steps carry no loss; a longer ``y`` raises IndexError).
    U : array (H, vocab)
    V : array (vocab, H)
    W : array (H, H)
    bptt_truncate : int, default 4
        The tutorial's truncation: the loss of output t flows back through steps
        t, t-1, ..., max(0, t - bptt_truncate) only (``bptt_truncate + 1`` steps), i.e.
        fastbptt's ``truncate=(1, bptt_truncate + 1)``; negative: through no step.

    Returns
    -------
    list of float64 arrays
        ``[dLdU (H, vocab), dLdV (vocab, H), dLdW (H, H)]`` (float64 whatever the weights'
        dtype, as the tutorial's ``np.zeros`` accumulators).

    Examples
    --------
    In ``RNNNumpy``, make the method call the adapter::

        def bptt(self, x, y): return fastbptt.compat.wildml.bptt(x, y, self.U, self.V, self.W, self.bptt_truncate)
    """
    W = real_array("W", W, ndim=2)
    H = W.shape[0]
    U = real_array("U", U, shape=(H, None))
    vocab = U.shape[1]
    V = real_array("V", V, shape=(vocab, H))
    if W.shape != (H, H) or H == 0 or vocab == 0:
        raise ValueError(f"W must be square (H, H) with H > 0 and U (H, vocab) with vocab > 0; "
                         f"got W {W.shape}, U {U.shape}")
    if isinstance(bptt_truncate, (bool, np.bool_)) or not isinstance(bptt_truncate, (int, np.integer)):
        raise TypeError(f"bptt_truncate must be an int; got {bptt_truncate!r}")
    ids = python_ids("x", x, vocab)
    tgt = python_ids("y", y, vocab)
    T = tgt.shape[0]
    if T > ids.shape[0]:
        raise IndexError(f"y has {T} targets but x only {ids.shape[0]} inputs")
    f64 = (np.zeros(U.shape), np.zeros(V.shape), np.zeros(W.shape))
    if T == 0:
        return list(f64)
    U, V, W = (a.astype(np.float64, copy=False) for a in (U, V, W))
    k = max(int(bptt_truncate), 0)
    # the tutorial's model is fastbptt's with zero biases, one-hot inputs and h0 = 0
    params = {"U": U, "W": W, "b": np.zeros(H), "V": V, "c": np.zeros(vocab)}
    _, g, _ = api.loss_and_grad(params, ids[:T, None], tgt[:, None], truncate=(1, k + 1))
    if bptt_truncate < 0:                   # dLdV needs no backpropagation through time
        return [f64[0], g["V"], f64[2]]
    return [g["U"], g["V"], g["W"]]
