"""The workspace each thread keeps between full-BPTT and layer-API calls (fastbptt.cpu.workspace)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastbptt
from fastbptt import memory as M
from fastbptt.cpu import workspace as W

CELLS = ("rnn", "lstm", "gru")


def _case(cell, dtype=np.float64, T=7, B=3, I=5, H=6, O=4, seed=0):
    rng = np.random.default_rng(seed)
    p = fastbptt.init_params(I, H, O, cell=cell, dtype=dtype, seed=seed)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    y = rng.integers(0, O, (T, B))
    return p, x, y


def _same_in_threads(calls, want, repeats):
    """Each call repeated in a thread of its own, all at once (the kernels release the GIL);
    every result equals its want bit for bit."""
    got = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i):
        start.wait()
        for _ in range(repeats):
            got[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, w in zip(got, want):
        _same(g, w)


def _slot_buf():
    return W._local.slot.buf


def _same(a, b):
    assert a[0] == b[0]
    for k in a[1]:
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)
    for s, t in zip(a[2] if isinstance(a[2], tuple) else (a[2],),
                    b[2] if isinstance(b[2], tuple) else (b[2],)):
        np.testing.assert_array_equal(s, t)


@pytest.mark.parametrize("cell", CELLS)
def test_a_kept_workspace_full_of_garbage_gives_the_same_bits(cell):
    """The next call reuses the buffer (same memory) and writes every element it reads: NaN
    bytes left in it by anything else change nothing, in either dtype."""
    for dt in (np.float32, np.float64):
        p, x, y = _case(cell, dt)
        W.release()
        fresh = fastbptt.loss_and_grad(p, x, y, cell=cell)
        buf = _slot_buf()
        buf[:] = 0xFF                                    # every float is a NaN now
        kept = fastbptt.loss_and_grad(p, x, y, cell=cell)
        assert _slot_buf() is buf                        # reused, not reallocated
        _same(kept, fresh)
        for g in kept[1].values():                       # nothing returned lives in it
            assert not np.shares_memory(g, buf)


@pytest.mark.parametrize("cell", CELLS)
def test_layer_api_and_stacked_calls_with_garbage_in_the_workspace_give_the_same_bits(cell):
    """The layer API's CPU functions take their input projection and deltas from the kept
    workspace: NaN bytes left there change nothing, and nothing they return lives in it."""
    fwd, bwd = getattr(fastbptt, f"{cell}_forward"), getattr(fastbptt, f"{cell}_backward")
    for dt in (np.float32, np.float64):
        p, x, y = _case(cell, dt, B=12)
        state = (x, None, None) if cell == "lstm" else (x, None)
        extra = (p["bn"],) if cell == "gru" else ()
        dhs = np.random.default_rng(1).standard_normal((7, 12, 6)).astype(dt)
        stacked = dict(cell=cell, num_layers=2, bidirectional=True)
        ps = fastbptt.init_params(5, 6, 4, dtype=dt, seed=3, **stacked)

        def run():
            hs, cache = fwd(*state, p["U"], p["W"], p["b"], *extra)
            return hs, bwd(dhs, cache), fastbptt.loss_and_grad(ps, x, y, **stacked)
        W.release()
        hs1, g1, s1 = run()
        buf = _slot_buf()
        buf[:] = 0xFF                                    # every float is a NaN now
        hs2, g2, s2 = run()
        assert _slot_buf() is buf                        # reused, not reallocated
        np.testing.assert_array_equal(hs2, hs1)
        for a, b in zip(g2, g1):
            np.testing.assert_array_equal(a, b)
        _same(s2, s1)
        for a in (hs2, *g2, *s2[1].values()):
            assert not np.shares_memory(a, buf)


def test_a_bigger_call_replaces_the_workspace_and_a_smaller_one_reuses_it():
    W.release()
    assert W.kept_bytes() == 0
    small = _case("lstm", T=3)
    big = _case("lstm", T=40)
    fastbptt.loss_and_grad(*small, cell="lstm")
    n_small = W.kept_bytes()
    assert n_small > 0
    fastbptt.loss_and_grad(*big, cell="lstm")
    n_big = W.kept_bytes()
    assert n_big > n_small
    buf = _slot_buf()
    again = fastbptt.loss_and_grad(*small, cell="lstm")   # a prefix of the big one
    assert _slot_buf() is buf and W.kept_bytes() == n_big
    W.release()
    _same(again, fastbptt.loss_and_grad(*small, cell="lstm"))
    assert M.release_workspaces() == n_small         # the small call allocated its own
    assert W.kept_bytes() == 0


def test_release_workspaces_returns_the_bytes_it_freed():
    fastbptt.loss_and_grad(*_case("gru"), cell="gru")
    held = W.kept_bytes()
    assert held > 0
    assert M.release_workspaces() == held
    assert W.kept_bytes() == 0 and M.release_workspaces() == 0


def test_each_thread_keeps_its_own_and_frees_it_when_it_ends():
    """Calls from several threads at once each get their own workspace (the kernel releases
    the GIL) and the right answer; a thread's workspace goes with the thread."""
    W.release()
    cases = [_case(c, seed=i) for i, c in enumerate(CELLS * 2)]
    calls = [lambda cs=cs, c=c: fastbptt.loss_and_grad(*cs, cell=c)
             for cs, c in zip(cases, CELLS * 2)]
    want = [f() for f in calls]
    W.release()
    _same_in_threads(calls, want, 20)
    import gc
    gc.collect()
    assert W.kept_bytes() == 0                           # this thread kept none; theirs are gone


def test_measure_peak_counts_the_workspace_of_a_warm_call():
    """memory.measure_peak frees kept workspaces first: a warm call's peak is the first
    call's, which memory.estimate predicts."""
    p, x, y = M.make_problem(200, 8, 32, 24, seed=1, cell="lstm")
    for _ in range(2):       # the first call on an empty Numba cache leaves lazy caches to fill
        fastbptt.loss_and_grad(p, x, y, cell="lstm")
    _, warm, _ = M.measure_peak(lambda: fastbptt.loss_and_grad(p, x, y, cell="lstm"))
    ws = W.kept_bytes()
    W.release()
    _, cold, _ = M.measure_peak(lambda: fastbptt.loss_and_grad(p, x, y, cell="lstm"))
    assert ws > cold / 2                                 # the workspace is most of the peak
    assert abs(warm - cold) <= 1024                      # Python objects' noise, no workspace


def _subprocess(env_value, code):
    env = dict(os.environ, FASTBPTT_KEEP_WORKSPACE=env_value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)


def test_keep_workspace_off_keeps_none():
    code = ("import numpy as np, fastbptt\n"
            "from fastbptt.cpu import workspace as W\n"
            "p = fastbptt.init_params(3, 4, 2, dtype=np.float64, seed=0)\n"
            "x = np.zeros((5, 2, 3)); y = np.zeros((5, 2), int)\n"
            "fastbptt.loss_and_grad(p, x, y)\n"
            "print(W.KEEP, W.kept_bytes())\n")
    r = _subprocess("0", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "0"]
    r = _subprocess("1", code)
    assert r.returncode == 0, r.stderr
    keep, n = r.stdout.split()
    assert keep == "True" and int(n) > 0


def test_a_bad_keep_workspace_value_names_the_variable():
    r = _subprocess("sometimes", "import fastbptt.cpu.workspace")
    assert r.returncode != 0
    assert "FASTBPTT_KEEP_WORKSPACE='sometimes'" in r.stderr and "expected 1" in r.stderr


def _arena_buf():
    return W._local.slot.arena


@pytest.mark.parametrize("cell", CELLS)
def test_a_stacked_call_keeps_its_arena_and_garbage_there_changes_no_bit(cell):
    """A stacked model's state rows, outputs and reversed inputs come from the thread's kept
    arena from the second call on: NaN bytes left there change nothing, nothing returned
    lives in it, and release_workspaces frees it (the next call is a first call again)."""
    for dt in (np.float32, np.float64):
        stacked = dict(cell=cell, num_layers=2, bidirectional=True)
        ps = fastbptt.init_params(5, 6, 4, dtype=dt, seed=3, **stacked)
        rng = np.random.default_rng(2)
        x = rng.standard_normal((7, 3, 5)).astype(dt)
        y = rng.integers(0, 4, (7, 3))
        lengths = np.array([7, 4, 6])                  # padding: the gathered reverse path
        for extra in ({}, {"mask": np.arange(7)[:, None] < lengths[None, :]}):
            W.release()
            first = fastbptt.loss_and_grad(ps, x, y, **stacked, **extra)
            assert _arena_buf() is None                  # the first call sizes it, the next has it
            second = fastbptt.loss_and_grad(ps, x, y, **stacked, **extra)
            buf = _arena_buf()
            assert buf is not None and buf.nbytes >= 4 * 7 * 3 * 6 * dt().itemsize
            buf[:] = 0xFF                                # every float is a NaN now
            third = fastbptt.loss_and_grad(ps, x, y, **stacked, **extra)
            assert _arena_buf() is buf                   # reused, not reallocated
            _same(second, first)
            _same(third, first)
            for out in (second, third):
                last = out[2] if isinstance(out[2], tuple) else (out[2],)
                for a in (*out[1].values(), *last):
                    assert not np.shares_memory(a, buf)
            assert W.kept_bytes() >= buf.nbytes
            assert M.release_workspaces() >= buf.nbytes
            assert _arena_buf() is None and W.kept_bytes() == 0


def test_stacked_calls_from_several_threads_each_use_their_own_arena():
    W.release()
    stacked = dict(num_layers=2, bidirectional=True)
    cases = []
    for i, cell in enumerate(CELLS * 2):
        ps = fastbptt.init_params(5, 6, 4, cell=cell, dtype=np.float64, seed=i, **stacked)
        rng = np.random.default_rng(i)
        cases.append((cell, ps, rng.standard_normal((7, 3, 5)), rng.integers(0, 4, (7, 3))))
    calls = [lambda c=c, ps=ps, x=x, y=y: fastbptt.loss_and_grad(ps, x, y, cell=c, **stacked)
             for c, ps, x, y in cases]
    _same_in_threads(calls, [f() for f in calls], 10)


def test_measure_peak_of_a_warm_stacked_call_is_the_first_calls():
    """The arena is allocated at the start of the call after the one that sized it (never
    at a call's end, next to the arrays still in use), and measure_peak frees it first."""
    stacked = dict(cell="lstm", num_layers=2, bidirectional=True)
    ps = fastbptt.init_params(16, 32, 8, dtype=np.float32, seed=0, **stacked)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 4, 16)).astype(np.float32)
    y = rng.integers(0, 8, (50, 4))
    run = lambda: fastbptt.loss_and_grad(ps, x, y, **stacked)   # noqa: E731
    for _ in range(2):
        run()
    _, cold, _ = M.measure_peak(run)                     # released first: a first call
    run()
    W.release()
    _, again, _ = M.measure_peak(run)
    import tracemalloc
    run()                                                # sizes the arena
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    run()                                                # allocates it at its start
    warm = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    arena = _arena_buf().nbytes
    # (a few tens of KB of Python objects vary between calls in a long test session)
    assert arena > 0.3 * cold                            # an arena allocated next to its
    assert abs(again - cold) <= 0.05 * cold              # call's arrays would show
    assert warm <= 1.05 * cold                           # one arena instead of its arrays
