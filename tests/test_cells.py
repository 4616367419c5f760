"""LSTM and GRU cells: NumPy reference and Numba CPU against torch.nn, finite differences,
truncation against an independent BPTT(k2; k1), checkpointing, the layer API, validation."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastbptt
import tolerances as tol
from cases import INPUT_KINDS, TARGET_KINDS, make_case

GATED = ("lstm", "gru")
CELLS = ("rnn",) + GATED
TORCH_COMBOS = [dict(zip(("input_kind", "target_kind", "reduction", "many_to_one", "masked",
                          "batch_first"), c))
                for c in itertools.product(INPUT_KINDS, TARGET_KINDS, ("sum", "mean"),
                                           (False, True), (False, True), (False, True))]


def _cid(kw):
    return "-".join(str(v) if not isinstance(v, bool) else (k if v else f"no_{k}")
                    for k, v in kw.items())


def _flat_state(s):
    return np.concatenate(s, axis=1) if isinstance(s, tuple) else s


def assert_same(r1, r2, rtol, atol):
    l1, g1, h1 = r1
    l2, g2, h2 = r2
    np.testing.assert_allclose(l1, l2, rtol=rtol, atol=atol)
    assert set(g1) == set(g2), (set(g1), set(g2))
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=rtol, atol=atol, err_msg=k)
    np.testing.assert_allclose(_flat_state(h1), _flat_state(h2), rtol=rtol, atol=atol)


def load_torch_weights(m, p, cell, suffix="_l0"):
    """Copy U, W, b (and bn) into a torch RNN/LSTM/GRU module or cell (bias_hh zero but bn)."""
    import torch
    H = p["W"].shape[1]
    with torch.no_grad():
        getattr(m, f"weight_ih{suffix}").copy_(torch.tensor(p["U"]))
        getattr(m, f"weight_hh{suffix}").copy_(torch.tensor(p["W"]))
        getattr(m, f"bias_ih{suffix}").copy_(torch.tensor(p["b"]))
        bhh = getattr(m, f"bias_hh{suffix}")
        bhh.zero_()
        if cell == "gru":
            bhh[2 * H:] = torch.tensor(p["bn"])


# --------------------------------------------------------------------------- torch.nn
def torch_nn_loss_and_grad(case, cell):
    """The same model built from torch.nn modules: nn.LSTM/nn.GRU (+ nn.Embedding, one-hot
    inputs as F.one_hot), nn.Linear, masks through packed sequences; float64 autograd."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p = case["params"]
    H = p["W"].shape[1]
    n_in = p["U"].shape[1]
    n_out = p["V"].shape[0]
    bf = case["batch_first"]
    inputs, targets, mask = case["inputs"], case["targets"], case["mask"]
    m2o = (np.asarray(targets).ndim == 1) if np.issubdtype(np.asarray(targets).dtype, np.integer) \
        else (np.asarray(targets).ndim == 2)
    if bf:                                   # run torch time-major
        inputs = np.swapaxes(inputs, 0, 1)
        if not m2o:
            targets = np.swapaxes(targets, 0, 1)
        if mask is not None:
            mask = mask.T
    T, B = inputs.shape[:2]
    Mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    rnn = Mod(n_in, H, dtype=torch.float64)
    lin = torch.nn.Linear(H, n_out, dtype=torch.float64)
    load_torch_weights(rnn, p, cell)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(p["V"]))
        lin.bias.copy_(torch.tensor(p["c"]))
    if np.issubdtype(inputs.dtype, np.integer):
        ids = torch.tensor(inputs.astype(np.int64))
        if "E" in p:
            emb = torch.nn.Embedding(p["E"].shape[0], n_in, dtype=torch.float64)
            with torch.no_grad():
                emb.weight.copy_(torch.tensor(p["E"]))
            x = emb(ids)
        else:
            emb = None
            x = F.one_hot(ids, n_in).double()
    else:
        emb = None
        x = torch.tensor(inputs)
    h0 = case["h0"]
    th = torch.tensor(h0[0] if cell == "lstm" else h0)[None].requires_grad_(True)
    tc = torch.tensor(h0[1])[None].requires_grad_(True) if cell == "lstm" else None
    state = (th, tc) if cell == "lstm" else th
    lengths = (np.full(B, T) if mask is None else mask.sum(0).astype(np.int64))
    if mask is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        out, last = rnn(packed, state)
        out = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)[0]
    else:
        out, last = rnn(x, state)
    logits = lin(out)                                              # [T, B, n_out]
    w = np.ones((T, B)) if mask is None else mask.astype(np.float64)
    if m2o:
        w = np.zeros((T, B))
        w[lengths - 1, np.arange(B)] = 1
        logits_used = logits[torch.tensor(lengths - 1), torch.arange(B)]     # [B, n_out]
        y = np.asarray(targets)
        yt = y
    else:
        logits_used = logits
        yt = np.asarray(targets)
    if case["loss"] == "mse":
        lt = 0.5 * ((logits_used - torch.tensor(yt)) ** 2).sum(-1)
    elif np.issubdtype(yt.dtype, np.integer):
        lt = F.cross_entropy(logits_used.reshape(-1, n_out), torch.tensor(yt.astype(np.int64)).reshape(-1),
                             reduction="none").reshape(logits_used.shape[:-1])
    else:
        lt = -(torch.tensor(yt) * torch.log_softmax(logits_used, -1)).sum(-1)
    if m2o:
        weights = torch.ones(B, dtype=torch.float64)
    else:
        weights = torch.tensor(w)
    n_valid = float(weights.sum())
    total = (weights * lt).sum()
    if case["reduction"] == "mean":
        total = total / n_valid
    total.backward()
    g = {"U": rnn.weight_ih_l0.grad.numpy(), "W": rnn.weight_hh_l0.grad.numpy(),
         "b": rnn.bias_ih_l0.grad.numpy(), "V": lin.weight.grad.numpy(), "c": lin.bias.grad.numpy(),
         "h0": th.grad.numpy()[0]}
    if cell == "gru":
        g["bn"] = rnn.bias_hh_l0.grad.numpy()[2 * H:]
    if cell == "lstm":
        g["c0"] = tc.grad.numpy()[0]
    if emb is not None:
        g["E"] = emb.weight.grad.numpy()
    h_last = (last[0][0].detach().numpy(), last[1][0].detach().numpy()) if cell == "lstm" \
        else last[0].detach().numpy()
    return float(total), g, h_last


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("kw", TORCH_COMBOS, ids=_cid)
def test_matches_torch_nn_float64(kw, cell, backend):
    case = make_case(cell=cell, **kw, seed=3)
    ref = torch_nn_loss_and_grad(case, cell)
    got = fastbptt.loss_and_grad(**case, backend=backend)
    assert_same(got, ref, **tol.CELLS_TORCH64)


# --------------------------------------------------------------------------- CPU == reference
@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("kw", [k for k in TORCH_COMBOS if not k["batch_first"]], ids=_cid)
def test_cpu_equals_reference_float32(kw, cell):
    case = make_case(cell=cell, **kw, dtype=np.float32, seed=5)
    ref = fastbptt.loss_and_grad(**case, backend="numpy")
    got = fastbptt.loss_and_grad(**case)
    for k, g in got[1].items():
        assert g.dtype == np.float32, k
    assert_same(got, ref, **tol.EXACT32)


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("input_kind", INPUT_KINDS)
@pytest.mark.parametrize("target_kind", TARGET_KINDS)
def test_gradients_match_finite_differences(cell, input_kind, target_kind):
    case = make_case(cell=cell, input_kind=input_kind, target_kind=target_kind, masked=True,
                     T=4, B=3, seed=11)
    args = {k: v for k, v in case.items() if k not in ("params", "h0")}
    h0 = case["h0"]

    def fun(q):
        q = dict(q)
        state = (q.pop("h0"), q.pop("c0")) if cell == "lstm" else q.pop("h0")
        loss, grads, _ = fastbptt.loss_and_grad(q, h0=state, **args)
        return loss, grads

    params = dict(case["params"], h0=h0[0] if cell == "lstm" else h0)
    if cell == "lstm":
        params["c0"] = h0[1]
    res = fastbptt.gradcheck(fun, params, directions=2, elements=3, seed=1)
    assert res.max_rel_error < tol.FINITE_DIFF, (res.worst, res.max_rel_error)


# --------------------------------------------------------------------------- truncation
def independent_bptt(case, cell, k1, k2):
    """BPTT(k2; k1) written out here: per block of k1 steps, each step's loss is
    backpropagated through the block and the k2 - k1 steps before it (float inputs, CE ids,
    sum), with the cells' equations spelled out again."""
    p = case["params"]
    x, y = case["inputs"], case["targets"]
    T, B, _ = x.shape
    H = p["W"].shape[1]
    sig = lambda a: 1 / (1 + np.exp(-a))
    h = [case["h0"][0] if cell == "lstm" else case["h0"]]
    c = [case["h0"][1]] if cell == "lstm" else None
    cache = []
    for t in range(T):
        if cell == "lstm":
            z = x[t] @ p["U"].T + h[t] @ p["W"].T + p["b"]
            i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
            c.append(f * c[t] + i * g)
            h.append(o * np.tanh(c[t + 1]))
            cache.append((i, f, g, o))
        else:
            xp, hp = x[t] @ p["U"].T + p["b"], h[t] @ p["W"].T
            r, zz = sig(xp[:, :H] + hp[:, :H]), sig(xp[:, H:2 * H] + hp[:, H:2 * H])
            hn = hp[:, 2 * H:] + p["bn"]
            n = np.tanh(xp[:, 2 * H:] + r * hn)
            h.append((1 - zz) * n + zz * h[t])
            cache.append((r, zz, n, hn))
    g = {k: np.zeros_like(v) for k, v in p.items()}
    loss = 0.0
    dho = []
    for t in range(T):
        o = h[t + 1] @ p["V"].T + p["c"]
        e = np.exp(o - o.max(1, keepdims=True))
        pr = e / e.sum(1, keepdims=True)
        loss += -np.log(pr[np.arange(B), y[t]]).sum()
        pr[np.arange(B), y[t]] -= 1
        g["V"] += pr.T @ h[t + 1]
        g["c"] += pr.sum(0)
        dho.append(pr @ p["V"])
    for s0 in range(0, T, k1):
        s1 = min(T, s0 + k1)
        dh, dc = np.zeros((B, H)), np.zeros((B, H))
        for t in range(s1 - 1, max(0, s0 - (k2 - k1)) - 1, -1):
            if t >= s0:
                dh = dh + dho[t]
            if cell == "lstm":
                i, f, gg, o = cache[t]
                tc = np.tanh(c[t + 1])
                dc = dc + dh * o * (1 - tc ** 2)
                dz = np.concatenate([dc * gg * i * (1 - i), dc * c[t] * f * (1 - f),
                                     dc * i * (1 - gg ** 2), dh * tc * o * (1 - o)], 1)
                g["U"] += dz.T @ x[t]
                g["W"] += dz.T @ h[t]
                g["b"] += dz.sum(0)
                dh, dc = dz @ p["W"], dc * f
            else:
                r, zz, n, hn = cache[t]
                dnx = dh * (1 - zz) * (1 - n ** 2)
                dr = dnx * hn * r * (1 - r)
                dzz = dh * (h[t] - n) * zz * (1 - zz)
                dx = np.concatenate([dr, dzz, dnx], 1)
                dhh = np.concatenate([dr, dzz, dnx * r], 1)
                g["U"] += dx.T @ x[t]
                g["W"] += dhh.T @ h[t]
                g["b"] += dx.sum(0)
                g["bn"] += (dnx * r).sum(0)
                dh = dh * zz + dhh @ p["W"]
    return loss, g


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("k1,k2", [(1, 1), (2, 2), (3, 5), (1, 4), (4, 9), (7, 7)])
def test_truncation_equals_independent_bptt(cell, k1, k2, backend):
    case = make_case(cell=cell, T=7, seed=2)
    loss, g = independent_bptt(case, cell, k1, k2)
    got = fastbptt.loss_and_grad(**case, truncate=(k1, k2), backend=backend)
    np.testing.assert_allclose(got[0], loss, **tol.EXACT64)
    for k in g:
        np.testing.assert_allclose(got[1][k], g[k], err_msg=k, **tol.EXACT64)


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_chunked_truncation_equals_torch_with_detach(cell, k):
    """truncate=k is PyTorch with h (and c) detached every k steps."""
    torch = pytest.importorskip("torch")
    case = make_case(cell=cell, T=7, seed=4)
    p = case["params"]
    H = p["W"].shape[1]
    Mod = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[cell]
    m = Mod(p["U"].shape[1], H, dtype=torch.float64)
    load_torch_weights(m, p, cell, suffix="")
    V = torch.tensor(p["V"], requires_grad=True)
    c = torch.tensor(p["c"], requires_grad=True)
    st = tuple(torch.tensor(s) for s in case["h0"]) if cell == "lstm" else torch.tensor(case["h0"])
    total = 0.0
    for t in range(case["inputs"].shape[0]):
        if t % k == 0:
            st = tuple(s.detach() for s in st) if cell == "lstm" else st.detach()
        st = m(torch.tensor(case["inputs"][t]), st)
        h = st[0] if cell == "lstm" else st
        total = total + torch.nn.functional.cross_entropy(h @ V.T + c, torch.tensor(case["targets"][t]),
                                                          reduction="sum")
    total.backward()
    got = fastbptt.loss_and_grad(**case, truncate=k)
    np.testing.assert_allclose(got[0], float(total), **tol.TORCH64)
    for key, tg in (("U", m.weight_ih.grad), ("W", m.weight_hh.grad), ("b", m.bias_ih.grad),
                    ("V", V.grad), ("c", c.grad)):
        np.testing.assert_allclose(got[1][key], tg.numpy(), err_msg=key, **tol.TORCH64)
    if cell == "gru":
        np.testing.assert_allclose(got[1]["bn"], m.bias_hh.grad.numpy()[2 * H:], **tol.TORCH64)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("opts", [dict(checkpoint=2), dict(checkpoint="sqrt"),
                                  dict(checkpoint=3, truncate=(2, 4)), dict(checkpoint=1, masked=True)])
def test_checkpointing_equals_full_bptt(cell, opts, backend):
    opts = dict(opts)
    case = make_case(cell=cell, T=9, masked=opts.pop("masked", False), input_kind="embed", seed=6)
    full = fastbptt.loss_and_grad(**case, truncate=opts.get("truncate"), backend=backend)
    ck = fastbptt.loss_and_grad(**case, **opts, backend=backend)
    assert_same(ck, full, **tol.CHECKPOINT64)


# --------------------------------------------------------------------------- states and API
def test_lstm_state_forms():
    case = make_case(cell="lstm", seed=1)
    h0, c0 = case["h0"]
    args = {k: v for k, v in case.items() if k != "h0"}
    loss1, g1, (h1, c1) = fastbptt.loss_and_grad(**args, h0=(h0, np.zeros_like(c0)))
    loss2, g2, (h2, c2) = fastbptt.loss_and_grad(**args, h0=h0)          # one array: c0 = 0
    assert loss1 == loss2 and np.array_equal(h1, h2) and np.array_equal(c1, c2)
    loss3, g3, _ = fastbptt.loss_and_grad(**args)                         # None: both zero
    loss4, _, _ = fastbptt.loss_and_grad(**args, h0=(np.zeros_like(h0), np.zeros_like(c0)))
    assert loss3 == loss4
    assert set(g3) >= {"h0", "c0"} and g3["c0"].shape == c0.shape


@pytest.mark.parametrize("cell", CELLS)
def test_init_params_shapes_and_dtypes(cell):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    p = fastbptt.init_params(5, 7, 3, cell=cell, vocab_size=11, dtype=np.float64, seed=0)
    assert p["U"].shape == (7 * G, 5) and p["W"].shape == (7 * G, 7) and p["b"].shape == (7 * G,)
    assert p["V"].shape == (3, 7) and p["E"].shape == (11, 5)
    assert ("bn" in p) == (cell == "gru")
    assert all(a.dtype == np.float64 and a.flags.c_contiguous for a in p.values())
    if cell == "lstm":
        np.testing.assert_array_equal(p["b"][7:14], 1)                  # forget gate
        np.testing.assert_array_equal(np.delete(p["b"], np.s_[7:14]), 0)


@pytest.mark.parametrize("cell", GATED)
def test_activation_other_than_tanh_is_refused(cell):
    case = make_case(cell=cell)
    fastbptt.loss_and_grad(**dict(case, activation="tanh"))
    with pytest.raises(ValueError, match="activation"):
        fastbptt.loss_and_grad(**dict(case, activation="relu"))


@pytest.mark.parametrize("cell", GATED)
@pytest.mark.parametrize("key", ["U", "W", "b"])
def test_params_of_the_wrong_cell_name_cell_key_and_shapes(cell, key):
    case = make_case(cell=cell)
    rnn = fastbptt.init_params(4, 6, 5, dtype=np.float64)
    bad = dict(case["params"], **{key: rnn[key]})
    with pytest.raises(ValueError) as e:
        fastbptt.loss_and_grad(**dict(case, params=bad))
    msg = str(e.value)
    assert f"'{cell}'" in msg and f"params['{key}']" in msg and str(rnn[key].shape) in msg, msg


def test_gru_without_bn_names_it():
    case = make_case(cell="gru")
    p = dict(case["params"])
    del p["bn"]
    with pytest.raises(ValueError, match="'bn'"):
        fastbptt.loss_and_grad(**dict(case, params=p))


def test_rnn_params_default_cell_unchanged():
    case = make_case()
    assert "cell" not in case
    r = fastbptt.loss_and_grad(**case)
    assert set(r[1]) == {"U", "W", "b", "V", "c", "h0"} and isinstance(r[2], np.ndarray)


# --------------------------------------------------------------------------- layer API
def _torch_layer(cell, p, x, h0, c0, dhs, dh_last, dc_last):
    torch = pytest.importorskip("torch")
    T, B, I = x.shape
    H = p["W"].shape[1]
    Mod = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    m = Mod(I, H, dtype=torch.float64)
    load_torch_weights(m, p, cell)
    tx = torch.tensor(x, requires_grad=True)
    th = torch.tensor(h0)[None].requires_grad_(True)
    tc = torch.tensor(c0)[None].requires_grad_(True)
    out, last = m(tx, (th, tc) if cell == "lstm" else th)
    L = (out * torch.tensor(dhs)).sum()
    hl = last[0] if cell == "lstm" else last
    L = L + (hl[0] * torch.tensor(dh_last)).sum()
    if cell == "lstm":
        L = L + (last[1][0] * torch.tensor(dc_last)).sum()
    L.backward()
    res = {"hs": out.detach().numpy(), "dx": tx.grad.numpy(), "dh0": th.grad.numpy()[0],
           "dU": m.weight_ih_l0.grad.numpy(), "dW": m.weight_hh_l0.grad.numpy(),
           "db": m.bias_ih_l0.grad.numpy(), "h_last": hl[0].detach().numpy()}
    if cell == "lstm":
        res["dc0"] = tc.grad.numpy()[0]
        res["c_last"] = last[1][0].detach().numpy()
    if cell == "gru":
        res["dbn"] = m.bias_hh_l0.grad.numpy()[2 * H:]
    return res


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_layer_api_matches_torch(cell, batch_first, backend):
    rng = np.random.default_rng(3)
    T, B, I, H = 5, 3, 4, 6
    p = fastbptt.init_params(I, H, 2, cell=cell, dtype=np.float64, seed=2)
    p["b"] = rng.standard_normal(p["b"].shape) * 0.3
    x, dhs = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H))
    h0, c0, dhl, dcl = (rng.standard_normal((B, H)) for _ in range(4))
    ref = _torch_layer(cell, p, x, h0, c0, dhs, dhl, dcl)
    tr = (lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1))) if batch_first else (lambda a: a)
    kw = dict(batch_first=batch_first, backend=backend)
    if cell == "lstm":
        hs, cache = fastbptt.lstm_forward(tr(x), h0, c0, p["U"], p["W"], p["b"], **kw)
        dx, dh0, dc0, dU, dW, db = fastbptt.lstm_backward(tr(dhs), cache, dh_last=dhl, dc_last=dcl)
        got = dict(dc0=dc0, c_last=cache.c_last)
    elif cell == "gru":
        hs, cache = fastbptt.gru_forward(tr(x), h0, p["U"], p["W"], p["b"], p["bn"], **kw)
        dx, dh0, dU, dW, db, dbn = fastbptt.gru_backward(tr(dhs), cache, dh_last=dhl)
        got = dict(dbn=dbn)
    else:
        hs, cache = fastbptt.rnn_forward(tr(x), h0, p["U"], p["W"], p["b"], **kw)
        dx, dh0, dU, dW, db = fastbptt.rnn_backward(tr(dhs), cache, dh_last=dhl)
        got = {}
    got.update(hs=tr(hs), dx=tr(dx), dh0=dh0, dU=dU, dW=dW, db=db, h_last=cache.h_last)
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], err_msg=k, **tol.CELLS_TORCH64)


@pytest.mark.parametrize("cell", CELLS)
def test_layer_hs_is_independent_of_the_cache(cell):
    rng = np.random.default_rng(0)
    p = fastbptt.init_params(3, 4, 2, cell=cell, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 2, 3))
    fwd = {"rnn": lambda: fastbptt.rnn_forward(x, None, p["U"], p["W"], p["b"]),
           "lstm": lambda: fastbptt.lstm_forward(x, None, None, p["U"], p["W"], p["b"]),
           "gru": lambda: fastbptt.gru_forward(x, None, p["U"], p["W"], p["b"], p["bn"])}[cell]
    bwd = {"rnn": fastbptt.rnn_backward, "lstm": fastbptt.lstm_backward, "gru": fastbptt.gru_backward}[cell]
    hs, cache = fwd()
    before = bwd(np.ones_like(hs), cache)
    hs[...] = 123.0                          # the caller owns hs
    after = bwd(np.ones_like(hs), cache)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_layer_backward_refuses_another_cells_cache():
    p = fastbptt.init_params(3, 4, 2, cell="gru", dtype=np.float64, seed=0)
    hs, cache = fastbptt.gru_forward(np.zeros((2, 1, 3)), None, p["U"], p["W"], p["b"], p["bn"])
    with pytest.raises(TypeError, match="lstm_forward"):
        fastbptt.lstm_backward(hs, cache)
