"""Drop-in ``lossFun`` for Karpathy's min-char-rnn gist."""
from __future__ import annotations

import numpy as np

from .. import api
from ._check import float_array, id_sequence, same_dtype


def min_char_rnn(Wxh, Whh, Why, bh, by):
    """A ``lossFun(inputs, targets, hprev)`` computing min-char-rnn's loss and gradients.

    Parameters
    ----------
    Wxh : array (H, V)
    Whh : array (H, H)
    Why : array (V, H)
    bh : array (H, 1)
    by : array (V, 1)
        The script's parameter arrays. They are held by reference and read at every call,
        so the script's in-place Adagrad updates (``param += ...``) are seen; replacing a
        name with a new array (``Wxh = Wxh - ...``) is not, as with the original closure.

    Returns
    -------
    lossFun : callable
        ``lossFun(inputs, targets, hprev) -> (loss, dWxh, dWhh, dWhy, dbh, dby, h_last)``
        exactly as the original: ``inputs`` and ``targets`` are lists of character ids,
        ``hprev (H, 1)``; the loss is summed over steps, the gradients have the parameters'
        shapes and are clipped element-wise to [-5, 5], ``h_last`` is ``(H, 1)``.

    Examples
    --------
    In the gist, replace the ``def lossFun(...)`` block (or add after it)::

        lossFun = fastbptt.compat.min_char_rnn(Wxh, Whh, Why, bh, by)
    """
    Whh = float_array("Whh", Whh, ndim=2)
    H = Whh.shape[0]
    Wxh = float_array("Wxh", Wxh, shape=(H, None))
    V = Wxh.shape[1]
    Why = float_array("Why", Why, shape=(V, H))
    bh = float_array("bh", bh, shape=(H, 1))
    by = float_array("by", by, shape=(V, 1))
    if Whh.shape != (H, H) or H == 0 or V == 0:
        raise ValueError(f"Whh must be square (H, H) with H > 0 and Wxh (H, V) with V > 0; "
                         f"got Whh {Whh.shape}, Wxh {Wxh.shape}")
    dtype = same_dtype(Wxh=Wxh, Whh=Whh, Why=Why, bh=bh, by=by)

    def lossFun(inputs, targets, hprev):
        ids = id_sequence("inputs", inputs, V)
        tgt = id_sequence("targets", targets, V)
        if tgt.shape != ids.shape:
            raise ValueError(f"targets must have one id per input: got {tgt.shape[0]} targets "
                             f"for {ids.shape[0]} inputs")
        h0 = float_array("hprev", hprev, shape=(H, 1))
        if h0.dtype != dtype:
            raise TypeError(f"hprev has dtype {h0.dtype} but the parameters have {dtype}")
        if ids.shape[0] == 0:          # the original loops zero times
            z = [np.zeros_like(a) for a in (Wxh, Whh, Why, bh, by)]
            return 0.0, *z, np.copy(h0)
        # column-vector script -> fastbptt's row layout: Wxh is U, Whh is W, Why is V;
        # the (n, 1) columns are read as [n] rows and hprev as one batch row (all views)
        params = {"U": Wxh, "W": Whh, "b": bh.reshape(H), "V": Why, "c": by.reshape(V)}
        loss, g, h_last = api.loss_and_grad(params, ids[:, None], tgt[:, None], h0.reshape(1, H),
                                            backend="cpu")
        out = (g["U"], g["W"], g["V"], g["b"].reshape(H, 1), g["c"].reshape(V, 1))
        for d in out:                  # the original clips before returning (fresh arrays here)
            np.clip(d, -5, 5, out=d)
        return loss, *out, h_last.reshape(H, 1)

    return lossFun
