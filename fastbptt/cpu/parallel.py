"""Batch rows across the cores: one single-threaded compiled call per block of rows.

The sequences of a batch are independent until the loss and the weight gradients sum over
them. So a CPU call splits its batch into a few row blocks ("parts"), runs each part as an
ordinary call (fused or engine) on its own core with single-threaded products, and adds the
parts' losses and weight gradients; states and ∂L/∂h0 are the parts' rows side by side.

Why: the time loops make two ``[B, H] × [H, G·H]`` products per step. At the small and
``fastbptt train`` sizes they are too small to thread (a threaded product synchronises its
threads at every step, and waits a scheduler slice for a busy core), so one core idled
through the time loops. A part synchronises once, at its end.

Results never depend on the load: the parts follow from the shapes and the core count
(:data:`fastbptt.cpu.blas.NTHREADS`) only, and are added in a fixed order, so a call gives
the same bits idle or busy. What the load changes is only *where* the parts run: when
another process holds cores (:func:`~fastbptt.cpu.blas.threads_now`), they run one after
another in the calling thread.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from . import blas

# A part needs enough rows for its products to stay efficient, and a call enough work to
# pay for copying the parts' rows and handing them to a thread and back. MIN_WORK counts
# one step's multiply-adds times the steps: T·B·G·H·(H + n_in + n_out). min-char-rnn's calls (B = 1) never split;
# `fastbptt train`'s step (T 32, B 32, H 128, 96 classes) does.
MIN_ROWS = 8
MIN_WORK = 1 << 22
# With MKL serving the one-thread products, calls whose per-step products are threaded split
# too, up to this many multiply-adds a step. Measured per call, one process each, whole
# against split: medium (T 100, B 64, H 512) Elman 179-182 against 147-157 ms, GRU 453-555
# against 429-480, LSTM 554-556 against 505-529 (medians of 5; the pointwise work of the time
# loops, one thread when whole, runs on both cores). Large (T 64, B 128, H 1024; 2^27 to 2^29
# multiply-adds a step) once its workspace is kept between calls (cpu/workspace.py; before,
# page faults hid the difference): Elman 799 against 738 ms, GRU 1796 against 1648, LSTM
# 2253 against 2173 (medians of 5, alternated in one process). OpenBLAS alone: the medium
# LSTM whole 517-573 against split 533-613 ms, the large GRU 1813 against 1824, so without
# MKL only one-thread calls split.
SPLIT_MAX = 1 << 30


def parts_of(p, layers=1, directions=1) -> int:
    """How many row blocks the validated problem ``p`` runs as (1: not split); ``layers``:
    the recurrent layers times ``directions`` of a stacked model whose layer 0 ``p`` is.

    Full BPTT splits as :func:`parts_for` says. Truncated and checkpointed calls save memory
    on what grows with T·B·H (states and caches); a split keeps that saving (each part holds
    its own rows' windows or segments) but adds one copy of the per-step data (inputs,
    targets, loss weights: O(T·B) values, T·B·n_in for float inputs) and a set of gradients
    per part. So they split only when :func:`fastbptt.memory.split_pays` (at most a quarter
    of the call's estimated peak, or 8 MiB), decided by :func:`fastbptt.memory.estimate`,
    which then counts the copies (``batch_split``). Run whole, they left a core idle:
    ``truncate=25`` at the small size cost 1.5-1.9x the full call whole, 1.0-1.3x split.
    ``FASTBPTT_NUM_THREADS=1`` never splits, for the smallest footprint.
    """
    from ..engine import is_full
    n = parts_for(p.T, p.B, p.cell.G, p.H, p.n_in, p.n_out, layers, directions)
    if n > 1 and not is_full(p.T, p.truncate, p.checkpoint):
        from ..memory import estimate, problem_args
        if "batch_split" not in estimate(**problem_args(p)).components:
            return 1
    return n


def parts_for(T, B, G, H, n_in, n_out, layers=1, directions=1) -> int:
    """Row blocks of a full-BPTT call, from the sizes (a stack: ``layers`` layers of width
    about H); :func:`parts_of` adds the rule for truncated and checkpointed calls.

    Calls whose per-step products run on one thread (below
    :data:`~fastbptt.cpu.blas.THREAD_MIN` multiply-adds) split. Bigger ones already use
    every core; they split too up to :data:`SPLIT_MAX` when MKL serves the one-thread
    products (:func:`~fastbptt.cpu.blas.one_thread_mkl`), except bidirectional models, whose
    two directions already run side by side. The parts depend on the shapes, the core count
    and the BLAS only, never on the load.
    """
    n = min(blas.NTHREADS, B // MIN_ROWS)
    limit = SPLIT_MAX if directions == 1 and blas.one_thread_mkl() else blas.THREAD_MIN
    if n < 2 or B * G * H * H >= limit:
        return 1
    work = T * B * G * H * (H + n_in + n_out) * layers
    return n if work >= MIN_WORK else 1


def bounds(B: int, n: int) -> list[tuple[int, int]]:
    """n row blocks [lo, hi) of nearly equal size covering range(B), in order."""
    q, r = divmod(B, n)
    out, lo = [], 0
    for i in range(n):
        hi = lo + q + (i < r)
        out.append((lo, hi))
        lo = hi
    return out


def rows_of(p, lo: int, hi: int, view_x: bool = False):
    """The problem ``p`` restricted to the sequences lo .. hi-1 (a new Problem, own arrays).

    The loss weights were normalised over the whole batch when ``p`` was validated, so the
    parts' losses and gradients add up to the whole's. ``view_x``: float inputs stay a view
    ``x[:, lo:hi]`` of the caller's array instead of a copy; for the engine, which reads x
    a window of steps at a time (each window's rows are gathered when its products run), so
    a memory-saving call does not copy the whole input to split.
    """
    C = np.ascontiguousarray
    nb = hi - lo
    if p.y_rows is None:
        y_rows, y_map = None, None
    elif p.y_map is None:          # per-step rows, row t·B + b
        y_rows = C(p.y_rows.reshape(p.T, p.B, -1)[:, lo:hi]).reshape(p.T * nb, -1)
        y_map = None
    else:                          # many-to-one rows [B, n_out], step (t, b) reads row b
        y_rows = C(p.y_rows[lo:hi])
        y_map = np.broadcast_to(np.arange(nb, dtype=np.int64), (p.T, nb))
    last = C(p.last[lo:hi])
    weights = C(p.weights[:, lo:hi])
    return replace(
        p, B=nb,
        x=None if p.x is None else p.x[:, lo:hi] if view_x else C(p.x[:, lo:hi]),
        ids=None if p.ids is None else C(p.ids[:, lo:hi]),
        h0=C(p.h0[lo:hi]), c0=None if p.c0 is None else C(p.c0[lo:hi]),
        tgt_ids=None if p.tgt_ids is None else C(p.tgt_ids[:, lo:hi]),
        y_rows=y_rows, y_map=y_map, weights=weights,
        dense=bool(np.all(weights != 0)), last=last,
        masked=bool(np.any(last != p.T - 1)), extra=dict(p.extra))


def combine(outs, state_axis=0, states=("h0",)):
    """Add the parts' (loss, grads, last_state) in order.

    The gradients named in ``states`` and the final state(s) (an array or a tuple of them)
    are the parts' rows side by side along ``state_axis``.
    """
    loss = 0.0
    for o in outs:
        loss += o[0]
    grads = {}
    for k, g in outs[0][1].items():
        if k in states:
            grads[k] = np.concatenate([o[1][k] for o in outs], axis=state_axis)
        else:
            acc = g                  # the first part's own array: no new set at the peak
            for o in outs[1:]:
                acc += o[1][k]
            grads[k] = acc
    if isinstance(outs[0][2], tuple):
        last = tuple(np.concatenate([o[2][j] for o in outs], axis=state_axis)
                     for j in range(len(outs[0][2])))
    else:
        last = np.concatenate([o[2] for o in outs], axis=state_axis)
    return loss, grads, last


_pool = None
_pool_lock = threading.Lock()


def _reset_pool():
    global _pool
    _pool = None             # a forked child has none of the parent's threads


os.register_at_fork(after_in_child=_reset_pool)


def _executor():
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, blas.NTHREADS - 1),
                                       thread_name_prefix="fastbptt-part")
        return _pool


def side_by_side(tasks):
    """Run the callables ``tasks``, each with single-threaded products; their results in order.

    The first runs in the calling thread and the others on the pool's threads when the cores
    are free (:func:`~fastbptt.cpu.blas.threads_now`), else all in turn in the calling
    thread: the same arithmetic either way, so the same bits. Called from inside a task (a
    row block's bidirectional layer), the tasks run in turn: the cores are taken already.
    """
    def one(f):
        with blas.single_threaded():
            return f()

    # never from inside a task: a pool thread waiting on the pool could wait for ever
    if len(tasks) > 1 and not blas.in_single_threaded() and blas.threads_now() >= len(tasks):
        futs = [_executor().submit(one, f) for f in tasks[1:]]
        return [one(tasks[0])] + [f.result() for f in futs]
    return [one(f) for f in tasks]


def run_parts(B, n: int, rows, solve, **combine_kw):
    """``solve(*rows(lo, hi))`` (-> (loss, grads, last_state)) over n blocks of the B rows,
    side by side, added up by :func:`combine` (``combine_kw``: its layout of the states)."""
    subs = [rows(lo, hi) for lo, hi in bounds(B, n)]
    return combine(side_by_side([lambda a=a: solve(*a) for a in subs]), **combine_kw)
