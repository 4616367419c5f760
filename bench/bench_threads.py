"""Two Python threads calling fastbptt at once: the compiled kernels release the GIL.

    python bench/bench_threads.py [--T 2000] [--B 8] [--H 64] [--calls 8] [--repeats 5]

Runs ``2·calls`` independent ``loss_and_grad`` calls (float32, one-hot inputs, tanh) once
in one thread and once split over two threads, and reports the best wall time of
``--repeats`` runs of each. The same is done for the time-loop kernel alone
(``cpu.forward_steps``) and, for contrast, for the NumPy reference, whose per-step Python
loop holds the GIL most of the time. BLAS is pinned to one thread so the numbers show
fastbptt's own parallelism (set OMP/OPENBLAS_NUM_THREADS yourself to override).

Speed-up = one-thread time / two-thread time: up to 2.0 on two idle cores. On a busy
machine the speed-up cannot show, so the script also measures what ``nogil`` guarantees
directly: how long a Python loop in the main thread stalls while the kernel runs in another
thread, for fastbptt's kernel and for the same code compiled holding the GIL.
"""
from __future__ import annotations

import argparse
import os
import threading
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

import fastbptt  # noqa: E402
from fastbptt import cpu  # noqa: E402


def _timed(fn, jobs, n_threads, repeats):
    """Best wall time to run every job, split round-robin over n_threads threads."""
    best = float("inf")
    for _ in range(repeats):
        parts = [jobs[i::n_threads] for i in range(n_threads)]
        barrier = threading.Barrier(n_threads + 1)

        def worker(part):
            barrier.wait()
            for j in part:
                fn(j)

        threads = [threading.Thread(target=worker, args=(p,)) for p in parts]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=2000)
    ap.add_argument("--B", type=int, default=8)
    ap.add_argument("--H", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=32)
    ap.add_argument("--calls", type=int, default=8, help="calls per thread in the two-thread run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--reference-T", type=int, default=200, help="T for the (slow) reference rows")
    a = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    p = fastbptt.init_params(a.vocab, a.H, a.vocab, dtype=np.float32, seed=0)
    n = 2 * a.calls
    ids = [rng.integers(0, a.vocab, (a.T + 1, a.B)) for _ in range(n)]
    xu = [rng.standard_normal((a.T, a.B, a.H)).astype(np.float32) for _ in range(n)]
    W = p["W"]
    cpu.register_blas()
    sc, fs = cpu.gemm_scratch(1, W)
    e0, e1 = np.empty(0, np.float32), np.empty((0, a.H), np.float32)
    eW = np.empty((0, 0), np.float32)          # no transposed W: the step reads W itself
    hs = [np.zeros((a.T + 1, a.B, a.H), np.float32) for _ in range(n)]
    ref_ids = [i[: a.reference_T + 1] for i in ids]

    rows = {
        "loss_and_grad (cpu)": lambda j: fastbptt.loss_and_grad(p, ids[j][:-1], ids[j][1:]),
        "forward_steps kernel": lambda j: cpu.forward_steps(cpu.cell_tag(0), False, xu[j], hs[j], W, eW, e0, e1, 0, sc, fs),
        f"reference (numpy, T={a.reference_T})":
            lambda j: fastbptt.loss_and_grad(p, ref_ids[j][:-1], ref_ids[j][1:], backend="numpy"),
    }
    print(f"T={a.T} B={a.B} H={a.H} vocab={a.vocab} float32, {n} calls, best of {a.repeats}, "
          f"cores={os.cpu_count()}")
    print(f"{'':36s} {'1 thread':>10s} {'2 threads':>10s} {'speed-up':>9s}")
    for name, fn in rows.items():
        fn(0)                                          # compile / warm up outside the timing
        t1 = _timed(fn, list(range(n)), 1, a.repeats)
        t2 = _timed(fn, list(range(n)), 2, a.repeats)
        print(f"{name:36s} {t1 * 1e3:8.1f}ms {t2 * 1e3:8.1f}ms {t1 / t2:8.2f}x")

    # Whether another Python thread runs while a kernel runs. Unlike the speed-up this does
    # not need idle cores: a kernel holding the GIL stalls the other thread for its whole
    # duration, a nogil kernel only for scheduling hiccups.
    import numba
    held = numba.njit(nogil=False)(cpu.forward_steps.py_func)      # the same kernel, GIL held
    Ts = 10 * a.T                                                   # long enough to dwarf 5 ms switches
    xs = rng.standard_normal((Ts, a.B, a.H)).astype(np.float32)
    hss = np.zeros((Ts + 1, a.B, a.H), np.float32)
    held(cpu.cell_tag(0), False, xs[:2].copy(), hss[:3], W, eW, e0, e1, 0, sc, fs)
    print(f"\nlongest stall of a Python loop in the main thread while forward_steps (T={Ts}) "
          "runs in another:")
    for name, k in (("nogil=True (fastbptt)", cpu.forward_steps), ("GIL held (same code)", held)):
        stall, dur = min((_stall(lambda: k(cpu.cell_tag(0), False, xs, hss, W, eW, e0, e1, 0, sc, fs)) for _ in range(a.repeats)),
                         key=lambda r: r[0] / r[1])
        print(f"  {name:24s} {stall * 1e3:7.1f} ms of {dur * 1e3:7.1f} ms ({100 * stall / dur:5.1f}%)")


def _stall(fn):
    """(longest time the calling thread's Python loop made no progress while fn ran in
    another thread, fn's duration)."""
    window, done, samples = {}, threading.Event(), []

    def worker():
        window["start"] = time.perf_counter()
        fn()
        window["end"] = time.perf_counter()
        done.set()

    th = threading.Thread(target=worker)
    th.start()
    ticks = 0
    while not done.is_set():
        ticks += 1
        if ticks % 256 == 0:
            samples.append(time.perf_counter())
    th.join()
    ts = [window["start"]] + [t for t in samples if window["start"] < t < window["end"]] + [window["end"]]
    return max(b - a for a, b in zip(ts, ts[1:])), window["end"] - window["start"]


if __name__ == "__main__":
    main()
