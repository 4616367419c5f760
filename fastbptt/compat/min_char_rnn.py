"""Drop-in ``lossFun`` for Karpathy's min-char-rnn gist."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..prepared import make_loss_and_grad
from ._check import float_params, python_ids, real_array

_NAMES = ("Wxh", "Whh", "Why", "bh", "by")


def min_char_rnn(*args, **kwargs):
    """A ``lossFun(inputs, targets, hprev)`` computing min-char-rnn's loss and gradients.

    Parameters
    ----------
    namespace : dict, or Wxh, Whh, Why, bh, by : arrays
        Best, the script's ``globals()``: like the gist's ``lossFun``, the returned function
        then looks ``Wxh (H, V)``, ``Whh (H, H)``, ``Why (V, H)``, ``bh (H, 1)``, ``by (V, 1)``
        (and ``vocab_size`` if present) up at every call, so both in-place updates
        (``param += ...``) and rebinding (``Why = Why * 1.5``) are seen. Given the five arrays
        instead, it holds them and sees only in-place updates.

    Returns
    -------
    lossFun : callable
        ``lossFun(inputs, targets, hprev) -> (loss, dWxh, dWhh, dWhy, dbh, dby, h_last)`` as
        the original: ``inputs``/``targets`` are lists of character ids (negative ids count
        from the end), ``hprev (H, 1)``; the loss is summed over steps and an ``np.float64``;
        the gradients have the parameters' shapes and dtypes and are clipped to [-5, 5];
        ``h_last (H, 1)`` is float64 (the gist's one-hot inputs are float64, so NumPy
        promotes every state to float64 whatever the parameters' dtype). Extra targets are
        ignored; empty inputs raise KeyError and bad ids IndexError, as in the gist.

        One deliberate difference: the gist's softmax ``exp(y) / sum(exp(y))`` overflows to
        NaN once a logit exceeds ~709; this one is shifted and stays finite.

    Examples
    --------
    In the gist, after the ``def lossFun(...)`` block::

        lossFun = fastbptt.compat.min_char_rnn(globals())
    """
    if len(args) == 1 and not kwargs and isinstance(args[0], Mapping):
        ns = args[0]
        _params(ns)                    # names may still be missing: checked again per call
    else:
        if kwargs:
            args = args + tuple(kwargs.pop(k) for k in _NAMES[len(args):] if k in kwargs)
        if len(args) != 5 or kwargs:
            raise TypeError("min_char_rnn takes the script's globals() or the five arrays "
                            "Wxh, Whh, Why, bh, by")
        ns = dict(zip(_NAMES, args))
        _params(ns, strict=True)

    prepared = {}                 # (T, H, V) -> make_loss_and_grad's function for that shape

    def lossFun(inputs, targets, hprev):
        Wxh, Whh, Why, bh, by = params = _params(ns, strict=True)
        H, V = Wxh.shape
        ids = python_ids("inputs", inputs, V)
        T = ids.shape[0]
        if T == 0:
            raise KeyError("lossFun needs at least one input (the gist fails on hs[0])")
        if len(targets) < T:
            raise IndexError(f"targets has {len(targets)} ids for {T} inputs")
        tgt = python_ids("targets", targets[:T], V)
        h0 = real_array("hprev", hprev, shape=(H, 1))
        f64 = {n: p.astype(np.float64, copy=False) for n, p in zip(_NAMES, params)}
        # column-vector script -> fastbptt's row layout: Wxh is U, Whh is W, Why is V;
        # (n, 1) columns are read as [n] rows and hprev as one batch row
        p = {"U": f64["Wxh"], "W": f64["Whh"], "b": f64["bh"].reshape(H), "V": f64["Why"],
             "c": f64["by"].reshape(V)}
        args = (p, ids[:, None], tgt[:, None], h0.astype(np.float64).reshape(1, H))
        # a training loop calls with one shape: validate it once, then only check what changes
        fn = prepared.get((T, H, V))
        if fn is None:
            if len(prepared) >= 8:         # many lengths: keep the cache small
                prepared.clear()
            fn = prepared[T, H, V] = make_loss_and_grad(*args, backend="cpu")
        loss, g, h_last = fn(*args)
        out = []
        for key, prm in zip(("U", "W", "V", "b", "c"), params):
            d = g[key].reshape(prm.shape).astype(prm.dtype, copy=False)
            np.clip(d, -5, 5, out=d)
            out.append(d)
        return np.float64(loss), *out, h_last.reshape(H, 1)

    return lossFun


def _params(ns, strict=False):
    """The five arrays from the namespace, checked; missing names raise NameError if strict."""
    missing = [k for k in _NAMES if k not in ns]
    if missing:
        if strict:
            raise NameError(f"name {missing[0]!r} is not defined (lossFun reads Wxh, Whh, Why, "
                            "bh, by from the namespace given to min_char_rnn)")
        return None
    Whh = real_array("Whh", ns["Whh"], ndim=2)
    H = Whh.shape[0]
    Wxh = real_array("Wxh", ns["Wxh"], shape=(H, None))
    V = Wxh.shape[1]
    Why = real_array("Why", ns["Why"], shape=(V, H))
    bh = real_array("bh", ns["bh"], shape=(H, 1))
    by = real_array("by", ns["by"], shape=(V, 1))
    if Whh.shape != (H, H) or H == 0 or V == 0:
        raise ValueError(f"Whh must be square (H, H) with H > 0 and Wxh (H, V) with V > 0; "
                         f"got Whh {Whh.shape}, Wxh {Wxh.shape}")
    float_params(Wxh=Wxh, Whh=Whh, Why=Why, bh=bh, by=by)
    vs = ns.get("vocab_size", V)
    if vs != V:
        raise ValueError(f"vocab_size is {vs} but Wxh has {V} columns (the gist's one-hot "
                         "inputs would not fit Wxh)")
    return Wxh, Whh, Why, bh, by
