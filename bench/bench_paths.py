"""Every path of ``loss_and_grad`` against the fused full-BPTT call at the same size.

    python bench/bench_paths.py [--cells rnn,lstm,gru] [--sizes minchar,small,medium]
                                [--k 25] [--K 8] [--rounds 3] [--min-time 0.3]
                                [--json docs/figures/paths.json]

Paths, each at the same size and inputs as the fused full-BPTT call (``full``):

* ``masked``     -- ``mask`` given (all ones: the same work, so the ratio is the masked
  path's own cost)
* ``truncate_k`` -- ``truncate=k``: blocks of k steps, gradients within a block
* ``truncate_1K`` -- ``truncate=(1, K+1)``: every step's loss flows back K steps
* ``checkpoint`` -- ``checkpoint="sqrt"``: states kept every √T steps, the rest recomputed

Paths are timed in one process, interleaved over ``--rounds`` (each round: the median of
repeated calls for ``--min-time`` seconds after a warm-up), float32, default threads. The
table gives each path's median and its ratio to ``full``; the target is at most 1.25
(checkpointing: plus its one extra forward pass, about a third of a call).
"""
from __future__ import annotations

import argparse
import statistics
import sys

import os

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree's fastbptt
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/_cli.py, also when loaded by path
from _cli import finish, parse_list, start  # noqa: E402

import numpy as np  # noqa: E402

CELLS = ("rnn", "lstm", "gru")
SIZES = ("minchar", "small", "medium")
PATHS = ("full", "masked", "truncate_k", "truncate_1K", "checkpoint")


def path_kwargs(path, T, k, K):
    """The loss_and_grad options of ``path`` for a length-T problem."""
    if path == "full":
        return {}
    if path == "masked":
        return {"mask": None}                     # filled in with the problem's shape
    if path == "truncate_k":
        return {"truncate": min(k, T)}
    if path == "truncate_1K":
        return {"truncate": (1, min(K, T) + 1)}
    if path == "checkpoint":
        return {"checkpoint": "sqrt"}
    raise ValueError(f"path must be one of {', '.join(PATHS)}; got {path!r}")


def _median_call(fn, min_time, min_reps=3, max_reps=2000):
    from fastbptt.bench import timed_calls
    return statistics.median(timed_calls(fn, min_time, min_reps, max_reps))


def measure(cells, sizes, paths, k, K, rounds, min_time):
    from fastbptt import api
    from fastbptt.bench import SIZES as ALL, _problem
    rows = []
    for cell in cells:
        for size in sizes:
            T, B = ALL[size][:2]
            params, x, y = _problem(size, "float32", cell)
            fns = {}
            for p in paths:
                kw = path_kwargs(p, T, k, K)
                if "mask" in kw:
                    kw["mask"] = np.ones((T, B), np.float32)
                fns[p] = (lambda kw=kw: api.loss_and_grad(params, x, y, cell=cell, **kw))
            for fn in fns.values():               # compile and first-touch, untimed
                fn()
                fn()
            secs = {p: [] for p in paths}
            for _ in range(rounds):
                for p, fn in fns.items():         # interleaved: load drifts hit every path
                    secs[p].append(_median_call(fn, min_time))
            ms = {p: 1e3 * statistics.median(v) for p, v in secs.items()}
            rows.append(dict(cell=cell, size=size, T=T, B=B, ms=ms,
                             ms_rounds={p: [1e3 * s for s in v] for p, v in secs.items()},
                             ratio={p: ms[p] / ms["full"] for p in paths} if "full" in ms else {}))
    return rows


def format_table(rows, paths):
    others = [p for p in paths if p != "full"]
    lines = ["| cell | size | full ms | " + " | ".join(others) + " |",
             "|---|---|---|" + "---|" * len(others)]
    for r in rows:
        cells = [f"{r['ms'][p]:.3g} ms ({r['ratio'][p]:.2f}x)" if r["ratio"] else f"{r['ms'][p]:.3g} ms"
                 for p in others]
        lines.append(f"| {r['cell']} | {r['size']} | {r['ms'].get('full', float('nan')):.3g} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--k", type=int, default=25, help="truncate=k's block length")
    ap.add_argument("--K", type=int, default=8, help="truncate=(1, K+1)'s reach back")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds of timed calls per path and round")
    ap.add_argument("--json", metavar="FILE.json")
    args = ap.parse_args(argv)
    from fastbptt.bench import SIZES as ALL
    cells = parse_list(ap, "cells", args.cells, CELLS)
    sizes = parse_list(ap, "sizes", args.sizes, tuple(ALL))
    paths = parse_list(ap, "paths", args.paths, PATHS)
    if "full" not in paths:
        paths.insert(0, "full")                   # the ratios' denominator
    for name in ("k", "K", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    if not args.min_time > 0:
        ap.error(f"--min-time must be > 0; got {args.min_time}")
    meta = start("bench_paths.py", argv)
    rows = measure(cells, sizes, paths, args.k, args.K, args.rounds, args.min_time)
    res = dict(dtype="float32", k=args.k, K=args.K, paths=paths,
               target="ratio <= 1.25 (checkpoint: plus one forward pass)", rows=rows)
    return finish(res, meta, format_table(rows, paths), args.json)


if __name__ == "__main__":
    sys.exit(main())
