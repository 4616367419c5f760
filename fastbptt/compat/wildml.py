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
    """The tutorial's model is fastbptt's with zero biases, one-hot inputs and h0 = 0."""
    H, vocab = U.shape
    params = {"U": U, "W": W, "b": np.zeros(H, dtype), "V": V, "c": np.zeros(vocab, dtype)}
    _, grads, _ = api.loss_and_grad(params, ids[:, None], tgt[:, None], truncate=(1, k + 1))
    return [grads["U"], grads["V"], grads["W"]]
