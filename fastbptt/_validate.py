"""Argument validation and normalisation for the public API.

Everything here runs before any compiled code: it turns the user's arguments into a
:class:`Problem` of C-contiguous, time-major arrays of one float dtype, or raises a
``TypeError``/``ValueError`` that names the argument, what it got and what was expected.
Nothing here writes to a caller's array.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

ACTIVATIONS = {"tanh": 0, "sigmoid": 1, "relu": 2}
LOSSES = ("cross_entropy", "mse")
REDUCTIONS = ("sum", "mean")
BACKENDS = ("cpu", "numpy", "cuda")
PARAM_KEYS = ("U", "W", "b", "V", "c")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"array of shape {a.shape} and dtype {a.dtype}"
    return f"{type(a).__name__}"


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def as_array(name: str, a) -> np.ndarray:
    """Accept an ndarray (or anything NumPy can read without guessing) without copying.

    Non-native byte order (e.g. big-endian ``>f8``) is the same number type: it is copied
    to native order, the only case that copies here.
    """
    if isinstance(a, np.ndarray):
        return _native(a)
    if a is None:
        raise TypeError(f"{name} must be an array; got None")
    if hasattr(a, "__cuda_array_interface__"):
        raise TypeError(f"{name} is a device array; pass backend='cuda' or copy it to the host")
    try:
        out = np.asarray(a)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"{name} must be array-like; got {type(a).__name__}") from exc
    if out.dtype == object:
        raise TypeError(f"{name} must be a numeric array; got {type(a).__name__} of objects")
    return _native(out)


def _native(a: np.ndarray) -> np.ndarray:
    if a.dtype.byteorder not in "=|" and a.dtype.byteorder != _NATIVE:
        return a.astype(a.dtype.newbyteorder("="))
    return a


_NATIVE = "<" if np.little_endian else ">"


def float_dtype_of_params(params, cell=None) -> np.dtype:
    if not hasattr(params, "keys") or not hasattr(params, "__getitem__"):
        raise TypeError(f"params must be a dict of arrays; got {type(params).__name__}")
    keys = PARAM_KEYS + (cell.extra if cell is not None else ())
    missing = [k for k in keys if k not in params]
    if missing:
        what = f" for cell={cell.name!r}" if cell is not None and cell.extra else ""
        raise ValueError(f"params is missing {', '.join(map(repr, missing))}; "
                         f"expected keys {', '.join(keys)}{what} (and optionally 'E')")
    dtypes = {}
    for k in keys + (("E",) if "E" in params else ()):
        a = as_array(f"params['{k}']", params[k])
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"params['{k}'] must be float32 or float64; got dtype {a.dtype}")
        dtypes[k] = a.dtype
    if len(set(dtypes.values())) != 1:
        raise TypeError("params must share one float dtype; got "
                        + ", ".join(f"{k}: {d}" for k, d in dtypes.items()))
    return next(iter(dtypes.values()))


def check_weights(U, W, b, dtype=None, names=("U", "W", "b"), cell=None, extra=None):
    """Check the recurrent weights' ranks, sizes and dtype; return (n_in, H, dtype).

    With a :class:`fastbptt.cells.Cell` the shapes are the cell's (``U [G·H, n_in]``, ...);
    ``extra`` maps the names of its extra parameters (GRU: ``bn``) to their arrays.
    """
    if cell is not None and cell.name != "rnn":
        return _check_cell_weights(cell, dict(zip("UWb", names)), {"U": U, "W": W, "b": b},
                                   extra or {}, dtype)
    nU, nW, nb = names
    for name, a, nd in ((nU, U, 2), (nW, W, 2), (nb, b, 1)):
        if a.ndim != nd:
            raise ValueError(f"{name} must be {nd}-D; got shape {a.shape}")
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64; got dtype {a.dtype}")
        if dtype is not None and a.dtype != dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but the other weights have {dtype}; "
                            "cast explicitly, fastbptt does not mix precisions")
        dtype = a.dtype
    H = W.shape[0]
    if W.shape != (H, H) or H == 0:
        raise ValueError(f"{nW} must be square [H, H] with H > 0; got shape {W.shape}")
    if U.shape[0] != H or U.shape[1] == 0:
        raise ValueError(f"{nU} must be [H, n_in] = [{H}, n_in>0]; got shape {U.shape}")
    if b.shape != (H,):
        raise ValueError(f"{nb} must be [H] = [{H}]; got shape {b.shape}")
    return U.shape[1], H, dtype


def _check_cell_weights(cell, names, arrays, extra, dtype):
    """check_weights for a gated cell: every shape is checked against the cell's."""
    arrays = dict(arrays)
    for k, (nm, a) in extra.items():
        names[k], arrays[k] = nm, a
    for k, a in arrays.items():
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{names[k]} must be float32 or float64; got dtype {a.dtype}")
        if dtype is not None and a.dtype != dtype:
            raise TypeError(f"{names[k]} has dtype {a.dtype} but the other weights have {dtype}; "
                            "cast explicitly, fastbptt does not mix precisions")
        dtype = a.dtype
    W = arrays["W"]
    G = cell.G
    if W.ndim != 2 or W.shape[1] == 0 or W.shape[0] != G * W.shape[1]:
        raise ValueError(f"cell={cell.name!r}: {names['W']} must be [{G}H, H] (H > 0); "
                         f"got shape {W.shape}")
    H = W.shape[1]
    U = arrays["U"]
    n_in = U.shape[1] if U.ndim == 2 else 0
    want = cell.shapes(max(n_in, 1), H)
    for k, a in arrays.items():
        if a.shape != want[k] or (k == "U" and n_in == 0):
            shape = "[" + ", ".join(f"{G}H = {d}" if d == G * H and G > 1 else
                                    ("n_in" if (k == "U" and j == 1) else str(d))
                                    for j, d in enumerate(want[k])) + "]"
            raise ValueError(f"cell={cell.name!r}: {names[k]} must be {shape} with H = {H}; "
                             f"got shape {a.shape}")
    return n_in, H, dtype


def parse_truncate(truncate, T: int):
    """None, k or (k1, k2) -> None or (k1, k2) with 1 <= k1 <= k2."""
    if truncate is None:
        return None
    if isinstance(truncate, (bool, np.bool_)):
        raise ValueError(f"truncate must be None, a positive int k or a pair (k1, k2); got {truncate!r}")
    if isinstance(truncate, (int, np.integer)):
        k1 = k2 = int(truncate)
    elif isinstance(truncate, (tuple, list)):
        if len(truncate) != 2 or not all(isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))
                                         for k in truncate):
            raise ValueError(f"truncate must be a pair (k1, k2) of positive ints; got {truncate!r}")
        k1, k2 = (int(k) for k in truncate)
    else:
        raise ValueError(f"truncate must be None, a positive int k or a pair (k1, k2); got {truncate!r}")
    if k1 < 1 or k2 < 1:
        raise ValueError(f"truncate values must be >= 1; got {truncate!r}")
    if k1 > k2:
        raise ValueError(f"truncate=(k1, k2) needs k1 <= k2; got k1={k1}, k2={k2}")
    return k1, k2


def parse_checkpoint(checkpoint, T: int):
    """None, 'sqrt' or s -> None or the segment length s (1 <= s)."""
    if checkpoint is None:
        return None
    if isinstance(checkpoint, str):
        if checkpoint != "sqrt":
            raise ValueError(f"checkpoint must be None, 'sqrt' or a positive int; got {checkpoint!r}")
        return max(1, int(math.ceil(math.sqrt(T))))
    if isinstance(checkpoint, (bool, np.bool_)) or not isinstance(checkpoint, (int, np.integer)):
        raise ValueError(f"checkpoint must be None, 'sqrt' or a positive int; got {checkpoint!r}")
    if checkpoint < 1:
        raise ValueError(f"checkpoint must be >= 1; got {checkpoint!r}")
    return int(checkpoint)


class _Elman:
    name, S = "rnn", 1


_ELMAN = _Elman()


@dataclass
class Problem:
    """A validated ``loss_and_grad`` call: time-major, C-contiguous, one float dtype."""

    dtype: np.dtype
    activation: str
    act: int                      # ACTIVATIONS code used by the kernels
    loss: str
    T: int
    B: int
    n_in: int
    H: int
    n_out: int
    U: np.ndarray                 # [H, n_in]
    W: np.ndarray                 # [H, H]
    b: np.ndarray                 # [H]
    V: np.ndarray                 # [n_out, H]
    c: np.ndarray                 # [n_out]
    E: Optional[np.ndarray]       # [vocab, n_in] or None
    x: Optional[np.ndarray]       # [T, B, n_in] float inputs, or None
    ids: Optional[np.ndarray]     # [T, B] int64 input ids, or None
    h0: np.ndarray                # [B, H]
    # Targets. Cross-entropy with class ids: tgt_ids [T, B] int64 (entries with weight 0 are
    # ignored). Float targets (probabilities or MSE): rows y_rows [R, n_out]; row of step
    # (t, b) is y_map[t, b], or t*B + b when y_map is None.
    tgt_ids: Optional[np.ndarray]
    y_rows: Optional[np.ndarray]
    y_map: Optional[np.ndarray]
    weights: np.ndarray           # [T, B] loss weight of each step (mask / normaliser)
    dense: bool                   # every weight is non-zero (no row selection needed)
    last: np.ndarray              # [B] int64 last valid step of each sequence, -1 if none
    masked: bool                  # some sequence ends before T-1 (h_last needs gathering)
    many_to_one: bool
    truncate: Optional[tuple] = None
    checkpoint: Optional[int] = None
    extra: dict = field(default_factory=dict)
    cell: object = None           # fastbptt.cells.Cell (the Elman cell when None)
    bn: Optional[np.ndarray] = None   # [H] GRU's b_hn, else None
    c0: Optional[np.ndarray] = None   # [B, H] LSTM's initial cell state, else None

    def __post_init__(self):
        if self.cell is None:
            from .cells import CELLS
            self.cell = CELLS["rnn"]

    @property
    def state0(self) -> np.ndarray:
        """The initial state [B, S·H]: h0, then c0 for the LSTM."""
        if self.c0 is None:
            return self.h0
        return np.ascontiguousarray(np.concatenate([self.h0, self.c0], axis=1))

    @property
    def has_E(self) -> bool:
        return self.E is not None


def _ids(name: str, a: np.ndarray, high: int, what: str, ignore=None) -> np.ndarray:
    """Validate integer ids in [0, high) and return them as int64 (copying only if needed).

    ``ignore`` (bool, a's shape): positions whose ids are never used; they are not checked
    and are replaced by 0 in the result (e.g. PyTorch's ignore index -100 in padding).
    """
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must hold integer ids; got dtype {a.dtype}")
    used = a if ignore is None or not ignore.any() else a[~ignore]
    if used.size:
        lo, hi = int(used.min()), int(used.max())
        if lo < 0 or hi >= high:
            bad = lo if lo < 0 else hi
            where = "" if used is a else " at a position that is used"
            raise ValueError(f"{name} holds id {bad}{where}, outside [0, {high}) ({what})")
    if used is not a:
        return np.where(ignore, 0, a).astype(np.int64)      # a fresh array: never the caller's
    return np.ascontiguousarray(a, dtype=np.int64)


def padding_of(last: np.ndarray, T: int) -> np.ndarray:
    """[T, B] bool: the steps after each sequence's last valid step (its padding)."""
    return np.arange(T)[:, None] > last[None, :]


def check_activation(activation, cell):
    """``activation`` is the Elman cell's; the gated cells fix theirs (only "tanh" is accepted)."""
    check_choice("activation", activation, tuple(ACTIVATIONS))
    if cell.name != "rnn" and activation != "tanh":
        raise ValueError(f"activation applies to cell='rnn' only; cell={cell.name!r} has fixed "
                         f"gate activations (sigmoid, tanh): got activation={activation!r}")


def validate_state(name, h0, B, H, dtype, cell):
    """h0 (and c0) -> (h0 [B, H], c0 [B, H] or None), contiguous, of the params' dtype.

    The LSTM takes None, an array [B, H] (c0 = 0) or a tuple (h0, c0); other cells None or [B, H].
    """
    c0 = None
    if cell.S == 2:
        if isinstance(h0, tuple):
            if len(h0) != 2:
                raise ValueError(f"{name} for cell={cell.name!r} must be None, an array [B, H] or a "
                                 f"tuple (h0, c0); got a tuple of {len(h0)} items")
            h0, c0 = h0
        c0 = validate_state(f"{name}[1] (c0)" if c0 is not None else name, c0, B, H, dtype,
                            _ELMAN)[0] if c0 is not None else np.zeros((B, H), dtype=dtype)
    if h0 is None:
        return np.zeros((B, H), dtype=dtype), c0
    if isinstance(h0, tuple):
        raise TypeError(f"{name} must be an array [B, H] for cell={cell.name!r} (a tuple (h0, c0) "
                        "is the LSTM's state); got a tuple")
    h0a = as_array(name, h0)
    if h0a.dtype != dtype:
        raise TypeError(f"{name} has dtype {h0a.dtype} but params have {dtype}; "
                        "cast explicitly, fastbptt does not mix precisions")
    if h0a.shape != (B, H):
        raise ValueError(f"{name} must be [B, H] = [{B}, {H}]; got shape {h0a.shape}")
    return np.ascontiguousarray(h0a), c0


def validate_loss_and_grad(params, inputs, targets, h0, activation, loss, reduction, mask,
                           batch_first, backend, truncate=None, checkpoint=None,
                           cell="rnn") -> Problem:
    from . import cells
    cell = cells.get(cell)
    check_activation(activation, cell)
    check_choice("loss", loss, LOSSES)
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("backend", backend, BACKENDS)
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be a bool; got {batch_first!r}")

    dtype = float_dtype_of_params(params, cell)
    U, W, b = (as_array(f"params['{k}']", params[k]) for k in ("U", "W", "b"))
    V, c = as_array("params['V']", params["V"]), as_array("params['c']", params["c"])
    extra = {k: (f"params['{k}']", as_array(f"params['{k}']", params[k])) for k in cell.extra}
    n_in, H, _ = check_weights(U, W, b, dtype, names=("params['U']", "params['W']", "params['b']"),
                               cell=cell, extra=extra)
    if V.ndim != 2 or V.shape[1] != H or V.shape[0] == 0:
        raise ValueError(f"params['V'] must be [n_out, H] = [n_out>0, {H}]; got shape {V.shape}")
    n_out = V.shape[0]
    if c.shape != (n_out,):
        raise ValueError(f"params['c'] must be [n_out] = [{n_out}]; got shape {c.shape}")
    E = None
    if "E" in params and params["E"] is not None:
        E = as_array("params['E']", params["E"])
        if E.ndim != 2 or E.shape[1] != n_in or E.shape[0] == 0:
            raise ValueError(f"params['E'] must be [vocab, n_in] = [vocab>0, {n_in}]; got shape {E.shape}")

    # ---- inputs: float [T, B, n_in] or ids [T, B] ----
    inputs = as_array("inputs", inputs)
    x = ids = None
    if np.issubdtype(inputs.dtype, np.integer) and inputs.dtype != np.bool_:
        if inputs.ndim != 2:
            raise ValueError(f"inputs of integer ids must be 2-D [{'B, T' if batch_first else 'T, B'}]; "
                             f"got shape {inputs.shape}")
        if batch_first:
            inputs = inputs.T
        ids = inputs                  # range-checked below, once the padding is known
        T, B = ids.shape
    elif inputs.dtype in FLOAT_DTYPES or np.issubdtype(inputs.dtype, np.floating):
        if inputs.ndim != 3:
            raise ValueError(f"inputs of floats must be 3-D [{'B, T' if batch_first else 'T, B'}, n_in]; "
                             f"got shape {inputs.shape} (pass integer ids as a 2-D int array)")
        if inputs.dtype != dtype:
            raise TypeError(f"inputs has dtype {inputs.dtype} but params have {dtype}; "
                            "cast explicitly, fastbptt does not mix precisions")
        if batch_first:
            inputs = inputs.transpose(1, 0, 2)
        if inputs.shape[2] != n_in:
            raise ValueError(f"inputs must have n_in = {n_in} features (columns of U); got shape "
                             f"{inputs.shape if not batch_first else inputs.transpose(1, 0, 2).shape}")
        if E is not None:
            raise ValueError("params has 'E', the embedding table for integer ids, but inputs are "
                             f"floats of shape {inputs.shape}: pass integer ids [T, B], or params "
                             "without 'E' (E would get no gradient)")
        x = np.ascontiguousarray(inputs)
        T, B = x.shape[:2]
    else:
        raise TypeError(f"inputs must be float [T, B, n_in] or integer ids [T, B]; got dtype {inputs.dtype}")
    if T == 0 or B == 0:
        raise ValueError(f"inputs must have T > 0 and B > 0; got T={T}, B={B}")

    # ---- mask ----
    if mask is not None:
        m = as_array("mask", mask)
        if m.ndim != 2:
            raise ValueError(f"mask must be 2-D [{'B, T' if batch_first else 'T, B'}]; got shape {m.shape}")
        if m.shape != ((B, T) if batch_first else (T, B)):
            want = f"[B, T] = [{B}, {T}] (batch_first=True)" if batch_first else f"[T, B] = [{T}, {B}] (time-major)"
            raise ValueError(f"mask must be {want}; got shape {m.shape}")
        if batch_first:
            m = m.T
        if not (m.dtype == np.bool_ or np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
            raise TypeError(f"mask must be bool, int or float; got dtype {m.dtype}")
        if m.dtype != np.bool_ and not np.all((m == 0) | (m == 1)):
            raise ValueError("mask must hold only 0 and 1 (or False/True)")
        valid = m.astype(bool)
    else:
        valid = None

    # last valid step of every sequence; h_last is taken there
    if valid is None:
        last = np.full(B, T - 1, dtype=np.int64)
    else:
        any_valid = valid.any(axis=0)
        last = np.where(any_valid, T - 1 - np.argmax(valid[::-1], axis=0), -1).astype(np.int64)
    masked = bool(np.any(last != T - 1))
    # Padding (the steps after a sequence's last valid step) influences nothing: its ids are
    # neither checked nor used (replaced by 0), its float inputs are replaced by 0,
    # and the engine keeps its states out of every sum. Mid-sequence mask-0 steps are not
    # padding: they drive the recurrence that later valid steps depend on.
    pad = padding_of(last, T) if masked else None
    if ids is not None:
        vocab = E.shape[0] if E is not None else n_in
        ids = _ids("inputs", ids, vocab,
                   f"the vocabulary size, {'rows of E' if E is not None else 'columns of U (one-hot)'}",
                   ignore=pad)
    elif pad is not None:
        # a copy, never the caller's array; zeros even for finite values: a huge one could
        # still overflow a gated cell's pre-activation to inf - inf = NaN in its step cache
        x = np.where(pad[:, :, None], x.dtype.type(0), x)

    # ---- targets ----
    targets = as_array("targets", targets)
    is_int_t = np.issubdtype(targets.dtype, np.integer) and targets.dtype != np.bool_
    if loss == "mse" and not np.issubdtype(targets.dtype, np.floating):
        raise TypeError(f"targets for loss='mse' must be floats [T, B, n_out] or [B, n_out]; got dtype {targets.dtype}")
    if not is_int_t and not np.issubdtype(targets.dtype, np.floating):
        raise TypeError(f"targets must be integer class ids or float rows; got dtype {targets.dtype}")
    if not is_int_t and targets.dtype != dtype:
        raise TypeError(f"targets has dtype {targets.dtype} but params have {dtype}; "
                        "cast explicitly, fastbptt does not mix precisions")
    per_step_nd = 2 if is_int_t else 3
    if not is_int_t and loss == "cross_entropy" and targets.shape in ((B,), (B, T) if batch_first else (T, B)) \
            and targets.shape != (B, n_out):
        raise TypeError(f"targets of shape {targets.shape} hold floats: class ids must be an integer "
                        "array (e.g. targets.astype(np.int64)); float targets are probability rows "
                        f"[{'B, T' if batch_first else 'T, B'}, n_out] or [B, n_out]")
    if targets.ndim == per_step_nd:
        many_to_one = False
        want = (T, B) if is_int_t else (T, B, n_out)
        given = (want[1], want[0]) + want[2:] if batch_first else want
        if targets.shape != given:
            raise ValueError(f"targets must be {'class ids' if is_int_t else 'rows'} of shape "
                             f"{list(given)} ({'batch_first=True' if batch_first else 'time-major'}); "
                             f"got shape {targets.shape}")
        if batch_first:
            targets = targets.swapaxes(0, 1)
    elif targets.ndim == per_step_nd - 1:
        many_to_one = True
        want = (B,) if is_int_t else (B, n_out)
        if targets.shape != want:
            raise ValueError(f"many-to-one targets must be of shape {list(want)}; got shape {targets.shape}")
    else:
        kind = "class ids [T, B] or [B]" if is_int_t else "float rows [T, B, n_out] or [B, n_out]"
        raise ValueError(f"targets must be {kind}; got shape {targets.shape}")

    # per-step loss weights: which (t, b) carry loss, and the reduction's normaliser
    if many_to_one:
        weights = np.zeros((T, B), dtype=dtype)
        has = last >= 0
        weights[last[has], np.nonzero(has)[0]] = 1
    else:
        weights = np.ones((T, B), dtype=dtype) if valid is None else valid.astype(dtype)
    n_valid = int(np.count_nonzero(weights))
    if reduction == "mean" and n_valid > 0:
        weights = weights / dtype.type(n_valid)
    dense = n_valid == T * B

    tgt_ids = y_rows = y_map = None
    if is_int_t:
        # only targets that carry loss are checked and used (others, e.g. -100, become 0)
        if many_to_one:
            has = last >= 0
            ids_t = _ids("targets", targets, n_out, "n_out classes, rows of V", ignore=~has)
            tgt_ids = np.zeros((T, B), dtype=np.int64)
            tgt_ids[last[has], np.nonzero(has)[0]] = ids_t[has]
        else:
            tgt_ids = _ids("targets", targets, n_out, "n_out classes, rows of V",
                           ignore=None if dense else weights == 0)
    else:
        if many_to_one:
            y_rows = np.ascontiguousarray(targets)
            y_map = np.broadcast_to(np.arange(B, dtype=np.int64), (T, B))
        else:
            y_rows = np.ascontiguousarray(targets).reshape(T * B, n_out)

    # ---- h0 (and c0) ----
    h0a, c0a = validate_state("h0", h0, B, H, dtype, cell)

    C = np.ascontiguousarray
    return Problem(
        dtype=dtype, activation=activation, act=ACTIVATIONS[activation], loss=loss,
        T=T, B=B, n_in=n_in, H=H, n_out=n_out,
        U=C(U), W=C(W), b=C(b), V=C(V), c=C(c), E=None if E is None else C(E),
        x=x, ids=ids, h0=h0a, tgt_ids=tgt_ids, y_rows=y_rows, y_map=y_map,
        weights=weights, dense=dense, last=last, masked=masked, many_to_one=many_to_one,
        truncate=parse_truncate(truncate, T), checkpoint=parse_checkpoint(checkpoint, T),
        cell=cell, bn=C(extra["bn"][1]) if "bn" in extra else None, c0=c0a,
    )
