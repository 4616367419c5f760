"""Padding influences nothing on the CUDA backend either (host arrays; simulator)."""
from __future__ import annotations

import numpy as np
import pytest

import fastbptt
from cases import make_case
from tolerances import CUDA64

T, B = 6, 3
LENGTHS = np.array([6, 2, 4])


def _mask():
    return (np.arange(T)[:, None] < LENGTHS[None, :]).astype(np.float64)


def _same(got, want):
    np.testing.assert_allclose(got[0], want[0], **CUDA64)
    for k in want[1]:
        assert np.all(np.isfinite(got[1][k])), k
        np.testing.assert_allclose(got[1][k], want[1][k], err_msg=k, **CUDA64)
    np.testing.assert_allclose(got[2], want[2], **CUDA64)


@pytest.mark.parametrize("extra", [{}, dict(truncate=(2, 3)), dict(checkpoint=2)])
@pytest.mark.parametrize("input_kind", ["float", "embed"])
def test_poisoned_padding_changes_nothing_on_cuda(input_kind, extra):
    case = make_case("tanh", input_kind, "ids", T=T, B=B, H=4, seed=1)
    case["mask"] = _mask()
    want = fastbptt.loss_and_grad(**case, backend="numpy", **extra)
    pad = _mask() == 0
    x = np.array(case["inputs"])
    x[pad] = np.nan if x.dtype.kind == "f" else -100
    y = np.array(case["targets"])
    y[pad] = -100
    got = fastbptt.loss_and_grad(**dict(case, inputs=x, targets=y), backend="cuda", **extra)
    _same(got, want)


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_overflowing_relu_padding_on_cuda():
    case = make_case("relu", "float", "ids", T=T, B=B, H=4, seed=2)
    p = case["params"]
    p["W"] = 1e120 * np.eye(4)
    p["b"] = np.abs(p["b"]) + 1.0
    case["h0"] = np.abs(case["h0"])
    case["mask"] = (np.arange(T)[:, None] < np.array([1, 2, 1])[None, :]).astype(np.float64)
    want = fastbptt.loss_and_grad(**case, backend="numpy")
    assert all(np.all(np.isfinite(g)) for g in want[1].values())
    _same(fastbptt.loss_and_grad(**case, backend="cuda"), want)
