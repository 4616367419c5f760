"""The LSTM adapters (CS231n, Coursera, Karpathy's gist) against faithful copies of the
originals, their published expected outputs and their own gradient checks."""
import numpy as np
import pytest

from fastbptt import compat
from originals import coursera as orig_coursera
from originals import cs231n as orig_cs231n
from originals import karpathy_lstm as orig_karpathy
from test_compat import (assert_unchanged, cs231n_gradient_check, num_grad, raises_like, rel_error,
                         same_outputs, snapshot)
from test_compat_coursera import LSTM_KEYS, assert_same, assert_same_caches, lstm_params
from tolerances import ADAPTER32, ADAPTER64, FINITE_DIFF


# --------------------------------------------------------------------------- CS231n LSTM
def cs_lstm_inputs(rng, N, T, D, H, dtype=np.float64):
    x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    Wx = rng.standard_normal((D, 4 * H)) / np.sqrt(D)
    Wh = rng.standard_normal((H, 4 * H)) / np.sqrt(H)
    b = rng.standard_normal(4 * H) * 0.5
    return [a.astype(dtype) for a in (x, h0, Wx, Wh, b)], rng.standard_normal((N, T, H)).astype(dtype)


def cs_lstm(mod, args, dh):
    h, cache = mod.lstm_forward(*args)
    return (h,) + tuple(mod.lstm_backward(dh, cache))


@pytest.mark.parametrize("N,T,D,H", [(4, 5, 3, 6), (1, 1, 2, 2), (3, 1, 4, 5), (2, 7, 1, 1), (25, 16, 32, 24)])
def test_cs231n_lstm_matches_original(N, T, D, H):
    rng = np.random.default_rng(N * 1000 + T * 100 + D * 10 + H)
    args, dh = cs_lstm_inputs(rng, N, T, D, H)
    before = snapshot(*args, dh)
    same_outputs(cs_lstm(compat.cs231n, args, dh), cs_lstm(orig_cs231n, args, dh))
    assert_unchanged(before, (*args, dh))


@pytest.mark.parametrize("dtypes", [
    ("float32",) * 6, ("float32", "float64", "float32", "float32", "float32", "float32"),
    ("int64", "float64", "float64", "float64", "float64", "float64")])
def test_cs231n_lstm_dtypes_follow_numpy_promotion(dtypes):
    rng = np.random.default_rng(7)
    args, dh = cs_lstm_inputs(rng, 3, 6, 4, 5)
    args = [(a * 3 if d == "int64" else a).astype(d) for a, d in zip(args, dtypes)]
    dh = dh.astype(dtypes[5])
    got = cs_lstm(compat.cs231n, args, dh)
    assert all(g.dtype == np.float64 for g in got)
    same_outputs(got, cs_lstm(orig_cs231n, args, dh), ADAPTER32 if "float32" in dtypes else ADAPTER64)


def test_cs231n_lstm_backward_takes_T_from_dh():
    rng = np.random.default_rng(8)
    args, dh = cs_lstm_inputs(rng, 2, 6, 3, 4)
    for Td in (1, 4):
        same_outputs(cs_lstm(compat.cs231n, args, dh[:, :Td]), cs_lstm(orig_cs231n, args, dh[:, :Td]))
    dh7 = rng.standard_normal((2, 7, 4))
    raises_like(IndexError, lambda: cs_lstm(orig_cs231n, args, dh7), lambda: cs_lstm(compat.cs231n, args, dh7))


def test_cs231n_lstm_notebook_checks():
    # the assignment's linspace forward check (published expected_h) and its gradient check
    N, D, H, T = 2, 5, 4, 3
    x = np.linspace(-0.4, 0.6, num=N * T * D).reshape(N, T, D)
    h0 = np.linspace(-0.4, 0.8, num=N * H).reshape(N, H)
    Wx = np.linspace(-0.2, 0.9, num=4 * D * H).reshape(D, 4 * H)
    Wh = np.linspace(-0.3, 0.6, num=4 * H * H).reshape(H, 4 * H)
    b = np.linspace(0.2, 0.7, num=4 * H)
    h, _ = compat.cs231n.lstm_forward(x, h0, Wx, Wh, b)
    expected_h = [[[0.01764008, 0.01823233, 0.01882671, 0.0194232],
                   [0.11287491, 0.12146228, 0.13018446, 0.13902939],
                   [0.31358768, 0.33338627, 0.35304453, 0.37250975]],
                  [[0.45767879, 0.4761092, 0.4936887, 0.51041945],
                   [0.6704845, 0.69350089, 0.71486014, 0.7346449],
                   [0.81733511, 0.83677871, 0.85403753, 0.86935314]]]
    np.testing.assert_allclose(h, expected_h, atol=1e-8)
    cs231n_gradient_check("lstm", H=6, G=4)


def test_cs231n_star_import_replaces_the_four_functions():
    scope = {}
    exec("from fastbptt.compat.cs231n import *", scope)
    assert {"rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward"} <= set(scope)


def test_cs231n_lstm_bad_input():
    x, h0 = np.zeros((2, 3, 4)), np.zeros((2, 5))
    Wx, Wh, b = np.zeros((4, 20)), np.zeros((5, 20)), np.zeros(20)
    with pytest.raises(ValueError, match="Wx"):
        compat.cs231n.lstm_forward(x, h0, Wx[:, :5], Wh, b)
    with pytest.raises(ValueError, match="b"):
        compat.cs231n.lstm_forward(x, h0, Wx, Wh, b[:5])
    _, cache = compat.cs231n.lstm_forward(x, h0, Wx, Wh, b)
    with pytest.raises(ValueError, match="dh"):
        compat.cs231n.lstm_backward(np.zeros((2, 3, 4)), cache)
    with pytest.raises(TypeError, match="cache"):
        compat.cs231n.lstm_backward(np.zeros((2, 3, 5)), [])


# --------------------------------------------------------------------------- Coursera LSTM
@pytest.mark.parametrize("n_x,m,T,n_a,n_y", [(3, 10, 7, 5, 2), (1, 1, 1, 1, 1), (4, 2, 6, 3, 5), (2, 1, 3, 6, 2)])
def test_coursera_lstm_matches_original(n_x, m, T, n_a, n_y):
    rng = np.random.default_rng(n_x + 10 * m + 100 * T + n_a)
    x, a0 = rng.standard_normal((n_x, m, T)), rng.standard_normal((n_a, m))
    p = lstm_params(rng, n_x, n_a, n_y)
    da = rng.standard_normal((n_a, m, T))
    before = snapshot(x, a0, *p.values(), da)
    want, got = orig_coursera.lstm_forward(x, a0, p), compat.coursera.lstm_forward(x, a0, p)
    for g, w in zip(got[:3], want[:3]):
        assert_same(g, w)
    assert_same_caches(got[3], want[3])
    assert_same(compat.coursera.lstm_backward(da, got[3]), orig_coursera.lstm_backward(da, want[3]))
    assert_unchanged(before, (x, a0, *p.values(), da))


def test_coursera_lstm_float32():
    rng = np.random.default_rng(3)
    x, a0 = rng.standard_normal((3, 4, 5)).astype(np.float32), rng.standard_normal((6, 4)).astype(np.float32)
    p = lstm_params(rng, 3, 6, 2, np.float32)
    da = rng.standard_normal((6, 4, 5)).astype(np.float32)
    want, got = orig_coursera.lstm_forward(x, a0, p), compat.coursera.lstm_forward(x, a0, p)
    for g, w in zip(got[:3], want[:3]):
        assert_same(g, w, ADAPTER32)
    assert_same(compat.coursera.lstm_backward(da, got[3]), orig_coursera.lstm_backward(da, want[3]), ADAPTER32)


def _notebook_lstm_case():
    np.random.seed(1)
    x, a0 = np.random.randn(3, 10, 7), np.random.randn(5, 10)
    p = {}
    for k in ("Wf", "bf", "Wi", "bi", "Wo", "bo", "Wc", "bc"):
        p[k] = np.random.randn(5, 5 + 3) if k[0] == "W" else np.random.randn(5, 1)
    return x, a0, p


def test_coursera_lstm_notebook_forward():
    x, a0, p = _notebook_lstm_case()
    p["Wy"], p["by"] = np.random.randn(2, 5), np.random.randn(2, 1)
    a, y, c, caches = compat.coursera.lstm_forward(x, a0, p)
    np.testing.assert_allclose([a[4][3][6], y[1][4][3], c[1][2][1]],
                               [0.172117767533, 0.95087346185, -0.855544916718], atol=1e-10)
    np.testing.assert_allclose(caches[1][1][1], [0.82797464, 0.23009474, 0.76201118, -0.22232814,
                                                 -0.20075807, 0.18656139, 0.41005165], atol=1e-8)
    assert len(caches) == 2 and a.shape == c.shape == (5, 10, 7) and y.shape == (2, 10, 7)


def test_coursera_lstm_backward_is_correct_where_the_published_output_is_not():
    # The notebook's cell: da has 4 steps for a 7-step forward (T comes from da). Its
    # published expected output comes from a backward in which no gradient flows between
    # steps (the popular wrong solution reproduces it to every printed digit); the adapter
    # gives the correct gradient, which central differences confirm.
    x, a0, p = _notebook_lstm_case()
    p["Wy"], p["by"] = np.zeros((2, 5)), np.zeros((2, 1))      # the cell reuses earlier ones
    caches = compat.coursera.lstm_forward(x, a0, p)[3]
    da = np.random.randn(5, 10, 4)
    g = compat.coursera.lstm_backward(da, caches)
    assert sorted(g) == sorted(LSTM_KEYS)
    assert g["dx"].shape == (3, 10, 4) and g["da0"].shape == (5, 10) and g["dWf"].shape == (5, 8)
    picks = lambda g: [*g["dx"][1][2], g["da0"][2][3], g["dWf"][3][1], g["dWi"][1][2],   # noqa: E731
                       g["dWc"][3][1], g["dWo"][1][2], g["dbf"][4][0], g["dbi"][4][0], g["dbc"][4][0], g["dbo"][4][0]]
    published = [-0.00173313, 0.08287442, -0.30545663, -0.43281115, -0.095911501954, -0.0698198561274,
                 0.102371820249, -0.0624983794927, 0.0484389131444, -0.0565788, -0.15399065,
                 -0.29691142, -0.29798344]
    popular = orig_coursera.lstm_backward_popular(da, orig_coursera.lstm_forward(x, a0, p)[3])
    np.testing.assert_allclose(picks(popular), published, atol=1e-8)
    assert np.max(np.abs(np.subtract(picks(g), published))) > 0.1
    assert_same(g, orig_coursera.lstm_backward(da, orig_coursera.lstm_forward(x, a0, p)[3]))

    def loss():
        a = compat.coursera.lstm_forward(x, a0, p)[0]
        return np.sum(a[:, :, :4] * da)
    for arr, key in ((x, "dx"), (a0, "da0"), (p["Wf"], "dWf"), (p["bc"], "dbc")):
        want = num_grad(loss, arr, 1.0)
        got = g[key] if key != "dx" else np.concatenate([g["dx"], np.zeros((3, 10, 3))], axis=2)
        assert rel_error(want, got) < FINITE_DIFF, key


def test_coursera_lstm_public_test():
    # public_tests.py lstm_forward_test (seed 45)
    np.random.seed(45)
    n_x, m, T_x, n_a, n_y = 4, 13, 16, 3, 2
    x, a0 = np.random.randn(n_x, m, T_x), np.random.randn(n_a, m)
    p = {}
    for k in ("Wf", "bf", "Wi", "bi", "Wo", "bo", "Wc", "bc"):
        p[k] = np.random.randn(n_a, n_a + n_x) if k[0] == "W" else np.random.randn(n_a, 1)
    p["Wy"], p["by"] = np.random.randn(n_y, n_a), np.random.randn(n_y, 1)
    a, y, c, caches = compat.coursera.lstm_forward(x, a0, p)
    assert a.shape == c.shape == (n_a, m, T_x) and y.shape == (n_y, m, T_x)
    assert len(caches[0]) == T_x and len(caches[0][0]) == 10
    assert np.allclose(a[2, 1, 4:6], [-0.01606022, 0.0243569])
    assert np.allclose(c[2, 1, 4:6], [-0.02753855, 0.05668358])
    assert np.allclose(y[1, 1, 4:6], [0.70444592, 0.70648935])


def test_coursera_lstm_foreign_caches_and_bad_input():
    rng = np.random.default_rng(6)
    x, a0, p = rng.standard_normal((2, 3, 5)), rng.standard_normal((4, 3)), lstm_params(rng, 2, 4, 3)
    want_c = orig_coursera.lstm_forward(x, a0, p)[3]
    da = rng.standard_normal((4, 3, 5))
    assert_same(compat.coursera.lstm_backward(da, want_c), orig_coursera.lstm_backward(da, want_c))
    with pytest.raises(ValueError, match="Wf"):
        compat.coursera.lstm_forward(x, a0, dict(p, Wf=p["Wf"][:, :4]))
    with pytest.raises(KeyError, match="bo"):
        compat.coursera.lstm_forward(x, a0, {k: v for k, v in p.items() if k != "bo"})
    da6 = rng.standard_normal((4, 3, 6))
    raises_like(IndexError, lambda: orig_coursera.lstm_backward(da6, want_c),
                lambda: compat.coursera.lstm_backward(da6, want_c))


# --------------------------------------------------------------------------- Karpathy's LSTM
def karpathy_case(seed, n, b, input_size, d, fancy=3):
    np.random.seed(seed)
    W = orig_karpathy.LSTM.init(input_size, d, fancy)
    X, h0, c0 = np.random.randn(n, b, input_size), np.random.randn(b, d), np.random.randn(b, d)
    dH, dcn, dhn = np.random.randn(n, b, d), np.random.randn(b, d), np.random.randn(b, d)
    return W, X, h0, c0, dH, dcn, dhn


def run_karpathy(L, W, X, c0, h0, dH, dcn, dhn):
    H, C_last, H_last, cache = L.forward(X, W, c0, h0)
    return (H, C_last, H_last) + tuple(L.backward(dH, cache, dcn, dhn))


@pytest.mark.parametrize("n,b,input_size,d", [(5, 3, 10, 4), (1, 1, 1, 1), (7, 2, 3, 1), (1, 4, 6, 5), (20, 8, 16, 32)])
def test_karpathy_matches_original(n, b, input_size, d):
    W, X, h0, c0, dH, dcn, dhn = karpathy_case(n + b + d, n, b, input_size, d)
    before = snapshot(W, X, h0, c0, dH, dcn, dhn)
    for c0_, h0_, dcn_, dhn_ in ((c0, h0, dcn, dhn), (None, None, None, None), (c0, None, None, dhn)):
        args = (W, X, c0_, h0_, dH, dcn_, dhn_)
        same_outputs(run_karpathy(compat.karpathy_lstm.LSTM, *args), run_karpathy(orig_karpathy.LSTM, *args))
    assert_unchanged(before, (W, X, h0, c0, dH, dcn, dhn))


def test_karpathy_init_draws_like_the_gist():
    for fancy in (3, 0):
        np.random.seed(1)
        want = orig_karpathy.LSTM.init(7, 5, fancy)
        np.random.seed(1)
        np.testing.assert_array_equal(compat.karpathy_lstm.LSTM.init(7, 5, fancy), want)


def test_karpathy_float32_inputs_give_float64():
    W, X, h0, c0, dH, dcn, dhn = (a.astype(np.float32) for a in karpathy_case(2, 4, 3, 5, 6))
    got = run_karpathy(compat.karpathy_lstm.LSTM, W, X, c0, h0, dH, dcn, dhn)
    assert all(g.dtype == np.float64 for g in got)
    # the gist accumulates dh into its float32 copy of dHout_in: float32 rounding there
    same_outputs(got, run_karpathy(orig_karpathy.LSTM, W, X, c0, h0, dH, dcn, dhn), ADAPTER32)


def test_karpathy_gist_checks():
    # the gist's own checks, run on the adapter: one step at a time (passing c, h forward and
    # dc, dh back) equals the batch, and the batch gradient equals central differences
    np.random.seed(0)
    (H, Hcat), pairs = orig_karpathy.checkSequentialMatchesBatch(compat.karpathy_lstm.LSTM)
    np.testing.assert_allclose(Hcat, H, **ADAPTER64)
    for batched, sequential in pairs:
        np.testing.assert_allclose(sequential, batched, **ADAPTER64)
    np.random.seed(0)
    worst = orig_karpathy.checkBatchGradient(compat.karpathy_lstm.LSTM)
    assert max(worst.values()) < FINITE_DIFF, worst      # per-entry relative error, as the gist computes it


def test_karpathy_raises_what_the_original_raises():
    W, X, h0, c0, dH, dcn, dhn = karpathy_case(3, 3, 2, 4, 5)
    raises_like(UnboundLocalError, lambda: orig_karpathy.LSTM.forward(X[:0], W),
                lambda: compat.karpathy_lstm.LSTM.forward(X[:0], W))
    cache = compat.karpathy_lstm.LSTM.forward(X, W)[3]
    raises_like(IndexError, lambda: orig_karpathy.LSTM.backward(dH[:2], orig_karpathy.LSTM.forward(X, W)[3]),
                lambda: compat.karpathy_lstm.LSTM.backward(dH[:2], cache))
    with pytest.raises(ValueError, match="WLSTM"):
        compat.karpathy_lstm.LSTM.forward(X[:, :, :3], W)
    with pytest.raises(ValueError, match="h0"):
        compat.karpathy_lstm.LSTM.forward(X, W, c0, h0[:1])
