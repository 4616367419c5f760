"""The float64 activations the CPU kernels use (exp_f64, tanh_f64, sigmoid_f64): accuracy in
ulps over a dense grid, subnormals, huge arguments, ±inf and NaN."""
import numpy as np
import pytest

from fastbptt.cpu.activations import f64_array
from tolerances import F64_ACT_ULP

EXP, TANH, SIGMOID = 0, 1, 2


def run(kind, x):
    out = np.empty_like(x)
    f64_array(kind, x, out)
    return out


def ulps(got, exact):
    """|got - exact| in float64 ulps at the exact (long double) value."""
    e64 = exact.astype(np.float64)
    err = np.abs(got.astype(np.longdouble) - exact)
    return (err / np.spacing(np.abs(e64)).astype(np.longdouble)).astype(np.float64)


GRID = np.concatenate([np.linspace(-40, 40, 400_001), np.geomspace(5e-324, 40, 40_001),
                       -np.geomspace(5e-324, 40, 40_001), [0.0, -0.0, 0.625, -0.625, 22.0]])
WIDE = np.linspace(-745.0, 709.7, 300_001)


def reference(kind, x):
    xl = x.astype(np.longdouble)
    with np.errstate(over="ignore"):
        if kind == EXP:
            return np.exp(xl)
        if kind == TANH:
            return np.tanh(xl)
        return 1 / (1 + np.exp(-xl))


@pytest.mark.parametrize("kind", [EXP, TANH, SIGMOID], ids=["exp", "tanh", "sigmoid"])
def test_accuracy_in_ulps(kind):
    for x in (GRID, WIDE):
        exact = reference(kind, x)
        ok = np.isfinite(exact.astype(np.float64)) & (exact.astype(np.float64) != 0)
        if kind == SIGMOID:     # below -709.78 e^-x overflows: 0 for a subnormal σ, as libm's form
            ok &= x > -709.7
        assert np.max(ulps(run(kind, x)[ok], exact[ok])) <= F64_ACT_ULP


def test_exp_range_ends_and_subnormal_results():
    x = np.array([709.78, 709.79, 710.0, 1e300, np.inf, -745.0, -745.2, -1e300, -np.inf,
                  -708.5, -740.0])
    got = run(EXP, x)
    assert np.isfinite(got[0]) and np.all(np.isinf(got[1:5]))
    assert got[5] == 5e-324 and np.all(got[6:9] == 0)
    # results below the smallest normal round once to a subnormal, like libm
    np.testing.assert_array_equal(got[9:], np.exp(x[9:]))
    assert np.isnan(run(EXP, np.array([np.nan]))[0])


def test_tanh_and_sigmoid_special_values():
    x = np.array([np.inf, -np.inf, 30.0, -30.0, 1e300, -1e300, 5e-324, -5e-324, 0.0, -0.0])
    t = run(TANH, x)
    np.testing.assert_array_equal(t, np.tanh(x))
    assert np.signbit(t[-1]) and not np.signbit(t[-2])          # -0.0 stays -0.0
    g = np.linspace(-40, 40, 100_001)
    np.testing.assert_array_equal(run(TANH, g), -run(TANH, -g))  # odd
    assert np.all(np.abs(run(TANH, g)) <= 1)
    s = run(SIGMOID, np.array([np.inf, -np.inf, 800.0, -800.0, 0.0]))
    np.testing.assert_array_equal(s, [1.0, 0.0, 1.0, 0.0, 0.5])
    assert np.all(np.isnan(run(TANH, np.array([np.nan]))))
    assert np.all(np.isnan(run(SIGMOID, np.array([np.nan]))))
