"""The Coursera "Building your Recurrent Neural Network - Step by Step" adapter against a
faithful copy of the assignment's functions, the notebook's published expected outputs and
its unit tests (public_tests.py), including what they inspect of ``caches``."""
import numpy as np
import pytest

from fastbptt.compat import coursera
from originals import coursera as orig
from test_compat import assert_unchanged, raises_like, snapshot
from tolerances import ADAPTER32, ADAPTER64

LSTM_KEYS = ("dx", "da0", "dWf", "dbf", "dWi", "dbi", "dWc", "dbc", "dWo", "dbo")


def rnn_params(rng, n_x, n_a, n_y, dtype=np.float64):
    p = {"Wax": rng.standard_normal((n_a, n_x)), "Waa": rng.standard_normal((n_a, n_a)) * 0.5,
         "Wya": rng.standard_normal((n_y, n_a)), "ba": rng.standard_normal((n_a, 1)),
         "by": rng.standard_normal((n_y, 1))}
    return {k: v.astype(dtype) for k, v in p.items()}


def lstm_params(rng, n_x, n_a, n_y, dtype=np.float64):
    p = {}
    for g in "fico":
        p[f"W{g}"] = rng.standard_normal((n_a, n_a + n_x)) * 0.7
        p[f"b{g}"] = rng.standard_normal((n_a, 1))
    p["Wy"], p["by"] = rng.standard_normal((n_y, n_a)), rng.standard_normal((n_y, 1))
    return {k: v.astype(dtype) for k, v in p.items()}


def assert_same(got, want, tol=ADAPTER64):
    if isinstance(want, dict):
        assert sorted(got) == sorted(want)
        for k in want:
            assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype, k
            np.testing.assert_allclose(got[k], want[k], err_msg=k, **tol)
    else:
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, **tol)


def assert_same_caches(got, want, tol=ADAPTER64):
    """The same structure: (list of per-step tuples, x), entries of the same shapes and values."""
    assert isinstance(got, tuple) and len(got) == len(want) == 2
    assert isinstance(got[0], list) and len(got[0]) == len(want[0])
    np.testing.assert_array_equal(got[1], want[1])
    for sg, sw in zip(*(c[0] for c in (got, want))):
        assert isinstance(sg, tuple) and len(sg) == len(sw)
        for eg, ew in zip(sg, sw):
            if isinstance(ew, dict):
                assert eg is ew or eg == ew
            else:
                assert np.shape(eg) == np.shape(ew)
                np.testing.assert_allclose(eg, ew, **tol)


# --------------------------------------------------------------------------- RNN
@pytest.mark.parametrize("n_x,m,T,n_a,n_y", [(3, 10, 4, 5, 2), (1, 1, 1, 1, 1), (4, 2, 7, 3, 5), (2, 1, 3, 6, 2)])
def test_rnn_matches_original(n_x, m, T, n_a, n_y):
    rng = np.random.default_rng(n_x + 10 * m + 100 * T + n_a)
    x, a0 = rng.standard_normal((n_x, m, T)), rng.standard_normal((n_a, m))
    p = rnn_params(rng, n_x, n_a, n_y)
    da = rng.standard_normal((n_a, m, T))
    before = snapshot(x, a0, *p.values(), da)
    want, got = orig.rnn_forward(x, a0, p), coursera.rnn_forward(x, a0, p)
    for g, w in zip(got[:2], want[:2]):
        assert_same(g, w)
    assert_same_caches(got[2], want[2])
    assert_same(coursera.rnn_backward(da, got[2]), orig.rnn_backward(da, want[2]))
    assert_unchanged(before, (x, a0, *p.values(), da))


def test_rnn_notebook_expected_outputs():
    # the notebook's cells: np.random.seed(1), its shapes and its printed expected values
    np.random.seed(1)
    x, a0 = np.random.randn(3, 10, 4), np.random.randn(5, 10)
    p = {"Waa": np.random.randn(5, 5), "Wax": np.random.randn(5, 3), "Wya": np.random.randn(2, 5),
         "ba": np.random.randn(5, 1), "by": np.random.randn(2, 1)}
    a, y_pred, caches = coursera.rnn_forward(x, a0, p)
    np.testing.assert_allclose(a[4][1], [-0.99999375, 0.77911235, -0.99861469, -0.99833267], atol=1e-8)
    np.testing.assert_allclose(y_pred[1][3], [0.79560373, 0.86224861, 0.11118257, 0.81515947], atol=1e-8)
    np.testing.assert_allclose(caches[1][1][3], [-1.1425182, -0.34934272, -0.20889423, 0.58662319], atol=1e-8)
    assert len(caches) == 2 and a.shape == (5, 10, 4) and y_pred.shape == (2, 10, 4)

    np.random.seed(1)
    x, a0 = np.random.randn(3, 10, 4), np.random.randn(5, 10)
    p = {"Wax": np.random.randn(5, 3), "Waa": np.random.randn(5, 5), "Wya": np.random.randn(2, 5),
         "ba": np.random.randn(5, 1), "by": np.random.randn(2, 1)}
    a, y, caches = coursera.rnn_forward(x, a0, p)
    g = coursera.rnn_backward(np.random.randn(5, 10, 4), caches)
    np.testing.assert_allclose(g["dx"][1][2], [-2.07101689, -0.59255627, 0.02466855, 0.01483317], atol=1e-8)
    np.testing.assert_allclose([g["da0"][2][3], g["dWax"][3][1], g["dWaa"][1][2], g["dba"][4][0]],
                               [-0.314942375127, 11.2641044965, 2.30333312658, -0.74747722], atol=1e-8)
    assert [g[k].shape for k in ("dx", "da0", "dWax", "dWaa", "dba")] == [(3, 10, 4), (5, 10), (5, 3), (5, 5), (5, 1)]


def test_rnn_public_test():
    # public_tests.py rnn_forward_test (seed 17)
    np.random.seed(17)
    T_x, m, n_x, n_a, n_y = 13, 8, 4, 7, 3
    x, a0 = np.random.randn(n_x, m, T_x), np.random.randn(n_a, m)
    p = {"Waa": np.random.randn(n_a, n_a), "Wax": np.random.randn(n_a, n_x), "Wya": np.random.randn(n_y, n_a),
         "ba": np.random.randn(n_a, 1), "by": np.random.randn(n_y, 1)}
    a, y_pred, caches = coursera.rnn_forward(x, a0, p)
    assert a.shape == (n_a, m, T_x) and y_pred.shape == (n_y, m, T_x) and len(caches[0]) == T_x
    assert np.allclose(a[5, 2, 2:6], [0.99999291, 0.99332189, 0.9921928, 0.99503445])
    assert np.allclose(y_pred[2, 1, 1:5], [0.19428, 0.14292, 0.24993, 0.00119], atol=1e-4)
    assert np.allclose(caches[1], x)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_rnn_dtypes(dtype):
    # the assignment steps in the promoted dtype and stores into np.zeros (float64); the
    # adapter runs float16 in float32, so float16 is compared with the original on float32
    rng = np.random.default_rng(3)
    x, a0 = rng.standard_normal((3, 4, 5)).astype(dtype), rng.standard_normal((6, 4)).astype(dtype)
    p = rnn_params(rng, 3, 6, 2, dtype)
    da = rng.standard_normal((6, 4, 5)).astype(dtype)
    want = orig.rnn_forward(x.astype(np.float32), a0.astype(np.float32),
                            {k: v.astype(np.float32) for k, v in p.items()})
    got = coursera.rnn_forward(x, a0, p)
    for g, w in zip(got[:2], want[:2]):
        assert_same(g, w, ADAPTER32)
    assert_same(coursera.rnn_backward(da, got[2]), orig.rnn_backward(da.astype(np.float32), want[2]), ADAPTER32)


def test_rnn_backward_takes_T_from_da_and_accepts_foreign_caches():
    rng = np.random.default_rng(4)
    x, a0, p = rng.standard_normal((2, 3, 6)), rng.standard_normal((4, 3)), rnn_params(rng, 2, 4, 3)
    da = rng.standard_normal((4, 3, 6))
    want_c, got_c = orig.rnn_forward(x, a0, p)[2], coursera.rnn_forward(x, a0, p)[2]
    for T in (1, 4):
        assert_same(coursera.rnn_backward(da[:, :, :T], got_c), orig.rnn_backward(da[:, :, :T], want_c))
    # caches made by the original code (or by hand) work too
    assert_same(coursera.rnn_backward(da, want_c), orig.rnn_backward(da, want_c))
    da7 = rng.standard_normal((4, 3, 7))
    raises_like(IndexError, lambda: orig.rnn_backward(da7, want_c), lambda: coursera.rnn_backward(da7, got_c))


def test_rnn_bad_input():
    rng = np.random.default_rng(5)
    x, a0, p = rng.standard_normal((2, 3, 6)), rng.standard_normal((4, 3)), rnn_params(rng, 2, 4, 3)
    with pytest.raises(ValueError, match="Wax"):
        coursera.rnn_forward(x, a0, dict(p, Wax=p["Wax"].T))
    with pytest.raises(KeyError, match="ba"):
        coursera.rnn_forward(x, a0, {k: v for k, v in p.items() if k != "ba"})
    with pytest.raises(ValueError, match="a0"):
        coursera.rnn_forward(x, a0[:, :2], p)
    caches = coursera.rnn_forward(x, a0, p)[2]
    with pytest.raises(ValueError, match="da"):
        coursera.rnn_backward(np.zeros((4, 2, 6)), caches)
