"""The Elman adapters (min-char-rnn, CS231n RNN, WildML) against faithful copies of the originals.

Each adapter must behave like its original on everything the original accepts: the same
dtypes in and out (NumPy promotion included), the same numbers within float rounding, negative
ids indexed as Python does, the same exception types where the original raises.
"""
import numpy as np
import pytest

import fastbptt
from fastbptt import compat
from originals import cs231n as orig_cs231n
from originals import min_char_rnn as orig_mcr
from originals import wildml as orig_wildml
from tolerances import ADAPTER16, ADAPTER32, ADAPTER64, FINITE_DIFF


def close(a, b, tol=ADAPTER64):
    np.testing.assert_allclose(a, b, **tol)


def snapshot(*arrays):
    return [np.array(a, copy=True) for a in arrays]


def assert_unchanged(before, after):
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def same_outputs(got, want, tol=ADAPTER64):
    """Same types, shapes and dtypes, values within tol."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert type(g) is type(w), (type(g), type(w))
        if isinstance(w, np.ndarray):
            assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        close(g, w, tol)


def raises_like(exc, original, adapter):
    """The original raises ``exc`` on this input, and so does the adapter."""
    with pytest.raises(exc):
        original()
    with pytest.raises(exc):
        adapter()


def num_grad(f, x, df, h=1e-5):
    """Central-difference gradient of sum(f() * df) w.r.t. x (changed in place and restored)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        pos = np.sum(f() * df)
        x[i] = old - h
        neg = np.sum(f() * df)
        x[i] = old
        grad[i] = (pos - neg) / (2 * h)
    return grad


def rel_error(a, b):
    """Worst difference relative to the array's scale (entries near 0 carry only the
    differences' round-off)."""
    return np.max(np.abs(a - b)) / np.max(np.abs(a) + np.abs(b))


# --------------------------------------------------------------------------- min-char-rnn
def mcr_params(rng, H, V, scale=0.01, dtypes=(np.float64,) * 5):
    # the gist's initialisation (randn * 0.01) unless scale says otherwise; random biases
    shapes = ((H, V), (H, H), (V, H), (H, 1), (V, 1))
    return tuple((rng.standard_normal(s) * scale).astype(d) for s, d in zip(shapes, dtypes))


def mcr_pair(params):
    """The gist's namespace with its lossFun, and the adapter reading the same namespace."""
    ns = orig_mcr.script_namespace(*params)
    return ns, ns["lossFun"], compat.min_char_rnn(ns)


@pytest.mark.parametrize("H,V,T", [(100, 65, 25), (7, 2, 1), (5, 2, 6), (1, 3, 4), (9, 11, 1)])
def test_min_char_rnn_matches_original(H, V, T):
    rng = np.random.default_rng(H * 100 + V * 10 + T)
    # the gist's 0.01 at its default size; larger weights (saturating units) on small nets
    params = mcr_params(rng, H, V, scale=0.01 if H >= 100 else 0.3)
    inputs = [int(i) for i in rng.integers(0, V, T)]
    targets = [int(i) for i in rng.integers(0, V, T)]
    hprev = rng.uniform(-0.5, 0.5, (H, 1))
    before = snapshot(*params, hprev)
    _, orig, new = mcr_pair(params)
    want = orig(inputs, targets, hprev)
    got = new(inputs, targets, hprev)
    assert_unchanged(before, (*params, hprev))
    assert type(got[0]) is np.float64
    same_outputs(got, want)
    same_outputs(compat.min_char_rnn(*params)(inputs, targets, hprev), want)   # the 5-array form


@pytest.mark.parametrize("dtypes,hprev_dtype", [
    ((np.float32,) * 5, np.float64),             # float32 params, the gist's float64 hprev
    ((np.float32,) * 5, np.float32),
    ((np.float32, np.float64, np.float32, np.float64, np.float16), np.float32),
    ((np.float64,) * 5, np.float32),
])
def test_min_char_rnn_dtypes_follow_numpy_promotion(dtypes, hprev_dtype):
    # the gist's one-hot inputs are float64: every state is float64, each gradient keeps its
    # parameter's dtype (accumulated into np.zeros_like(param)), h_last is float64
    rng = np.random.default_rng(5)
    H, V, T = 12, 7, 9
    params = mcr_params(rng, H, V, scale=0.3, dtypes=dtypes)
    inputs, targets = list(rng.integers(0, V, T)), list(rng.integers(0, V, T))
    hprev = rng.uniform(-0.5, 0.5, (H, 1)).astype(hprev_dtype)
    _, orig, new = mcr_pair(params)
    want, got = orig(inputs, targets, hprev), new(inputs, targets, hprev)
    assert [g.dtype for g in got[1:6]] == [np.dtype(d) for d in dtypes]
    assert got[6].dtype == np.float64 and type(got[0]) is np.float64
    same_outputs(got, want, ADAPTER32 if np.float16 not in dtypes else ADAPTER16)


def test_min_char_rnn_reads_the_namespace_at_every_call():
    rng = np.random.default_rng(2)
    H, V = 10, 5
    ns, orig, new = mcr_pair(mcr_params(rng, H, V, scale=0.3))
    inputs, targets, hprev = [0, 1, 4, 2, 3], [1, 4, 2, 3, 0], np.zeros((H, 1))
    first = new(inputs, targets, hprev)
    ns["Why"] = ns["Why"] * 1.5                  # rebinding, not an in-place update
    ns["bh"] = ns["bh"] + 0.1
    same_outputs(new(inputs, targets, hprev), orig(inputs, targets, hprev))
    assert np.abs(new(inputs, targets, hprev)[3] - first[3]).max() > 0.01


def test_min_char_rnn_sees_in_place_adagrad_updates():
    rng = np.random.default_rng(2)
    H, V = 10, 5
    params = mcr_params(rng, H, V, scale=0.1)
    ns_o, ns_n = orig_mcr.script_namespace(*params), orig_mcr.script_namespace(*snapshot(*params))
    lf_orig, lf_new = ns_o["lossFun"], compat.min_char_rnn(ns_n)
    names = ("Wxh", "Whh", "Why", "bh", "by")
    mems = [{k: np.zeros_like(ns[k]) for k in names} for ns in (ns_o, ns_n)]
    h_o = h_n = np.zeros((H, 1))
    for step in range(5):                        # the gist's training loop, twice in lockstep
        inputs, targets = list(rng.integers(0, V, 8)), list(rng.integers(0, V, 8))
        out_o, out_n = lf_orig(inputs, targets, h_o), lf_new(inputs, targets, h_n)
        same_outputs(out_n, out_o)
        h_o, h_n = out_o[-1], out_n[-1]
        for ns, out, mem in ((ns_o, out_o, mems[0]), (ns_n, out_n, mems[1])):
            for k, d in zip(names, out[1:6]):
                mem[k] += d * d
                ns[k] += -0.1 * d / np.sqrt(mem[k] + 1e-8)
    for k in names:
        close(ns_n[k], ns_o[k])


def test_min_char_rnn_clips_like_the_original():
    rng = np.random.default_rng(1)
    params = mcr_params(rng, 6, 3, scale=2.0)      # large weights: unclipped grads exceed 5
    inputs, targets = [0, 1, 2, 1, 0, 0, 2, 1] * 3, [1, 2, 1, 0, 0, 2, 1, 2] * 3
    _, orig, new = mcr_pair(params)
    want = orig(inputs, targets, np.zeros((6, 1)))
    assert any(np.any(np.abs(w) == 5) for w in want[1:6])   # clipping really happened
    same_outputs(new(inputs, targets, np.zeros((6, 1))), want)


def test_min_char_rnn_odd_but_accepted_inputs():
    rng = np.random.default_rng(3)
    H, V = 4, 5
    _, orig, new = mcr_pair(mcr_params(rng, H, V, scale=0.5))
    hprev = rng.standard_normal((H, 1))
    for inputs, targets in [([-1, -5, 2], [3, -2, 0]),              # negative ids count from the end
                            ([1, 2], [3, 4, 0, 1]),                  # extra targets are ignored
                            (np.array([0, 4, 1]), np.array([2, 1, -3], np.int32)),
                            ([3], [1])]:
        same_outputs(new(inputs, targets, hprev), orig(inputs, targets, hprev))
    same_outputs(new([1, 2], [0, 1], [[0.1]] * H), orig([1, 2], [0, 1], [[0.1]] * H))   # nested list


def test_min_char_rnn_raises_what_the_original_raises():
    rng = np.random.default_rng(3)
    H, V = 4, 5
    ns, orig, new = mcr_pair(mcr_params(rng, H, V))
    hprev = np.zeros((H, 1))
    for exc, inputs, targets in [(KeyError, [], []),           # the gist fails on hs[0]
                                 (IndexError, [0, 5], [1, 2]), (IndexError, [0, -6], [1, 2]),
                                 (IndexError, [0, 1], [1, 5]), (IndexError, [0, 1, 2], [1]),
                                 (IndexError, [0, 1.0], [1, 2])]:
        raises_like(exc, lambda: orig(inputs, targets, hprev), lambda: new(inputs, targets, hprev))
    with pytest.raises(IndexError, match=r"inputs\[1\] = 5"):
        new([0, 5], [1, 2], hprev)
    with pytest.raises(ValueError, match="hprev"):
        new([0, 1], [1, 2], np.zeros((H + 1, 1)))
    with pytest.raises(ValueError, match="Why"):
        compat.min_char_rnn(ns["Wxh"], ns["Whh"], ns["Why"].T, ns["bh"], ns["by"])
    with pytest.raises(TypeError, match="Wxh"):         # the gist: dWxh (int) += float
        compat.min_char_rnn(ns["Wxh"].astype(np.int64), ns["Whh"], ns["Why"], ns["bh"], ns["by"])
    ns["vocab_size"] = V + 1
    with pytest.raises(ValueError, match="vocab_size"):
        new([0], [1], hprev)
    del ns["vocab_size"], ns["Whh"]
    raises_like(NameError, lambda: orig([0], [1], hprev), lambda: new([0], [1], hprev))


def test_min_char_rnn_gradient_check():
    # the gradCheck posted with the gist: central differences of the loss, per entry (weights
    # small enough that no gradient reaches the clip at 5)
    rng = np.random.default_rng(6)
    H, V = 6, 4
    ns, orig, new = mcr_pair(mcr_params(rng, H, V, scale=0.3))
    inputs, targets, hprev = [0, 3, 1, 2, 2, 1], [3, 1, 2, 2, 1, 0], rng.uniform(-0.5, 0.5, (H, 1))
    grads = new(inputs, targets, hprev)[1:6]
    assert max(np.abs(g).max() for g in grads) < 5
    f = lambda: orig(inputs, targets, hprev)[0]                       # noqa: E731
    for name, g in zip(("Wxh", "Whh", "Why", "bh", "by"), grads):
        assert rel_error(num_grad(f, ns[name], 1.0), g) < FINITE_DIFF, name


def test_min_char_rnn_overflowing_logits_stay_finite():
    # the one deliberate difference: the gist's unshifted softmax turns logits > ~709 into
    # NaN; the adapter equals the gist run on the same logits shifted down (softmax is
    # shift-invariant, so that is the exact answer)
    rng = np.random.default_rng(4)
    H, V = 5, 4
    Wxh, Whh, Why, bh, by = mcr_params(rng, H, V, scale=0.5)
    inputs, targets, hprev = [0, 1, 2, 3], [1, 2, 3, 0], np.zeros((H, 1))
    with np.errstate(over="ignore", invalid="ignore"):
        nan = orig_mcr.make_lossfun(Wxh, Whh, Why, bh, by + 800.0)(inputs, targets, hprev)
    assert np.isnan(nan[0])
    got = compat.min_char_rnn(Wxh, Whh, Why, bh, by + 800.0)(inputs, targets, hprev)
    same_outputs(got, orig_mcr.make_lossfun(Wxh, Whh, Why, bh, by)(inputs, targets, hprev))


# --------------------------------------------------------------------------- CS231n RNN
def cs_inputs(rng, N, T, D, H, dtype=np.float64):
    x = rng.standard_normal((N, T, D))
    h0 = rng.standard_normal((N, H))
    Wx = rng.standard_normal((D, H)) / np.sqrt(D)
    Wh = rng.standard_normal((H, H)) / np.sqrt(H)
    b = rng.standard_normal(H) * 0.1
    return [a.astype(dtype) for a in (x, h0, Wx, Wh, b)], rng.standard_normal((N, T, H)).astype(dtype)


def cs_both(mod_fwd, mod_bwd, args, dh):
    h, cache = mod_fwd(*args)
    return (h,) + tuple(mod_bwd(dh, cache))


@pytest.mark.parametrize("N,T,D,H", [(4, 5, 3, 6), (1, 1, 2, 2), (3, 1, 4, 5), (2, 7, 1, 1), (25, 16, 32, 24)])
def test_cs231n_rnn_matches_original(N, T, D, H):
    rng = np.random.default_rng(N * 1000 + T * 100 + D * 10 + H)
    args, dh = cs_inputs(rng, N, T, D, H)
    before = snapshot(*args, dh)
    want = cs_both(orig_cs231n.rnn_forward, orig_cs231n.rnn_backward, args, dh)
    got = cs_both(compat.cs231n.rnn_forward, compat.cs231n.rnn_backward, args, dh)
    assert_unchanged(before, (*args, dh))
    assert got[0].flags.writeable and got[0].flags.c_contiguous
    same_outputs(got, want)


@pytest.mark.parametrize("dtypes", [
    ("float32",) * 5 + ("float32",),                                   # all float32
    # CaptioningRNN(dtype=float32) fed float64 features: h0 is float64
    ("float32", "float64", "float32", "float32", "float32", "float32"),
    ("float32", "float64", "float32", "float32", "float32", "float64"),
    ("int64", "float64", "float64", "float64", "float64", "float64"),  # integer x
    ("float16", "float16", "float16", "float16", "float32", "float32"),   # float16 steps run in float32
])
def test_cs231n_rnn_dtypes_follow_numpy_promotion(dtypes):
    # the assignment's h and gradients start from np.zeros: float64 whatever goes in
    rng = np.random.default_rng(7)
    args, dh = cs_inputs(rng, 3, 6, 4, 5)
    args = [(a * 3 if d == "int64" else a).astype(d) for a, d in zip(args, dtypes)]
    dh = dh.astype(dtypes[5])
    # the adapter computes float16 in float32: compare with the original on float32 copies
    as32 = [a.astype(np.float32) if a.dtype == np.float16 else a for a in args]
    want = cs_both(orig_cs231n.rnn_forward, orig_cs231n.rnn_backward, as32, dh)
    got = cs_both(compat.cs231n.rnn_forward, compat.cs231n.rnn_backward, args, dh)
    assert all(g.dtype == np.float64 for g in got)
    same_outputs(got, want, ADAPTER32 if {"float32", "float16"} & set(dtypes) else ADAPTER64)


def captioning_losses(mod, dtype, feature_dtype=np.float64, iters=20):
    """A CaptioningRNN-style training loop (float64 features projected to h0, word embeddings,
    temporal affine + softmax loss, SGD in place), its parameters in ``dtype``; the losses."""
    rng = np.random.default_rng(21)
    N, F, T, D, H, V = 8, 12, 6, 5, 7, 9
    features = rng.standard_normal((N, F)).astype(feature_dtype)
    captions = rng.integers(0, V, (N, T + 1))
    P = {"W_proj": rng.standard_normal((F, H)) / np.sqrt(F), "b_proj": np.zeros(H),
         "W_embed": rng.standard_normal((V, D)) / 10, "Wx": rng.standard_normal((D, H)) / np.sqrt(D),
         "Wh": rng.standard_normal((H, H)) / np.sqrt(H), "b": np.zeros(H),
         "W_vocab": rng.standard_normal((H, V)) / np.sqrt(H), "b_vocab": np.zeros(V)}
    P = {k: v.astype(dtype) for k, v in P.items()}
    losses = []
    for _ in range(iters):
        cin, cout = captions[:, :-1], captions[:, 1:]
        h0 = features @ P["W_proj"] + P["b_proj"]
        x = P["W_embed"][cin]
        h, cache = mod.rnn_forward(x, h0, P["Wx"], P["Wh"], P["b"])
        scores = h @ P["W_vocab"] + P["b_vocab"]
        p = np.exp(scores - scores.max(axis=2, keepdims=True))
        p /= p.sum(axis=2, keepdims=True)
        losses.append(-np.log(np.take_along_axis(p, cout[..., None], 2)).sum() / N)
        dscores = p.copy()
        np.put_along_axis(dscores, cout[..., None], np.take_along_axis(p, cout[..., None], 2) - 1, 2)
        dscores /= N
        G = {"W_vocab": h.reshape(-1, H).T @ dscores.reshape(-1, V), "b_vocab": dscores.sum(axis=(0, 1))}
        dx, dh0, G["Wx"], G["Wh"], G["b"] = mod.rnn_backward(dscores @ P["W_vocab"].T, cache)
        G["W_proj"], G["b_proj"] = features.T @ dh0, dh0.sum(axis=0)
        G["W_embed"] = np.zeros_like(P["W_embed"])
        np.add.at(G["W_embed"], cin, dx)
        for k in P:
            P[k] -= 0.05 * G[k]
    return np.array(losses)


@pytest.mark.parametrize("feature_dtype", [np.float64, np.float32])
def test_cs231n_float32_training_follows_the_original(feature_dtype):
    # CaptioningRNN(dtype=np.float32), fed the data's float64 features or float32 ones: 20 SGD
    # steps in lockstep with the original stay within float32 rounding of it
    want = captioning_losses(orig_cs231n, np.float32, feature_dtype)
    got = captioning_losses(compat.cs231n, np.float32, feature_dtype)
    assert want[-1] < 0.85 * want[0]                                # it trains
    close(got, want, ADAPTER32)


def test_cs231n_rnn_backward_takes_T_from_dh():
    rng = np.random.default_rng(8)
    args, dh = cs_inputs(rng, 2, 6, 3, 4)
    for Td in (1, 4):
        want = cs_both(orig_cs231n.rnn_forward, orig_cs231n.rnn_backward, args, dh[:, :Td])
        got = cs_both(compat.cs231n.rnn_forward, compat.cs231n.rnn_backward, args, dh[:, :Td])
        same_outputs(got, want)
    dh7 = rng.standard_normal((2, 7, 4))
    raises_like(IndexError, lambda: cs_both(orig_cs231n.rnn_forward, orig_cs231n.rnn_backward, args, dh7),
                lambda: cs_both(compat.cs231n.rnn_forward, compat.cs231n.rnn_backward, args, dh7))


def test_cs231n_rnn_notebook_checks():
    # the assignment's own checks: the linspace forward and numeric gradients (seed 231)
    N, T, D, H = 2, 3, 4, 5
    x = np.linspace(-0.1, 0.3, num=N * T * D).reshape(N, T, D)
    h0 = np.linspace(-0.3, 0.1, num=N * H).reshape(N, H)
    Wx = np.linspace(-0.2, 0.4, num=D * H).reshape(D, H)
    Wh = np.linspace(-0.4, 0.1, num=H * H).reshape(H, H)
    b = np.linspace(-0.7, 0.1, num=H)
    h, _ = compat.cs231n.rnn_forward(x, h0, Wx, Wh, b)
    close(h, orig_cs231n.rnn_forward(x, h0, Wx, Wh, b)[0])
    cs231n_gradient_check("rnn", H=5, G=1)


def cs231n_gradient_check(cell, H, G):
    """The notebook's check (seed 231, N 2, D 3, T 10): every gradient against central differences."""
    np.random.seed(231)
    N, D, T = 2, 3, 10
    x, h0 = np.random.randn(N, T, D), np.random.randn(N, H)
    Wx, Wh, b = np.random.randn(D, G * H), np.random.randn(H, G * H), np.random.randn(G * H)
    fwd, bwd = getattr(compat.cs231n, f"{cell}_forward"), getattr(compat.cs231n, f"{cell}_backward")
    out, cache = fwd(x, h0, Wx, Wh, b)
    dout = np.random.randn(*out.shape)
    grads = bwd(dout, cache)
    for arr, g in zip((x, h0, Wx, Wh, b), grads):
        assert rel_error(num_grad(lambda: fwd(x, h0, Wx, Wh, b)[0], arr, dout), g) < FINITE_DIFF


def test_cs231n_rnn_bad_input():
    x, h0 = np.zeros((2, 3, 4)), np.zeros((2, 5))
    Wx, Wh, b = np.zeros((4, 5)), np.zeros((5, 5)), np.zeros(5)
    with pytest.raises(ValueError, match="Wx"):
        compat.cs231n.rnn_forward(x, h0, Wx.T, Wh, b)
    with pytest.raises(ValueError, match="h0"):
        compat.cs231n.rnn_forward(x, np.zeros((3, 5)), Wx, Wh, b)
    with pytest.raises(TypeError, match="x"):
        compat.cs231n.rnn_forward(x.astype(complex), h0, Wx, Wh, b)
    _, cache = compat.cs231n.rnn_forward(x, h0, Wx, Wh, b)
    with pytest.raises(ValueError, match="dh"):
        compat.cs231n.rnn_backward(np.zeros((2, 3, 4)), cache)
    with pytest.raises(TypeError, match="cache"):
        compat.cs231n.rnn_backward(np.zeros((2, 3, 5)), [])


# --------------------------------------------------------------------------- WildML
def wildml_params(rng, H, vocab, dtype=np.float64):
    # the tutorial's initialisation: uniform(±1/sqrt(fan_in))
    U = rng.uniform(-np.sqrt(1 / vocab), np.sqrt(1 / vocab), (H, vocab))
    V = rng.uniform(-np.sqrt(1 / H), np.sqrt(1 / H), (vocab, H))
    W = rng.uniform(-np.sqrt(1 / H), np.sqrt(1 / H), (H, H))
    return [a.astype(dtype) for a in (U, V, W)]


@pytest.mark.parametrize("H,vocab,T,k", [
    (100, 8000, 12, 4), (6, 2, 1, 4), (6, 2, 5, 4), (5, 3, 9, 0), (5, 3, 9, 1),
    (8, 10, 7, 20), (3, 4, 6, 5), (4, 2, 1, 0), (1, 3, 5, 2), (4, 3, 6, -1),
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
    assert isinstance(got, list)
    same_outputs(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_wildml_dtypes(dtype):
    # the tutorial's accumulators are np.zeros: float64 gradients whatever the weights' dtype
    rng = np.random.default_rng(9)
    U, V, W = wildml_params(rng, 6, 9, dtype)
    x, y = [1, 4, 8, 2, 2, 0], [4, 8, 2, 2, 0, 3]
    same_outputs(compat.wildml.bptt(x, y, U, V, W, 2), orig_wildml.bptt(x, y, U, V, W, 2))


def test_wildml_odd_but_accepted_inputs():
    rng = np.random.default_rng(11)
    U, V, W = wildml_params(rng, 5, 7)
    for x, y in [([-1, 3, -7, 2], [0, -2, 6, -1]),      # negative ids count from the end
                 ([1, 2, 3, 4, 5], [2, 3]),             # longer x: loss on len(y) steps only
                 ([1, 2], []), ([], []),
                 (np.array([3, 1, 4], np.int32), np.array([1, 5, 0]))]:
        same_outputs(compat.wildml.bptt(x, y, U, V, W, 1), orig_wildml.bptt(x, y, U, V, W, 1))


def test_wildml_raises_what_the_original_raises():
    U, V, W = wildml_params(np.random.default_rng(0), 4, 5)
    for x, y in [([0, 1], [1, 2, 3]), ([0, 5], [1, 2]), ([0, 1], [1, -6]), ([], [1])]:
        raises_like(IndexError, lambda: orig_wildml.bptt(x, y, U, V, W), lambda: compat.wildml.bptt(x, y, U, V, W))
    with pytest.raises(TypeError, match="bptt_truncate"):
        compat.wildml.bptt([0, 1], [1, 2], U, V, W, bptt_truncate=1.5)
    with pytest.raises(ValueError, match="V must"):
        compat.wildml.bptt([0, 1], [1, 2], U, V.T, W)


def test_wildml_tutorial_gradient_check():
    # the tutorial's gradient_check: a tiny model, no truncation, x = [0, 1, 2, 3]
    rng = np.random.default_rng(12)
    U, V, W = wildml_params(rng, 10, 100)
    x, y = [0, 1, 2, 3], [1, 2, 3, 4]
    grads = compat.wildml.bptt(x, y, U, V, W, bptt_truncate=1000)
    f = lambda: orig_wildml.calculate_loss(x, y, U, V, W)           # noqa: E731
    for arr, g in zip((U, V, W), grads):
        assert rel_error(num_grad(f, arr, 1.0), g) < FINITE_DIFF


@pytest.mark.parametrize("k", [0, 2, 4])
def test_wildml_truncation_is_fastbptt_truncate_1_k_plus_1(k):
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

