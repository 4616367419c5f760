"""fastbptt.compat adapters against plain re-implementations of the original scripts."""
import numpy as np
import pytest

import fastbptt
from fastbptt import compat
from originals import cs231n as orig_cs231n
from originals import min_char_rnn as orig_mcr
from originals import wildml as orig_wildml
from tolerances import ADAPTER64


def close(a, b):
    np.testing.assert_allclose(a, b, **ADAPTER64)


def snapshot(*arrays):
    return [np.array(a, copy=True) for a in arrays]


def assert_unchanged(before, after):
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- min-char-rnn
def mcr_params(rng, H, V, scale=0.01):
    # the gist's initialisation (randn * 0.01, zero biases) unless scale says otherwise
    Wxh = rng.standard_normal((H, V)) * scale
    Whh = rng.standard_normal((H, H)) * scale
    Why = rng.standard_normal((V, H)) * scale
    bh = rng.standard_normal((H, 1)) * scale
    by = rng.standard_normal((V, 1)) * scale
    return Wxh, Whh, Why, bh, by


@pytest.mark.parametrize("H,V,T", [(100, 65, 25), (7, 2, 1), (5, 2, 6), (1, 3, 4), (9, 11, 1)])
def test_min_char_rnn_matches_original(H, V, T):
    rng = np.random.default_rng(H * 100 + V * 10 + T)
    # the gist's 0.01 at its default size; larger weights (saturating units) on small nets
    params = mcr_params(rng, H, V, scale=0.01 if H >= 100 else 0.3)
    inputs = [int(i) for i in rng.integers(0, V, T)]
    targets = [int(i) for i in rng.integers(0, V, T)]
    hprev = rng.uniform(-0.5, 0.5, (H, 1))
    before = snapshot(*params, hprev)
    want = orig_mcr.make_lossfun(*params)(inputs, targets, hprev)
    got = compat.min_char_rnn(*params)(inputs, targets, hprev)
    assert_unchanged(before, (*params, hprev))
    assert len(got) == 7
    assert isinstance(got[0], float)
    close(got[0], want[0])
    for g, w in zip(got[1:], want[1:]):
        assert g.shape == w.shape and g.dtype == np.float64
        close(g, w)


def test_min_char_rnn_clips_like_the_original():
    rng = np.random.default_rng(1)
    params = mcr_params(rng, 6, 3, scale=2.0)      # large weights: unclipped grads exceed 5
    inputs, targets = [0, 1, 2, 1, 0, 0, 2, 1] * 3, [1, 2, 1, 0, 0, 2, 1, 2] * 3
    hprev = np.zeros((6, 1))
    want = orig_mcr.make_lossfun(*params)(inputs, targets, hprev)
    got = compat.min_char_rnn(*params)(inputs, targets, hprev)
    assert any(np.any(np.abs(w) == 5) for w in want[1:6])   # clipping really happened
    for g, w in zip(got, want):
        close(g, w)
    for g in got[1:6]:
        assert np.all(np.abs(g) <= 5)


def test_min_char_rnn_sees_in_place_adagrad_updates():
    rng = np.random.default_rng(2)
    H, V = 10, 5
    params = mcr_params(rng, H, V, scale=0.1)
    mine = tuple(np.copy(p) for p in params)
    lf_orig, lf_new = orig_mcr.make_lossfun(*params), compat.min_char_rnn(*mine)
    mems = [np.zeros_like(p) for p in params]
    mems2 = [np.zeros_like(p) for p in params]
    h_o = h_n = np.zeros((H, 1))
    for step in range(5):                           # the gist's training loop, twice in lockstep
        inputs = list(rng.integers(0, V, 8))
        targets = list(rng.integers(0, V, 8))
        out_o = lf_orig(inputs, targets, h_o)
        out_n = lf_new(inputs, targets, h_n)
        for a, b in zip(out_o, out_n):
            close(b, a)
        h_o, h_n = out_o[-1], out_n[-1]
        for p, d, m in zip(params, out_o[1:6], mems):
            m += d * d
            p += -0.1 * d / np.sqrt(m + 1e-8)
        for p, d, m in zip(mine, out_n[1:6], mems2):
            m += d * d
            p += -0.1 * d / np.sqrt(m + 1e-8)
    for a, b in zip(params, mine):
        close(b, a)


def test_min_char_rnn_empty_sequence_and_bad_input():
    rng = np.random.default_rng(3)
    params = mcr_params(rng, 4, 3)
    lf = compat.min_char_rnn(*params)
    hprev = rng.standard_normal((4, 1))
    loss, *grads, h = lf([], [], hprev)
    assert loss == 0.0 and all(not g.any() for g in grads)
    np.testing.assert_array_equal(h, hprev)
    with pytest.raises(ValueError, match="hprev"):
        lf([0, 1], [1, 2], np.zeros(4))
    with pytest.raises(ValueError, match="targets"):
        lf([0, 1], [1], np.zeros((4, 1)))
    with pytest.raises(ValueError, match="inputs"):
        lf([0, 3], [1, 2], np.zeros((4, 1)))
    with pytest.raises(ValueError, match="Why"):
        compat.min_char_rnn(params[0], params[1], params[2].T, params[3], params[4])


# --------------------------------------------------------------------------- CS231n
@pytest.mark.parametrize("N,T,D,H", [(4, 5, 3, 6), (1, 1, 2, 2), (3, 1, 4, 5), (2, 7, 1, 1), (25, 16, 32, 24)])
def test_cs231n_matches_original(N, T, D, H):
    rng = np.random.default_rng(N * 1000 + T * 100 + D * 10 + H)
    x = rng.standard_normal((N, T, D))
    h0 = rng.standard_normal((N, H))
    Wx = rng.standard_normal((D, H)) / np.sqrt(D)
    Wh = rng.standard_normal((H, H)) / np.sqrt(H)
    b = rng.standard_normal(H) * 0.1
    dh = rng.standard_normal((N, T, H))
    before = snapshot(x, h0, Wx, Wh, b, dh)
    h_w, cache_w = orig_cs231n.rnn_forward(x, h0, Wx, Wh, b)
    h_g, cache_g = compat.cs231n.rnn_forward(x, h0, Wx, Wh, b)
    assert h_g.shape == (N, T, H) and h_g.flags.writeable
    close(h_g, h_w)
    grads_w = orig_cs231n.rnn_backward(dh, cache_w)
    grads_g = compat.cs231n.rnn_backward(dh, cache_g)
    for g, w in zip(grads_g, grads_w):
        assert g.shape == w.shape
        close(g, w)
    assert_unchanged(before, (x, h0, Wx, Wh, b, dh))


def test_cs231n_bad_input():
    x, h0 = np.zeros((2, 3, 4)), np.zeros((2, 5))
    Wx, Wh, b = np.zeros((4, 5)), np.zeros((5, 5)), np.zeros(5)
    with pytest.raises(ValueError, match="Wx"):
        compat.cs231n.rnn_forward(x, h0, Wx.T, Wh, b)
    with pytest.raises(ValueError, match="h0"):
        compat.cs231n.rnn_forward(x, np.zeros((3, 5)), Wx, Wh, b)
    with pytest.raises(TypeError, match="dtype"):
        compat.cs231n.rnn_forward(x.astype(np.float32), h0, Wx, Wh, b)
    _, cache = compat.cs231n.rnn_forward(x, h0, Wx, Wh, b)
    with pytest.raises(ValueError, match="dhs"):
        compat.cs231n.rnn_backward(np.zeros((2, 3, 4)), cache)
    with pytest.raises(TypeError, match="cache"):
        compat.cs231n.rnn_backward(np.zeros((2, 3, 5)), [])


# --------------------------------------------------------------------------- WildML
def wildml_params(rng, H, vocab):
    # the tutorial's initialisation: uniform(±1/sqrt(fan_in))
    U = rng.uniform(-np.sqrt(1 / vocab), np.sqrt(1 / vocab), (H, vocab))
    V = rng.uniform(-np.sqrt(1 / H), np.sqrt(1 / H), (vocab, H))
    W = rng.uniform(-np.sqrt(1 / H), np.sqrt(1 / H), (H, H))
    return U, V, W


@pytest.mark.parametrize("H,vocab,T,k", [
    (100, 8000, 12, 4), (6, 2, 1, 4), (6, 2, 5, 4), (5, 3, 9, 0), (5, 3, 9, 1),
    (8, 10, 7, 20), (3, 4, 6, 5), (4, 2, 1, 0),
])
def test_wildml_matches_original(H, vocab, T, k):
    rng = np.random.default_rng(H * 7 + vocab + T * 3 + k)
    U, V, W = wildml_params(rng, H, vocab)
    x = [int(i) for i in rng.integers(0, vocab, T)]
    y = [int(i) for i in rng.integers(0, vocab, T)]
    before = snapshot(U, V, W)
    want = orig_wildml.bptt(x, y, U, V, W, bptt_truncate=k)
    got = compat.wildml.bptt(x, y, U, V, W, bptt_truncate=k)
    assert_unchanged(before, (U, V, W))
    assert isinstance(got, list) and len(got) == 3
    for g, w in zip(got, want):
        assert g.shape == w.shape
        close(g, w)


@pytest.mark.parametrize("k", [0, 2, 4])
def test_wildml_truncation_is_fastbptt_truncate_1_k_plus_1(k):
    # the adapter batches the output layer itself; the engine's truncate=(1, k+1) agrees
    rng = np.random.default_rng(10 + k)
    H, vocab, T = 6, 9, 11
    U, V, W = wildml_params(rng, H, vocab)
    x, y = rng.integers(0, vocab, T), rng.integers(0, vocab, T)
    x[3] = x[7] = x[8]                               # repeated ids must accumulate
    params = {"U": U, "W": W, "b": np.zeros(H), "V": V, "c": np.zeros(vocab)}
    _, g, _ = fastbptt.loss_and_grad(params, x[:, None], y[:, None], truncate=(1, k + 1))
    got = compat.wildml.bptt(x, y, U, V, W, bptt_truncate=k)
    for a, key in zip(got, ("U", "V", "W")):
        close(a, g[key])
    close(got[0], orig_wildml.bptt(x, y, U, V, W, k)[0])


def test_wildml_bad_input():
    U, V, W = wildml_params(np.random.default_rng(0), 4, 5)
    with pytest.raises(ValueError, match="bptt_truncate"):
        compat.wildml.bptt([0, 1], [1, 2], U, V, W, bptt_truncate=-1)
    with pytest.raises(ValueError, match="x holds id"):
        compat.wildml.bptt([0, 5], [1, 2], U, V, W)
    with pytest.raises(ValueError, match="y must have"):
        compat.wildml.bptt([0, 1], [1], U, V, W)
    with pytest.raises(ValueError, match="V must"):
        compat.wildml.bptt([0, 1], [1, 2], U, V.T, W)
    dU, dV, dW = compat.wildml.bptt([], [], U, V, W)
    assert not (dU.any() or dV.any() or dW.any())
