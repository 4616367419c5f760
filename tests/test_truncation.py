"""Truncated BPTT(k2; k1) against a plainly written implementation kept in this file.

The oracle below shares no code with fastbptt: it builds one-hot inputs as dense arrays,
computes every step's loss gradient, and backpropagates each loss step *on its own* through
its block's window (O(T²) work, a different order of operations from both backends). For
chunks (``truncate=k``) the gradients are also compared with PyTorch, where the state is
``detach()``-ed at every chunk boundary.
"""
from __future__ import annotations


import numpy as np
import pytest

import fastbptt
from cases import INPUT_KINDS, TARGET_KINDS, make_case
from tolerances import EXACT32, EXACT64, TORCH64

BACKENDS = ("cpu", "numpy")


# --------------------------------------------------------------------------- the oracle
def _f(a, activation):
    if activation == "tanh":
        return np.tanh(a)
    if activation == "sigmoid":
        return 1 / (1 + np.exp(-a))
    return np.where(a > 0, a, 0.0)


def _df(h, activation):
    """f'(a) from h = f(a)."""
    if activation == "tanh":
        return 1 - h ** 2
    if activation == "sigmoid":
        return h * (1 - h)
    return (h > 0) * 1.0


def plain_tbptt(case, k1, k2):
    """Loss, gradients and h_last of BPTT(k2; k1), written out step by step in float64.

    Blocks [s0, s1) of k1 steps; the losses of a block flow back through steps s1-1 .. lo,
    lo = max(0, s0 - (k2 - k1)); dh0 collects what leaves a window reaching step 0.
    """
    prm = {k: np.asarray(v, dtype=np.float64) for k, v in case["params"].items()}
    U, W, b, V, c = (prm[k] for k in ("U", "W", "b", "V", "c"))
    inputs, targets, act = case["inputs"], case["targets"], case["activation"]
    assert not case.get("batch_first")
    T, B = inputs.shape[:2]
    H, n_out = W.shape[0], V.shape[0]
    if inputs.ndim == 3:
        X = inputs.astype(np.float64)
    elif "E" in prm:
        X = prm["E"][inputs]
    else:
        X = np.eye(U.shape[1])[inputs]                       # [T, B, n_in] one-hot, built on purpose
    h0 = np.zeros((B, H)) if case["h0"] is None else np.asarray(case["h0"], np.float64)
    valid = np.ones((T, B), bool) if case["mask"] is None else np.asarray(case["mask"]).astype(bool)
    last = np.array([max([t for t in range(T) if valid[t, j]], default=-1) for j in range(B)])

    # which (t, b) carry loss, with which weight and target
    many_to_one = (targets.ndim == 1) if not np.issubdtype(targets.dtype, np.floating) else targets.ndim == 2
    w = np.zeros((T, B))
    if many_to_one:
        for j in range(B):
            if last[j] >= 0:
                w[last[j], j] = 1
    else:
        w[valid] = 1
    n = np.count_nonzero(w)
    if case["reduction"] == "mean" and n:
        w /= n

    def target(t, j):
        return targets[j] if many_to_one else targets[t, j]

    # forward
    hs = [h0]
    for t in range(T):
        hs.append(_f(X[t] @ U.T + hs[-1] @ W.T + b, act))
    loss = 0.0
    do = np.zeros((T, B, n_out))                              # weighted ∂L/∂o_t
    for t in range(T):
        o = hs[t + 1] @ V.T + c
        for j in range(B):
            if w[t, j] == 0:
                continue
            oj = o[j]
            y = target(t, j)
            if case["loss"] == "mse":
                loss += w[t, j] * 0.5 * np.sum((oj - y) ** 2)
                do[t, j] = w[t, j] * (oj - y)
                continue
            logp = oj - oj.max() - np.log(np.sum(np.exp(oj - oj.max())))
            if np.ndim(y) == 0:
                loss += -w[t, j] * logp[y]
                g = np.exp(logp)
                g[y] -= 1
            else:
                y = np.asarray(y, np.float64)
                loss += -w[t, j] * np.sum(y * logp)
                g = np.exp(logp) * y.sum() - y
            do[t, j] = w[t, j] * g

    grads = {k: np.zeros_like(v) for k, v in prm.items()}
    grads["h0"] = np.zeros((B, H))
    for t in range(T):                                        # the output layer is not truncated
        grads["V"] += do[t].T @ hs[t + 1]
        grads["c"] += do[t].sum(axis=0)
    for s0 in range(0, T, k1):
        s1 = min(T, s0 + k1)
        lo = max(0, s0 - (k2 - k1))
        for t in range(s0, s1):                               # each loss step on its own
            g = do[t] @ V                                     # ∂L_t/∂h_t
            for s in range(t, lo - 1, -1):
                da = g * _df(hs[s + 1], act)
                grads["W"] += da.T @ hs[s]
                grads["U"] += da.T @ X[s]
                grads["b"] += da.sum(axis=0)
                if "E" in prm:
                    for j in range(B):
                        grads["E"][inputs[s, j]] += da[j] @ U
                g = da @ W
            if lo == 0:
                grads["h0"] += g
    h_last = np.stack([hs[last[j] + 1][j] for j in range(B)])
    return loss, grads, h_last


def assert_same(got, want, tol=EXACT64):
    loss, grads, h_last = got
    wloss, wgrads, wh = want
    np.testing.assert_allclose(loss, wloss, **tol)
    assert set(grads) == set(wgrads)
    for k in wgrads:
        np.testing.assert_allclose(grads[k], wgrads[k], err_msg=f"grads[{k!r}]", **tol)
    np.testing.assert_allclose(h_last, wh, **tol)


def call(case, **kw):
    return fastbptt.loss_and_grad(**case, **kw)


# --------------------------------------------------------------------------- every (k1, k2)
ALL_PAIRS_T = 5
ALL_PAIRS = [(k1, k2) for k1 in range(1, ALL_PAIRS_T + 3) for k2 in range(k1, ALL_PAIRS_T + 3)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", [
    dict(input_kind="float", target_kind="ids", masked=True),
    dict(input_kind="onehot", target_kind="mse", reduction="mean"),
    dict(input_kind="embed", target_kind="probs", many_to_one=True, masked=True),
    dict(input_kind="float", target_kind="ids", activation="relu"),
    dict(input_kind="onehot", target_kind="ids", activation="sigmoid", masked=True),
], ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_every_window_pair(backend, kind):
    """Every 1 <= k1 <= k2 <= T + 2 on T = 5."""
    case = make_case(T=ALL_PAIRS_T, B=3, seed=11, **kind)
    for k1, k2 in ALL_PAIRS:
        assert_same(call(case, truncate=(k1, k2), backend=backend), plain_tbptt(case, k1, k2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("input_kind", INPUT_KINDS)
@pytest.mark.parametrize("target_kind", TARGET_KINDS)
@pytest.mark.parametrize("many_to_one,masked,reduction",
                         [(False, False, "sum"), (False, True, "mean"), (True, False, "mean"),
                          (True, True, "sum")])
def test_every_input_and_loss(backend, input_kind, target_kind, many_to_one, masked, reduction):
    case = make_case(input_kind=input_kind, target_kind=target_kind, many_to_one=many_to_one,
                     masked=masked, reduction=reduction, T=7, B=4, seed=3)
    for tr in (1, 2, 3, 7, 9, (1, 3), (2, 5), (3, 4), (1, 8)):
        k1, k2 = (tr, tr) if isinstance(tr, int) else tr
        assert_same(call(case, truncate=tr, backend=backend), plain_tbptt(case, k1, k2))


def test_int_k_means_k_k_and_chunks_never_cross():
    case = make_case(input_kind="onehot", T=8, B=2, seed=5)
    for k in (1, 3, 8):
        assert_same(call(case, truncate=k), call(case, truncate=(k, k)))
    # a chunk of 3: the losses of steps 3..5 send nothing into steps 0..2, so changing the
    # loss of steps 3.. leaves ∂L/∂h0 untouched (it only sees the first chunk)
    a = call(case, truncate=3)[1]["h0"]
    case2 = dict(case, targets=np.where(np.arange(8)[:, None] >= 3, (case["targets"] + 1) % 5,
                                        case["targets"]))
    np.testing.assert_array_equal(a, call(case2, truncate=3)[1]["h0"])


def test_long_windows_are_full_bptt():
    case = make_case(input_kind="embed", target_kind="probs", masked=True, T=6, seed=2)
    full = call(case)
    for tr in (6, 50, (6, 6), (1, 6), (2, 7), (6, 9)):
        assert_same(call(case, truncate=tr), full)


def test_batch_first_and_float32():
    case = make_case(input_kind="float", masked=True, batch_first=True, T=6, seed=4)
    flat = make_case(input_kind="float", masked=True, T=6, seed=4)
    for tr in (2, (1, 3), (2, 4)):
        k1, k2 = (tr, tr) if isinstance(tr, int) else tr
        assert_same(call(case, truncate=tr), plain_tbptt(flat, k1, k2))
    c32 = make_case(input_kind="onehot", target_kind="mse", masked=True, dtype=np.float32, T=9, seed=6)
    for tr in (2, (2, 5)):
        got = call(c32, truncate=tr)
        assert got[1]["W"].dtype == np.float32
        assert_same(got, call(c32, truncate=tr, backend="numpy"), tol=EXACT32)


def test_inputs_not_modified():
    case = make_case(input_kind="embed", target_kind="probs", masked=True, T=6, seed=8)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in case.items()}
    prm = {k: v.copy() for k, v in case["params"].items()}
    call(case, truncate=(2, 3), checkpoint=2)
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(case[k], v)
    for k in prm:
        np.testing.assert_array_equal(case["params"][k], prm[k])


# --------------------------------------------------------------------------- bad values
@pytest.mark.parametrize("bad", [0, -1, (0, 2), (3, 2), (1, 2, 3), (2,), 1.5, "5", True,
                                 (1.0, 2), [2, 1], (True, 2), "sqrt", object()])
def test_bad_truncate(bad):
    case = make_case(T=4)
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="truncate"):
            call(case, truncate=bad, backend=backend)


@pytest.mark.parametrize("bad", [0, -3, "log", "", 2.5, True, (2,), np.float64(4.0)])
def test_bad_checkpoint(bad):
    case = make_case(T=4)
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="checkpoint"):
            call(case, checkpoint=bad, backend=backend)


# --------------------------------------------------------------------------- PyTorch, detach()
def _torch_chunked(case, k):
    """Loss and gradients from torch.autograd, the state detached at every chunk boundary."""
    import torch
    prm = {n: torch.tensor(np.asarray(v, np.float64), requires_grad=True)
           for n, v in case["params"].items()}
    h0 = torch.tensor(np.asarray(case["h0"], np.float64), requires_grad=True)
    inputs = case["inputs"]
    T, B = inputs.shape[:2]
    f = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[case["activation"]]
    mask = torch.ones(T, B, dtype=torch.float64) if case["mask"] is None else \
        torch.tensor(np.asarray(case["mask"], np.float64))
    tg = case["targets"]
    h = h0
    total = 0.0
    for t in range(T):
        if t % k == 0 and t > 0:
            h = h.detach()                                    # the chunk boundary
        if inputs.ndim == 3:
            xu = torch.tensor(inputs[t]) @ prm["U"].T
        elif "E" in prm:
            xu = prm["E"][torch.tensor(inputs[t])] @ prm["U"].T
        else:
            xu = prm["U"][:, torch.tensor(inputs[t])].T
        h = f(xu + h @ prm["W"].T + prm["b"])
        o = h @ prm["V"].T + prm["c"]
        if case["loss"] == "mse":
            per = 0.5 * ((o - torch.tensor(tg[t])) ** 2).sum(dim=1)
        elif np.issubdtype(tg.dtype, np.integer):
            per = torch.nn.functional.cross_entropy(o, torch.tensor(tg[t]), reduction="none")
        else:
            per = -(torch.tensor(tg[t]) * torch.log_softmax(o, dim=1)).sum(dim=1)
        total = total + (per * mask[t]).sum()
    if case["reduction"] == "mean":
        total = total / mask.sum()
    total.backward()
    grads = {n: p.grad.numpy() if p.grad is not None else np.zeros(p.shape) for n, p in prm.items()}
    grads["h0"] = h0.grad.numpy()
    return float(total.detach()), grads


@pytest.mark.parametrize("kind", [
    dict(input_kind="float", target_kind="ids", masked=True),
    dict(input_kind="onehot", target_kind="mse", reduction="mean"),
    dict(input_kind="embed", target_kind="probs", activation="sigmoid"),
    dict(input_kind="float", target_kind="mse", activation="relu", masked=True, reduction="mean"),
], ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_chunks_equal_torch_detach(kind):
    pytest.importorskip("torch")
    case = make_case(T=9, B=3, seed=21, **kind)
    for k in (1, 2, 3, 4, 9, 12):
        want_loss, want = _torch_chunked(case, k)
        for backend in BACKENDS:
            loss, grads, _ = call(case, truncate=k, backend=backend)
            np.testing.assert_allclose(loss, want_loss, **TORCH64)
            for n in want:
                np.testing.assert_allclose(grads[n], want[n], err_msg=f"k={k} {backend} {n}", **TORCH64)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_truncation_or_checkpoint_that_cuts_nothing_is_full_bptt_on_the_fused_call(cell):
    """truncate=(k1, k2) with k1 >= T is one block over the whole sequence, and a checkpoint
    segment of T steps recomputes nothing: both are full BPTT, so they run its fused call
    (the same bits) and the memory estimate is full BPTT's."""
    from fastbptt import _validate as V
    from fastbptt import memory as M
    from fastbptt.cpu import fused_eligible
    T = 9
    case = make_case(cell=cell, T=T, B=3, input_kind="float", target_kind="ids", seed=4)
    full = fastbptt.loss_and_grad(**case)
    est_full = M.estimate(T, 3, case["inputs"].shape[2], case["params"]["W"].shape[1],
                          case["params"]["V"].shape[0], inputs="float", cell=cell)
    for opt in (dict(truncate=T), dict(truncate=(T + 3, T + 5)), dict(checkpoint=T),
                dict(truncate=T, checkpoint=T)):
        p = V.validate_loss_and_grad(case["params"], case["inputs"], case["targets"], case["h0"],
                                     "tanh", "cross_entropy", "sum", None, False, "cpu",
                                     opt.get("truncate"), opt.get("checkpoint"), cell=cell)
        assert fused_eligible(p), opt
        got = fastbptt.loss_and_grad(**case, **opt)
        assert got[0] == full[0]
        for k in full[1]:
            np.testing.assert_array_equal(got[1][k], full[1][k], err_msg=f"{opt} {k}")
        for a, b in zip(got[2] if cell == "lstm" else (got[2],),
                        full[2] if cell == "lstm" else (full[2],)):
            np.testing.assert_array_equal(a, b)
        est = M.estimate(T, 3, case["inputs"].shape[2], case["params"]["W"].shape[1],
                         case["params"]["V"].shape[0], inputs="float", cell=cell, **opt)
        assert est.total == est_full.total, opt
    # one step shorter: a real cut, on the engine
    p = V.validate_loss_and_grad(case["params"], case["inputs"], case["targets"], case["h0"],
                                 "tanh", "cross_entropy", "sum", None, False, "cpu", T - 1, None,
                                 cell=cell)
    assert not fused_eligible(p)
