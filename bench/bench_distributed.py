"""Data-parallel BPTT on a local Dask cluster against the single-process call.

    python bench/bench_distributed.py --rounds 3 --json docs/figures/distributed.json

Measures, on this machine:

* the per-call overhead of :func:`fastbptt.distributed.loss_and_grad` on a tiny problem
  (min-char-rnn's sizes with B = 2, one sequence per worker): distributed time minus
  single-process time;
* the parallel efficiency at the ``medium`` and ``large`` sizes of ``fastbptt bench``:
  single-process time / (workers x distributed time), both sides single-threaded (each worker
  is one thread, so the single process gets one thread too);
* ``fastbptt train --workers 2`` against ``fastbptt train`` in characters/s (float32, the
  default model), each run in its own process;
* the gradient bytes per step of the default ``train`` model and of the large size.

Every measurement is interleaved round by round (single, distributed, single, ...) so load
from other jobs hits both; the medians are reported.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

if __name__ == "__main__":              # before NumPy's BLAS loads: one thread, as each worker
    for _v in ("FASTBPTT_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

import fastbptt  # noqa: E402
from fastbptt.bench import SIZES  # noqa: E402

# name: (T, B, n_in, H, n_out, one-hot ids)
CASES = {"tiny": SIZES["minchar"][:1] + (2,) + SIZES["minchar"][2:],
         "medium": SIZES["medium"], "large": SIZES["large"]}
TRAIN_ARGS = ["--no-save", "--sample-every", "0", "--no-progress", "--sample-len", "1"]


def problem(T, B, n_in, H, n_out, ids, dtype=np.float32):
    rng = np.random.default_rng(0)
    params = fastbptt.init_params(n_in, H, n_out, dtype=dtype, seed=0)
    x = rng.integers(0, n_in, (T, B)) if ids else rng.standard_normal((T, B, n_in)).astype(dtype)
    return params, x, rng.integers(0, n_out, (T, B))


def grad_bytes(n_in, H, n_out, itemsize=4):
    """Bytes of one gradient of U, W, b, V, c (what the reduction moves per step)."""
    return itemsize * (H * n_in + H * H + H + n_out * H + n_out)


def timed(fn, reps):
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_calls(client, rounds, names):
    from dask.distributed import get_task_stream
    from fastbptt import distributed as fd
    res = {}
    setups = {}
    for name in names:
        T, B, n_in, H, n_out, ids = CASES[name]
        params, x, y = problem(*CASES[name])
        shards = fd.shard(client, x, y)
        one = lambda p=params, x=x, y=y: fastbptt.loss_and_grad(p, x, y, reduction="mean")   # noqa: E731
        dist = lambda p=params, s=shards: fd.loss_and_grad(client, p, s, reduction="mean")  # noqa: E731
        one(), dist()                                   # compile and warm up, untimed
        setups[name] = (one, dist)
        res[name] = dict(size=[T, B, n_in, H, n_out], ids=ids, single_s=[], distributed_s=[],
                         grad_bytes=grad_bytes(n_in, H, n_out))
    reps = {"tiny": 20, "medium": 3, "large": 2}
    for _ in range(rounds):
        for name in names:
            one, dist = setups[name]
            res[name]["single_s"] += timed(one, reps[name])
            if name == "tiny":                      # overhead: no task stream in the way
                res[name]["distributed_s"] += timed(dist, reps[name])
                continue
            for _ in range(reps[name]):
                with get_task_stream(client) as ts:
                    res[name]["distributed_s"] += timed(dist, 1)
                # the workers' own account: the slowest shard's compute, the rest is the cluster's
                res[name].setdefault("slowest_shard_s", []).append(max(
                    sum(x["stop"] - x["start"] for x in d["startstops"] if x["action"] == "compute")
                    for d in ts.data if "_shard_grad" in str(d["key"])))
    n = len(client.nthreads())
    trips = [timed(lambda: client.submit(int, 1, pure=False).result(), 1)[0] for _ in range(30)]
    round_trip_ms = 1e3 * float(np.median(trips))          # one empty task: Dask's own latency
    for name, r in res.items():
        s, d = float(np.median(r["single_s"])), float(np.median(r["distributed_s"]))
        shards = r.get("slowest_shard_s", [np.nan])
        shard = float(np.median(shards))
        outside = float(np.median(np.subtract(r["distributed_s"], shards))) if "slowest_shard_s" in r else np.nan
        r.update(single_ms=1e3 * s, distributed_ms=1e3 * d, overhead_ms=1e3 * (d - s),
                 speedup=s / d, efficiency=s / (n * d), workers=n, slowest_shard_ms=1e3 * shard,
                 outside_compute_ms=1e3 * outside)
    return res, round_trip_ms


def _half_batch(q, name, lo, hi, reps):
    T, B, n_in, H, n_out, ids = CASES[name]
    params, x, y = problem(*CASES[name])
    x, y = np.ascontiguousarray(x[:, lo:hi]), np.ascontiguousarray(y[:, lo:hi])
    fastbptt.loss_and_grad(params, x, y, reduction="mean")            # compile, warm up
    q.put(float(np.median(timed(lambda: fastbptt.loss_and_grad(params, x, y, reduction="mean"), reps))))


def bench_ceiling(name, workers, rounds, reps=2):
    """No Dask: the batch cut in ``workers`` pieces, each in its own process, all at once.

    The efficiency this reaches is the machine's own ceiling for data-parallel work (shared
    cores, memory bandwidth), whatever the framework.
    """
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    B = CASES[name][1]
    bounds = np.linspace(0, B, workers + 1).round().astype(int)
    alone, together = [], []
    for _ in range(rounds):
        for jobs, store in (([(0, B)], alone), (list(zip(bounds[:-1], bounds[1:])), together)):
            q = ctx.Queue()
            procs = [ctx.Process(target=_half_batch, args=(q, name, lo, hi, reps)) for lo, hi in jobs]
            for pr in procs:
                pr.start()
            times = [q.get() for _ in procs]
            for pr in procs:
                pr.join()
            store.append(max(times))
    a, t = float(np.median(alone)), float(np.median(together))
    return dict(size=name, workers=workers, whole_batch_ms=1e3 * a, pieces_at_once_ms=1e3 * t, efficiency=a / (workers * t))


def run_train(extra, steps):
    cmd = [sys.executable, "-m", "fastbptt", "train", "--steps", str(steps)] + TRAIN_ARGS + extra
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"in ([\d.]+) s, ([\d,]+) chars/s", out)
    w = re.search(r"([\d.]+) s waiting on the cluster", out)
    return dict(seconds=float(m.group(1)), chars_per_s=float(m.group(2).replace(",", "")),
                wait_s=float(w.group(1)) if w else None)


def bench_train(rounds, steps, workers):
    runs = {"single": [], "workers": []}
    for _ in range(rounds):
        runs["single"].append(run_train([], steps))
        runs["workers"].append(run_train(["--workers", str(workers)], steps))
    single = float(np.median([r["chars_per_s"] for r in runs["single"]]))
    dist = float(np.median([r["chars_per_s"] for r in runs["workers"]]))
    return dict(steps=steps, workers=workers, runs=runs, single_chars_per_s=single,
                workers_chars_per_s=dist, ratio=dist / single,
                wait_s=float(np.median([r["wait_s"] for r in runs["workers"]])),
                train_s=float(np.median([r["seconds"] for r in runs["workers"]])))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sizes", default="tiny,medium,large")
    ap.add_argument("--train-steps", type=int, default=500)
    ap.add_argument("--train-rounds", type=int, default=2)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON (README figure: "
                    "docs/figures/distributed.json)")
    args = ap.parse_args(argv)
    from dask.distributed import Client, LocalCluster
    from fastbptt.cli import measurement_metadata
    meta = measurement_metadata("python bench/bench_distributed.py " + " ".join(sys.argv[1:] if argv is None else argv))
    names = [s for s in args.sizes.split(",") if s]
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as lc, Client(lc) as client:
        calls, round_trip_ms = bench_calls(client, args.rounds, names)
    for name, r in calls.items():
        print(f"{name:7s} {r['size']}: single {r['single_ms']:.2f} ms, distributed "
              f"{r['distributed_ms']:.2f} ms, overhead {r['overhead_ms']:.2f} ms, "
              f"speed-up {r['speedup']:.2f}, efficiency {100 * r['efficiency']:.0f}%; slowest shard "
              f"{r['slowest_shard_ms']:.1f} ms, {r['outside_compute_ms']:.1f} ms outside", flush=True)
    print(f"one empty Dask task: {round_trip_ms:.1f} ms")
    ceiling = bench_ceiling("large", args.workers, args.rounds) if "large" in names else None
    if ceiling:
        print(f"no Dask, large: whole batch {ceiling['whole_batch_ms']:.0f} ms in one process, "
              f"{args.workers} pieces at once {ceiling['pieces_at_once_ms']:.0f} ms: efficiency "
              f"{100 * ceiling['efficiency']:.0f}%")
    train = bench_train(args.train_rounds, args.train_steps, args.workers) if args.train_steps else None
    if train:
        print(f"train: single {train['single_chars_per_s']:,.0f} chars/s, --workers {args.workers} "
              f"{train['workers_chars_per_s']:,.0f} chars/s ({train['ratio']:.2f}x), "
              f"{train['wait_s']:.1f} of {train['train_s']:.1f} s waiting on the cluster")
    default_model = grad_bytes(96, 128, 96)
    out = dict(meta=measurement_metadata(meta["command"], meta), calls=calls,
               round_trip_ms=round_trip_ms, ceiling=ceiling, train=train,
               grad_bytes={"train default (vocab 96, hidden 128), float32": default_model,
                           "large (1024, 1024, 1024), float32": grad_bytes(1024, 1024, 1024)})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
