"""Batch rows across the cores (fastbptt.cpu.parallel): a split call equals the whole call.

The split is forced at small sizes by lowering its thresholds; the reference backend is the
oracle, and a split call must not depend on whether its parts ran side by side or in turn.
"""
import multiprocessing
import itertools

import numpy as np
import pytest

import fastbptt
from fastbptt import _validate as V
from fastbptt.cpu import blas, parallel
from cases import make_case


@pytest.fixture
def split3(monkeypatch):
    """Every CPU call with B >= 3 splits into 3 parts (3 'cores')."""
    monkeypatch.setattr(blas, "NTHREADS", 3)
    monkeypatch.setattr(parallel, "MIN_ROWS", 1)
    monkeypatch.setattr(parallel, "MIN_WORK", 0)
    monkeypatch.setattr(parallel, "_pool", None)
    monkeypatch.setattr(blas, "threads_now", lambda clock=None: 3)      # idle: side by side
    calls = []
    real = parallel.run_parts

    def counting(B, n, rows, solve, **kw):
        calls.append(n)
        return real(B, n, rows, solve, **kw)
    # the parts must reach the pool's threads (not only the calling one) when cores are free
    real_exec = parallel._executor
    monkeypatch.setattr(parallel, "_executor", lambda: calls.append("pool") or real_exec())
    monkeypatch.setattr(parallel, "run_parts", counting)
    return calls


def _assert_same(a, b, rtol):
    np.testing.assert_allclose(a[0], b[0], rtol=rtol)
    assert a[1].keys() == b[1].keys()
    for k in b[1]:
        np.testing.assert_allclose(a[1][k], b[1][k], rtol=rtol, atol=rtol, err_msg=k)
    for x, y in zip(a[2] if isinstance(a[2], tuple) else (a[2],),
                    b[2] if isinstance(b[2], tuple) else (b[2],)):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)


MODES = [dict(), dict(masked=True), dict(many_to_one=True), dict(masked=True, many_to_one=True)]
OPTIONS = [dict(), dict(truncate=3), dict(checkpoint=2)]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("input_kind,target_kind", [("float", "ids"), ("onehot", "probs"),
                                                    ("embed", "mse"), ("onehot", "ids")])
@pytest.mark.parametrize("mode", range(len(MODES)))
def test_split_equals_reference(split3, cell, input_kind, target_kind, mode):
    for opt, reduction in itertools.product(OPTIONS, ("sum", "mean")):
        case = make_case(cell=cell, input_kind=input_kind, target_kind=target_kind, T=6, B=7,
                         reduction=reduction, seed=mode, **MODES[mode])
        if MODES[mode].get("many_to_one") and opt:
            continue
        split3.clear()
        got = fastbptt.loss_and_grad(**case, **opt)
        # truncated and checkpointed calls split too
        assert split3 == [3, "pool", "pool"]
        want = fastbptt.loss_and_grad(**case, **opt, backend="numpy")
        _assert_same(got, want, 1e-10)


def test_split_of_batch_first_and_h0_none(split3):
    case = make_case(cell="lstm", T=5, B=4, batch_first=True, masked=True, h0=False)
    got = fastbptt.loss_and_grad(**case)
    assert split3 == [3, "pool", "pool"]
    _assert_same(got, fastbptt.loss_and_grad(**case, backend="numpy"), 1e-10)


def test_parts_side_by_side_or_in_turn_give_the_same_bits(split3, monkeypatch):
    case = make_case(cell="gru", T=6, B=9, dtype=np.float32, masked=True)
    side = fastbptt.loss_and_grad(**case)
    monkeypatch.setattr(blas, "threads_now", lambda clock=None: 1)      # a busy machine
    turn = fastbptt.loss_and_grad(**case)
    assert split3 == [3, "pool", "pool", 3]
    assert side[0] == turn[0]
    for k in side[1]:
        np.testing.assert_array_equal(side[1][k], turn[1][k])
    np.testing.assert_array_equal(side[2], turn[2])


def test_inputs_are_not_mutated(split3):
    case = make_case(cell="lstm", input_kind="embed", target_kind="probs", T=4, B=5, masked=True)
    before = {k: v.copy() for k, v in case["params"].items()}
    arrays = [case["inputs"].copy(), case["targets"].copy(), case["mask"].copy(),
              case["h0"][0].copy(), case["h0"][1].copy()]
    fastbptt.loss_and_grad(**case)
    for k, v in before.items():
        np.testing.assert_array_equal(case["params"][k], v)
    for a, b in zip(arrays, [case["inputs"], case["targets"], case["mask"], *case["h0"]]):
        np.testing.assert_array_equal(a, b)


def _problem(B, T=10, H=128, n_in=64, n_out=64, cell="rnn"):
    case = make_case(cell=cell, T=T, B=B, H=H, n_in=n_in, n_out=n_out, dtype=np.float32)
    return V.validate_loss_and_grad(case["params"], case["inputs"], case["targets"], case["h0"],
                                    "tanh", "cross_entropy", "sum", None, False, "cpu", None,
                                    None, cell=cell)


def test_which_calls_split(monkeypatch):
    monkeypatch.setattr(blas, "NTHREADS", 2)
    assert parallel.parts_of(_problem(B=32, T=100)) == 2          # the small size
    assert parallel.parts_of(_problem(B=1, T=100)) == 1           # min-char-rnn: one sequence
    assert parallel.parts_of(_problem(B=2 * parallel.MIN_ROWS - 1, T=100)) == 1
    assert parallel.parts_of(_problem(B=32, T=2, H=16, n_in=8, n_out=8)) == 1   # too little work
    # per-step products big enough to thread use both cores already (OpenBLAS alone); with
    # MKL for the one-thread products they split up to SPLIT_MAX, one-way models only
    medium = _problem(B=64, T=4, H=512, n_in=8, n_out=8, cell="lstm")
    for mkl in (False, True):
        monkeypatch.setattr(blas, "one_thread_mkl", lambda mkl=mkl: mkl)
        assert parallel.parts_of(medium) == (2 if mkl else 1)
        assert parallel.parts_of(medium, layers=2, directions=2) == 1
        assert parallel.parts_for(T=4, B=128, G=4, H=1024, n_in=8, n_out=8) == (2 if mkl else 1)
        assert parallel.parts_for(T=4, B=256, G=4, H=1024, n_in=8, n_out=8) == 1   # 2^30
        assert parallel.parts_of(_problem(B=32, T=100)) == 2
    monkeypatch.setattr(blas, "NTHREADS", 1)
    assert parallel.parts_of(_problem(B=32, T=100)) == 1


def _problem_with(T, B, H, n_in, n_out, input_kind, **opt):
    case = make_case(T=T, B=B, H=H, n_in=n_in, n_out=n_out, vocab=n_in, dtype=np.float32,
                     input_kind=input_kind)
    return V.validate_loss_and_grad(case["params"], case["inputs"], case["targets"], case["h0"],
                                    "tanh", "cross_entropy", "sum", None, False, "cpu",
                                    opt.get("truncate"), opt.get("checkpoint"), cell="rnn")


def test_memory_saving_calls_split_when_the_copies_are_small(monkeypatch):
    """Truncated and checkpointed calls split only when the split's copies are at most a
    quarter of the call's estimated peak or 8 MiB (fastbptt.memory.split_pays), and the
    estimate counts the split exactly when the call makes it."""
    from fastbptt import memory as M
    monkeypatch.setattr(blas, "NTHREADS", 2)
    monkeypatch.setattr(blas, "one_thread_mkl", lambda: False)
    cases = [  # (T, B, H, n_in, n_out, inputs, options, splits)
        (100, 32, 128, 64, 64, "float", dict(truncate=25), True),           # the small size
        (100, 32, 128, 64, 64, "onehot", dict(checkpoint=10), True),
        (1000, 32, 256, 256, 256, "onehot", dict(truncate=(25, 25)), True),  # memprofile: 1.4 MiB
        # float inputs: the engine's parts read views of them (no 32 MiB copy of [1000, 32,
        # 256] for a 5 MiB checkpointed call), only each window's rows are gathered
        (1000, 32, 256, 256, 256, "float", dict(checkpoint=32), True),
        # a 20,000-word vocabulary: each part's own gradients and Uᵀ are 20 MiB more
        (50, 32, 128, 20000, 20000, "onehot", dict(checkpoint=10), False),
        (50, 32, 128, 20000, 20000, "float", dict(truncate=10), False),
        (1000, 32, 256, 256, 256, "float", dict(), True),                   # full BPTT splits
    ]
    for T, B, H, n_in, n_out, kind, opt, splits in cases:
        p = _problem_with(T, B, H, n_in, n_out, kind, **opt)
        assert parallel.parts_of(p) == (2 if splits else 1), (T, kind, opt)
        est = M.estimate(**M.problem_args(p))
        assert ("batch_split" in est.components) == splits
        if opt and splits:
            whole = M.estimate(**M.problem_args(p), _parts=1).total
            assert est.components["batch_split"] <= max(M.SPLIT_MEMORY_SHARE * whole,
                                                        M.SPLIT_MEMORY_BYTES)
    # with no allowance, only full BPTT splits
    monkeypatch.setattr(M, "SPLIT_MEMORY_SHARE", 0.0)
    monkeypatch.setattr(M, "SPLIT_MEMORY_BYTES", 0)
    assert parallel.parts_of(_problem_with(100, 32, 128, 64, 64, "float", truncate=25)) == 1
    assert parallel.parts_of(_problem_with(100, 32, 128, 64, 64, "float")) == 2


def test_bounds_cover_the_batch_in_order():
    for B, n in [(7, 3), (9, 3), (2, 2), (64, 2), (5, 5)]:
        b = parallel.bounds(B, n)
        assert len(b) == n and b[0][0] == 0 and b[-1][1] == B
        assert all(b[i][1] == b[i + 1][0] for i in range(n - 1))
        assert max(h - lo for lo, h in b) - min(h - lo for lo, h in b) <= 1


def _split_in_child(q):
    case = make_case(cell="rnn", T=4, B=6)
    q.put(fastbptt.loss_and_grad(**case)[0])


def test_a_forked_child_can_split(split3):
    case = make_case(cell="rnn", T=4, B=6)
    want = fastbptt.loss_and_grad(**case)[0]                # the parent's pool exists now
    assert parallel._pool is not None
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_split_in_child, args=(q,))
    p.start()
    got = q.get(timeout=120)
    p.join(timeout=60)
    assert p.exitcode == 0 and got == want


# --------------------------------------------------------------------------- stacked models

def _stacked_case(cell, D, masked, B=5, T=6, seed=0, dtype=np.float64):
    from fastbptt.layers import param_key
    rng = np.random.default_rng(seed)
    L, H, n_in, n_out = 2, 4, 3, 5
    params = fastbptt.init_params(n_in, H, n_out, cell=cell, num_layers=L,
                                  bidirectional=D == 2, dtype=dtype, seed=seed)
    params[param_key("b", 1, D == 2)] += dtype(0.3)
    x = rng.standard_normal((T, B, n_in)).astype(dtype)
    y = rng.integers(0, n_out, (T, B))
    mask = None
    if masked:
        lengths = np.array([T, 1, 3, T - 1, 2][:B])
        mask = (np.arange(T)[:, None] < lengths[None, :]).astype(float)
    h0 = (0.5 * rng.standard_normal((L * D, B, H))).astype(dtype)
    if cell == "lstm":
        h0 = (h0, (0.5 * rng.standard_normal((L * D, B, H))).astype(dtype))
    return dict(params=params, inputs=x, targets=y, h0=h0, mask=mask, cell=cell, num_layers=L,
                bidirectional=D == 2, reduction="mean")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_stacked_split_equals_reference(split3, cell, D, masked):
    case = _stacked_case(cell, D, masked)
    split3.clear()
    got = fastbptt.loss_and_grad(**case)
    # 3 row blocks; a bidirectional model also runs each layer's directions side by side,
    # but inside a block, where the cores are taken: those run in turn
    assert split3 == [3, "pool", "pool"]
    _assert_same(got, fastbptt.loss_and_grad(**case, backend="numpy"), 1e-10)
    for opt in (dict(checkpoint=2),) + ((dict(truncate=(2, 3)),) if D == 1 else ()):
        split3.clear()
        got = fastbptt.loss_and_grad(**case, **opt)
        assert split3 == [3, "pool", "pool"]
        _assert_same(got, fastbptt.loss_and_grad(**case, **opt, backend="numpy"), 1e-10)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("masked", [False, True])
def test_directions_side_by_side_or_in_turn_give_the_same_bits(monkeypatch, cell, masked):
    monkeypatch.setattr(blas, "NTHREADS", 2)
    monkeypatch.setattr(parallel, "MIN_ROWS", 10 ** 6)          # no row split: B is tiny
    used = []
    real_exec = parallel._executor
    monkeypatch.setattr(parallel, "_executor", lambda: used.append(1) or real_exec())
    case = _stacked_case(cell, 2, masked, dtype=np.float32)
    monkeypatch.setattr(blas, "threads_now", lambda clock=None: 2)
    side = fastbptt.loss_and_grad(**case, checkpoint=3)
    assert len(used) == 2 * 2              # 2 layers x (forward, backward): the reverse directions
    monkeypatch.setattr(blas, "threads_now", lambda clock=None: 1)
    turn = fastbptt.loss_and_grad(**case, checkpoint=3)
    assert len(used) == 4
    assert side[0] == turn[0]
    for k in side[1]:
        np.testing.assert_array_equal(side[1][k], turn[1][k], err_msg=k)
    for a, b in zip(side[2] if cell == "lstm" else (side[2],), turn[2] if cell == "lstm" else (turn[2],)):
        np.testing.assert_array_equal(a, b)
    want = fastbptt.loss_and_grad(**case, checkpoint=3, backend="numpy")
    _assert_same(side, want, 2e-5)


def test_engine_parts_read_views_of_float_inputs():
    """rows_of(view_x=True) (the engine's parts) keeps float inputs a view of the caller's
    array; the default (the fused call's parts) copies them, C-contiguous."""
    p = _problem_with(6, 5, 4, 3, 2, "float", truncate=2)
    v = parallel.rows_of(p, 1, 4, view_x=True)
    c = parallel.rows_of(p, 1, 4)
    assert np.shares_memory(v.x, p.x) and v.x.shape == (6, 3, 3)
    assert not np.shares_memory(c.x, p.x) and c.x.flags.c_contiguous
    np.testing.assert_array_equal(v.x, c.x)
