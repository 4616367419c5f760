"""The core contract: Numba CPU == NumPy reference == finite differences == torch.autograd."""
from __future__ import annotations

import numpy as np
import pytest

import fastbptt
import tolerances as tol
from cases import all_combinations, combo_id, make_case

COMBOS = list(all_combinations())


def _copy_case(case):
    return {k: (v.copy() if isinstance(v, np.ndarray) else
                {kk: vv.copy() for kk, vv in v.items()} if isinstance(v, dict) else v)
            for k, v in case.items()}


def _assert_unchanged(case, before):
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(case[k], v, err_msg=f"{k} was modified")
        elif isinstance(v, dict):
            for kk in v:
                np.testing.assert_array_equal(case[k][kk], v[kk], err_msg=f"params[{kk}] was modified")


def assert_same_result(r1, r2, rtol, atol):
    (l1, g1, h1), (l2, g2, h2) = r1, r2
    np.testing.assert_allclose(l1, l2, rtol=rtol, atol=atol, err_msg="loss")
    assert set(g1) == set(g2)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=rtol, atol=atol, err_msg=f"grad {k}")
    np.testing.assert_allclose(h1, h2, rtol=rtol, atol=atol, err_msg="h_last")


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("kw", COMBOS, ids=combo_id)
def test_cpu_equals_reference_float64(kw, batch_first):
    case = make_case(**kw, batch_first=batch_first, T=6, B=4, seed=hash(combo_id(kw)) % 1000)
    before = _copy_case(case)
    ref = fastbptt.loss_and_grad(**case, backend="numpy")
    cpu = fastbptt.loss_and_grad(**case, backend="cpu")
    _assert_unchanged(case, before)
    assert isinstance(cpu[0], float) and isinstance(ref[0], float)
    assert set(cpu[1]) == set(case["params"]) | {"h0"}
    for k, g in cpu[1].items():
        assert g.dtype == np.float64 and g.shape == (case["params"][k].shape if k != "h0" else case["h0"].shape)
    assert cpu[2].shape == case["h0"].shape
    assert_same_result(cpu, ref, **tol.EXACT64)


@pytest.mark.parametrize("kw", COMBOS, ids=combo_id)
def test_cpu_equals_reference_float32(kw):
    case = make_case(**kw, dtype=np.float32, T=6, B=4, seed=3)
    ref = fastbptt.loss_and_grad(**case, backend="numpy")
    cpu = fastbptt.loss_and_grad(**case, backend="cpu")
    for k, g in cpu[1].items():
        assert g.dtype == np.float32, k
    assert cpu[2].dtype == np.float32
    assert_same_result(cpu, ref, **tol.EXACT32)


@pytest.mark.parametrize("kw", COMBOS, ids=combo_id)
def test_gradients_match_finite_differences(kw):
    case = make_case(**kw, T=4, B=3, seed=7)
    args = {k: v for k, v in case.items() if k not in ("params",)}
    h0 = args.pop("h0")

    def fun(q):
        q = dict(q)
        h = q.pop("h0")
        loss, grads, _ = fastbptt.loss_and_grad(q, h0=h, **args)
        return loss, grads

    params = dict(case["params"], h0=h0)
    res = fastbptt.gradcheck(fun, params, directions=2, elements=3, seed=1)
    assert res.max_rel_error < tol.FINITE_DIFF, (res.worst, res.max_rel_error)


def test_gradcheck_catches_a_wrong_gradient():
    case = make_case(T=3, B=2)
    args = {k: v for k, v in case.items() if k != "params"}

    def wrong(q):
        loss, grads, _ = fastbptt.loss_and_grad(q, **args)
        grads["W"] = grads["W"] * 1.01
        return loss, grads

    res = fastbptt.gradcheck(wrong, case["params"], directions=2, elements=2, seed=0)
    assert res.max_rel_error > 1e-3 and res.worst.startswith("W")


@pytest.mark.parametrize("T,B,H,n_in,n_out", [(1, 1, 1, 1, 2), (1, 3, 5, 2, 3), (7, 1, 13, 3, 2),
                                              (3, 2, 1, 1, 1), (9, 5, 17, 11, 9)])
@pytest.mark.parametrize("input_kind", ["float", "onehot", "embed"])
def test_edge_shapes(T, B, H, n_in, n_out, input_kind):
    case = make_case(input_kind=input_kind, T=T, B=B, H=H, n_in=n_in, n_out=n_out, vocab=3)
    assert_same_result(fastbptt.loss_and_grad(**case, backend="cpu"),
                       fastbptt.loss_and_grad(**case, backend="numpy"), **tol.EXACT64)


def test_layouts_and_id_dtypes_give_the_same_answer():
    case = make_case(input_kind="float", T=5, B=4)
    base = fastbptt.loss_and_grad(**case)
    fortran = dict(case, inputs=np.asfortranarray(case["inputs"]),
                   params={k: np.asfortranarray(v) for k, v in case["params"].items()})
    assert_same_result(fastbptt.loss_and_grad(**fortran), base, **tol.EXACT64)
    big = np.zeros((10, 8, 4)); big[::2, ::2] = case["inputs"]
    strided = dict(case, inputs=big[::2, ::2])
    assert not strided["inputs"].flags.c_contiguous
    assert_same_result(fastbptt.loss_and_grad(**strided), base, **tol.EXACT64)

    ids_case = make_case(input_kind="onehot", T=5, B=4)
    base = fastbptt.loss_and_grad(**ids_case)
    for dt in (np.int8, np.uint8, np.int16, np.int32, np.uint32, np.int64, np.uint64):
        c2 = dict(ids_case, inputs=ids_case["inputs"].astype(dt), targets=ids_case["targets"].astype(dt))
        assert_same_result(fastbptt.loss_and_grad(**c2), base, **tol.EXACT64)


def test_h_last_is_state_at_last_valid_step():
    case = make_case(masked=True, T=6, B=4)
    _, _, h_last = fastbptt.loss_and_grad(**case)
    hs, _ = fastbptt.rnn_forward(case["inputs"], case["h0"], case["params"]["U"], case["params"]["W"],
                                 case["params"]["b"])
    lengths = case["mask"].sum(axis=0).astype(int)
    for b in range(4):
        np.testing.assert_allclose(h_last[b], hs[lengths[b] - 1, b], **tol.EXACT64)


def test_a_sequence_with_no_valid_step_keeps_h0_and_carries_no_loss():
    case = make_case(masked=True, T=4, B=3, reduction="mean")
    case["mask"][:, 1] = 0
    cpu = fastbptt.loss_and_grad(**case)
    assert_same_result(cpu, fastbptt.loss_and_grad(**case, backend="numpy"), **tol.EXACT64)
    np.testing.assert_array_equal(cpu[2][1], case["h0"][1])
    np.testing.assert_array_equal(cpu[1]["h0"][1], 0)
    # the mean divides by the number of valid steps
    m = case["mask"]
    summed = fastbptt.loss_and_grad(**dict(case, reduction="sum"))[0]
    np.testing.assert_allclose(cpu[0], summed / m.sum(), rtol=1e-12)


def test_all_masked_gives_zero_loss_and_gradients():
    case = make_case(masked=True, T=3, B=2, reduction="mean")
    case["mask"][:] = 0
    loss, grads, _ = fastbptt.loss_and_grad(**case)
    assert loss == 0.0
    for k, g in grads.items():
        assert not np.any(g), k


def test_masked_steps_may_hold_garbage():
    case = make_case(masked=True, T=5, B=3, target_kind="mse")
    base = fastbptt.loss_and_grad(**case)
    noisy = dict(case, targets=case["targets"].copy())
    noisy["targets"][case["mask"] == 0] = np.nan
    assert_same_result(fastbptt.loss_and_grad(**noisy), base, **tol.EXACT64)


def test_nan_in_data_propagates_without_crashing():
    case = make_case(T=4, B=2)
    case["inputs"] = case["inputs"].copy()
    case["inputs"][2, 1, 0] = np.nan
    loss, grads, h_last = fastbptt.loss_and_grad(**case)
    assert np.isnan(loss) and np.isnan(grads["W"]).any() and np.isnan(h_last[1]).all()
    assert np.isfinite(h_last[0]).all()


def test_extreme_logits_stay_finite():
    case = make_case(T=3, B=2, n_out=4)
    case["params"] = dict(case["params"], c=np.array([1e4, -1e4, 0, 1e4]))
    loss, grads, _ = fastbptt.loss_and_grad(**case)
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())
    assert_same_result((loss, grads, _), fastbptt.loss_and_grad(**case, backend="numpy"), **tol.EXACT64)


def test_init_params_contract():
    p = fastbptt.init_params(3, 5, 4, vocab_size=9, seed=0)
    shapes = {"U": (5, 3), "W": (5, 5), "b": (5,), "V": (4, 5), "c": (4,), "E": (9, 3)}
    assert {k: v.shape for k, v in p.items()} == shapes
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in p.values())
    q = fastbptt.init_params(3, 5, 4, seed=0, dtype=np.float64)
    assert set(q) == set(shapes) - {"E"} and q["W"].dtype == np.float64
    np.testing.assert_array_equal(fastbptt.init_params(3, 5, 4, seed=1)["W"],
                                  fastbptt.init_params(3, 5, 4, seed=1)["W"])
    # LeCun normal: std ≈ 1/sqrt(fan_in)
    big = fastbptt.init_params(400, 300, 10, seed=0, dtype=np.float64)
    assert abs(big["U"].std() * np.sqrt(400) - 1) < 0.05
    assert abs(big["W"].std() * np.sqrt(300) - 1) < 0.05


# --------------------------------------------------------------------------- torch parity


def _torch_loss_and_grad(case):
    torch = pytest.importorskip("torch")
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in case["params"].items()}
    h = torch.tensor(case["h0"], dtype=torch.float64, requires_grad=True)
    h0 = h
    inputs, targets, mask = case["inputs"], case["targets"], case["mask"]
    T, B = inputs.shape[:2]
    act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[case["activation"]]
    valid = np.ones((T, B), bool) if mask is None else mask.astype(bool)
    many_to_one = (targets.ndim == 1) or (targets.ndim == 2 and targets.dtype.kind == "f")
    if many_to_one:
        weight = np.zeros((T, B))
        for b in range(B):
            steps = np.nonzero(valid[:, b])[0]
            if len(steps):
                weight[steps[-1], b] = 1
    else:
        weight = valid.astype(float)
    if case["reduction"] == "mean" and weight.sum() > 0:
        weight = weight / weight.sum()
    total = torch.zeros((), dtype=torch.float64)
    for t in range(T):
        if inputs.dtype.kind == "f":
            xu = torch.tensor(inputs[t]) @ P["U"].T
        elif "E" in P:
            xu = P["E"][torch.tensor(inputs[t])] @ P["U"].T
        else:
            xu = P["U"][:, torch.tensor(inputs[t])].T
        h = act(xu + h @ P["W"].T + P["b"])
        o = h @ P["V"].T + P["c"]
        y = targets if many_to_one else targets[t]
        if case["loss"] == "mse":
            lt = 0.5 * ((o - torch.tensor(y)) ** 2).sum(-1)
        elif y.dtype.kind == "f":
            lt = -(torch.tensor(y) * torch.log_softmax(o, -1)).sum(-1)
        else:
            lt = torch.nn.functional.cross_entropy(o, torch.tensor(y.astype(np.int64)), reduction="none")
        w = torch.tensor(weight[t])
        total = total + (w * torch.where(w != 0, lt, torch.zeros_like(lt))).sum()
    total.backward()
    grads = {k: v.grad.numpy() if v.grad is not None else np.zeros(v.shape) for k, v in P.items()}
    grads["h0"] = h0.grad.numpy()
    return float(total.detach()), grads


TORCH_COMBOS = [kw for kw in COMBOS if kw["reduction"] == "sum" or kw["masked"]]


@pytest.mark.parametrize("kw", TORCH_COMBOS, ids=combo_id)
def test_matches_torch_autograd(kw):
    case = make_case(**kw, T=5, B=3, seed=11)
    loss_t, grads_t = _torch_loss_and_grad(case)
    for backend in ("cpu", "numpy"):
        loss, grads, _ = fastbptt.loss_and_grad(**case, backend=backend)
        np.testing.assert_allclose(loss, loss_t, **tol.TORCH64)
        for k in grads:
            np.testing.assert_allclose(grads[k], grads_t[k], err_msg=f"{backend} grad {k}", **tol.TORCH64)


def test_torch_nn_rnn_gives_the_same_gradients():
    """The stock nn.RNN + nn.Linear + cross_entropy(sum) model that users compare against."""
    torch = pytest.importorskip("torch")
    T, B, I, H, K = 7, 4, 5, 6, 3
    case = make_case(T=T, B=B, n_in=I, H=H, n_out=K, seed=5)
    p = case["params"]
    rnn = torch.nn.RNN(I, H, nonlinearity="tanh", dtype=torch.float64)
    lin = torch.nn.Linear(H, K, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.tensor(p["U"])); rnn.weight_hh_l0.copy_(torch.tensor(p["W"]))
        rnn.bias_ih_l0.copy_(torch.tensor(p["b"])); rnn.bias_hh_l0.zero_()
        lin.weight.copy_(torch.tensor(p["V"])); lin.bias.copy_(torch.tensor(p["c"]))
    h0 = torch.tensor(case["h0"])[None].requires_grad_(True)
    out, hT = rnn(torch.tensor(case["inputs"]), h0)
    loss = torch.nn.functional.cross_entropy(lin(out).reshape(-1, K),
                                             torch.tensor(case["targets"]).reshape(-1), reduction="sum")
    loss.backward()
    l2, g, h_last = fastbptt.loss_and_grad(**case)
    np.testing.assert_allclose(l2, loss.item(), **tol.TORCH64)
    pairs = {"U": rnn.weight_ih_l0, "W": rnn.weight_hh_l0, "b": rnn.bias_ih_l0, "V": lin.weight, "c": lin.bias}
    for k, t in pairs.items():
        np.testing.assert_allclose(g[k], t.grad.numpy(), err_msg=k, **tol.TORCH64)
    np.testing.assert_allclose(g["h0"], h0.grad.numpy()[0], **tol.TORCH64)
    np.testing.assert_allclose(h_last, hT.detach().numpy()[0], **tol.TORCH64)
