"""Shared argument handling for the adapters (messages use the original scripts' names).

The originals are plain NumPy: they accept any real dtype and let NumPy promote, index with
negative ids as Python does, and fail with NumPy's own exception types. These helpers
reproduce that before fastbptt's strict, single-dtype engine is called.
"""
from __future__ import annotations

import copy

import numpy as np

_REAL = "biuf"       # bool, int, uint, float: what NumPy arithmetic promotes to a float


def real_array(name: str, a, shape=None, ndim=None) -> np.ndarray:
    """``a`` as an ndarray of real numbers (no copy), checked against ``shape``/``ndim``.

    ``shape`` may hold None for a free dimension.
    """
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.dtype.kind not in _REAL or a.dtype.itemsize > 8:
        raise TypeError(f"{name} must be an array of real numbers (at most float64); "
                        f"got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {a.shape}")
    if shape is not None:
        if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
            want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}; got shape {a.shape}")
    return a


def float_params(**arrays) -> None:
    """Parameters the original accumulates gradients into (``np.zeros_like(W)`` then ``+=``):
    a float dtype is required there, as NumPy refuses to add floats into an integer array."""
    for name, a in arrays.items():
        if a.dtype.kind != "f":
            raise TypeError(f"{name} must be a float array (the original accumulates float "
                            f"gradients into an array like it); got dtype {a.dtype}")


def compute_dtype(*arrays) -> np.dtype:
    """The dtype a per-step NumPy loop computes in: float32 when NumPy promotes the operands to
    float16/float32 (fastbptt runs float16 in float32), else float64."""
    rt = np.result_type(*arrays)
    return np.dtype(np.float32) if rt in (np.float16, np.float32) else np.dtype(np.float64)


def python_ids(name: str, seq, n: int) -> np.ndarray:
    """Ids used as ``a[id]`` on an axis of length ``n``, as int64 in [0, n).

    Negative ids count from the end, as in Python; an id outside [-n, n) or a non-integer
    raises IndexError, as the original's indexing does.
    """
    arr = np.asarray(seq)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of ids; got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise IndexError(f"{name} must hold integer ids (they index arrays); got dtype {arr.dtype}")
    bad = np.flatnonzero((arr < -n) | (arr >= n))
    if bad.size:
        t = int(bad[0])
        raise IndexError(f"{name}[{t}] = {arr[t]} is out of bounds for {n} classes "
                         f"(ids must be in [-{n}, {n}), negative ones count from the end)")
    return np.where(arr < 0, arr + n, arr).astype(np.int64)


def pad_time(name: str, d: np.ndarray, T: int, axis: int) -> np.ndarray:
    """The originals' backward loops run over ``d``'s own T steps: fewer than the forward's T is
    the forward truncated there, which is ``d`` padded with zeros to T (float64); more fail
    on the cache list with IndexError."""
    Td = d.shape[axis]
    if Td > T:
        raise IndexError(f"{name} has {Td} time steps but the forward pass ran {T}")
    if Td == T:
        return d.astype(np.float64, copy=False)
    shape = list(d.shape)
    shape[axis] = T
    out = np.zeros(shape)
    idx = [slice(None)] * d.ndim
    idx[axis] = slice(0, Td)
    out[tuple(idx)] = d
    return out


def float64_layer(cache):
    """The layer cache in float64: the originals' backward loops start from float64 zeros, so
    they run in float64 even over a float32 forward pass (on its float32 states)."""
    if cache.W.dtype == np.float64:
        return cache
    c = copy.copy(cache)
    for k in ("x", "rows", "U", "W", "b", "bn"):
        if getattr(cache, k) is not None:
            setattr(c, k, getattr(cache, k).astype(np.float64))
    return c


def ifog_to_ifgo(H: int) -> np.ndarray:
    """Row/column order that turns gate blocks i, f, o, g (CS231n, Karpathy) into fastbptt's
    i, f, g, o; it swaps the last two blocks, so it is its own inverse."""
    return np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H]
