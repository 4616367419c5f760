"""from_torch / to_torch: exact round trips, the same function, and the equations of the cells."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbptt
import tolerances as tol

torch = pytest.importorskip("torch")
nn = torch.nn

ROOT = Path(__file__).resolve().parent.parent
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
TORCH_DT = {np.float32: torch.float32, np.float64: torch.float64}
# (cell, activation) of every PyTorch recurrent module
KINDS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]


def key(name, layer, d):
    # written out here rather than taken from fastbptt, so a naming slip cannot pass
    return name + (f"_l{layer}" if layer else "") + ("_reverse" if d else "")


def make_module(cell, activation, n_in, H, L, bidir, *, bias=True, batch_first=False,
                dtype=np.float64, seed=0):
    torch.manual_seed(seed)
    cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    kw = {"nonlinearity": activation} if cell == "rnn" else {}
    m = cls(n_in, H, num_layers=L, bias=bias, batch_first=batch_first, bidirectional=bidir,
            dtype=TORCH_DT[dtype], **kw)
    with torch.no_grad():
        for p in m.parameters():  # larger than PyTorch's ±1/√H, so every term matters
            p.uniform_(-0.8, 0.8)
    return m


def hand_params(cell, n_in, H, L, D, *, n_out=None, vocab=None, dtype=np.float64, seed=0):
    """Random params in the documented layout, built without fastbptt."""
    rng = np.random.default_rng(seed)
    G = GATES[cell]
    p = {}
    if vocab is not None:
        p["E"] = rng.standard_normal((vocab, n_in))
    for layer in range(L):
        for d in range(D):
            p[key("U", layer, d)] = rng.standard_normal((G * H, n_in if layer == 0 else D * H))
            p[key("W", layer, d)] = rng.standard_normal((G * H, H))
            p[key("b", layer, d)] = rng.standard_normal(G * H)
            if cell == "gru":
                p[key("bn", layer, d)] = rng.standard_normal(H)
    if n_out is not None:
        p["V"] = rng.standard_normal((n_out, D * H))
        p["c"] = rng.standard_normal(n_out)
    return {k: v.astype(dtype) for k, v in p.items()}


def numpy_forward(params, cell, activation, L, D, x, h0=None, c0=None):
    """The contract's equations, step by step: top-layer outputs [T, B, D·H] and final states.

    x [T, B, n_in] (or ids [T, B] looked up in E); h0, c0 [L·D, B, H] indexed l·D + d.
    """
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    act = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0)}[activation]
    inp = params["E"][x] if "E" in params else x
    T, B = inp.shape[:2]
    H = params["W"].shape[1]
    h_n, c_n = [], []
    for layer in range(L):
        outs = []
        for d in range(D):
            U, W, b = (params[key(n, layer, d)] for n in ("U", "W", "b"))
            h = np.zeros((B, H)) if h0 is None else h0[layer * D + d]
            c = np.zeros((B, H)) if c0 is None else c0[layer * D + d]
            hs = [None] * T
            for t in (range(T) if d == 0 else reversed(range(T))):
                if cell == "rnn":
                    h = act(inp[t] @ U.T + h @ W.T + b)
                elif cell == "lstm":
                    z = inp[t] @ U.T + h @ W.T + b
                    i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
                    c = f * c + i * g
                    h = o * np.tanh(c)
                else:
                    xu, hw = inp[t] @ U.T + b, h @ W.T
                    r = sig(xu[:, :H] + hw[:, :H])
                    zg = sig(xu[:, H:2 * H] + hw[:, H:2 * H])
                    n = np.tanh(xu[:, 2 * H:] + r * (hw[:, 2 * H:] + params[key("bn", layer, d)]))
                    h = (1 - zg) * n + zg * h
                hs[t] = h
            outs.append(np.stack(hs))
            h_n.append(h)
            c_n.append(c)
        inp = np.concatenate(outs, axis=-1)
    out = inp @ params["V"].T + params["c"] if "V" in params else inp
    return out, np.stack(h_n), np.stack(c_n)


def torch_forward(rnn, head, emb, x, h0=None, c0=None):
    """The modules on time-major x (ids when emb is given); returns NumPy arrays."""
    with torch.no_grad():
        xt = torch.from_numpy(x)
        if emb is not None:
            xt = emb(xt)
        if rnn.batch_first:
            xt = xt.transpose(0, 1)
        state = None
        if h0 is not None:
            state = (torch.from_numpy(h0), torch.from_numpy(c0)) if isinstance(rnn, nn.LSTM) else torch.from_numpy(h0)
        out, hn = rnn(xt, state)
        if rnn.batch_first:
            out = out.transpose(0, 1)
        if head is not None:
            out = head(out)
        hn, cn = hn if isinstance(hn, tuple) else (hn, None)
        return out.numpy(), hn.numpy(), None if cn is None else cn.numpy()


def test_import_fastbptt_does_not_import_torch():
    code = ("import sys, fastbptt; fastbptt.from_torch; fastbptt.to_torch; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("cell,activation", KINDS)
@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("bidir", [False, True])
def test_torch_forward_follows_the_equations(cell, activation, L, bidir):
    """The contract's equations, applied to from_torch's params, give PyTorch's outputs and
    final states (this pins the gate order, the bias split and the state layout)."""
    D = 2 if bidir else 1
    T, B, n_in, H, n_out = 5, 3, 4, 6, 3
    rnn = make_module(cell, activation, n_in, H, L, bidir, seed=L)
    torch.manual_seed(1)
    head = nn.Linear(D * H, n_out, dtype=torch.float64)
    params, config = fastbptt.from_torch(rnn, head)
    rng = np.random.default_rng(L)
    x = rng.standard_normal((T, B, n_in))
    h0 = rng.standard_normal((L * D, B, H))
    c0 = rng.standard_normal((L * D, B, H)) if cell == "lstm" else None
    out, h_n, c_n = numpy_forward(params, cell, activation, L, D, x, h0, c0)
    t_out, t_hn, t_cn = torch_forward(rnn, head, None, x, h0, c0)
    np.testing.assert_allclose(out, t_out, **tol.TORCH64)
    np.testing.assert_allclose(h_n, t_hn, **tol.TORCH64)
    if cell == "lstm":
        np.testing.assert_allclose(c_n, t_cn, **tol.TORCH64)
    assert config == dict(cell=cell, activation=activation, num_layers=L, bidirectional=bidir,
                          batch_first=False, bias=True, n_in=n_in, n_hidden=H, n_out=n_out,
                          vocab_size=None, dtype=np.dtype(np.float64))


@pytest.mark.parametrize("cell,activation", KINDS)
def test_bias_split(cell, activation):
    """b = b_ih + b_hh, except GRU's new gate: b_n = b_in, bn = b_hn; and back into bias_ih."""
    H = 3
    rnn = make_module(cell, activation, 2, H, 1, False)
    params, config = fastbptt.from_torch(rnn)
    b_ih, b_hh = rnn.bias_ih_l0.detach().numpy(), rnn.bias_hh_l0.detach().numpy()
    if cell == "gru":
        np.testing.assert_array_equal(params["b"][:2 * H], b_ih[:2 * H] + b_hh[:2 * H])
        np.testing.assert_array_equal(params["b"][2 * H:], b_ih[2 * H:])
        np.testing.assert_array_equal(params["bn"], b_hh[2 * H:])
    else:
        np.testing.assert_array_equal(params["b"], b_ih + b_hh)
    back, _, _ = fastbptt.to_torch(params, **config)
    np.testing.assert_array_equal(back.bias_ih_l0.detach().numpy(), params["b"])
    expect_hh = np.zeros(GATES[cell] * H)
    if cell == "gru":
        expect_hh[2 * H:] = params["bn"]
    np.testing.assert_array_equal(back.bias_hh_l0.detach().numpy(), expect_hh)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("L,bidir", [(1, False), (1, True), (2, False), (3, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("extras", ["none", "head", "head+embedding"])
def test_params_round_trip_is_exact(cell, L, bidir, dtype, extras):
    D = 2 if bidir else 1
    n_out = 5 if "head" in extras else None
    vocab = 7 if "embedding" in extras else None
    params = hand_params(cell, 4, 3, L, D, n_out=n_out, vocab=vocab, dtype=dtype, seed=L)
    rnn, head, emb = fastbptt.to_torch(params, cell=cell, num_layers=L, bidirectional=bidir)
    assert (head is None) == (n_out is None) and (emb is None) == (vocab is None)
    back, config = fastbptt.from_torch(rnn, head, emb)
    assert list(back) == list(params)
    for k in params:
        assert back[k].dtype == dtype and back[k].flags.c_contiguous, k
        np.testing.assert_array_equal(back[k], params[k], err_msg=k)
    assert config["dtype"] == np.dtype(dtype) and config["n_out"] == n_out and config["vocab_size"] == vocab
    # the config rebuilds the same modules
    again, _ = fastbptt.from_torch(*fastbptt.to_torch(back, **config))
    for k in params:
        np.testing.assert_array_equal(again[k], params[k], err_msg=k)


@pytest.mark.parametrize("cell,activation", KINDS)
@pytest.mark.parametrize("L,bidir,batch_first,bias", [(1, False, False, True), (2, True, True, True),
                                                      (3, False, True, False), (2, True, False, False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_module_round_trip_same_function(cell, activation, L, bidir, batch_first, bias, dtype):
    D = 2 if bidir else 1
    T, B, n_in, H, vocab, n_out = 6, 3, 4, 5, 9, 3
    rnn = make_module(cell, activation, n_in, H, L, bidir, bias=bias, batch_first=batch_first,
                      dtype=dtype, seed=7)
    torch.manual_seed(2)
    head = nn.Linear(D * H, n_out, bias=bias, dtype=TORCH_DT[dtype])
    emb = nn.Embedding(vocab, n_in, dtype=TORCH_DT[dtype])
    params, config = fastbptt.from_torch(rnn, head, emb)
    assert config["batch_first"] == batch_first and config["bias"] == bias
    assert all(a.dtype == dtype for a in params.values())
    rnn2, head2, emb2 = fastbptt.to_torch(params, **config)
    assert type(rnn2) is type(rnn) and rnn2.batch_first == batch_first and rnn2.bias == bias
    assert rnn2.weight_ih_l0.dtype == TORCH_DT[dtype]
    if cell == "rnn":
        assert rnn2.nonlinearity == activation
    rng = np.random.default_rng(3)
    ids = rng.integers(0, vocab, size=(T, B))
    h0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype)
    a = torch_forward(rnn, head, emb, ids, h0, c0)
    b = torch_forward(rnn2, head2, emb2, ids, h0, c0)
    # float32: the two PyTorch biases are added in a different order
    t = tol.TORCH64 if dtype == np.float64 else tol.EXACT32
    for x, y in zip(a, b):
        if x is not None:
            np.testing.assert_allclose(y, x, **t)
    if not bias:
        assert all(not np.any(params[k]) for k in params if k.split("_")[0] in ("b", "bn", "c"))


def test_bias_false_keeps_the_key_set():
    for cell, activation in KINDS:
        with_bias, _ = fastbptt.from_torch(make_module(cell, activation, 3, 4, 2, True))
        without, config = fastbptt.from_torch(make_module(cell, activation, 3, 4, 2, True, bias=False))
        assert list(without) == list(with_bias)
        assert config["bias"] is False


def test_params_do_not_alias_the_module():
    rnn = make_module("lstm", "tanh", 3, 4, 1, False, bias=False)
    params, config = fastbptt.from_torch(rnn)
    params["U"][:] = 0
    assert torch.count_nonzero(rnn.weight_ih_l0) > 0
    rnn2, _, _ = fastbptt.to_torch(params, **config)
    params["W"][:] = 0
    assert torch.count_nonzero(rnn2.weight_hh_l0) > 0


def test_to_torch_dtype_override():
    params = hand_params("gru", 3, 2, 1, 1, n_out=2, dtype=np.float64)
    rnn, head, _ = fastbptt.to_torch(params, cell="gru", dtype=np.float32)
    assert rnn.weight_hh_l0.dtype == torch.float32 and head.weight.dtype == torch.float32


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("make,match", [
    (lambda: nn.LSTM(3, 4, proj_size=2), "proj_size"),
    (lambda: nn.GRU(3, 4, num_layers=2, dropout=0.5), "dropout"),
    (lambda: nn.RNN(3, 4, dtype=torch.float16), "float16"),
    (lambda: nn.Linear(3, 4), "nn.RNN, nn.LSTM or nn.GRU"),
])
def test_from_torch_rejects(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fastbptt.from_torch(make())


def test_from_torch_rejects_head_and_embedding():
    rnn = nn.GRU(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match="head.in_features must be 8"):
        fastbptt.from_torch(rnn, nn.Linear(4, 2))
    with pytest.raises(TypeError, match="head must be a torch.nn.Linear"):
        fastbptt.from_torch(rnn, nn.Embedding(3, 8))
    with pytest.raises(ValueError, match="embedding_dim must equal rnn.input_size = 3"):
        fastbptt.from_torch(rnn, embedding=nn.Embedding(5, 4))
    for option, value in (("padding_idx", 0), ("max_norm", 1.0), ("scale_grad_by_freq", True)):
        with pytest.raises(ValueError, match=f"embedding option {option}="):
            fastbptt.from_torch(rnn, embedding=nn.Embedding(5, 3, **{option: value}))
    with pytest.raises(TypeError, match="head has dtype float64; the rnn has float32"):
        fastbptt.from_torch(rnn, nn.Linear(8, 2, dtype=torch.float64))
    # dropout on a single layer does nothing in PyTorch (it warns): accepted
    with pytest.warns(UserWarning, match="dropout"):
        single = nn.GRU(3, 4, dropout=0.5)
    fastbptt.from_torch(single)


def test_to_torch_rejects():
    p = hand_params("lstm", 3, 4, 2, 2, n_out=2)
    cfg = dict(cell="lstm", num_layers=2, bidirectional=True)
    fastbptt.to_torch(p, **cfg)
    with pytest.raises(ValueError, match="unexpected 'U_l1', 'W_l1'"):
        fastbptt.to_torch(p, cell="lstm", num_layers=1, bidirectional=True)
    with pytest.raises(ValueError, match="missing 'U_l2'"):
        fastbptt.to_torch(p, cell="lstm", num_layers=3, bidirectional=True)
    with pytest.raises(ValueError, match=r"params\['U'\] has shape \(4, 3\); expected \(16, 3\) for cell='lstm'"):
        fastbptt.to_torch({**p, "U": p["U"][:4]}, **cfg)
    with pytest.raises(ValueError, match="activation must be one of 'tanh' with cell='lstm'"):
        fastbptt.to_torch(p, activation="relu", **cfg)
    with pytest.raises(ValueError, match="activation must be one of 'tanh', 'relu'"):
        fastbptt.to_torch(hand_params("rnn", 3, 4, 1, 1), activation="sigmoid")
    with pytest.raises(ValueError, match=r"bias=False but params\['b'\] is non-zero"):
        fastbptt.to_torch(p, bias=False, **cfg)
    with pytest.raises(ValueError, match="n_hidden=5 does not fit params"):
        fastbptt.to_torch(p, n_hidden=5, **cfg)
    with pytest.raises(ValueError, match="vocab_size=5 but params has no 'E'"):
        fastbptt.to_torch(p, vocab_size=5, **cfg)
    with pytest.raises(ValueError, match="cell must be one of"):
        fastbptt.to_torch(p, cell="mgu")
    with pytest.raises(TypeError, match="one dtype"):
        fastbptt.to_torch({**p, "c": p["c"].astype(np.float32)}, **cfg)
    # zero biases are fine without bias
    zero = {k: (np.zeros_like(v) if k.split("_")[0] in ("b", "bn") else v) for k, v in p.items()}
    rnn, _, _ = fastbptt.to_torch(zero, bias=False, **cfg)
    assert rnn.bias is False
