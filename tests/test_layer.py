"""Layer API: rnn_forward / rnn_backward against the reference and finite differences."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbptt
from fastbptt.cells import CELLS
import tolerances as tol
from fastbptt import reference

ROOT = Path(__file__).resolve().parent.parent


def _layer_case(T=6, B=3, I=4, H=5, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    U = (rng.standard_normal((H, I)) / 2).astype(dtype)
    W = (rng.standard_normal((H, H)) / 2).astype(dtype)
    b = rng.standard_normal(H).astype(dtype)
    dhs = rng.standard_normal((T, B, H)).astype(dtype)
    return x, h0, U, W, b, dhs


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (6, 3, 4, 5), (9, 2, 3, 13)])
def test_layer_matches_reference(activation, shape):
    T, B, I, H = shape
    x, h0, U, W, b, dhs = _layer_case(T, B, I, H)
    before = [a.copy() for a in (x, h0, U, W, b, dhs)]
    hs, cache = fastbptt.rnn_forward(x, h0, U, W, b, activation=activation)
    grads = fastbptt.rnn_backward(dhs, cache)
    cell = CELLS["rnn"]
    rows = reference.layer_forward(cell, x, h0, U, W, b, None, activation)
    np.testing.assert_allclose(hs, np.stack([s[0] for s in rows[0][1:]]), **tol.EXACT64)
    dx, dh0, dU, dW, db, _ = reference.layer_backward(cell, dhs, np.zeros_like(h0), x, rows, U, W,
                                                      b, None, activation)
    for name, g, r in zip(("dx", "dh0", "dU", "dW", "db"), grads, (dx, dh0, dU, dW, db)):
        np.testing.assert_allclose(g, r, err_msg=name, **tol.EXACT64)
    for a, a0 in zip((x, h0, U, W, b, dhs), before):
        np.testing.assert_array_equal(a, a0)
    # the numpy backend of the layer API is the reference itself
    hs2, cache2 = fastbptt.rnn_forward(x, h0, U, W, b, activation=activation, backend="numpy")
    for g, r in zip(fastbptt.rnn_backward(dhs, cache2), grads):
        np.testing.assert_allclose(g, r, **tol.EXACT64)


def test_layer_batch_first_and_float32():
    x, h0, U, W, b, dhs = _layer_case(dtype=np.float32)
    hs, cache = fastbptt.rnn_forward(x, h0, U, W, b)
    g = fastbptt.rnn_backward(dhs, cache)
    hs_bf, cache_bf = fastbptt.rnn_forward(x.transpose(1, 0, 2), h0, U, W, b, batch_first=True)
    g_bf = fastbptt.rnn_backward(dhs.transpose(1, 0, 2), cache_bf)
    np.testing.assert_allclose(hs_bf, hs.transpose(1, 0, 2), **tol.EXACT32)
    np.testing.assert_allclose(g_bf[0], g[0].transpose(1, 0, 2), **tol.EXACT32)
    for a, c in zip(g_bf[1:], g[1:]):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, c, **tol.EXACT32)


def test_layer_gradients_match_finite_differences():
    x, h0, U, W, b, dhs = _layer_case(T=5, B=2, I=3, H=4, seed=3)

    def fun(q):
        hs, cache = fastbptt.rnn_forward(q["x"], q["h0"], q["U"], q["W"], q["b"])
        dx, dh0, dU, dW, db = fastbptt.rnn_backward(dhs, cache)
        return float(np.sum(hs * dhs)), {"x": dx, "h0": dh0, "U": dU, "W": dW, "b": db}

    res = fastbptt.gradcheck(fun, {"x": x, "h0": h0, "U": U, "W": W, "b": b}, directions=2, elements=6, seed=0)
    assert res.max_rel_error < tol.FINITE_DIFF, (res.worst, res.max_rel_error)


def test_layer_composes_with_loss_and_grad():
    """rnn_forward/backward + a softmax head written by hand == loss_and_grad."""
    from cases import make_case
    case = make_case(T=6, B=3, h0=True)
    p = case["params"]
    loss, grads, h_last = fastbptt.loss_and_grad(**case)
    hs, cache = fastbptt.rnn_forward(case["inputs"], case["h0"], p["U"], p["W"], p["b"])
    o = hs @ p["V"].T + p["c"]
    o = o - o.max(-1, keepdims=True)
    prob = np.exp(o) / np.exp(o).sum(-1, keepdims=True)
    y = case["targets"]
    T, B = y.shape
    loss2 = -np.log(prob[np.arange(T)[:, None], np.arange(B)[None], y]).sum()
    do = prob.copy()
    do[np.arange(T)[:, None], np.arange(B)[None], y] -= 1
    _, dh0, dU, dW, db = fastbptt.rnn_backward(do @ p["V"], cache)
    np.testing.assert_allclose(loss2, loss, **tol.EXACT64)
    for k, g in (("U", dU), ("W", dW), ("b", db), ("h0", dh0)):
        np.testing.assert_allclose(g, grads[k], err_msg=k, **tol.EXACT64)
    np.testing.assert_allclose(hs[-1], h_last, **tol.EXACT64)


def test_example_dense_rnn_dense_runs_and_checks_its_gradients():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "dense_rnn_dense.py")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "gradient check passed" in out.stdout


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_grad_false_skips_dx_and_changes_no_other_bit(cell, backend, dtype):
    """<cell>_backward(..., input_grad=False) returns dx None and every other gradient bit
    for bit as input_grad=True (the skipped product feeds nothing else)."""
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(7)
    T, B, I, H = 6, 3, 4, 5
    x = rng.standard_normal((B, T, I)).astype(dtype)
    h0, c0 = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    U, W = rng.standard_normal((G * H, I)).astype(dtype), (rng.standard_normal((G * H, H)) / 2).astype(dtype)
    b, bn = rng.standard_normal(G * H).astype(dtype), rng.standard_normal(H).astype(dtype)
    dhs = rng.standard_normal((B, T, H)).astype(dtype)
    dh_last = rng.standard_normal((B, H)).astype(dtype)
    fwd, bwd = getattr(fastbptt, f"{cell}_forward"), getattr(fastbptt, f"{cell}_backward")
    args = {"rnn": [x, h0, U, W, b], "lstm": [x, h0, c0, U, W, b], "gru": [x, h0, U, W, b, bn]}[cell]
    _, cache = fwd(*args, batch_first=True, backend=backend)
    full = bwd(dhs, cache, dh_last)
    skip = bwd(dhs, cache, dh_last, input_grad=False)
    assert full[0].shape == x.shape and skip[0] is None
    assert len(skip) == len(full)
    for i, (a, c) in enumerate(zip(full[1:], skip[1:]), 1):
        assert c.dtype == a.dtype
        np.testing.assert_array_equal(c, a, err_msg=str(i))
    with pytest.raises(TypeError, match="input_grad must be a bool; got 'no'"):
        bwd(dhs, cache, input_grad="no")


def test_a_stacked_model_skips_the_first_layers_input_gradient(monkeypatch):
    """Float inputs need no gradient: the stacked CPU path asks layer 0 for none (its δ U is
    as big as its input projection), and still every layer above its own."""
    from fastbptt.cpu import layer as cpu_layer
    seen = []
    real = cpu_layer.backward

    def spy(*args, **kw):
        seen.append(args[-1] if len(args) > 9 else kw.get("input_grad", True))
        return real(*args, **kw)
    monkeypatch.setattr(cpu_layer, "backward", spy)
    ps = fastbptt.init_params(4, 5, 3, cell="gru", num_layers=3, bidirectional=True, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 4)).astype(np.float32)
    y = rng.integers(0, 3, (6, 2))
    fastbptt.loss_and_grad(ps, x, y, cell="gru", num_layers=3, bidirectional=True)
    assert sorted(seen) == [False, False, True, True, True, True]   # 3 layers x 2 directions
    seen.clear()
    E = ps["E"] = rng.standard_normal((7, 4)).astype(np.float32)      # embedded ids: dE needs it
    fastbptt.loss_and_grad(ps, rng.integers(0, 7, (6, 2)), y, cell="gru", num_layers=3,
                           bidirectional=True)
    assert seen == [True] * 6 and E.shape == (7, 4)
