"""Shared argument checks for the adapters (messages use the original scripts' names)."""
from __future__ import annotations

import numpy as np

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(name: str, a, shape=None, ndim=None) -> np.ndarray:
    """``a`` as an ndarray of float32/float64 (no copy), checked against ``shape``/``ndim``.

    ``shape`` may hold None for a free dimension.
    """
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be a float32 or float64 array; got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {a.shape}")
    if shape is not None:
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
            want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}; got shape {a.shape}")
    return a


def same_dtype(**arrays) -> np.dtype:
    dts = {k: a.dtype for k, a in arrays.items()}
    if len(set(dts.values())) != 1:
        raise TypeError("arrays must share one float dtype (fastbptt does not mix precisions); got "
                        + ", ".join(f"{k}: {d}" for k, d in dts.items()))
    return next(iter(dts.values()))


def id_sequence(name: str, a, high: int) -> np.ndarray:
    """A 1-D sequence of integer ids in [0, high) as int64 (lists and arrays alike)."""
    arr = np.asarray(a)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be a sequence of integer ids; got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of ids; got shape {arr.shape}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= high:
        raise ValueError(f"{name} holds id {lo if lo < 0 else hi}, outside [0, {high})")
    return arr.astype(np.int64, copy=False)
