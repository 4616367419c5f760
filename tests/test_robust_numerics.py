"""Numerical extremes: saturation over 10,000 steps, huge logits, overflow, NaN,
float32 against float64 on long sequences, and subnormal numbers.

What is promised on overflow: never a crash; inf/NaN appear in the loss and the gradients of
the steps they touch (the same as the NumPy reference); ``check_finite=True`` turns that into
a ``FloatingPointError`` naming what is not finite.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastbptt
import tolerances as tol
from robust_util import assert_unchanged, snapshot

BACKENDS = ("cpu", "numpy")


def _close(a, b, **kw):
    """Results of two backends agree (loss, every gradient, h_last), NaN-aware."""
    kw = kw or tol.EXACT64
    np.testing.assert_allclose(a[0], b[0], equal_nan=True, **kw)
    assert set(a[1]) == set(b[1])
    for k in b[1]:
        np.testing.assert_allclose(a[1][k], b[1][k], equal_nan=True, err_msg=f"grads[{k!r}]", **kw)
    np.testing.assert_allclose(a[2], b[2], equal_nan=True, err_msg="h_last", **kw)


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # NumPy's overflow warnings
        return fn(*args, **kw)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_saturated_over_10000_steps(activation):
    """Pre-activations of ±50: f' underflows to 0 exactly, nothing overflows or turns NaN."""
    T, B, n_in, H, n_out = 10_000, 2, 3, 8, 4
    p = fastbptt.init_params(n_in, H, n_out, dtype=np.float64, seed=1)
    p["W"] *= 20.0
    p["U"] *= 20.0
    rng = np.random.default_rng(1)
    x = 3.0 * rng.standard_normal((T, B, n_in))
    y = rng.integers(0, n_out, (T, B))
    mask = np.ones((T, B))
    mask[-100:, 1] = 0
    kw = dict(activation=activation, mask=mask, truncate=None)
    cpu = fastbptt.loss_and_grad(p, x, y, **kw, check_finite=True)
    ref = fastbptt.loss_and_grad(p, x, y, **kw, backend="numpy", check_finite=True)
    _close(cpu, ref)
    # float32 saturates the same way and stays finite
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    l32, g32, h32 = fastbptt.loss_and_grad(p32, x.astype(np.float32), y, **kw, check_finite=True)
    assert np.isfinite(l32) and np.all(np.abs(h32) <= 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("target_kind", ["ids", "probs"])
def test_logits_of_1e4_give_finite_exact_losses(dtype, target_kind):
    """o = ±1e4: a naive softmax overflows; the fused one gives the exact loss 2e4 per step."""
    T, B = 3, 2
    p = {"U": np.ones((1, 1), dtype), "W": np.zeros((1, 1), dtype), "b": np.zeros(1, dtype),
         "V": np.array([[1e4], [-1e4]], dtype), "c": np.zeros(2, dtype)}
    x = np.full((T, B, 1), 30.0, dtype)                      # h = tanh(30) = 1 in floating point
    y = np.ones((T, B), np.int64) if target_kind == "ids" else np.tile(np.array([0, 1], dtype), (T, B, 1))
    for backend in BACKENDS:
        loss, g, _ = fastbptt.loss_and_grad(p, x, y, backend=backend, check_finite=True)
        np.testing.assert_allclose(loss, T * B * 2e4, rtol=1e-6)
        # p = (1, 0): ∂L/∂c = Σ (p − y) = T·B·(1, −1)
        np.testing.assert_allclose(g["c"], [T * B, -T * B], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_overflow_gives_inf_nan_never_a_crash(backend):
    T, B, n_in, H, n_out = 400, 2, 2, 4, 3
    p = fastbptt.init_params(n_in, H, n_out, dtype=np.float64, seed=0)
    p["W"] = 1e3 * np.eye(H) + 1e-3                         # states grow 1000x per step
    p["U"] = np.abs(p["U"])
    x = np.ones((T, B, n_in))
    y = np.zeros((T, B), np.int64)
    before = snapshot((p, x, y))
    loss, g, h = _quiet(fastbptt.loss_and_grad, p, x, y, activation="relu", backend=backend)
    assert_unchanged(before, (p, x, y))
    assert not np.isfinite(loss)
    assert not all(np.all(np.isfinite(v)) for v in g.values())
    assert not np.all(np.isfinite(h))
    with pytest.raises(FloatingPointError, match=r"check_finite=True: non-finite loss.*grads\['W'\]"):
        _quiet(fastbptt.loss_and_grad, p, x, y, activation="relu", backend=backend, check_finite=True)


def test_relu_overflow_same_inf_nan_pattern_as_reference():
    T, B, n_in, H, n_out = 150, 3, 2, 4, 3                   # overflow mid-sequence
    p = fastbptt.init_params(n_in, H, n_out, dtype=np.float64, seed=2)
    p["W"] = 1e3 * np.eye(H)
    p["U"] = np.abs(p["U"])
    x = np.abs(np.random.default_rng(2).standard_normal((T, B, n_in)))
    y = np.zeros((T, B), np.int64)
    cpu = _quiet(fastbptt.loss_and_grad, p, x, y, activation="relu")
    ref = _quiet(fastbptt.loss_and_grad, p, x, y, activation="relu", backend="numpy")
    for a, b in zip([cpu[0], *cpu[1].values(), cpu[2]], [ref[0], *[ref[1][k] for k in cpu[1]], ref[2]]):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b))


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_input_is_never_hidden(activation, backend):
    """A NaN in a valid step's input reaches the loss: the kernels never swallow it."""
    p = fastbptt.init_params(2, 3, 2, dtype=np.float64, seed=0)
    x = np.ones((4, 1, 2))
    x[1, 0, 0] = np.nan
    y = np.zeros((4, 1), np.int64)
    loss, g, h = _quiet(fastbptt.loss_and_grad, p, x, y, activation=activation, backend=backend)
    assert np.isnan(loss) and np.all(np.isnan(h))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        _quiet(fastbptt.loss_and_grad, p, x, y, activation=activation, backend=backend,
               check_finite=True)


def test_check_finite_is_a_bool_and_changes_nothing_when_finite():
    p = fastbptt.init_params(2, 3, 2, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, 2))
    y = np.zeros((5, 2), np.int64)
    a = fastbptt.loss_and_grad(p, x, y)
    b = fastbptt.loss_and_grad(p, x, y, check_finite=True)
    _close(a, b, rtol=0, atol=0)
    with pytest.raises(TypeError, match="check_finite"):
        fastbptt.loss_and_grad(p, x, y, check_finite="yes")


def test_float32_within_documented_tolerance_of_float64_on_long_sequences():
    T, B, n_in, H, n_out = 10_000, 4, 8, 32, 10
    p64 = fastbptt.init_params(n_in, H, n_out, dtype=np.float64, seed=0)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, n_in))
    y = rng.integers(0, n_out, (T, B))
    l64, g64, h64 = fastbptt.loss_and_grad(p64, x, y, reduction="mean")
    l32, g32, h32 = fastbptt.loss_and_grad(p32, x.astype(np.float32), y, reduction="mean")
    assert abs(l32 - l64) <= tol.LONG32_LOSS_RTOL * abs(l64)
    for k in g64:
        assert g32[k].dtype == np.float32
        err = np.max(np.abs(g32[k] - g64[k])) / np.max(np.abs(g64[k]))
        assert err <= tol.LONG32_GRAD, (k, err)
    np.testing.assert_allclose(h32, h64, rtol=0, atol=tol.LONG32_H_ATOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_subnormal_states_are_kept_not_flushed(dtype, activation):
    """States that decay through the subnormal range: the kernels keep them (no flush to
    zero, no fastmath) and agree with the reference; they also make no kernel misbehave."""
    tiny = np.finfo(dtype).tiny                               # smallest normal number
    T, B, H = 40, 2, 3
    p = {"U": np.zeros((H, 1), dtype), "W": (0.5 * np.eye(H)).astype(dtype),
         "b": np.zeros(H, dtype), "V": np.ones((2, H), dtype), "c": np.zeros(2, dtype)}
    h0 = np.full((B, H), 4 * tiny, dtype)                     # halves every step: subnormal at t=3
    x = np.zeros((T, B, 1), dtype)
    y = np.zeros((T, B), np.int64)
    cpu = fastbptt.loss_and_grad(p, x, y, h0, activation=activation)
    ref = fastbptt.loss_and_grad(p, x, y, h0, activation=activation, backend="numpy")
    # atol 0: tiny values count. float32 full BPTT evaluates tanh by a rational approximation
    # whose coefficients scale subnormal arguments below full precision: EXACT32's rtol
    rt = tol.EXACT64["rtol"] if dtype == np.float64 else tol.EXACT32["rtol"]
    _close(cpu, ref, rtol=rt, atol=0)
    h3 = fastbptt.loss_and_grad(p, x[:3], y[:3], h0, activation=activation)[2]
    np.testing.assert_allclose(h3, tiny / 2, rtol=rt, atol=0)   # a subnormal, not flushed to 0
