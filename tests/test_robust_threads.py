"""Concurrent calls from several Python threads give the serial results.

The compiled kernels are ``nogil=True`` (checked in test_robust_cache.py), so threads really
run them at the same time; nothing in fastbptt keeps per-call state in module globals, so
they must not interfere. ``bench/bench_threads.py`` measures the speed-up.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastbptt
from cases import make_case

N_THREADS = 4


def _cases():
    out = []
    for i, (act, kind, tgt, dt) in enumerate([
            ("tanh", "float", "ids", np.float64), ("sigmoid", "onehot", "probs", np.float64),
            ("relu", "embed", "mse", np.float64), ("tanh", "float", "mse", np.float32),
            ("tanh", "onehot", "ids", np.float32), ("sigmoid", "embed", "ids", np.float32)]):
        c = make_case(activation=act, input_kind=kind, target_kind=tgt, dtype=dt, T=30, B=4,
                      H=16, masked=i % 2 == 1, seed=i)
        c["truncate"] = [None, 7, (3, 9)][i % 3]
        c["checkpoint"] = [None, "sqrt"][i % 2]
        out.append(c)
    return out


def _same(a, b):
    assert a[0] == b[0]
    for k in b[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)
    np.testing.assert_array_equal(a[2], b[2])


def test_concurrent_loss_and_grad_equals_serial():
    cases = _cases()
    serial = [fastbptt.loss_and_grad(**c) for c in cases]
    jobs = list(range(len(cases))) * 6
    start = threading.Barrier(N_THREADS)

    def work(i):
        if i < N_THREADS:
            start.wait()                     # make the first calls really overlap
        return fastbptt.loss_and_grad(**cases[i])

    with ThreadPoolExecutor(N_THREADS) as ex:
        results = list(ex.map(work, jobs))
    for i, r in zip(jobs, results):
        _same(r, serial[i])


def test_concurrent_layer_api_equals_serial():
    rng = np.random.default_rng(0)
    T, B, I, H = 40, 3, 5, 12
    U, W, b = (0.5 * rng.standard_normal(s) for s in ((H, I), (H, H), (H,)))
    xs = [rng.standard_normal((T, B, I)) for _ in range(8)]
    dhs = [rng.standard_normal((T, B, H)) for _ in range(8)]

    def run(i):
        hs, cache = fastbptt.rnn_forward(xs[i], None, U, W, b, activation=["tanh", "relu"][i % 2])
        return (hs.copy(),) + tuple(fastbptt.rnn_backward(dhs[i], cache))

    serial = [run(i) for i in range(8)]
    with ThreadPoolExecutor(N_THREADS) as ex:
        results = list(ex.map(run, list(range(8)) * 4))
    for i, r in zip(list(range(8)) * 4, results):
        for a, e in zip(r, serial[i]):
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("kernel", ["forward_steps", "backward_steps"])
def test_time_loop_kernels_release_the_gil(kernel):
    """A kernel compiled with nogil=True: its dispatcher says so (the effect is benchmarked)."""
    from fastbptt import cpu
    assert getattr(cpu, kernel).targetoptions.get("nogil") is True


def python_ticks_during(fn):
    """Run fn() in a thread while this thread runs a pure-Python loop; return (the longest
    time this thread made no progress during the call, the call's duration). A call that
    holds the GIL stalls the loop for nearly its whole duration; one that releases it only
    for scheduling hiccups, however busy the machine."""
    import time
    window = {}
    done = threading.Event()

    def worker():
        window["start"] = time.perf_counter()
        fn()
        window["end"] = time.perf_counter()
        done.set()

    samples = []                                      # (time, ticks so far), every 256 ticks
    th = threading.Thread(target=worker)
    th.start()
    ticks = 0
    while not done.is_set():
        ticks += 1
        if ticks % 256 == 0:
            samples.append((time.perf_counter(), ticks))
    th.join()
    # the longest stretch of the call during which this thread could not run Python
    times = [window["start"]] + [t for t, _ in samples if window["start"] < t < window["end"]] \
        + [window["end"]]
    longest = max(b - a for a, b in zip(times, times[1:]))
    return longest, window["end"] - window["start"]


def test_python_threads_run_while_a_kernel_runs():
    """The behaviour nogil=True promises: another Python thread keeps running meanwhile."""
    from fastbptt import cpu
    T, B, H = 20_000, 8, 32
    rng = np.random.default_rng(0)
    xu = rng.standard_normal((T, B, H))
    W = 0.1 * rng.standard_normal((H, H))
    hs = np.zeros((T + 1, B, H))
    cpu.register_blas()
    sc, fs = cpu.gemm_scratch(1, W)
    e0, e1 = np.empty(0), np.empty((0, H))
    eW = np.empty((0, 0))                 # no transposed W: the step reads W itself

    def run(n):
        cpu.forward_steps(cpu.cell_tag(0), False, xu[:n].copy(), hs[:n + 1], W, eW, e0, e1, 0, sc, fs)
    run(2)                                                            # compile outside
    stall, seconds = python_ticks_during(lambda: run(T))
    assert stall < 0.5 * seconds, f"Python stalled {stall * 1e3:.0f} ms of a {seconds * 1e3:.0f} ms kernel"
