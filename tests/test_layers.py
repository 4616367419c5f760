"""Stacked and bidirectional models: finite differences, backends against the reference,
truncation, checkpointing, masks, states and bad input."""
from __future__ import annotations

import numpy as np
import pytest

import fastbptt
import tolerances as tol
from test_layers_torch import BACKENDS, make_case

CELLS = ["rnn", "lstm", "gru"]


def _state(h0, c0):
    return h0 if c0 is None else (h0, c0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("inputs", ["float", "embed"])
def test_finite_differences_two_layer_bidirectional(cell, inputs):
    params, x, y, m, h0, c0 = make_case(cell, 2, 2, inputs=inputs, mask="right", T=5, B=3, H=3, seed=4)
    for backend in BACKENDS[cell]:
        def fun(q):
            loss, grads, _ = fastbptt.loss_and_grad(q, x, y, _state(h0, c0), cell=cell, num_layers=2,
                                                    bidirectional=True, mask=m, backend=backend)
            return loss, grads
        res = fastbptt.gradcheck(fun, params, directions=2, elements=6, seed=0)
        assert res.max_rel_error < tol.FINITE_DIFF, (backend, res.worst, res.max_rel_error)


@pytest.mark.parametrize("cell", CELLS)
def test_finite_differences_of_the_initial_state(cell):
    params, x, y, m, h0, c0 = make_case(cell, 3, 2, T=4, B=2, H=3, seed=5)
    state = {"h0": h0} if c0 is None else {"h0": h0, "c0": c0}

    def fun(q):
        s = q["h0"] if c0 is None else (q["h0"], q["c0"])
        loss, grads, _ = fastbptt.loss_and_grad(params, x, y, s, cell=cell, num_layers=3,
                                                bidirectional=True, backend="numpy")
        return loss, grads
    res = fastbptt.gradcheck(fun, state, directions=2, elements=8, seed=1)
    assert res.max_rel_error < tol.FINITE_DIFF, (res.worst, res.max_rel_error)


def _truncated_by_chunks(params, x, y, h0, c0, cell, L, k):
    """BPTT(k; k) of a stacked model as independent chunks, each started from the (detached)
    states the full forward pass reaches at the chunk's start: PyTorch's detach() loop."""
    T = x.shape[0]
    total, grads = 0.0, None
    state = _state(h0, c0)
    for s in range(0, T, k):
        lo, g, last = fastbptt.loss_and_grad(params, x[s:s + k], y[s:s + k], state, cell=cell,
                                             num_layers=L, backend="numpy")
        total += lo
        if grads is None:
            grads = g
            g0 = {n: g[n] for n in ("h0", "c0") if n in g}
        else:
            grads = {n: grads[n] + g[n] for n in grads}
        state = last
    grads.update(g0)
    return total, grads


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("k", [1, 3, 4])
def test_truncation_equals_detached_chunks(cell, k):
    params, x, y, m, h0, c0 = make_case(cell, 2, 1, T=9, B=3, seed=6)
    want_loss, want = _truncated_by_chunks(params, x, y, h0, c0, cell, 2, k)
    for backend in BACKENDS[cell]:
        lo, grads, _ = fastbptt.loss_and_grad(params, x, y, _state(h0, c0), cell=cell, num_layers=2,
                                              truncate=k, backend=backend)
        np.testing.assert_allclose(lo, want_loss, **tol.EXACT64)
        for n in want:
            np.testing.assert_allclose(grads[n], want[n], err_msg=f"{backend} {n}", **tol.EXACT64)


def test_truncation_matches_torch_detach():
    torch = pytest.importorskip("torch")
    params, x, y, m, h0, c0 = make_case("lstm", 3, 1, T=8, B=2, seed=7)
    rnn, head, _ = fastbptt.to_torch(params, cell="lstm", num_layers=3)
    state = (torch.tensor(h0, requires_grad=True), torch.tensor(c0, requires_grad=True))
    h, c = state
    total = 0
    for s in range(0, 8, 3):
        out, (h, c) = rnn(torch.from_numpy(x[s:s + 3]), (h, c))
        o = head(out).reshape(-1, 3)
        total = total + torch.nn.functional.cross_entropy(o, torch.from_numpy(y[s:s + 3].reshape(-1)),
                                                          reduction="sum")
        h, c = h.detach(), c.detach()
    total.backward()
    lo, grads, _ = fastbptt.loss_and_grad(params, x, y, (h0, c0), cell="lstm", num_layers=3, truncate=3,
                                          backend="numpy")
    np.testing.assert_allclose(lo, float(total.detach()), **tol.TORCH_LAYERS64)
    np.testing.assert_allclose(grads["W_l2"], rnn.weight_hh_l2.grad.numpy(), **tol.TORCH_LAYERS64)
    np.testing.assert_allclose(grads["U"], rnn.weight_ih_l0.grad.numpy(), **tol.TORCH_LAYERS64)
    np.testing.assert_allclose(grads["c0"], state[1].grad.numpy(), **tol.TORCH_LAYERS64)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("truncate", [(2, 3), (3, 7), (1, 2), (4, 4)])
@pytest.mark.parametrize("mask", [None, "holes"])
def test_cpu_matches_reference(cell, truncate, mask):
    """The segmented CPU path against the reference, with overlapping windows (k1 < k2)."""
    for inputs in ("float", "onehot", "embed"):
        params, x, y, m, h0, c0 = make_case(cell, 3, 1, inputs=inputs, mask=mask, T=10, seed=8)
        out = [fastbptt.loss_and_grad(params, x, y, _state(h0, c0), cell=cell, num_layers=3, mask=m,
                                      truncate=truncate, backend=b) for b in ("numpy", "cpu")]
        np.testing.assert_allclose(out[1][0], out[0][0], **tol.EXACT64)
        for n in out[0][1]:
            np.testing.assert_allclose(out[1][1][n], out[0][1][n], err_msg=n, **tol.EXACT64)
        np.testing.assert_allclose(out[1][2], out[0][2], **tol.EXACT64)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional,truncate", [(False, None), (True, None), (False, (2, 5))])
def test_checkpoint_equals_full_bptt(cell, bidirectional, truncate):
    params, x, y, m, h0, c0 = make_case(cell, 2, 2 if bidirectional else 1, mask="right", T=9, seed=9)
    for backend in BACKENDS[cell]:
        full, ck, ck1 = (fastbptt.loss_and_grad(params, x, y, _state(h0, c0), cell=cell, num_layers=2,
                                                bidirectional=bidirectional, mask=m, checkpoint=c,
                                                truncate=truncate, backend=backend)
                         for c in (None, "sqrt", 1))
        for got in (ck, ck1):
            np.testing.assert_allclose(got[0], full[0], **tol.CHECKPOINT64)
            for n in full[1]:
                np.testing.assert_allclose(got[1][n], full[1][n], err_msg=n, **tol.CHECKPOINT64)


@pytest.mark.parametrize("cell", CELLS)
def test_empty_sequence_keeps_h0_and_padding_is_ignored(cell):
    """A sequence without valid steps carries no loss and keeps h0 in both directions; what
    padding holds never reaches a valid output."""
    params, x, y, m, h0, c0 = make_case(cell, 2, 2, mask="right", T=6, B=4, seed=10)
    m[:, 2] = 0
    for backend in BACKENDS[cell]:
        lo, grads, last = fastbptt.loss_and_grad(params, x, y, _state(h0, c0), cell=cell, num_layers=2,
                                                 bidirectional=True, mask=m, backend=backend)
        for got, want in zip(last if c0 is not None else (last,), (h0, c0)):
            np.testing.assert_array_equal(got[:, 2], want[:, 2])
        assert not np.any(grads["h0"][:, 2])
        x2 = x.copy()
        x2[m == 0] = 1e3 * np.random.default_rng(0).standard_normal(x2[m == 0].shape)
        with np.errstate(over="ignore"):                  # sigmoid of the garbage saturates
            lo2, grads2, last2 = fastbptt.loss_and_grad(params, x2, y, _state(h0, c0), cell=cell,
                                                        num_layers=2, bidirectional=True, mask=m,
                                                        backend=backend)
        np.testing.assert_allclose(lo2, lo, **tol.EXACT64)
        for n in grads:
            np.testing.assert_allclose(grads2[n], grads[n], err_msg=n, **tol.EXACT64)


def test_float32_matches_float64():
    params, x, y, m, h0, c0 = make_case("rnn", 2, 2, mask="right", seed=11)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    for backend in BACKENDS["rnn"]:
        a = fastbptt.loss_and_grad(params, x, y, h0, num_layers=2, bidirectional=True, mask=m, backend=backend)
        b = fastbptt.loss_and_grad(p32, x.astype(np.float32), y, h0.astype(np.float32), num_layers=2,
                                   bidirectional=True, mask=m, backend=backend)
        assert all(g.dtype == np.float32 for g in b[1].values()) and b[2].dtype == np.float32
        np.testing.assert_allclose(b[0], a[0], rtol=tol.EXACT32["rtol"])
        for n in a[1]:
            np.testing.assert_allclose(b[1][n], a[1][n], err_msg=n, **tol.EXACT32)


def test_init_params_layout():
    for cell, G in (("rnn", 1), ("lstm", 4), ("gru", 3)):
        p = fastbptt.init_params(5, 4, 3, cell=cell, num_layers=3, bidirectional=True, vocab_size=9,
                                 dtype=np.float64, seed=0)
        assert p["U"].shape == (G * 4, 5) and p["U_l2_reverse"].shape == (G * 4, 8)
        assert p["W_l1"].shape == (G * 4, 4) and p["V"].shape == (3, 8) and p["E"].shape == (9, 5)
        assert ("bn_l1_reverse" in p) == (cell == "gru")
        assert len(p) == 3 * 2 * (4 if cell == "gru" else 3) + 3
        # every layer and direction is drawn separately
        assert not np.array_equal(p["W_l1"], p["W_l1_reverse"])
        if cell == "lstm":                               # the cell's own bias convention
            assert np.all(p["b_l2_reverse"][4:8] == 1)
    a = fastbptt.init_params(5, 4, 3, num_layers=2, seed=1)
    b = fastbptt.init_params(5, 4, 3, num_layers=2, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a) and a["U"].dtype == np.float32


def test_bad_input():
    params, x, y, m, h0, c0 = make_case("lstm", 2, 2, T=5, B=3, seed=12)
    kw = dict(cell="lstm", num_layers=2, bidirectional=True, backend="numpy")
    with pytest.raises(ValueError, match="truncate is not supported with bidirectional=True: the reverse"):
        fastbptt.loss_and_grad(params, x, y, truncate=2, **kw)
    holes = np.ones((5, 3))
    holes[1, 2] = 0
    with pytest.raises(ValueError, match="right-padded.*sequence 2 .* a 0 at step 1 before a 1 at step 4"):
        fastbptt.loss_and_grad(params, x, y, mask=holes, **kw)
    with pytest.raises(ValueError, match=r"h0 must be \[num_layers·D, B, H\] = \[4, 3, 4\]"):
        fastbptt.loss_and_grad(params, x, y, h0[:2], **kw)
    with pytest.raises(ValueError, match=r"c0 must be \[num_layers·D, B, H\]"):
        fastbptt.loss_and_grad(params, x, y, (h0, c0[0]), **kw)
    with pytest.raises(ValueError, match="pass num_layers= and bidirectional="):
        fastbptt.loss_and_grad(params, x, y, cell="lstm")
    with pytest.raises(ValueError, match="params do not fit cell='lstm', num_layers=3.*missing 'U_l2'"):
        fastbptt.loss_and_grad(params, x, y, **{**kw, "num_layers": 3})
    with pytest.raises(ValueError, match="unexpected 'U_reverse'"):
        fastbptt.loss_and_grad(params, x, y, **{**kw, "bidirectional": False})
    with pytest.raises(ValueError, match=r"params\['U_l1'\] must be \[16, 8\]"):
        fastbptt.loss_and_grad({**params, "U_l1": params["U_l1"][:, :4]}, x, y, **kw)
    with pytest.raises(ValueError, match=r"params\['V'\] must be \[n_out, D·H\] = \[n_out>0, 8\]"):
        fastbptt.loss_and_grad({**params, "V": params["V"][:, :4]}, x, y, **kw)
    with pytest.raises(TypeError, match=r"params\['W_l1'\] has dtype float32"):
        fastbptt.loss_and_grad({**params, "W_l1": params["W_l1"].astype(np.float32)}, x, y, **kw)
    with pytest.raises(ValueError, match="num_layers must be a positive int; got 0"):
        fastbptt.loss_and_grad(params, x, y, **{**kw, "num_layers": 0})
    with pytest.raises(TypeError, match="bidirectional must be a bool"):
        fastbptt.loss_and_grad(params, x, y, **{**kw, "bidirectional": "yes"})
    with pytest.raises(ValueError, match="activation applies to cell='rnn' only"):
        fastbptt.loss_and_grad(params, x, y, activation="relu", **kw)
    # the inputs' own checks still name their argument
    with pytest.raises(ValueError, match="inputs must have n_in = 5 features"):
        fastbptt.loss_and_grad(params, x[:, :, :3], y, **kw)


def test_readme_stacked_example_runs():
    import re
    from pathlib import Path
    pytest.importorskip("torch")
    if not hasattr(fastbptt, "lstm_forward"):
        pytest.skip("the README example runs the LSTM on the CPU layer kernels, not present here")
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- section:layers -->\n```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(block, "README layers example", "exec"), scope)
    assert scope["h"].shape == (2, 8, 64) and scope["logits"].shape == (50, 8, 10)
    # PyTorch's final states are fastbptt's, for the updated weights
    _, _, (h, c) = fastbptt.loss_and_grad(scope["params"], scope["x"], scope["y"], **scope["config"])
    np.testing.assert_allclose(h, scope["h_t"].numpy(), **tol.TORCH_LAYERS64)
    np.testing.assert_allclose(c, scope["c_t"].numpy(), **tol.TORCH_LAYERS64)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("truncate", [10, (5, 10)])
def test_stacked_truncation_memory_grows_with_k_not_T(cell, truncate):
    """The truncated stacked CPU path holds one window's outputs and caches, not T steps'."""
    import tracemalloc

    V, H, B = 8, 64, 4
    params = fastbptt.init_params(V, H, V, cell=cell, num_layers=2, dtype=np.float64, seed=0)
    ids = np.random.default_rng(0).integers(0, V, (401, B))

    def peak(T):
        tracemalloc.start()
        try:
            fastbptt.loss_and_grad(params, ids[:T], ids[1:T + 1], cell=cell, num_layers=2,
                                   truncate=truncate, backend="cpu")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(20)                                          # compile outside the measurement
    short, long = peak(100), peak(400)
    # holding every layer's outputs and caches would make the T=400 peak about 3.5x
    assert long < 1.3 * short, (short, long)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("targets,loss,mask,truncate", [
    ("ids", "cross_entropy", None, None), ("probs", "cross_entropy", "right", None),
    ("ids", "mse", "holes", (2, 4))])
def test_head_in_row_blocks_matches_reference(cell, targets, loss, mask, truncate, monkeypatch):
    """A head big enough to thread runs as row blocks side by side (layers._head); here the
    threshold is lowered so that a small head splits too: the blocks' losses and dV, added
    in order, equal the reference's, for every loss, masks and truncation windows."""
    from fastbptt import layers
    from fastbptt.cpu import blas, parallel
    calls = []
    real = parallel.side_by_side

    def spy(tasks):
        if "_head" in tasks[0].__qualname__:
            calls.append(len(tasks))
        return real(tasks)

    monkeypatch.setattr(layers, "HEAD_BLOCKS_MIN", 1)    # never blas.THREAD_MIN: compiled into gemm
    monkeypatch.setattr(blas, "NTHREADS", 2)
    monkeypatch.setattr(parallel, "side_by_side", spy)
    params, x, y, m, h0, c0 = make_case(cell, 2, 1 if truncate else 2, targets=targets, loss=loss,
                                        mask=mask, T=8, seed=11)
    kw = dict(cell=cell, num_layers=2, bidirectional=not truncate, mask=m, loss=loss,
              truncate=truncate)
    ref = fastbptt.loss_and_grad(params, x, y, _state(h0, c0), backend="numpy", **kw)
    got = fastbptt.loss_and_grad(params, x, y, _state(h0, c0), backend="cpu", **kw)
    assert calls and all(n == 2 for n in calls)         # the head ran as two blocks
    np.testing.assert_allclose(got[0], ref[0], **tol.EXACT64)
    for n in ref[1]:
        np.testing.assert_allclose(got[1][n], ref[1][n], err_msg=n, **tol.EXACT64)
