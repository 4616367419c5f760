"""Peak memory and time of full, chunked and checkpointed BPTT at T = 1000.

    python bench/bench_memory.py [--T 1000] [--B 32] [--H 256] [--n 256] [--repeat 5] [--json FILE]

For one-hot input ids (a vocabulary of n feeding U) and float inputs [T, B, n], both with
cross-entropy over n classes, float32: the tracemalloc peak of one ``loss_and_grad`` call, the
estimate of :func:`fastbptt.memory.estimate`, and the best time of ``--repeat`` calls.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import fastbptt
from fastbptt import memory as M

SETTINGS = [("full BPTT", None, None), ("truncate=50", 50, None), ("checkpoint='sqrt'", None, "sqrt"),
            ("truncate=50, checkpoint='sqrt'", 50, "sqrt")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--n", type=int, default=256, help="n_in = n_out = vocabulary")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON (README figures)")
    a = ap.parse_args()
    from fastbptt.cli import measurement_metadata
    meta = measurement_metadata("python bench/bench_memory.py " + " ".join(sys.argv[1:]))
    out = []
    rng = np.random.default_rng(0)
    params = fastbptt.init_params(a.n, a.H, a.n, dtype=np.float32, seed=1)
    y = rng.integers(0, a.n, (a.T, a.B))
    inputs = {"onehot": rng.integers(0, a.n, (a.T, a.B)),
              "float": rng.standard_normal((a.T, a.B, a.n)).astype(np.float32)}
    print(f"T={a.T} B={a.B} H={a.H} n_in=n_out={a.n} float32, best of {a.repeat}")
    print(f"{'inputs':<7} {'setting':<30} {'peak MiB':>9} {'est MiB':>8} {'% of full':>9} {'time ms':>8} {'x full':>7}")
    for kind, x in inputs.items():
        calls, rows = [], []
        for name, tr, ck in SETTINGS:
            def call(tr=tr, ck=ck):
                return fastbptt.loss_and_grad(params, x, y, truncate=tr, checkpoint=ck)
            call()                                            # compile / warm up
            _, peak, _ = M.measure_peak(call)
            est = M.estimate(a.T, a.B, a.n, a.H, a.n, truncate=tr, checkpoint=ck, inputs=kind).total
            calls.append(call)
            rows.append([name, peak, est, float("inf")])
        for _ in range(a.repeat):          # round-robin, so a burst of load hits every setting
            for row, call in zip(rows, calls):
                row[3] = min(row[3], _timed(call))
        base = rows[0]
        for name, peak, est, best in rows:
            out.append(dict(inputs=kind, setting=name, peak_bytes=int(peak), estimate_bytes=int(est),
                            seconds=best, peak_vs_full=peak / base[1], time_vs_full=best / base[3]))
            print(f"{kind:<7} {name:<30} {peak / 2**20:9.2f} {est / 2**20:8.2f} "
                  f"{100 * peak / base[1]:8.1f}% {best * 1e3:8.0f} {best / base[3]:7.2f}")


    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(meta=measurement_metadata(meta["command"], meta),
                           config=dict(T=a.T, B=a.B, H=a.H, n=a.n, dtype="float32", repeat=a.repeat),
                           rows=out), f, indent=1)
        print(f"wrote {a.json}")


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
