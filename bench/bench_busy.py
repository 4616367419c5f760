"""``loss_and_grad`` on a busy machine: default threads against 1 and 2, next to a neighbour.

    python bench/bench_busy.py [--sizes minchar,small,medium] [--rounds 3] [--min-time 0.5]
                               [--neighbours none,spin,blas2] [--json docs/figures/busy.json]

A neighbour is another process this script starts, and stops by its PID when done:

* ``none``  -- no neighbour (the reference line)
* ``spin``  -- one single-threaded busy loop (keeps one core busy)
* ``blas2`` -- a NumPy float32 matrix-product loop on two BLAS threads (a multi-threaded
  neighbour whose threads also synchronise)

Next to each, every size is timed (median of repeated calls after a warm-up, each setting in
its own child process, settings interleaved over ``--rounds``) with the default thread setting
(:func:`fastbptt.cpu.blas.threads_now` decides per call) and with ``FASTBPTT_NUM_THREADS=1``
and ``=2``. The table gives the median per setting and default / best, which the busy-machine
target wants at most 1.2 at every size, and never a collapse.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)          # measure this tree's fastbptt, not an installed one
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/_cli.py, also when loaded by path
from _cli import finish, parse_list, start  # noqa: E402
SIZES = ("minchar", "small", "medium")
NEIGHBOURS = {
    "none": None,
    "spin": "while True:\n    pass\n",
    "blas2": ("import numpy as np\n"
              "a = np.ones((512, 512), np.float32)\n"
              "while True:\n    a @ a\n"),
}
SETTINGS = {"default": None, "1": "1", "2": "2"}
_CHILD_ENV = ("FASTBPTT_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def child(sizes, min_time, max_reps=2000):
    """In the child process: {size: [seconds per call, ...]} after two warm-up calls."""
    from fastbptt import api
    from fastbptt.bench import _problem
    out = {}
    for size in sizes:
        params, x, y = _problem(size, "float32")
        fn = lambda: api.loss_and_grad(params, x, y)  # noqa: E731
        fn()
        fn()
        times = []
        start = time.perf_counter()
        while len(times) < max_reps and (len(times) < 3 or time.perf_counter() - start < min_time):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[size] = times
    return out


def run_child(setting, sizes, min_time, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV}
    if SETTINGS[setting] is not None:
        env["FASTBPTT_NUM_THREADS"] = SETTINGS[setting]
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", ",".join(sizes), "--min-time", str(min_time)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"child ({setting}) failed:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def start_neighbour(kind):
    """The neighbour's Popen (None for 'none'); its own session so it is stopped by PID alone."""
    code = NEIGHBOURS[kind]
    if code is None:
        return None
    env = dict(os.environ)
    for v in _CHILD_ENV:
        env.pop(v, None)
    if kind == "blas2":
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "2"
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.5)                                # let it start running
    return p


def stop_neighbour(p):
    if p is None:
        return
    os.kill(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()


def measure(sizes, neighbours, rounds, min_time):
    rows = []
    for nb in neighbours:
        proc = start_neighbour(nb)
        try:
            per = {s: {size: [] for size in sizes} for s in SETTINGS}
            for _ in range(rounds):
                for s in SETTINGS:                 # interleaved: load drifts hit every setting
                    res = run_child(s, sizes, min_time)
                    for size in sizes:
                        per[s][size].append(statistics.median(res[size]))
        finally:
            stop_neighbour(proc)
        for size in sizes:
            ms = {s: 1e3 * statistics.median(per[s][size]) for s in SETTINGS}
            best = min(("1", "2"), key=lambda s: ms[s])
            rows.append(dict(neighbour=nb, size=size, ms=ms,
                             ms_rounds={s: [1e3 * v for v in per[s][size]] for s in SETTINGS},
                             best=best, default_over_best=ms["default"] / ms[best]))
    return rows


def format_table(rows):
    lines = ["| neighbour | size | default ms | 1 thread ms | 2 threads ms | default / best |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        m = r["ms"]
        lines.append(f"| {r['neighbour']} | {r['size']} | {m['default']:.3g} | {m['1']:.3g} | "
                     f"{m['2']:.3g} | {r['default_over_best']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--neighbours", default=",".join(NEIGHBOURS))
    ap.add_argument("--rounds", type=int, default=3, help="child processes per setting and neighbour")
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds of timed calls per size")
    ap.add_argument("--json", metavar="FILE.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child.split(","), args.min_time)))
        return 0
    from fastbptt.bench import SIZES as ALL
    sizes = parse_list(ap, "sizes", args.sizes, tuple(ALL))
    neighbours = parse_list(ap, "neighbours", args.neighbours, tuple(NEIGHBOURS))
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1; got {args.rounds}")
    if not args.min_time > 0:
        ap.error(f"--min-time must be > 0; got {args.min_time}")
    meta = start("bench_busy.py", argv)
    rows = measure(sizes, neighbours, args.rounds, args.min_time)
    res = dict(settings=list(SETTINGS), neighbours={k: v for k, v in NEIGHBOURS.items() if k in neighbours},
               rows=rows)
    return finish(res, meta, format_table(rows), args.json)


if __name__ == "__main__":
    sys.exit(main())
