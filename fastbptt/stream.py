"""Truncated BPTT over long id streams: min-char-rnn's training loop, batched.

A text corpus is one long sequence of ids. :func:`batch_stream` cuts it into ``B`` contiguous
pieces side by side (``[T_total, B]``, time-major); :class:`TBPTTStream` walks that array in
intervals of ``k`` steps, predicting each id from the ones before it, and carries the hidden
state from one interval into the next — the gradient of an interval never reaches into the
previous one (chunked truncated BPTT, ``truncate=k`` over the whole stream)::

    data = fastbptt.stream.batch_stream(ids, B=32)           # [T_total, B]
    stream = fastbptt.stream.TBPTTStream(data, k=25)
    for loss, grads, h in stream.intervals(params):          # one pass over the data
        for name in params:                                  # update in place: the next
            params[name] -= lr * grads[name]                 # interval sees the new weights

Interval ``i`` feeds ids ``data[pos:pos+k]`` and predicts ``data[pos+1:pos+k+1]``; the last
interval of a pass may be shorter. Summing the gradients of a pass without updating
(:func:`accumulate`) gives exactly ``loss_and_grad(params, data[:-1], data[1:], truncate=k)``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .api import loss_and_grad

__all__ = ["batch_stream", "TBPTTStream", "iter_intervals", "accumulate"]


def batch_stream(ids: np.ndarray, B: int) -> np.ndarray:
    """Cut a 1-D id sequence into ``B`` contiguous streams side by side.

    Parameters
    ----------
    ids : array of int, shape [N]
        The corpus as ids (e.g. characters mapped to 0 .. vocab-1).
    B : int
        Number of parallel streams (the batch size).

    Returns
    -------
    array of int64, shape [L, B]
        Column ``b`` is ``ids[b*L:(b+1)*L]`` with ``L = N // B``; the last ``N mod B`` ids
        are dropped. Time-major, C-contiguous: a ready ``[T_total, B]`` stream.
    """
    if isinstance(B, bool) or not isinstance(B, (int, np.integer)) or B < 1:
        raise ValueError(f"B must be a positive int; got {B!r}")
    a = np.asarray(ids)
    if a.ndim != 1:
        raise ValueError(f"ids must be 1-D [N]; got shape {a.shape}")
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"ids must hold integers; got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"ids holds {int(a.max())}, beyond int64 (ids are int64)")
    L = a.shape[0] // B
    if L < 2:
        raise ValueError(f"ids has {a.shape[0]} ids, too few for B={B} streams of at least 2 "
                         f"(an input and its next id); need at least {2 * B}")
    return np.ascontiguousarray(a[:L * B].reshape(B, L).T, dtype=np.int64)


class TBPTTStream:
    """Walk a ``[T_total, B]`` id stream in intervals of ``k`` steps, carrying the state.

    Parameters
    ----------
    data : array of int, shape [T_total, B]
        Time-major id streams (:func:`batch_stream`). Inputs are ``data[t]`` and targets
        ``data[t+1]``, so a pass has ``T_total - 1`` predicting steps.
    k : int
        Interval length (BPTT interval): steps per ``loss_and_grad`` call.
    h0 : array [B, H], optional
        State before the first interval (zeros when None).
    pos : int
        Step to start from (to resume a pass); 0 by default.
    drop_last : bool
        Skip a last interval shorter than ``k`` (every call then has the same shape).
    **kwargs
        Passed to :func:`fastbptt.loss_and_grad` on every interval: ``activation``, ``loss``,
        ``reduction``, ``backend``, ``checkpoint``, ``truncate`` (within an interval) ...

    Attributes
    ----------
    pos : int
        First step of the next interval.
    h : array [B, H] or None
        State carried into the next interval (None: zeros).
    n_intervals : int
        Intervals in a pass from step 0.
    """

    def __init__(self, data, k, *, h0=None, pos=0, drop_last=False, **kwargs):
        data = np.asarray(data)
        if data.ndim != 2:
            raise ValueError(f"data must be [T_total, B] ids (see batch_stream); got shape {data.shape}")
        if data.dtype == np.bool_ or not np.issubdtype(data.dtype, np.integer):
            raise TypeError(f"data must hold integer ids; got dtype {data.dtype}")
        if data.shape[0] < 2 or data.shape[1] < 1:
            raise ValueError(f"data needs at least 2 steps and 1 stream; got shape {data.shape}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int; got {k!r}")
        steps = data.shape[0] - 1
        if isinstance(pos, bool) or not isinstance(pos, (int, np.integer)) or not 0 <= pos <= steps:
            raise ValueError(f"pos must be an int in [0, {steps}]; got {pos!r}")
        for bad in ("inputs", "targets", "h0", "mask", "batch_first"):
            if bad in kwargs:
                raise TypeError(f"TBPTTStream sets {bad} itself; got {bad}= in kwargs")
        self.data = data
        self.k = int(k)
        self.steps = steps
        self.pos = int(pos)
        self.h = h0
        self.drop_last = bool(drop_last)
        self.kwargs = kwargs

    @property
    def n_intervals(self) -> int:
        full, rest = divmod(self.steps, self.k)
        return full + (1 if rest and not self.drop_last else 0)

    def __len__(self):
        return self.n_intervals

    def done(self) -> bool:
        """Whether the pass is over (no interval left from ``pos``)."""
        left = self.steps - self.pos
        return left <= 0 or (self.drop_last and left < self.k)

    def reset(self, h0: np.ndarray | None = None) -> None:
        """Start a new pass: back to step 0 with state ``h0`` (zeros when None)."""
        self.pos = 0
        self.h = h0

    def step(self, params: dict) -> tuple[float, dict, np.ndarray]:
        """Loss, gradients and new state of the next interval; advances ``pos`` and ``h``.

        Raises ``StopIteration`` when the pass is over (:meth:`done`).
        """
        if self.done():
            raise StopIteration
        a = self.pos
        e = min(self.steps, a + self.k)
        loss, grads, h = loss_and_grad(params, self.data[a:e], self.data[a + 1:e + 1], self.h,
                                       **self.kwargs)
        self.pos, self.h = e, h
        return loss, grads, h

    def intervals(self, params: dict | Callable[[], dict]) -> Iterator[tuple[float, dict, np.ndarray]]:
        """Yield ``(loss, grads, h)`` for each remaining interval of the pass.

        ``params`` is a dict read afresh at every interval (update it in place between
        intervals), or a callable returning the current params (for code that rebinds
        them, e.g. ``lambda: state.params``).
        """
        get = params if callable(params) else (lambda: params)
        while not self.done():
            yield self.step(get())


def iter_intervals(params: dict | Callable[[], dict], data: np.ndarray, k: int, *,
                   h0: np.ndarray | None = None, **kwargs) -> Iterator[tuple[float, dict, np.ndarray]]:
    """``TBPTTStream(data, k, h0=h0, **kwargs).intervals(params)``: yields (loss, grads, h)."""
    return TBPTTStream(data, k, h0=h0, **kwargs).intervals(params)


def accumulate(params: dict, data: np.ndarray, k: int, *, h0: np.ndarray | None = None,
               **kwargs) -> tuple[float, dict, np.ndarray]:
    """Sum of the losses and gradients of every interval of one pass, params fixed.

    Equals ``loss_and_grad(params, data[:-1], data[1:], h0, truncate=k)`` for
    ``reduction="sum"`` (with ``"mean"``, each interval is averaged over its own steps).

    Returns
    -------
    loss : float
    grads : dict
        Summed gradients; ``grads["h0"]`` is ∂L/∂h0 of the first interval's state (later
        intervals start from a carried state, which is a constant to them).
    h : array [B, H]
        The state after the last interval.
    """
    stream = TBPTTStream(data, k, h0=h0, **kwargs)
    total, acc, h = 0.0, None, None
    first = True
    for loss, grads, h in stream.intervals(params):
        total += loss
        if acc is None:
            acc = {n: g.copy() for n, g in grads.items()}
        else:
            for n, g in grads.items():
                if n != "h0":
                    acc[n] += g
        first = False
    if first:
        if stream.pos >= stream.steps:
            raise ValueError(f"pos={stream.pos} is the end of data ({stream.steps} predicting "
                             "steps): no interval is left to accumulate")
        raise ValueError(f"no complete interval is left: drop_last=True and only "
                         f"{stream.steps - stream.pos} steps from pos={stream.pos}, fewer than k={stream.k}")
    return total, acc, h
