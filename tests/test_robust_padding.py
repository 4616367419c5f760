"""Padding (the steps after a sequence's last valid step) influences nothing.

The oracle needs no reference backend: sequences of a batch are independent, so with
``reduction="sum"`` the batch's loss and weight gradients are the sums over sequences run
alone on their valid steps only (no mask, no padding at all), and each row of ``∂L/∂h0`` and
``h_last`` is that sequence's own. Poisoned padding (NaN, ±inf, huge values, ids outside the
vocabulary such as PyTorch's ignore index -100) must give that same answer on every backend.
"""
from __future__ import annotations


import numpy as np
import pytest

import fastbptt
from cases import INPUT_KINDS, TARGET_KINDS, make_case
from tolerances import EXACT64

SCHEDULES = {"full": {}, "truncate": dict(truncate=(2, 3)), "checkpoint": dict(checkpoint=2)}
POISONS = (np.nan, np.inf, -np.inf, 1e308)
T, B = 7, 4
LENGTHS = np.array([T, 3, 1, 5])        # valid steps of each sequence; the rest is padding
STATES = {"h0", "c0"}                   # per-sequence gradients (rows), not sums


def _mask(lengths=LENGTHS, T=T):
    return (np.arange(T)[:, None] < lengths[None, :]).astype(np.float64)


def _poison(case, many_to_one, value):
    """A copy of case whose padding holds ``value`` (floats) or bad ids (-100, 10**9)."""
    c = dict(case)
    pad = _mask() == 0                                        # [T, B]
    inputs = np.array(case["inputs"])
    if inputs.dtype.kind == "f":
        inputs[pad] = value
    else:
        inputs[pad] = -100 if np.isnan(value) else 10 ** 9
    c["inputs"] = inputs
    if not many_to_one:
        targets = np.array(case["targets"])
        if targets.dtype.kind == "f":
            targets[pad] = value
        else:
            targets[pad] = -100
        c["targets"] = targets
    return c


def _per_sequence(case, many_to_one, backend, sched, lengths=LENGTHS):
    """Loss, gradients and h_last summed from each sequence run alone on its valid steps."""
    loss, grads, h_last = 0.0, None, []
    for b, n in enumerate(lengths):
        kw = dict(case, mask=None, backend=backend, **sched)
        kw["inputs"] = case["inputs"][:n, b:b + 1]
        kw["targets"] = case["targets"][b:b + 1] if many_to_one else case["targets"][:n, b:b + 1]
        kw["h0"] = case["h0"][b:b + 1]
        lb, gb, hb = fastbptt.loss_and_grad(**kw)
        loss += lb
        if grads is None:
            grads = {k: (v.copy() if k not in STATES else [v]) for k, v in gb.items()}
        else:
            for k, v in gb.items():
                if k in STATES:
                    grads[k].append(v)
                else:
                    grads[k] += v
        h_last.append(np.concatenate(hb, axis=1) if isinstance(hb, tuple) else hb)
    for k in set(grads) & STATES:
        grads[k] = np.concatenate(grads[k])
    return loss, grads, np.concatenate(h_last)


def _assert_same(got, want):
    assert np.isfinite(got[0]), got[0]
    np.testing.assert_allclose(got[0], want[0], **EXACT64)
    assert set(got[1]) == set(want[1])
    for k in want[1]:
        assert np.all(np.isfinite(got[1][k])), f"grads[{k!r}] is not finite"
        np.testing.assert_allclose(got[1][k], want[1][k], err_msg=k, **EXACT64)
    h_last = np.concatenate(got[2], axis=1) if isinstance(got[2], tuple) else got[2]
    np.testing.assert_allclose(h_last, want[2], **EXACT64)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("sched", list(SCHEDULES))
@pytest.mark.parametrize("many_to_one", [False, True], ids=["per_step", "many_to_one"])
@pytest.mark.parametrize("target_kind", TARGET_KINDS)
@pytest.mark.parametrize("input_kind", INPUT_KINDS)
def test_poisoned_padding_changes_nothing(input_kind, target_kind, many_to_one, sched, backend):
    case = make_case("tanh", input_kind, target_kind, many_to_one=many_to_one, T=T, B=B, seed=3)
    want = _per_sequence(case, many_to_one, "numpy", SCHEDULES[sched])
    for value in POISONS:
        got = fastbptt.loss_and_grad(**dict(_poison(case, many_to_one, value), mask=_mask()),
                                     backend=backend, **SCHEDULES[sched])
        _assert_same(got, want)


@pytest.mark.parametrize("sched", list(SCHEDULES))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_poisoned_padding_changes_nothing_for_gated_cells(cell, sched):
    rng = np.random.default_rng(8)
    params = fastbptt.init_params(4, 5, 3, cell=cell, dtype=np.float64, seed=8)
    case = dict(params=params, inputs=rng.standard_normal((T, B, 4)),
                targets=rng.integers(0, 3, (T, B)), h0=0.5 * rng.standard_normal((B, 5)),
                cell=cell, mask=None)
    want = _per_sequence(case, False, "numpy", SCHEDULES[sched])
    for value in POISONS:
        got = fastbptt.loss_and_grad(**dict(_poison(case, False, value), mask=_mask()),
                                     backend="numpy", **SCHEDULES[sched])
        _assert_same(got, want)


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("sched", list(SCHEDULES))
def test_overflowing_relu_states_in_padding_reach_no_sum(backend, sched):
    """relu states that overflow to inf in the padding (large recurrent weights, long padding)
    must not turn the valid steps' gradients into 0·inf = NaN."""
    lengths, T_long = np.array([3, 2, 1, 3]), 24
    case = make_case("relu", "float", "ids", T=T_long, B=len(lengths), seed=4)
    p = case["params"]
    p["W"] = 1e30 * np.eye(p["W"].shape[0])                   # h grows x1e30 per step
    p["b"] = np.abs(p["b"]) + 1.0                               # padded states stay positive
    case["h0"] = np.abs(case["h0"])
    want = _per_sequence(case, False, "numpy", SCHEDULES[sched], lengths)
    assert all(np.all(np.isfinite(v)) for v in want[1].values())
    mask = _mask(lengths, T_long)
    hs, _ = fastbptt.rnn_forward(case["inputs"], case["h0"], p["U"], p["W"], p["b"],
                                 activation="relu", backend="numpy")
    assert np.isinf(hs[mask == 0]).any(), "the test must overflow the padding"
    got = fastbptt.loss_and_grad(**dict(case, mask=mask), backend=backend, **SCHEDULES[sched])
    _assert_same(got, want)


def test_ids_outside_the_vocabulary_are_still_refused_where_used():
    case = make_case("tanh", "onehot", "ids", T=T, B=B, seed=5)
    mask = _mask()
    x = np.array(case["inputs"])
    x[0, 1] = -100                                             # a valid step
    with pytest.raises(ValueError, match=r"inputs holds id -100 at a position that is used"):
        fastbptt.loss_and_grad(**dict(case, inputs=x, mask=mask))
    y = np.array(case["targets"])
    y[1, 0] = 99                                               # a step that carries loss
    with pytest.raises(ValueError, match=r"targets holds id 99"):
        fastbptt.loss_and_grad(**dict(case, targets=y, mask=mask))


def test_mid_sequence_masked_steps_still_drive_the_recurrence():
    """A mask-0 step before a sequence's last valid step is not padding: NaN there reaches
    the loss of the later steps (documented in the README's Conventions)."""
    case = make_case("tanh", "float", "ids", T=T, B=B, seed=6)
    mask = _mask()
    mask[1, 0] = 0                                             # sequence 0 continues after step 1
    x = np.array(case["inputs"])
    x[1, 0] = np.nan
    for backend in ("numpy", "cpu"):
        loss, grads, h_last = fastbptt.loss_and_grad(**dict(case, inputs=x, mask=mask), backend=backend)
        assert np.isnan(loss) and np.isnan(h_last[0]).all() and np.isfinite(h_last[1:]).all()


def test_padded_targets_and_inputs_of_the_caller_are_not_modified():
    case = make_case("tanh", "embed", "ids", T=T, B=B, seed=7)
    bad = _poison(case, False, np.nan)
    before = {k: np.array(bad[k]) for k in ("inputs", "targets")}
    fastbptt.loss_and_grad(**dict(bad, mask=_mask()))
    for k, v in before.items():
        np.testing.assert_array_equal(bad[k], v)
