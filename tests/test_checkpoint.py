"""Checkpointed BPTT: the same gradient as full BPTT (and as truncation without it)."""
from __future__ import annotations

import numpy as np
import pytest

import fastbptt
from fastbptt import engine
from fastbptt._validate import validate_loss_and_grad
from fastbptt.cpu import CpuOps
from cases import INPUT_KINDS, TARGET_KINDS, make_case
from tolerances import CHECKPOINT64, EXACT32, EXACT64


def call(case, **kw):
    return fastbptt.loss_and_grad(**case, **kw)


def engine_full(case):
    """Full BPTT through the scheduler (not the fused kernel): the same order of operations."""
    p = validate_loss_and_grad(case["params"], case["inputs"], case["targets"], case["h0"],
                               case["activation"], case["loss"], case["reduction"], case["mask"],
                               case["batch_first"], "cpu")
    return engine.run(p, CpuOps(p))


def assert_same(got, want, tol):
    np.testing.assert_allclose(got[0], want[0], **tol)
    assert set(got[1]) == set(want[1])
    for k in want[1]:
        np.testing.assert_allclose(got[1][k], want[1][k], err_msg=f"grads[{k!r}]", **tol)
    np.testing.assert_allclose(got[2], want[2], **tol)


SEGMENTS = (1, 2, 3, 4, "sqrt", 10, 11, 12, 40)


@pytest.mark.parametrize("input_kind", INPUT_KINDS)
@pytest.mark.parametrize("target_kind", TARGET_KINDS)
@pytest.mark.parametrize("many_to_one,masked,reduction",
                         [(False, False, "sum"), (False, True, "mean"), (True, True, "sum")])
def test_checkpoint_equals_full_bptt(input_kind, target_kind, many_to_one, masked, reduction):
    case = make_case(input_kind=input_kind, target_kind=target_kind, many_to_one=many_to_one,
                     masked=masked, reduction=reduction, T=11, B=3, seed=7)
    full_engine = engine_full(case)
    full = call(case)
    for s in SEGMENTS:
        got = call(case, checkpoint=s)
        assert_same(got, full_engine, CHECKPOINT64)
        assert_same(got, full, CHECKPOINT64)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_checkpoint_activations_and_batch_first(activation):
    case = make_case(activation=activation, input_kind="float", masked=True, batch_first=True, T=9, seed=1)
    full = call(case)
    for s in (1, 2, "sqrt", 5, 9):
        assert_same(call(case, checkpoint=s), full, CHECKPOINT64)


def test_checkpoint_float32():
    case = make_case(input_kind="onehot", dtype=np.float32, T=30, B=4, H=16, seed=2)
    full = call(case)
    for s in (1, "sqrt", 7):
        got = call(case, checkpoint=s)
        assert got[1]["W"].dtype == np.float32
        assert_same(got, full, EXACT32)


@pytest.mark.parametrize("truncate", [1, 2, 3, 5, (1, 3), (2, 5), (3, 4), (2, 13), (4, 4)])
@pytest.mark.parametrize("input_kind,target_kind,masked", [("float", "ids", True),
                                                             ("embed", "probs", False),
                                                             ("onehot", "mse", True)])
def test_checkpoint_with_truncation(truncate, input_kind, target_kind, masked):
    case = make_case(input_kind=input_kind, target_kind=target_kind, masked=masked, T=13, B=3, seed=9)
    want = call(case, truncate=truncate)
    ref = call(case, truncate=truncate, backend="numpy")
    assert_same(want, ref, EXACT64)
    for s in (1, 2, 3, "sqrt", 6, 13):
        assert_same(call(case, truncate=truncate, checkpoint=s), want, CHECKPOINT64)


def test_numpy_backend_accepts_checkpoint():
    case = make_case(input_kind="embed", masked=True, T=8, seed=3)
    assert_same(call(case, checkpoint="sqrt", backend="numpy"), call(case, backend="numpy"), EXACT64)


def test_segments_cover_window_backwards():
    assert engine._segments(0, 10, None) == [(0, 10)]
    assert engine._segments(0, 10, 4) == [(8, 10), (4, 8), (0, 4)]
    assert engine._segments(5, 13, 4) == [(12, 13), (8, 12), (5, 8)]
    assert engine._segments(4, 8, 4) == [(4, 8)]
