"""Drop-in ``LSTM`` for Karpathy's batched LSTM gist (``lstm.py``).

``X (n, b, input_size)`` time-major; one weight matrix ``WLSTM (1 + input_size + hidden_size,
4 * hidden_size)`` acting on ``[1, x_t, h_{t-1}]`` (bias in row 0), gate columns i, f, o, g.
As in the gist every output is float64 (its buffers start from ``np.zeros``).
"""
from __future__ import annotations

import numpy as np

from .. import api
from ._check import ifog_to_ifgo, real_array


class LSTM:
    """The gist's ``LSTM`` with the same static methods; forward/backward run on fastbptt."""

    @staticmethod
    def init(input_size, hidden_size, fancy_forget_bias_init=3):
        """The gist's initialisation, drawing from ``np.random`` as it does (same seed, same
        weights): ``randn / sqrt(input_size + hidden_size)``, zero biases, forget-gate biases
        ``fancy_forget_bias_init``."""
        WLSTM = np.random.randn(input_size + hidden_size + 1, 4 * hidden_size) / np.sqrt(input_size + hidden_size)
        WLSTM[0, :] = 0
        if fancy_forget_bias_init != 0:
            WLSTM[0, hidden_size:2 * hidden_size] = fancy_forget_bias_init
        return WLSTM

    @staticmethod
    def forward(X, WLSTM, c0=None, h0=None):
        """Forward pass over the sequence.

        Parameters
        ----------
        X : array (n, b, input_size)
        WLSTM : array (1 + input_size + d, 4d)
        c0, h0 : arrays (b, d), optional (zeros)

        Returns
        -------
        Hout : float64 (n, b, d)
            Hidden states of every step.
        C[-1], Hout[-1] : float64 (b, d)
            The last cell and hidden states (for the next batch, as the gist's ``cn, hn``).
        cache : dict
            For :meth:`backward`; holds ``WLSTM``, ``Hout``, ``c0``, ``h0`` like the gist's (not
            its per-step buffers ``IFOG``, ``C``, ...).
        """
        X = real_array("X", X, ndim=3)
        n, b, input_size = X.shape
        WLSTM = real_array("WLSTM", WLSTM, ndim=2)
        d = WLSTM.shape[1] // 4
        if WLSTM.shape != (1 + input_size + d, 4 * d) or d == 0:
            raise ValueError(f"WLSTM must have shape (1 + input_size + d, 4d) = ({1 + input_size + d}, "
                             f"{4 * d}) for input_size {input_size}; got shape {WLSTM.shape}")
        c0 = np.zeros((b, d)) if c0 is None else real_array("c0", c0, shape=(b, d))
        h0 = np.zeros((b, d)) if h0 is None else real_array("h0", h0, shape=(b, d))
        if n == 0:                       # the gist's loop never binds t, then returns C[t]
            raise UnboundLocalError("LSTM.forward needs at least one time step (X has n = 0)")
        if b == 0 or input_size == 0:
            raise ValueError(f"X must have b > 0 and input_size > 0; got shape {X.shape}")
        W64 = WLSTM.astype(np.float64, copy=False)
        p = ifog_to_ifgo(d)
        # [1, x, h] @ WLSTM  ==  x Uᵀ + h Wᵀ + b  with U, W, b the row blocks, gates reordered
        U, W, bias = W64[1:input_size + 1].T[p], W64[input_size + 1:].T[p], W64[0][p]
        hs, layer = api.lstm_forward(X.astype(np.float64, copy=False), h0.astype(np.float64),
                                     c0.astype(np.float64), U, W, bias, backend="cpu")
        Hout = hs                        # a fresh array, the layer keeps its own states
        cache = {"WLSTM": WLSTM, "Hout": Hout, "c0": c0, "h0": h0, "fastbptt": layer}
        return Hout, np.array(layer.c_last), Hout[-1], cache

    @staticmethod
    def backward(dHout_in, cache, dcn=None, dhn=None):
        """Backward pass.

        Parameters
        ----------
        dHout_in : array (n, b, d)
            Gradient of every hidden state.
        cache : dict
            From :meth:`forward`.
        dcn, dhn : arrays (b, d), optional
            Gradients arriving on the last cell and hidden states (from the next batch).

        Returns
        -------
        dX : (n, b, input_size), dWLSTM : like WLSTM, dc0 : (b, d), dh0 : (b, d), all float64
        """
        if not isinstance(cache, dict) or "fastbptt" not in cache:
            raise TypeError("cache must be the dict returned by fastbptt.compat.karpathy_lstm.LSTM.forward")
        n, b, d = cache["Hout"].shape
        WLSTM = cache["WLSTM"]
        input_size = WLSTM.shape[0] - d - 1
        dH = real_array("dHout_in", dHout_in, ndim=3)
        if dH.shape[1:] != (b, d):
            raise ValueError(f"dHout_in must have shape ({n}, {b}, {d}) like Hout; got shape {dH.shape}")
        if dH.shape[0] < n:              # the gist indexes dHout[t] for every step
            raise IndexError(f"dHout_in has {dH.shape[0]} steps; the forward pass ran {n}")
        dcn = None if dcn is None else real_array("dcn", dcn, shape=(b, d)).astype(np.float64)
        dhn = None if dhn is None else real_array("dhn", dhn, shape=(b, d)).astype(np.float64)
        dX, dh0, dc0, dU, dW, db = api.lstm_backward(dH[:n].astype(np.float64), cache["fastbptt"],
                                                     dh_last=dhn, dc_last=dcn)
        p = ifog_to_ifgo(d)
        dWLSTM = np.empty((1 + input_size + d, 4 * d))
        dWLSTM[0] = db[p]
        dWLSTM[1:input_size + 1] = dU[p].T
        dWLSTM[input_size + 1:] = dW[p].T
        return dX, dWLSTM, dc0, dh0
