"""What does the memory pre-check cost per call?

    python bench/bench_memcheck.py [--rounds 41] [--calls 200]

``loss_and_grad`` on the CPU backend compares the predicted peak with the available memory
before compiled code runs (fastbptt/_memcheck.py). At min-char-rnn's size (T = 25, B = 1,
H = 100, vocab 65) the check is a few multiplications; this times the whole call with the
check and with it replaced by a no-op, interleaved round by round (medians and quartiles, as
the machine may be busy), and the check alone, both where it stops at once and where it is
consulted (T = 100,000, B = 8, H = 256: the estimate and /proc are read).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastbptt
import fastbptt.api as api
from fastbptt._memcheck import check_fits
from fastbptt._validate import validate_loss_and_grad


def _per_call(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--calls", type=int, default=200)
    a = ap.parse_args(argv)
    p = fastbptt.init_params(65, 100, 65, seed=0)
    ids = np.random.default_rng(0).integers(0, 65, (26, 1))
    x, y = ids[:-1], ids[1:]
    call = lambda: fastbptt.loss_and_grad(p, x, y)      # noqa: E731
    _per_call(call, a.calls)                             # compile / warm up
    times = {"with the check": [], "check replaced by a no-op": []}
    try:
        for _ in range(a.rounds):
            for name, f in (("with the check", check_fits), ("check replaced by a no-op", lambda p, fused: None)):
                api.check_fits = f
                times[name].append(_per_call(call, a.calls))
    finally:
        api.check_fits = check_fits
    for name, v in times.items():
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        print(f"loss_and_grad, min-char size, {name}: median {med:.1f} us/call (quartiles {q1:.1f}, {q3:.1f})")
    small = validate_loss_and_grad(p, x, y, None, "tanh", "cross_entropy", "sum", None, False, "cpu")
    print(f"check alone, min-char size (stops at once): {_per_call(lambda: check_fits(small, True), 100000):.2f} us")
    big_p = fastbptt.init_params(32, 256, 32, seed=0)
    big_ids = np.zeros((100000, 8), np.int64)
    big = validate_loss_and_grad(big_p, big_ids, big_ids, None, "tanh", "cross_entropy", "sum", None,
                                 False, "cpu")
    try:
        us = _per_call(lambda: check_fits(big, True), 2000)
        print(f"check alone, T=100000 B=8 H=256 (consulted): {us:.1f} us")
    except MemoryError as e:
        print(f"check alone, T=100000 B=8 H=256: refused here ({e})")


if __name__ == "__main__":
    main()
