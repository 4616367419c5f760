"""Weights to and from PyTorch: ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (+ ``nn.Linear``, ``nn.Embedding``).

fastbptt keeps PyTorch's weight layout (``U`` is ``weight_ih``, ``W`` is ``weight_hh``, gate
rows in PyTorch's order: LSTM i, f, g, o; GRU r, z, n), so conversion copies arrays. The one
difference is the bias: fastbptt has one bias per gate where PyTorch has two that always appear
summed, except in the GRU's new gate, whose recurrent bias sits inside ``r ⊙ (h W_nᵀ + b_hn)``::

    rnn, lstm:  b = b_ih + b_hh
    gru:        b = [b_ir + b_hr, b_iz + b_hz, b_in],   bn = b_hn

On the way back the whole of ``b`` goes into ``bias_ih`` (``bias_hh`` is zero, GRU: ``[0, 0,
bn]``), so params → :func:`to_torch` → :func:`from_torch` is exact and a module → params →
module round trip computes the same function. Importing this module does not import torch;
the two functions do.
"""
from __future__ import annotations

import numpy as np

from .layers import CELL_GATES, param_key, param_shapes

# nn.RNNBase.mode -> (cell, activation)
_MODES = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"),
          "LSTM": ("lstm", "tanh"), "GRU": ("gru", "tanh")}
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _to_numpy(t) -> np.ndarray:
    """A C-contiguous NumPy copy of a tensor (never a view of the module's storage)."""
    return np.array(t.detach().cpu().numpy(), copy=True, order="C")


def from_torch(rnn, head=None, embedding=None):
    """Params and configuration of a PyTorch recurrent model.

    Parameters
    ----------
    rnn : torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU
        Any ``num_layers``, ``bidirectional``, ``bias``, ``batch_first`` (and
        ``nonlinearity`` for ``nn.RNN``); float32 or float64, on any device.
    head : torch.nn.Linear, optional
        The output layer over the top layer's ``[h_fwd | h_bwd]``: becomes ``V``, ``c``
        (``c`` is zero when the head has no bias).
    embedding : torch.nn.Embedding, optional
        Becomes ``E``. Its ``embedding_dim`` must be ``rnn.input_size``.

    Returns
    -------
    params : dict of C-contiguous arrays
        The flat layout of :mod:`fastbptt.layers` (``U``, ``W``, ``b``, ``bn`` for GRU, with
        the suffixes ``_l{l}`` and ``_reverse``; ``E``, ``V``, ``c`` when given), in the
        module's dtype. With ``bias=False`` the biases are zero arrays, so the keys never
        depend on it. Without ``head`` the params hold the recurrent (and embedding) weights
        only, as the layer API takes them.
    config : dict
        ``cell``, ``activation``, ``num_layers``, ``bidirectional``, ``batch_first``,
        ``bias``, ``n_in``, ``n_hidden``, ``n_out`` (``None`` without a head),
        ``vocab_size`` (``None`` without an embedding) and ``dtype`` (a NumPy dtype).
        ``to_torch(params, **config)`` rebuilds the modules; ``init_params`` and
        ``loss_and_grad`` take the entries they have keywords for.

    Raises
    ------
    TypeError
        A module of another type, or a dtype other than float32/float64.
    ValueError
        An option fastbptt does not compute (``proj_size``, ``dropout`` between layers; an
        embedding with ``max_norm``, ``scale_grad_by_freq`` or ``padding_idx``), or a head
        or embedding whose size does not fit ``rnn``.
    """
    import torch.nn as nn

    if not isinstance(rnn, nn.RNNBase) or getattr(rnn, "mode", None) not in _MODES:
        raise TypeError(f"rnn must be a torch.nn.RNN, nn.LSTM or nn.GRU; got {type(rnn).__name__}")
    cell, activation = _MODES[rnn.mode]
    name = type(rnn).__name__
    if getattr(rnn, "proj_size", 0):
        raise ValueError(f"{name} option proj_size={rnn.proj_size} is not supported "
                         "(fastbptt's LSTM has no projection); use proj_size=0")
    if rnn.dropout and rnn.num_layers > 1:
        raise ValueError(f"{name} option dropout={rnn.dropout} is not supported (fastbptt "
                         "computes the exact gradient of the deterministic model); use dropout=0")
    dtype = _module_dtype("rnn", rnn)
    H, L, D = rnn.hidden_size, rnn.num_layers, 2 if rnn.bidirectional else 1
    G = CELL_GATES[cell]

    params = {}
    if embedding is not None:
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(f"embedding must be a torch.nn.Embedding; got {type(embedding).__name__}")
        for option, default in (("max_norm", None), ("scale_grad_by_freq", False), ("padding_idx", None)):
            value = getattr(embedding, option)
            if value != default:
                raise ValueError(f"embedding option {option}={value!r} is not supported (fastbptt "
                                 f"treats E as a plain table and updates every row); use {option}={default!r}")
        if embedding.embedding_dim != rnn.input_size:
            raise ValueError(f"embedding.embedding_dim must equal rnn.input_size = {rnn.input_size}; "
                             f"got {embedding.embedding_dim}")
        _same_dtype("embedding", embedding, dtype)
        params["E"] = _to_numpy(embedding.weight)

    for layer in range(L):
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            key = lambda w: param_key(w, layer, d == 1)  # noqa: E731
            params[key("U")] = _to_numpy(getattr(rnn, "weight_ih" + sfx))
            params[key("W")] = _to_numpy(getattr(rnn, "weight_hh" + sfx))
            if rnn.bias:
                b_ih = _to_numpy(getattr(rnn, "bias_ih" + sfx))
                b_hh = _to_numpy(getattr(rnn, "bias_hh" + sfx))
            else:
                b_ih = b_hh = np.zeros(G * H, dtype=dtype)
            if cell == "gru":
                # the new gate's recurrent bias is multiplied by r: it stays apart as bn
                params[key("b")] = np.concatenate([b_ih[:2 * H] + b_hh[:2 * H], b_ih[2 * H:]])
                params[key("bn")] = np.ascontiguousarray(b_hh[2 * H:])
            else:
                params[key("b")] = b_ih + b_hh

    n_out = None
    if head is not None:
        if not isinstance(head, nn.Linear):
            raise TypeError(f"head must be a torch.nn.Linear; got {type(head).__name__}")
        if head.in_features != D * H:
            raise ValueError(f"head.in_features must be {D * H} (= {'2 · ' if D == 2 else ''}"
                             f"hidden_size {H}); got {head.in_features}")
        _same_dtype("head", head, dtype)
        n_out = head.out_features
        params["V"] = _to_numpy(head.weight)
        params["c"] = _to_numpy(head.bias) if head.bias is not None else np.zeros(n_out, dtype=dtype)

    config = dict(cell=cell, activation=activation, num_layers=L, bidirectional=D == 2,
                  batch_first=bool(rnn.batch_first), bias=bool(rnn.bias), n_in=rnn.input_size,
                  n_hidden=H, n_out=n_out,
                  vocab_size=None if embedding is None else embedding.num_embeddings, dtype=dtype)
    return params, config


def to_torch(params, *, cell="rnn", activation="tanh", num_layers=1, bidirectional=False,
             batch_first=False, bias=True, n_in=None, n_hidden=None, n_out=None, vocab_size=None,
             dtype=None):
    """PyTorch modules that compute the model held in ``params``.

    Parameters
    ----------
    params : dict of arrays
        The flat layout of :mod:`fastbptt.layers` for this configuration, exactly: a missing
        or unexpected key (e.g. ``U_l1`` with ``num_layers=1``) is an error.
    cell : {"rnn", "lstm", "gru"}
    activation : {"tanh", "relu"}
        ``nonlinearity`` of ``nn.RNN``; must be ``"tanh"`` for LSTM and GRU (PyTorch has no
        ``"sigmoid"`` RNN).
    num_layers : int
    bidirectional, batch_first : bool
        Passed to the module.
    bias : bool
        ``False`` builds a module without biases; every ``b``/``bn`` must then be zero.
    n_in, n_hidden, n_out, vocab_size : int, optional
        Read from the params' shapes; when given they must agree with them.
    dtype : float32 or float64, optional
        The modules' dtype; default the params' dtype.

    Returns
    -------
    rnn : torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU
        On the CPU. PyTorch's ``bias_ih`` holds ``b``; ``bias_hh`` is zero (GRU: ``[0, 0, bn]``).
    head : torch.nn.Linear or None
        ``V``, ``c`` when the params have them (always with a bias).
    embedding : torch.nn.Embedding or None
        ``E`` when the params have it.

    Raises
    ------
    ValueError
        Keys, shapes or a configuration that do not fit, or non-zero biases with ``bias=False``.
    TypeError
        Params that are not float32/float64 arrays of one dtype.
    """
    if cell not in CELL_GATES:
        raise ValueError(f"cell must be one of {', '.join(map(repr, CELL_GATES))}; got {cell!r}")
    allowed = ("tanh", "relu") if cell == "rnn" else ("tanh",)
    if activation not in allowed:
        raise ValueError(f"activation must be one of {', '.join(map(repr, allowed))} with cell={cell!r} "
                         f"(what PyTorch's nn.{ {'rnn': 'RNN', 'lstm': 'LSTM', 'gru': 'GRU'}[cell]} "
                         f"computes); got {activation!r}")
    if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int; got {num_layers!r}")
    if not hasattr(params, "keys") or not hasattr(params, "__getitem__"):
        raise TypeError(f"params must be a dict of arrays; got {type(params).__name__}")
    for k in ("U", "W"):
        if k not in params:
            raise ValueError(f"params is missing {k!r}")
    arrays = {k: np.asarray(params[k]) for k in params}
    dtypes = {a.dtype for a in arrays.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _FLOAT_DTYPES:
        raise TypeError("params must be float32 or float64 arrays of one dtype; got "
                        + ", ".join(f"{k}: {a.dtype}" for k, a in arrays.items()))
    dt = np.dtype(dtype) if dtype is not None else next(iter(dtypes))
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64; got {dt}")

    # sizes: from the params, checked against the configuration where it gives them
    G = CELL_GATES[cell]
    found = dict(n_in=arrays["U"].shape[-1], n_hidden=arrays["W"].shape[-1],
                 n_out=arrays["V"].shape[0] if "V" in arrays else None,
                 vocab_size=arrays["E"].shape[0] if "E" in arrays else None)
    given = dict(n_in=n_in, n_hidden=n_hidden, n_out=n_out, vocab_size=vocab_size)
    for name, value in given.items():
        if value is not None and value != found[name]:
            source = {"n_in": "U", "n_hidden": "W", "n_out": "V", "vocab_size": "E"}[name]
            raise ValueError(f"{name}={value} does not fit params: params[{source!r}] has shape "
                             f"{arrays[source].shape}" if source in arrays else
                             f"{name}={value} but params has no {source!r}")
    n_in, H = found["n_in"], found["n_hidden"]
    expected = param_shapes(cell, n_in, H, num_layers=int(num_layers), bidirectional=bool(bidirectional),
                            n_out=found["n_out"], vocab_size=found["vocab_size"])
    layout = f"cell={cell!r}, num_layers={num_layers}, bidirectional={bool(bidirectional)}"
    missing = [k for k in expected if k not in arrays]
    extra = [k for k in arrays if k not in expected]
    if missing or extra:
        raise ValueError(f"params do not fit {layout}: "
                         + "; ".join(part for part in (
                             f"missing {', '.join(map(repr, missing))}" if missing else "",
                             f"unexpected {', '.join(map(repr, extra))}" if extra else "") if part))
    for k, shape in expected.items():
        if arrays[k].shape != shape:
            raise ValueError(f"params[{k!r}] has shape {arrays[k].shape}; expected {shape} for {layout}, "
                             f"n_in={n_in}, n_hidden={H}")
    if not bias:
        for k in expected:
            if k.split("_")[0] in ("b", "bn") and np.any(arrays[k] != 0):
                raise ValueError(f"bias=False but params[{k!r}] is non-zero; a module without biases "
                                 "cannot hold it (use bias=True)")

    import torch
    import torch.nn as nn

    tdt = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[dt]

    def tensor(a):
        return torch.from_numpy(np.array(a, dtype=dt, copy=True, order="C"))

    D = 2 if bidirectional else 1
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    extra_kw = {"nonlinearity": activation} if cell == "rnn" else {}
    rnn = cls(n_in, H, num_layers=int(num_layers), bias=bool(bias), batch_first=bool(batch_first),
              bidirectional=D == 2, dtype=tdt, **extra_kw)
    head = embedding = None
    with torch.no_grad():
        for layer in range(int(num_layers)):
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                key = lambda w: param_key(w, layer, d == 1)  # noqa: E731
                getattr(rnn, "weight_ih" + sfx).copy_(tensor(arrays[key("U")]))
                getattr(rnn, "weight_hh" + sfx).copy_(tensor(arrays[key("W")]))
                if bias:
                    getattr(rnn, "bias_ih" + sfx).copy_(tensor(arrays[key("b")]))
                    b_hh = np.zeros(G * H, dtype=dt)
                    if cell == "gru":
                        b_hh[2 * H:] = arrays[key("bn")]
                    getattr(rnn, "bias_hh" + sfx).copy_(tensor(b_hh))
        if "V" in arrays:
            head = nn.Linear(D * H, found["n_out"], dtype=tdt)
            head.weight.copy_(tensor(arrays["V"]))
            head.bias.copy_(tensor(arrays["c"]))
        if "E" in arrays:
            embedding = nn.Embedding(found["vocab_size"], n_in, dtype=tdt)
            embedding.weight.copy_(tensor(arrays["E"]))
    return rnn, head, embedding


def _module_dtype(name, module) -> np.dtype:
    dts = {p.dtype for p in module.parameters()}
    if len(dts) != 1:
        raise TypeError(f"{name} must have parameters of one dtype; got {sorted(map(str, dts))}")
    tdt = next(iter(dts))
    dt = np.dtype(str(tdt).replace("torch.", "")) if str(tdt) in ("torch.float32", "torch.float64") else None
    if dt is None:
        raise TypeError(f"{name} must be float32 or float64; got {tdt}")
    return dt


def _same_dtype(name, module, dtype):
    got = _module_dtype(name, module)
    if got != dtype:
        raise TypeError(f"{name} has dtype {got}; the rnn has {dtype} (convert one with .to())")
