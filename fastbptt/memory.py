"""What each BPTT interval and checkpoint setting costs: memory, time, gradient fidelity.

* :func:`estimate` predicts the peak bytes one ``loss_and_grad`` call allocates on the CPU
  backend, by component (states, checkpoints, input projection, output head, deltas, ...).
* :func:`profile` measures, for every BPTT interval ``k`` (``truncate=k``) and checkpoint
  setting, the peak bytes (:mod:`tracemalloc`), the time, and how far the gradient is from
  full BPTT (cosine similarity and relative norm error) — the price of truncation.
* ``fastbptt memprofile`` runs :func:`profile`, prints a table, and writes JSON and a plot.

Measuring: NumPy reports its array buffers to :mod:`tracemalloc`, and so does Numba's
runtime (NRT allocates with ``PyMem_RawMalloc``, which tracemalloc traces), so arrays the
compiled full-BPTT kernel allocates are counted too. Only memory allocated *during* the call
is measured: the caller's inputs and parameters are not, the returned gradients are.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cli import int_at_least

INPUT_KINDS = ("onehot", "float", "embed")


# --------------------------------------------------------------------------- estimate
@dataclass
class MemoryEstimate:
    """Predicted peak bytes of one ``loss_and_grad`` call.

    Attributes
    ----------
    components : dict of str -> int
        Bytes of each kind of buffer alive at the predicted peak (they sum to ``total``).
    total : int
        The predicted peak.
    phase : str
        Where the peak happens: ``"forward"``, ``"head"``, ``"backward"`` or ``"weights"``.
    rnn : int
        The part that scales with the sequence or the window: ``total`` minus parameter
        gradients, weight copies and per-step loss weights.
    """

    components: dict
    total: int
    phase: str
    rnn: int = field(default=0)

    def __str__(self):
        parts = ", ".join(f"{k} {v / 2**20:.2f}" for k, v in self.components.items() if v)
        return f"{self.total / 2**20:.2f} MiB at {self.phase} ({parts})"


def _positive_int_arg(name, v) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive int; got {v!r}")
    return int(v)


def _ckpt_segment(checkpoint, T):
    from ._validate import parse_checkpoint
    return parse_checkpoint(checkpoint, T)


def estimate(T: int, B: int, n_in: int, n_hidden: int, n_out: int, *,
             truncate: int | tuple[int, int] | None = None, checkpoint: int | str | None = None,
             dtype=np.float32, inputs: str = "onehot", vocab_size: int | None = None,
             fused: bool | None = None, cell: str = "rnn", _parts: int | None = None) -> MemoryEstimate:
    """Predicted peak bytes of ``loss_and_grad`` on the CPU backend, by component.

    Parameters
    ----------
    T, B, n_in, n_hidden, n_out : int
        Steps, sequences, input features (the vocabulary for one-hot ids), hidden units and
        outputs.
    truncate : None, int or (k1, k2)
    checkpoint : None, "sqrt" or int
        As in :func:`fastbptt.loss_and_grad`.
    dtype : float32 or float64
    inputs : {"onehot", "float", "embed"}
        Integer ids selecting columns of ``U``, float inputs ``[T, B, n_in]`` (the caller's
        array, not counted), or ids looked up in ``E [vocab_size, n_in]``.
    vocab_size : int, optional
        Rows of ``E`` for ``inputs="embed"`` (default ``n_in``).
    fused : bool, optional
        Whether the call takes the one-kernel full-BPTT path (no truncation, no
        checkpointing, no mask). Default: exactly when there is neither truncation nor
        checkpointing; pass False for a masked full-BPTT call.
    cell : {"rnn", "lstm", "gru"}
        The cell: its gate count G, state row width K·H, delta width D·H and state arity S
        (:class:`fastbptt.cells.Cell`) size every buffer.

    Returns
    -------
    MemoryEstimate
        ``.total`` bytes and ``.components``; ``.rnn`` is the part that scales with time.

    Notes
    -----
    The model follows :func:`fastbptt.engine.run`: per block of k1 steps (per group of
    blocks spanning about k2 steps without checkpointing), a forward pass (input projection
    ``xu``, states) and the output head (logits and ∂L/∂h, for the block's own steps only),
    then per backward segment the backward loop (one reused delta buffer
    ``da``), the weight gradients. Without checkpointing the states of the current window
    are kept (``min(T, k2) + 1`` of them); with checkpointing ``s``, one state every ``s``
    steps plus one segment's worth of everything else.
    """
    from ._validate import parse_truncate
    from .cells import get as get_cell
    cl = get_cell(cell)
    # sizes become Python ints first: NumPy integers would overflow (or wrap) silently
    T, B, n_in, n_hidden, n_out = (_positive_int_arg(name, v) for name, v in (
        ("T", T), ("B", B), ("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)))
    if vocab_size is not None:
        vocab_size = _positive_int_arg("vocab_size", vocab_size)
    if not isinstance(inputs, str) or inputs not in INPUT_KINDS:
        raise ValueError(f"inputs must be one of {', '.join(map(repr, INPUT_KINDS))}; got {inputs!r}")
    try:
        dt = np.dtype(dtype) if dtype is not None else None     # np.dtype(None) is float64
    except TypeError:
        dt = None
    if dt is None or dt.kind != "f" or dt.itemsize not in (4, 8):
        raise TypeError(f"dtype must be float32 or float64; got {dtype!r}")
    it = dt.itemsize
    H, O, I = n_hidden, n_out, n_in
    from .engine import is_full, plan
    tr = parse_truncate(truncate, T)
    ck = _ckpt_segment(checkpoint, T)
    k1, k2, hist, seg, group = plan(T, tr, ck)       # the engine's own
    plain = is_full(T, tr, ck)                       # full BPTT: nothing cut or recomputed
    if fused is None:
        fused = plain
    BH = B * H * it
    GH, KH, DH, SH = cl.G * H, cl.K * H, cl.D * H, cl.S * H
    V_E = vocab_size or I

    params = (GH * I + GH * H + GH + len(cl.extra) * H + O * H + O
              + (V_E * I if inputs == "embed" else 0)) * it
    fixed = {
        "gradients": params + B * SH * it,                         # dU.. dc (dbn, dE) and dh0
        "weight_copies": (I * GH if inputs == "onehot" else 0) * it,   # Uᵀ for one-hot rows
        "loss_weights": T * B * it,                                # validation: [T, B]
    }
    if cl.S == 2:
        fixed["initial_state"] = B * SH * it                       # [h0 | c0] in one array
    from .cpu.parallel import parts_for
    n_parts = parts_for(T, B, cl.G, H, I, O) if _parts is None else _parts
    if n_parts > 1 and _parts is None and not plain:
        whole = estimate(T, B, n_in, n_hidden, n_out, truncate=truncate, checkpoint=checkpoint,
                         dtype=dt, inputs=inputs, vocab_size=vocab_size, fused=fused, cell=cell,
                         _parts=1).total
        if not split_pays(_split_bytes(T, B, I, it, inputs, B * SH * it, params, n_parts,
                                       fixed["weight_copies"], fused), whole):
            n_parts = 1
    if n_parts > 1:
        # rows across the cores (fastbptt.cpu.parallel): the parts' working sets together are
        # the whole call's when they run side by side (in turn, on a busy machine, only one
        # part's: this is the upper bound); on top, what the split copies (_split_bytes)
        fixed["batch_split"] = _split_bytes(T, B, I, it, inputs, B * SH * it, params, n_parts,
                                            0 if fused else fixed["weight_copies"], fused)

    # the forward steps' copy of Wᵀ, one per part where they read it (cpu.blas.forward_transposed)
    wt = _transposed_w_bytes(B, n_parts, GH * H * it, dt)
    if fused:
        R = T * B
        # one workspace for the whole call (fastbptt.cpu.fused.workspace_layout): states,
        # the projection whose memory then holds the deltas [R, D·H], logits, scratch
        comp = {"states": (T + 1) * B * KH * it,
                "input_projection": R * max(cl.G, cl.D) * H * it, "logits": R * O * it}
        phase = "head"
        if cl.split:
            comp["recurrent_scratch"] = B * GH * it
        if inputs == "embed":
            comp["embedded_inputs"] = R * I * it                   # E[ids], then δ U
        comp["h_last"] = B * SH * it
        # a workspace of 32 MiB or more is allocated 2 MiB longer, to align it for huge pages
        # (fastbptt.cpu.workspace); each part of a split call has its own. Counted whether or
        # not a workspace kept from an earlier call serves it: the first call allocates it
        from .cpu.workspace import ADVISE_MIN, HUGE
        part_ws = sum(v for k, v in comp.items() if k != "h_last") // n_parts
        comp["alignment"] = n_parts * (HUGE if part_ws >= ADVISE_MIN else 64)
        comp.update(fixed)
        comp["weight_copies"] = wt        # no Uᵀ: one-hot rows are gathered from U itself
        return _finish(comp, phase)
    fixed["weight_copies"] += wt

    if seg is None:
        store = {"states": (min(T, hist + group) + 1) * B * KH * it}
        L = min(T, k2)                # longest backward segment (one window)
        nf = min(T, group)            # steps per forward run
        nh = min(T, group)            # steps whose loss one head call handles
        rec = 0
    else:
        n_ck = (T // seg + 1) if tr is None else (min(T, k2 + seg) // seg + 2)
        store = {"checkpoints": n_ck * B * SH * it, "states": (seg + 1) * B * KH * it}
        L = seg
        nf = min(seg, k1)
        nh = min(seg, k1)
        rec = seg
    xe = (lambda n: n * B * I * it) if inputs == "embed" else (lambda n: 0)
    # a split's parts read float inputs through views (parallel.rows_of): each window's rows
    # are gathered while its input projection and its weight gradients' product run
    xg = (lambda n: n * B * I * it) if inputs == "float" and n_parts > 1 else (lambda n: 0)
    GB, DB = B * GH * it, B * DH * it
    phases = {
        "forward": {"input_projection": max(nf, rec) * GB, "embedded_inputs": xe(max(nf, rec)),
                    "input_rows": xg(max(nf, rec))},
        "head": {"logits": nh * B * O * it, "dh_head": nh * BH},
        # without checkpointing the group's ∂L/∂h is still held while a window's weight
        # gradients gather its input rows
        "backward": {"dh_head": nh * BH, "deltas": L * DB, "input_rows": xg(L) if seg is None else 0},
        "weights": {"deltas": L * DB, "embedded_inputs": 2 * xe(L), "input_rows": xg(L)},
    }
    best = None
    for name, comp in phases.items():
        full = dict(store)
        full.update(comp)
        full["dh"] = 2 * B * SH * it                               # dstate and the last state
        if cl.split:
            full["recurrent_scratch"] = GB
        full.update(fixed)
        tot = sum(full.values())
        if best is None or tot > best[0]:
            best = (tot, name, full)
    return _finish(best[2], best[1])


# A truncated or checkpointed call (the memory-saving modes) splits its rows across the
# cores only when the split adds at most this share of the whole call's peak, or at most
# SPLIT_MEMORY_BYTES: a few MiB never matter, while a copy of long float inputs (the
# memprofile size with float inputs and checkpoint="sqrt": 32 MiB on 5 MiB) would undo the
# point of the mode.
SPLIT_MEMORY_SHARE = 0.25
SPLIT_MEMORY_BYTES = 8 << 20


def split_pays(extra: int, whole: int) -> bool:
    """Whether a memory-saving call may split: the split adds ``extra`` bytes to ``whole``."""
    return extra <= max(SPLIT_MEMORY_SHARE * whole, SPLIT_MEMORY_BYTES)


def _transposed_w_bytes(B, n_parts, w_bytes, dt):
    """Bytes of the copies of Wᵀ a call over B rows in n_parts row blocks makes."""
    from .cpu.blas import forward_transposed
    from .cpu.parallel import bounds
    return sum(w_bytes for lo, hi in bounds(B, n_parts) if forward_transposed(hi - lo, dt))


def _split_bytes(T, B, I, it, inputs, state_bytes, params, n_parts, weight_copies, fused):
    """What splitting the rows into n_parts adds (fastbptt.cpu.parallel.rows_of, combine)."""
    # each part's copy of its rows of the inputs (ids; float rows only for the fused call:
    # the engine's parts read views of them), the targets (counted as class ids) and the
    # loss weights, the states, the parts' own gradients (the first part's become the
    # call's: n_parts - 1 more sets) and, in the engine, every part's own copies of the
    # weights (Uᵀ for one-hot ids)
    per_step = (I * it if fused else 0) if inputs == "float" else 8
    return (T * B * per_step + T * B * 8 + T * B * it
            + 2 * state_bytes + (n_parts - 1) * (params + weight_copies))


def problem_args(p) -> dict:
    """:func:`estimate`'s arguments for a validated problem ``p``."""
    return dict(T=p.T, B=p.B, n_in=p.n_in, n_hidden=p.H, n_out=p.n_out, truncate=p.truncate,
                checkpoint=p.checkpoint, dtype=p.dtype,
                inputs="float" if p.x is not None else ("embed" if p.E is not None else "onehot"),
                vocab_size=None if p.E is None else p.E.shape[0], cell=p.cell.name)


def _finish(comp, phase):
    comp = {k: int(v) for k, v in comp.items()}
    total = sum(comp.values())
    rnn = total - comp.get("gradients", 0) - comp.get("weight_copies", 0) - comp.get("loss_weights", 0)
    return MemoryEstimate(components=comp, total=total, phase=phase, rnn=rnn)


def release_workspaces() -> int:
    """Free the workspaces ``loss_and_grad`` keeps between calls; returns their bytes.

    Each thread that made a full-BPTT CPU call keeps that call's workspace (the largest it
    has needed) for its next call, which then skips allocating and faulting it in (a quarter
    of the call at the large size; :mod:`fastbptt.cpu.workspace`); a thread that called a
    stacked model keeps its arena too (the state rows and layer outputs such a call holds).
    Call this to hand the memory back, for example before other work that needs it; the
    next call allocates again. ``FASTBPTT_KEEP_WORKSPACE=0`` keeps none.
    """
    from .cpu.workspace import release
    return release()


# --------------------------------------------------------------------------- measuring
def measure_peak(fn: Callable[[], Any]) -> tuple[Any, int, float]:
    """(result, peak bytes traced while ``fn()`` ran, seconds).

    The workspaces that threads keep between calls (:mod:`fastbptt.cpu.workspace`) are freed
    first, so a call's peak counts its workspace, as a first call's does.
    """
    from .cpu.workspace import release
    release()
    gc.collect()
    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    if not was:
        tracemalloc.stop()
    return out, peak, dt


def _time_best(fn, repeat):
    best = math.inf
    out = None
    for _ in range(max(1, repeat)):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


RECURRENT_KEYS = ("U", "W", "b", "E")


def gradient_deviation(grads: dict, full: dict, keys: Iterable[str] | None = None) -> tuple[float, float]:
    """(cosine similarity, relative norm error) of ``grads`` against ``full``, in float64.

    Over the concatenation of ``keys`` (default: every parameter gradient, not ``h0``).
    """
    keys = [k for k in (keys or full) if k != "h0" and k in full]
    g = np.concatenate([np.asarray(grads[k], np.float64).ravel() for k in keys])
    f = np.concatenate([np.asarray(full[k], np.float64).ravel() for k in keys])
    nf, ng = np.linalg.norm(f), np.linalg.norm(g)
    cos = float(g @ f / (ng * nf)) if nf > 0 and ng > 0 else float(nf == ng)
    rel = float(np.linalg.norm(g - f) / nf) if nf > 0 else float(np.linalg.norm(g))
    return cos, rel


def default_intervals(T):
    """1, 2, 4, ... below T, and T itself."""
    out, k = [], 1
    while k < T:
        out.append(k)
        k *= 2
    return out + [T]


def make_problem(T: int, B: int, n_hidden: int, vocab: int, *, dtype=np.float32,
                 seed: int = 0, cell: str = "rnn") -> tuple[dict, np.ndarray, np.ndarray]:
    """A character-level LM problem: params, one-hot input ids [T, B] and next-id targets."""
    from .api import init_params
    rng = np.random.default_rng(seed)
    params = init_params(vocab, n_hidden, vocab, dtype=dtype, seed=seed, cell=cell)
    ids = rng.integers(0, vocab, size=(T + 1, B))
    return params, ids[:-1], ids[1:]


def profile(T: int = 2000, B: int = 32, n_hidden: int = 256, vocab: int = 256, *,
            intervals: Iterable[int] | None = None, checkpoints: Iterable[int | str] = ("sqrt",),
            combined: Iterable[tuple] = (), dtype=np.float32, backend: str = "cpu", repeat: int = 1,
            seed: int = 0, progress: Callable[[dict], Any] | None = None, cell: str = "rnn") -> dict:
    """Peak memory, time and gradient deviation of each BPTT setting on one problem.

    The problem is a character-level language model: one-hot input ids (``vocab`` of them
    feed ``U`` directly), ``n_hidden`` tanh units, cross-entropy over ``vocab`` classes,
    random ids and weights from ``seed``.

    Parameters
    ----------
    T, B, n_hidden, vocab : int
    intervals : list of int, optional
        BPTT intervals ``k`` (``truncate=k``); default 1, 2, 4, ..., T.
    checkpoints : sequence
        Checkpoint settings (``"sqrt"`` or ints) to profile with full BPTT.
    combined : sequence of (truncate, checkpoint)
        Extra settings combining both.
    dtype, backend, cell
        As in :func:`fastbptt.loss_and_grad`.
    repeat : int
        Timed runs per setting, round-robin over the settings after the traced runs; the
        best is reported.
    progress : callable, optional
        Called with each finished row.

    Returns
    -------
    dict
        ``config`` and ``rows``: one dict per setting with ``setting``, ``truncate``,
        ``checkpoint``, ``interval`` (k, or T for full BPTT), ``peak_bytes``,
        ``estimate_bytes`` (CPU only), ``seconds``, ``cosine``, ``rel_error`` (all parameter
        gradients) and ``cosine_recurrent``, ``rel_error_recurrent`` (U, W, b only — the
        output layer's gradient is never truncated).
    """
    from .api import loss_and_grad
    dtype = np.dtype(dtype)
    intervals = default_intervals(T) if intervals is None else list(intervals)
    params, x, y = make_problem(T, B, n_hidden, vocab, dtype=dtype, seed=seed, cell=cell)
    # compile (or load from the cache) every kernel first, so no compilation is measured
    for tr, ck in ((None, None), (2, None), (None, 2)):
        loss_and_grad(params, x[:4], y[:4], truncate=tr, checkpoint=ck, backend=backend, cell=cell)

    settings = [("full", None, None)]
    settings += [(f"truncate={k}", k, None) for k in intervals if k != T]
    settings += [(f"checkpoint={c}", None, c) for c in checkpoints]
    settings += [(f"truncate={t},checkpoint={c}", t, c) for t, c in combined]
    rows, calls, full = [], [], None
    for name, tr, ck in settings:                 # the traced run of each setting
        def call(tr=tr, ck=ck):
            return loss_and_grad(params, x, y, truncate=tr, checkpoint=ck, backend=backend, cell=cell)
        out, peak, _ = measure_peak(call)
        grads = out[1]
        if full is None:
            full = grads
        cos, rel = gradient_deviation(grads, full)
        cos_r, rel_r = gradient_deviation(grads, full, RECURRENT_KEYS)
        del out, grads
        k = T if tr is None else (tr if isinstance(tr, int) else tr[1])
        est = estimate(T, B, vocab, n_hidden, vocab, truncate=tr, checkpoint=ck, dtype=dtype,
                       inputs="onehot", cell=cell).total if backend == "cpu" else None
        rows.append(dict(setting=name, truncate=tr, checkpoint=ck, interval=min(k, T),
                         peak_bytes=int(peak), estimate_bytes=est, seconds=math.inf,
                         cosine=cos, rel_error=rel, cosine_recurrent=cos_r, rel_error_recurrent=rel_r))
        calls.append(call)
    # timed runs round-robin over the settings, so a burst of load on a shared machine hits
    # all of them rather than one; the best of ``repeat`` is kept
    for rnd in range(max(1, repeat)):
        for row, call in zip(rows, calls):
            _, secs = _time_best(call, 1)
            row["seconds"] = min(row["seconds"], secs)
            if progress is not None and rnd == max(1, repeat) - 1:
                progress(row)
    config = dict(T=T, B=B, n_hidden=n_hidden, vocab=vocab, n_in=vocab, n_out=vocab,
                  inputs="onehot ids", loss="cross_entropy", activation="tanh", cell=cell,
                  dtype=str(dtype), backend=backend, repeat=repeat, seed=seed)
    return dict(config=config, rows=rows)


# --------------------------------------------------------------------------- report
_HEADER = (f"{'setting':<28} {'k':>6} {'peak MiB':>9} {'est MiB':>8} {'time ms':>9} "
           f"{'cos':>9} {'rel err':>9} {'cos(U,W,b)':>11} {'rel(U,W,b)':>10}")


def format_row(r):
    est = f"{r['estimate_bytes'] / 2**20:8.2f}" if r.get("estimate_bytes") else f"{'-':>8}"
    return (f"{r['setting']:<28} {r['interval']:>6} {r['peak_bytes'] / 2**20:9.2f} {est} "
            f"{r['seconds'] * 1e3:9.1f} {r['cosine']:9.6f} {r['rel_error']:9.2e} "
            f"{r['cosine_recurrent']:11.6f} {r['rel_error_recurrent']:10.2e}")


def format_table(result: dict) -> str:
    return "\n".join([_HEADER] + [format_row(r) for r in result["rows"]])


def plot(result: dict, path: str) -> str:
    """Memory, time and gradient error against the BPTT interval, as a PNG at ``path``."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'fastbptt[plot]'") from exc
    cfg, rows = result["config"], result["rows"]
    trunc = [r for r in rows if r["truncate"] is not None and r["checkpoint"] is None]
    full = next(r for r in rows if r["setting"] == "full")
    ckpts = [r for r in rows if r["truncate"] is None and r["checkpoint"] is not None]
    ks = [r["interval"] for r in trunc] + [cfg["T"]]
    line = trunc                      # truncate=k; full BPTT is the star at k = T

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    mib = 2 ** 20
    ax = axes[0]
    ax.plot(ks[:-1], [r["peak_bytes"] / mib for r in line], "o-", color="C0", label="truncate=k (measured)")
    if all(r.get("estimate_bytes") for r in line):
        ax.plot(ks[:-1], [r["estimate_bytes"] / mib for r in line], "x--", color="C0", alpha=0.6,
                label="truncate=k (estimate)")
    for i, r in enumerate(ckpts):
        ax.axhline(r["peak_bytes"] / mib, color=f"C{i + 2}", ls=":",
                   label=f"full BPTT, {r['setting']}")
    ax.set_ylabel("peak memory of one call (MiB)")
    ax.set_yscale("log")
    ax.set_title("memory")

    ax = axes[1]
    ax.plot(ks[:-1], [r["seconds"] * 1e3 for r in line], "o-", color="C1", label="truncate=k")
    for i, r in enumerate(ckpts):
        ax.axhline(r["seconds"] * 1e3, color=f"C{i + 2}", ls=":", label=f"full BPTT, {r['setting']}")
    ax.set_ylabel("time of one call (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("time")

    ax = axes[2]
    floor = 1e-16
    ax.plot(ks[:-1], [max(r["rel_error_recurrent"], floor) for r in trunc], "o-", color="C3",
            label="‖g − g_full‖ / ‖g_full‖  (U, W, b)")
    ax.plot(ks[:-1], [max(1 - r["cosine_recurrent"], floor) for r in trunc], "s--", color="C4",
            label="1 − cosine  (U, W, b)")
    ax.plot(ks[:-1], [max(r["rel_error"], floor) for r in trunc], "^:", color="C5",
            label="‖g − g_full‖ / ‖g_full‖  (all params)")
    ax.set_yscale("log")
    ax.set_ylabel("gradient deviation from full BPTT")
    ax.set_title("gradient error of truncation")

    axes[0].plot([cfg["T"]], [full["peak_bytes"] / mib], "*", color="k", ms=12, label="full BPTT")
    axes[1].plot([cfg["T"]], [full["seconds"] * 1e3], "*", color="k", ms=12, label="full BPTT")
    ticks = [k for k in ks[:-1] if k & (k - 1) == 0 and (k.bit_length() - 1) % 2 == 0]
    labels = [str(k) for k in ticks]
    while ticks and ks[-1] < 2 * ticks[-1]:
        ticks, labels = ticks[:-1], labels[:-1]   # room for the label of T
    ticks, labels = ticks + [ks[-1]], labels + [f"T={ks[-1]}"]
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels)
        ax.minorticks_off()
        ax.set_xlabel("BPTT interval k (truncate=k); T = full BPTT")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"fastbptt memprofile: T={cfg['T']}, B={cfg['B']}, H={cfg['n_hidden']}, "
                 f"vocab={cfg['vocab']} (one-hot ids, cross-entropy), {cfg['dtype']}, "
                 f"backend={cfg['backend']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- CLI
_positive_int = int_at_least(1)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``fastbptt memprofile``."""
    a = parser.add_argument
    a("--T", type=_positive_int, default=2000, help="sequence length (default 2000)")
    a("--batch", "--B", dest="B", type=_positive_int, default=32, help="sequences per batch (default 32)")
    a("--hidden", type=_positive_int, default=256, help="hidden units (default 256)")
    a("--vocab", type=_positive_int, default=256,
      help="one-hot input ids and output classes (default 256)")
    a("--intervals", metavar="K,K,...", help="BPTT intervals to profile (default 1,2,4,...,T)")
    a("--checkpoint", metavar="S,S,...", default="sqrt",
      help="checkpoint settings profiled with full BPTT: 'sqrt' or ints (default sqrt; 'none' for none)")
    a("--dtype", default="float32", choices=("float32", "float64"))
    a("--cell", default="rnn", choices=("rnn", "lstm", "gru"), help="recurrent cell (default rnn)")
    a("--backend", default="cpu", choices=("cpu", "cuda"))
    a("--repeat", type=_positive_int, default=1, help="timed runs per setting; the best is shown (default 1)")
    a("--seed", type=int_at_least(0), default=0, help="data and initialisation seed (default 0)")
    a("--json", metavar="PATH", help="write the results as JSON")
    a("--plot", metavar="FILE.png", help="draw memory, time and gradient error against the interval")


def _parse_list(name, text, allow_sqrt=False):
    from .cli import CLIError
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if allow_sqrt and part == "sqrt":
            out.append("sqrt")
            continue
        if allow_sqrt and part == "none":
            continue
        try:
            v = int(part)
        except ValueError:
            raise CLIError(f"{name}: expected comma-separated positive integers"
                           f"{' or sqrt' if allow_sqrt else ''}; got {part!r}") from None
        if v < 1:
            raise CLIError(f"{name}: values must be >= 1; got {v}")
        out.append(v)
    return out


def main(args: argparse.Namespace) -> int:
    """Run ``fastbptt memprofile``: print the table, write JSON and the plot if asked."""
    import sys

    from .cli import CLIError
    intervals = _parse_list("--intervals", args.intervals) if args.intervals else None
    if intervals is not None and not intervals:
        raise CLIError("--intervals: give at least one interval")
    checkpoints = _parse_list("--checkpoint", args.checkpoint, allow_sqrt=True)
    from .cli import check_output_path
    for opt, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_output_path(opt, path)          # before the run, not after it
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CLIError("--plot needs matplotlib, which is not installed: "
                           "pip install 'fastbptt[plot]'") from None
    if args.backend == "cuda":
        try:
            from . import cuda
            ok, why = cuda.available()
        except ImportError as exc:
            ok, why = False, str(exc)
        if not ok:
            raise CLIError(f"--backend cuda is unavailable here: {why}")
    from .cli import measurement_metadata
    meta = measurement_metadata(getattr(args, "command_line", "fastbptt memprofile"))
    print(f"fastbptt memprofile: T={args.T} B={args.B} H={args.hidden} vocab={args.vocab} "
          f"{args.dtype} backend={args.backend} (peak = tracemalloc peak of one call)")
    print(_HEADER)
    t0 = time.perf_counter()
    result = profile(args.T, args.B, args.hidden, args.vocab, intervals=intervals,
                     checkpoints=checkpoints, dtype=np.dtype(args.dtype), backend=args.backend,
                     repeat=args.repeat, seed=args.seed, cell=args.cell,
                     progress=lambda r: (print(format_row(r)), sys.stdout.flush()))
    result["config"]["wall_seconds"] = time.perf_counter() - t0
    result["meta"] = measurement_metadata(meta["command"], meta)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        except OSError as exc:
            raise CLIError(f"--json {args.json}: cannot write: {exc.strerror or exc}") from None
        print(f"wrote {args.json}")
    if args.plot:
        try:
            plot(result, args.plot)
        except OSError as exc:
            raise CLIError(f"--plot {args.plot}: cannot write: {exc.strerror or exc}") from None
        print(f"wrote {args.plot}")
    return 0
