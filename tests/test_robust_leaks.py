"""10,000 calls leave memory flat: Python objects (tracemalloc, which also sees
NumPy's buffers) and the process's resident set (which also sees Numba's runtime
allocations). Tiny problems keep this quick; every path is in the mix: ids, floats,
embedding, masks, truncation, checkpointing, the layer API, check_finite and rejected input.
"""
from __future__ import annotations

import gc
import os
import sys
import tracemalloc

import numpy as np
import pytest

import fastbptt
from cases import make_case

CALLS = 10_000


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _mix():
    cases = []
    for i, (kind, tgt) in enumerate([("onehot", "ids"), ("float", "probs"), ("embed", "mse")]):
        c = make_case(input_kind=kind, target_kind=tgt, T=4, B=2, H=3, masked=i == 1, seed=i)
        cases.append(c)
    cases.append(dict(cases[0], truncate=2, checkpoint=2))
    cases.append(dict(cases[1], check_finite=True, backend="numpy"))
    rng = np.random.default_rng(0)
    U, W, b = rng.standard_normal((3, 2)), rng.standard_normal((3, 3)), np.zeros(3)
    x, dhs = rng.standard_normal((4, 2, 2)), rng.standard_normal((4, 2, 3))
    bad = dict(cases[0], targets=np.full((4, 2), 99))

    def call(i):
        k = i % (len(cases) + 2)
        if k < len(cases):
            return fastbptt.loss_and_grad(**cases[k])
        if k == len(cases):
            hs, cache = fastbptt.rnn_forward(x, None, U, W, b)
            return fastbptt.rnn_backward(dhs, cache)
        try:
            fastbptt.loss_and_grad(**bad)
        except ValueError:
            return None
        raise AssertionError("bad targets were accepted")
    return call


def _run(call, n):
    for i in range(n):
        call(i)
    gc.collect()


def _check(calls):
    call = _mix()
    _run(call, 500)                                  # compile, warm caches and allocator pools
    tracemalloc.start()
    try:
        _run(call, 200)
        base = tracemalloc.take_snapshot()
        rss0 = _rss_bytes()
        _run(call, calls)
        after = tracemalloc.take_snapshot()
        rss1 = _rss_bytes()
    finally:
        tracemalloc.stop()
    growth = sum(s.size_diff for s in after.compare_to(base, "filename"))
    top = "\n".join(map(str, after.compare_to(base, "lineno")[:8]))
    # a leak of one 8-byte object per call would be 80 kB; these bounds are far below any
    # real leak (the smallest arrays here are ~100 bytes each) yet above allocator noise
    assert growth < 64 * 1024, f"traced memory grew by {growth} bytes over {calls} calls:\n{top}"
    assert rss1 - rss0 < 4 * 2 ** 20, f"RSS grew by {(rss1 - rss0) / 2 ** 20:.1f} MiB over {calls} calls"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_10000_calls_leave_memory_flat():
    _check(CALLS)
