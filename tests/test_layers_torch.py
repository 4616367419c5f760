"""Stacked and bidirectional models against PyTorch autograd (nn.RNN / nn.LSTM / nn.GRU)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastbptt
import tolerances as tol

torch = pytest.importorskip("torch")
nn = torch.nn
pack = nn.utils.rnn

# backends that run each cell's stacked models: the CPU path runs on the cell's layer API
BACKENDS = {c: ("numpy", "cpu") if c == "rnn" or hasattr(fastbptt, f"{c}_forward") else ("numpy",)
            for c in ("rnn", "lstm", "gru")}
KINDS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]


def key(name, layer, d):
    return name + (f"_l{layer}" if layer else "") + ("_reverse" if d else "")


def make_case(cell, L, D, *, inputs="float", targets="ids", loss="cross_entropy", many_to_one=False,
              mask=None, T=6, B=4, n_in=5, H=4, n_out=3, vocab=7, seed=0):
    """params, time-major inputs/targets/mask, h0 [L·D, B, H] (and c0)."""
    rng = np.random.default_rng(seed)
    params = fastbptt.init_params(n_in, H, n_out, cell=cell, num_layers=L, bidirectional=D == 2,
                                  vocab_size=vocab if inputs == "embed" else None, dtype=np.float64,
                                  seed=seed)
    for k in params:                                  # non-zero biases, larger weights
        params[k] = params[k] + 0.3 * rng.standard_normal(params[k].shape)
    if inputs == "float":
        x = rng.standard_normal((T, B, n_in))
    else:
        x = rng.integers(0, vocab if inputs == "embed" else n_in, size=(T, B))
    tshape = (B,) if many_to_one else (T, B)
    if loss == "mse":
        y = rng.standard_normal(tshape + (n_out,))
    elif targets == "ids":
        y = rng.integers(0, n_out, size=tshape)
    else:
        y = rng.random(tshape + (n_out,))
    m = None
    if mask == "right":                               # right-padded, lengths 1..T
        lengths = rng.integers(1, T + 1, size=B)
        lengths[0] = T
        m = (np.arange(T)[:, None] < lengths[None, :]).astype(np.float64)
    elif mask == "holes":
        m = (rng.random((T, B)) < 0.7).astype(np.float64)
        m[0] = 1
    h0 = rng.standard_normal((L * D, B, H))
    c0 = rng.standard_normal((L * D, B, H)) if cell == "lstm" else None
    return params, x, y, m, h0, c0


def torch_loss_and_grad(params, cfg, x, y, m, h0, c0, loss, reduction, many_to_one):
    """The same model in PyTorch (time-major arrays in; batch_first only changes the module)."""
    rnn, head, emb = fastbptt.to_torch(params, **cfg)
    L, D, H = cfg["num_layers"], 2 if cfg["bidirectional"] else 1, params["W"].shape[1]
    T, B = x.shape[:2]
    if emb is not None:
        xt = emb(torch.from_numpy(x))
    elif x.dtype.kind in "iu":
        xt = torch.from_numpy(np.eye(params["U"].shape[1])[x])
    else:
        xt = torch.from_numpy(x)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True) if c0 is not None else None
    state = (h0t, c0t) if c0t is not None else h0t
    valid = np.ones((T, B), bool) if m is None else m.astype(bool)
    lengths = valid.sum(axis=0)
    right_padded = np.array_equal(valid, np.arange(T)[:, None] < lengths[None, :])
    seq = xt.transpose(0, 1) if cfg["batch_first"] else xt
    if right_padded:
        packed = pack.pack_padded_sequence(seq, torch.from_numpy(lengths), batch_first=cfg["batch_first"],
                                           enforce_sorted=False)
        out, hn = rnn(packed, state)
        out, _ = pack.pad_packed_sequence(out, batch_first=cfg["batch_first"], total_length=T)
    else:                                              # unidirectional: the recurrence runs through
        out, hn = rnn(seq, state)
    if cfg["batch_first"]:
        out = out.transpose(0, 1)
    o = head(out)                                      # [T, B, n_out]
    last = T - 1 - np.argmax(valid[::-1], axis=0)
    if many_to_one:
        w = np.zeros((T, B))
        w[last, np.arange(B)] = 1
        yt = np.zeros((T, B) + y.shape[1:], dtype=y.dtype)
        yt[last, np.arange(B)] = y
    else:
        w, yt = valid.astype(np.float64), y
    if reduction == "mean":
        w = w / np.count_nonzero(w)
    rows = np.nonzero(w.reshape(-1))[0]
    of = o.reshape(T * B, -1)[rows]
    wf = torch.from_numpy(w.reshape(-1)[rows])
    if loss == "mse":
        per = 0.5 * ((of - torch.from_numpy(yt.reshape(T * B, -1)[rows])) ** 2).sum(1)
    elif yt.dtype.kind in "iu":
        per = nn.functional.cross_entropy(of, torch.from_numpy(yt.reshape(-1)[rows]), reduction="none")
    else:
        per = -(torch.from_numpy(yt.reshape(T * B, -1)[rows]) * torch.log_softmax(of, 1)).sum(1)
    total = (wf * per).sum()
    total.backward()
    grads = {"V": head.weight.grad.numpy(), "c": head.bias.grad.numpy(), "h0": h0t.grad.numpy()}
    if c0t is not None:
        grads["c0"] = c0t.grad.numpy()
        hn = (hn[0].detach().numpy(), hn[1].detach().numpy())
    else:
        hn = hn.detach().numpy()
    if emb is not None:
        grads["E"] = emb.weight.grad.numpy()
    for layer in range(L):
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            grads[key("U", layer, d)] = getattr(rnn, "weight_ih" + sfx).grad.numpy()
            grads[key("W", layer, d)] = getattr(rnn, "weight_hh" + sfx).grad.numpy()
            grads[key("b", layer, d)] = getattr(rnn, "bias_ih" + sfx).grad.numpy()
            if cfg["cell"] == "gru":
                grads[key("bn", layer, d)] = getattr(rnn, "bias_hh" + sfx).grad.numpy()[2 * H:]
    return float(total.detach()), grads, hn


def check(cell, activation, L, D, backend, *, inputs="float", targets="ids", loss="cross_entropy",
          reduction="sum", many_to_one=False, mask=None, batch_first=False, seed=0):
    params, x, y, m, h0, c0 = make_case(cell, L, D, inputs=inputs, targets=targets, loss=loss,
                                        many_to_one=many_to_one, mask=mask, seed=seed)
    cfg = dict(cell=cell, activation=activation, num_layers=L, bidirectional=D == 2, batch_first=batch_first)
    ref_loss, ref_grads, ref_hn = torch_loss_and_grad(params, cfg, x, y, m, h0, c0, loss, reduction,
                                                      many_to_one)
    single = L == 1 and D == 1
    state = h0[0] if single else h0
    if c0 is not None:
        state = (state, c0[0] if single else c0)
    xs, ys, ms = x, y, m
    if batch_first:
        xs = np.swapaxes(x, 0, 1)
        ys = y if many_to_one else np.swapaxes(y, 0, 1)
        ms = None if m is None else m.T
    lo, grads, h_last = fastbptt.loss_and_grad(
        params, xs, ys, state, cell=cell, activation=activation, num_layers=L, bidirectional=D == 2,
        loss=loss, reduction=reduction, mask=ms, batch_first=batch_first, backend=backend)
    np.testing.assert_allclose(lo, ref_loss, **tol.TORCH_LAYERS64)
    assert sorted(grads) == sorted(ref_grads)
    for k, g in ref_grads.items():
        got = grads[k][None] if single and k in ("h0", "c0") else grads[k]
        np.testing.assert_allclose(got, g, err_msg=k, **tol.TORCH_LAYERS64)
    right_padded = m is None or mask == "right"
    if right_padded:                                   # torch's h_n is at the last valid step only then
        for got, want in zip(h_last if c0 is not None else (h_last,), ref_hn if c0 is not None else (ref_hn,)):
            np.testing.assert_allclose(got[None] if single else got, want, **tol.TORCH_LAYERS64)


@pytest.mark.parametrize("cell,activation", KINDS)
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
def test_layers_match_torch(cell, activation, L, D, batch_first):
    for backend in BACKENDS[cell]:
        check(cell, activation, L, D, backend, batch_first=batch_first, mask="right", seed=L + D)


SCENARIOS = [dict(inputs=i, targets=t, loss=lo, reduction=r, many_to_one=m2o, mask=mk)
             for i, (t, lo), r, m2o, mk in itertools.product(
                 ["float", "onehot", "embed"], [("ids", "cross_entropy"), ("probs", "cross_entropy"),
                                                ("float", "mse")],
                 ["sum", "mean"], [False, True], [None, "right"])]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("i", range(len(SCENARIOS)))
def test_every_input_target_loss_mask(cell, i):
    """Every input kind × target kind × loss × reduction × many-to-one × mask, 2-layer bidirectional."""
    for backend in BACKENDS[cell]:
        check(cell, "tanh", 2, 2, backend, batch_first=i % 3 == 0, seed=i, **SCENARIOS[i])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_stacked_unidirectional_mask_with_holes(cell):
    """A unidirectional stacked model runs through masked steps, like one layer."""
    for backend in BACKENDS[cell]:
        check(cell, "tanh", 2, 1, backend, mask="holes", seed=3)


def _torch_truncated(params, cell, L, x, y, h0, c0, k):
    """BPTT(k; k) in PyTorch: the stacked module over chunks of k steps, every layer's h (and c)
    detached at each chunk's start; returns the loss and every gradient under fastbptt's keys."""
    rnn, head, _ = fastbptt.to_torch(params, cell=cell, num_layers=L)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True) if c0 is not None else None
    state = (h0t, c0t) if c0 is not None else h0t
    total = 0
    for s in range(0, x.shape[0], k):
        out, state = rnn(torch.from_numpy(x[s:s + k]), state)
        o = head(out).reshape(-1, head.out_features)
        total = total + nn.functional.cross_entropy(o, torch.from_numpy(y[s:s + k].reshape(-1)),
                                                    reduction="sum")
        state = tuple(t.detach() for t in state) if c0 is not None else state.detach()
    total.backward()
    H = h0.shape[-1]
    grads = {"V": head.weight.grad.numpy(), "c": head.bias.grad.numpy(), "h0": h0t.grad.numpy()}
    if c0 is not None:
        grads["c0"] = c0t.grad.numpy()
    for layer in range(L):
        sfx = f"_l{layer}"
        grads[key("U", layer, 0)] = getattr(rnn, "weight_ih" + sfx).grad.numpy()
        grads[key("W", layer, 0)] = getattr(rnn, "weight_hh" + sfx).grad.numpy()
        grads[key("b", layer, 0)] = getattr(rnn, "bias_ih" + sfx).grad.numpy()
        if cell == "gru":
            grads[key("bn", layer, 0)] = getattr(rnn, "bias_hh" + sfx).grad.numpy()[2 * H:]
    return float(total.detach()), grads


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("L,k", [(2, 3), (3, 4)])
def test_stacked_truncation_matches_torch_detach(cell, L, k):
    """truncate=k of a stacked one-way model is PyTorch with detach() of every layer's state
    (h and c) at chunk boundaries, for every gradient, on every backend that runs it."""
    params, x, y, _, h0, c0 = make_case(cell, L, 1, T=10, seed=11 + L)
    want_loss, want = _torch_truncated(params, cell, L, x, y, h0, c0, k)
    state = (h0, c0) if c0 is not None else h0
    for backend in BACKENDS[cell]:
        lo, grads, _ = fastbptt.loss_and_grad(params, x, y, state, cell=cell, num_layers=L,
                                              truncate=k, backend=backend)
        np.testing.assert_allclose(lo, want_loss, err_msg=backend, **tol.TORCH_LAYERS64)
        assert sorted(grads) == sorted(want)
        for n, g in want.items():
            np.testing.assert_allclose(grads[n], g, err_msg=f"{backend} {n}", **tol.TORCH_LAYERS64)
