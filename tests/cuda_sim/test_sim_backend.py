"""backend="cuda" against backend="cpu" under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1).

Blocks are patched to 8 threads and tiles to 4x4 (conftest), so these tiny problems span
several blocks and tiles; the persistent kernel runs as one block of 8 threads. Every path of
:class:`fastbptt.cuda.CudaOps` is compared with the Numba CPU backend.
"""
import numpy as np
import pytest
from numba import cuda

import fastbptt
from fastbptt.cuda import config
from cases import make_case
from tolerances import CUDA32, CUDA64

SIZES = dict(T=4, B=3, n_in=3, H=5, n_out=4, vocab=6)


def _host(a):
    if isinstance(a, tuple):                               # the LSTM's (h, c)
        return np.stack([_host(x) for x in a])
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def _compare(ref, got, dtype):
    tol = CUDA64 if np.dtype(dtype) == np.float64 else CUDA32
    (l1, g1, h1), (l2, g2, h2) = ref, got
    assert isinstance(l2, float)
    np.testing.assert_allclose(l2, l1, **tol)
    assert set(g1) == set(g2)
    for k in g1:
        g = _host(g2[k])
        assert g.dtype == g1[k].dtype, k
        np.testing.assert_allclose(g, g1[k], err_msg=k, **tol)
    np.testing.assert_allclose(_host(h2), h1, err_msg="h_last", **tol)


CASES = [
    # (make_case kwargs, engine kwargs, time-loop kernels)
    (dict(input_kind="float", target_kind="ids"), {}, "per-step"),
    (dict(input_kind="float", target_kind="ids"), {}, "persistent"),
    (dict(input_kind="onehot", target_kind="ids", activation="sigmoid", reduction="mean",
          masked=True), {}, "per-step"),
    (dict(input_kind="embed", target_kind="probs", activation="relu", masked=True), {}, "persistent"),
    (dict(input_kind="float", target_kind="mse", reduction="mean", batch_first=True), {}, "per-step"),
    (dict(input_kind="float", target_kind="ids", many_to_one=True, masked=True), {}, "per-step"),
    (dict(input_kind="onehot", target_kind="mse", many_to_one=True, activation="relu"), {}, "persistent"),
    (dict(input_kind="embed", target_kind="probs", many_to_one=True, batch_first=True), {}, "per-step"),
    (dict(input_kind="float", target_kind="ids", T=6), dict(truncate=(2, 3)), "per-step"),
    (dict(input_kind="onehot", target_kind="ids", T=6, masked=True), dict(truncate=2), "persistent"),
    (dict(input_kind="float", target_kind="mse", T=6), dict(checkpoint=2), "per-step"),
    (dict(input_kind="embed", target_kind="ids", T=7, masked=True),
     dict(truncate=(2, 4), checkpoint=2), "persistent"),
    (dict(input_kind="float", target_kind="ids", n_out=11), {}, "per-step"),    # K > threads per block
    (dict(input_kind="float", target_kind="ids", dtype=np.float32), {}, "per-step"),
    (dict(input_kind="onehot", target_kind="probs", dtype=np.float32, activation="sigmoid"), {}, "persistent"),
    # the cooperative-grid kernels, as one block (the simulator runs grid.sync() for one block)
    (dict(input_kind="float", target_kind="ids", activation="relu", masked=True), {}, "cooperative"),
    (dict(input_kind="embed", target_kind="mse", T=6), dict(truncate=(2, 3), checkpoint=2), "cooperative"),
]
# every mode for the gated cells, on both time-loop forms
for _cell in ("lstm", "gru"):
    CASES += [
        (dict(cell=_cell, input_kind="float", target_kind="ids"), {}, "per-step"),
        (dict(cell=_cell, input_kind="float", target_kind="ids", h0=False), {}, "persistent"),
        (dict(cell=_cell, input_kind="onehot", target_kind="ids", reduction="mean", masked=True), {}, "per-step"),
        (dict(cell=_cell, input_kind="embed", target_kind="probs", masked=True), {}, "persistent"),
        (dict(cell=_cell, input_kind="float", target_kind="mse", reduction="mean", batch_first=True), {}, "per-step"),
        (dict(cell=_cell, input_kind="float", target_kind="ids", many_to_one=True, masked=True), {}, "persistent"),
        (dict(cell=_cell, input_kind="embed", target_kind="probs", many_to_one=True, batch_first=True), {}, "per-step"),
        (dict(cell=_cell, input_kind="onehot", target_kind="ids", T=6, masked=True), dict(truncate=(2, 3)), "per-step"),
        (dict(cell=_cell, input_kind="float", target_kind="mse", T=6), dict(checkpoint=2), "persistent"),
        (dict(cell=_cell, input_kind="embed", target_kind="ids", T=7, masked=True),
         dict(truncate=(2, 4), checkpoint=2), "per-step"),
        (dict(cell=_cell, input_kind="onehot", target_kind="probs", dtype=np.float32), {}, "persistent"),
        (dict(cell=_cell, input_kind="float", target_kind="ids", dtype=np.float32, masked=True),
         dict(truncate=2), "per-step"),
        (dict(cell=_cell, input_kind="float", target_kind="ids"), {}, "cooperative"),   # runs per step
    ]


def _id(c):
    kw, ekw, path = c
    parts = [kw.get("cell", "rnn"), kw.get("input_kind"), kw.get("target_kind"), kw.get("activation", "tanh")]
    parts += [k for k in ("many_to_one", "masked", "batch_first") if kw.get(k)]
    parts += [f"{k}={v}" for k, v in ekw.items()]
    if kw.get("dtype") is np.float32:
        parts.append("f32")
    if "n_out" in kw:
        parts.append(f"K={kw['n_out']}")
    parts.append(path)
    return "-".join(str(p) for p in parts)


@pytest.mark.parametrize("kw,ekw,path", CASES, ids=[_id(c) for c in CASES])
def test_cuda_matches_cpu(kw, ekw, path, monkeypatch):
    monkeypatch.setattr(config, "RECURRENT", path)
    case = make_case(**{**SIZES, **kw})
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in case.items() if k != "params"}
    ref = fastbptt.loss_and_grad(**case, backend="cpu", **ekw)
    got = fastbptt.loss_and_grad(**case, backend="cuda", **ekw)
    from fastbptt.cuda.device import Device
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kw.get("cell", "rnn")]
    assert Device(kw.get("dtype", np.float64), 0).recurrent_path(3, 5, G * 25) == path
    _compare(ref, got, kw.get("dtype", np.float64))
    for k, v in before.items():                           # inputs are never modified
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(case[k], v)
    assert all(isinstance(g, np.ndarray) for g in got[1].values())


def test_device_arrays_stay_on_device():
    """Device params, ids, per-step target ids and h0 in; gradients stay on the device."""
    case = make_case(**SIZES, input_kind="embed", target_kind="ids", batch_first=True, masked=True)
    ref = fastbptt.loss_and_grad(**case, backend="cpu")
    dcase = dict(case)
    dcase["params"] = {k: cuda.to_device(v) for k, v in case["params"].items()}
    for k in ("inputs", "targets", "h0", "mask"):
        dcase[k] = cuda.to_device(case[k])
    got = fastbptt.loss_and_grad(**dcase, backend="cuda")
    assert all(getattr(g, "__cuda_ndarray__", False) for g in got[1].values())
    assert getattr(got[2], "__cuda_ndarray__", False)
    _compare(ref, got, np.float64)


def test_strided_device_inputs_and_float_targets():
    """A non-contiguous batch-first device input and device probability rows."""
    case = make_case(**SIZES, input_kind="float", target_kind="probs", batch_first=True)
    ref = fastbptt.loss_and_grad(**case, backend="cpu")
    x = case["inputs"]                                     # [B, T, n_in]
    wide = np.zeros(x.shape[:2] + (2 * x.shape[2],))
    wide[:, :, ::2] = x
    dx = cuda.to_device(wide)[:, :, ::2]                   # a strided device view
    assert not dx.is_c_contiguous()
    got = fastbptt.loss_and_grad(**{**case, "inputs": dx, "targets": cuda.to_device(case["targets"])},
                                 backend="cuda")
    _compare(ref, got, np.float64)


def test_device_many_to_one_targets():
    case = make_case(**SIZES, input_kind="onehot", target_kind="ids", many_to_one=True, masked=True)
    ref = fastbptt.loss_and_grad(**case, backend="cpu")
    got = fastbptt.loss_and_grad(**{**case, "inputs": cuda.to_device(case["inputs"].astype(np.int32)),
                                    "targets": cuda.to_device(case["targets"])}, backend="cuda")
    _compare(ref, got, np.float64)


def test_device_ids_range_checked_on_device():
    case = make_case(**SIZES, input_kind="onehot", target_kind="ids")
    bad = case["inputs"].copy()
    bad[1, 2] = SIZES["n_in"]
    with pytest.raises(ValueError, match=r"inputs holds id 3, outside \[0, 3\)"):
        fastbptt.loss_and_grad(**{**case, "inputs": cuda.to_device(bad)}, backend="cuda")
    tbad = case["targets"].copy()
    tbad[0, 0] = -1
    with pytest.raises(ValueError, match=r"targets holds id -1"):
        fastbptt.loss_and_grad(**{**case, "targets": cuda.to_device(tbad)}, backend="cuda")


def test_device_shapes_and_dtypes_validated():
    case = make_case(**SIZES, input_kind="float", target_kind="ids")
    with pytest.raises(ValueError, match="n_in = 3"):
        fastbptt.loss_and_grad(**{**case, "inputs": cuda.to_device(case["inputs"][:, :, :2].copy())},
                               backend="cuda")
    with pytest.raises(TypeError, match="float32"):
        fastbptt.loss_and_grad(**{**case, "inputs": cuda.to_device(case["inputs"].astype(np.float32))},
                               backend="cuda")
    p = dict(case["params"], W=cuda.to_device(case["params"]["W"][:, :4].copy()))
    with pytest.raises(ValueError, match=r"params\['W'\]"):
        fastbptt.loss_and_grad(**{**case, "params": p}, backend="cuda")


@pytest.mark.parametrize("path,batch_first,device", [("per-step", True, False),
                                                     ("persistent", False, True)])
def test_layer_api_matches_cpu(path, batch_first, device, monkeypatch):
    monkeypatch.setattr(config, "RECURRENT", path)
    rng = np.random.default_rng(3)
    T, B, I, H = 4, 3, 3, 5
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    h0 = rng.standard_normal((B, H))
    U, W, b = rng.standard_normal((H, I)), 0.5 * rng.standard_normal((H, H)), rng.standard_normal(H)
    dhs = rng.standard_normal(x.shape[:2] + (H,))
    hs1, c1 = fastbptt.rnn_forward(x, h0, U, W, b, batch_first=batch_first)
    ref = fastbptt.rnn_backward(dhs, c1)
    args = [x, h0, U, W, b]
    if device:
        args = [cuda.to_device(a) for a in args]
        dhs = cuda.to_device(dhs)
    hs2, c2 = fastbptt.rnn_forward(*args, batch_first=batch_first, backend="cuda")
    np.testing.assert_allclose(_host(hs2), hs1, **CUDA64)
    got = fastbptt.rnn_backward(dhs, c2)
    for name, r, g in zip(("dx", "dh0", "dU", "dW", "db"), ref, got):
        assert getattr(g, "__cuda_ndarray__", False) is device, name
        np.testing.assert_allclose(_host(g), r, err_msg=name, **CUDA64)


def test_kernels_direct():
    """The tiled product in every transpose combination, column sums and the atomic scatter
    with repeated ids, on sizes that are not multiples of the tile."""
    from fastbptt.cuda.device import Device
    d = Device(np.float64, 0)
    rng = np.random.default_rng(0)
    M, K, N = 7, 5, 6
    for ta in (0, 1):
        for tb in (0, 1):
            A = rng.standard_normal((K, M) if ta else (M, K))
            Bm = rng.standard_normal((N, K) if tb else (K, N))
            C0 = rng.standard_normal((M, N))
            bias = rng.standard_normal(N)
            C = cuda.to_device(C0)
            d.gemm(cuda.to_device(A), cuda.to_device(Bm), C, ta, tb, 1.0, cuda.to_device(bias))
            want = (A.T if ta else A) @ (Bm.T if tb else Bm) + C0 + bias
            np.testing.assert_allclose(C.copy_to_host(), want, **CUDA64)
    X = rng.standard_normal((9, 6))
    out = cuda.to_device(np.ones(6))
    d.colsum(cuda.to_device(X), out)
    np.testing.assert_allclose(out.copy_to_host(), 1 + X.sum(0), **CUDA64)
    ids = np.array([2, 0, 2, 2, 1], dtype=np.int64)
    src = rng.standard_normal((5, 3))
    dst = cuda.to_device(np.zeros((4, 3)))
    d.rows(d.arr.scatter_add_rows, dst, cuda.to_device(ids), cuda.to_device(src), src.size)
    want = np.zeros((4, 3))
    np.add.at(want, ids, src)
    np.testing.assert_allclose(dst.copy_to_host(), want, **CUDA64)


def test_overlapping_copy():
    from fastbptt.cuda.device import Device
    d = Device(np.float64, 0)
    buf = np.arange(5 * 2 * 3, dtype=np.float64).reshape(5, 2, 3)
    dbuf = cuda.to_device(buf)
    d.copy_into(dbuf[:3], dbuf[2:5])                       # the engine's window shift
    np.testing.assert_array_equal(dbuf.copy_to_host()[:3], buf[2:5])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gated_cells_device_arrays_stay_on_device(cell):
    """Device params (with bn), device (h0, c0) and ids: every gradient, c0's included, and the
    final state (the LSTM's (h, c)) stay on the device and equal the CPU backend's."""
    case = make_case(**SIZES, cell=cell, input_kind="embed", target_kind="ids", masked=True)
    ref = fastbptt.loss_and_grad(**case, backend="cpu")
    dcase = dict(case)
    dcase["params"] = {k: cuda.to_device(v) for k, v in case["params"].items()}
    h0 = case["h0"]
    dcase["h0"] = tuple(cuda.to_device(a) for a in h0) if isinstance(h0, tuple) else cuda.to_device(h0)
    for k in ("inputs", "targets", "mask"):
        dcase[k] = cuda.to_device(case[k])
    got = fastbptt.loss_and_grad(**dcase, backend="cuda")
    assert set(got[1]) == set(ref[1]) >= {"h0"} | ({"c0"} if cell == "lstm" else {"bn"})
    assert all(getattr(g, "__cuda_ndarray__", False) for g in got[1].values())
    h_last = got[2] if isinstance(got[2], tuple) else (got[2],)
    assert all(getattr(h, "__cuda_ndarray__", False) for h in h_last)
    _compare(ref, got, np.float64)


@pytest.mark.parametrize("cell,path,batch_first,device", [
    ("lstm", "per-step", False, False), ("lstm", "persistent", True, True),
    ("gru", "persistent", False, False), ("gru", "per-step", True, True),
    ("rnn", "per-step", False, True)])
def test_public_layer_api_matches_cpu(cell, path, batch_first, device, monkeypatch):
    """fastbptt.<cell>_forward/<cell>_backward with backend="cuda" equal backend="cpu",
    gradients on the final state (dh_last, dc_last) included."""
    monkeypatch.setattr(config, "RECURRENT", path)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(5)
    T, B, I, H = 4, 3, 3, 5
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    U, W = rng.standard_normal((G * H, I)), 0.5 * rng.standard_normal((G * H, H))
    b, bn = rng.standard_normal(G * H), rng.standard_normal(H)
    dhs = rng.standard_normal(x.shape[:2] + (H,))
    dh_last, dc_last = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    fwd, bwd = getattr(fastbptt, f"{cell}_forward"), getattr(fastbptt, f"{cell}_backward")
    args = {"rnn": [x, h0, U, W, b], "lstm": [x, h0, c0, U, W, b], "gru": [x, h0, U, W, b, bn]}[cell]
    lasts = [dh_last, dc_last] if cell == "lstm" else [dh_last]
    hs1, c1 = fwd(*args, batch_first=batch_first)
    ref = bwd(dhs, c1, *lasts)
    if device:
        args, dhs, lasts = ([cuda.to_device(a) for a in args], cuda.to_device(dhs),
                            [cuda.to_device(a) for a in lasts])
    hs2, c2 = fwd(*args, batch_first=batch_first, backend="cuda")
    np.testing.assert_allclose(_host(hs2), hs1, **CUDA64)
    np.testing.assert_allclose(_host(c2.h_last), c1.h_last, **CUDA64)
    if cell == "lstm":
        np.testing.assert_allclose(_host(c2.c_last), c1.c_last, **CUDA64)
    got = bwd(dhs, c2, *lasts)
    assert len(got) == len(ref)
    for i, (r, g) in enumerate(zip(ref, got)):
        assert getattr(g, "__cuda_ndarray__", False) is device, i
        np.testing.assert_allclose(_host(g), r, err_msg=str(i), **CUDA64)
    # input_grad=False: dx None, every other gradient as before
    skip = bwd(dhs, c2, *lasts, input_grad=False)
    assert skip[0] is None
    for i, (r, g) in enumerate(zip(ref[1:], skip[1:]), 1):
        np.testing.assert_allclose(_host(g), r, err_msg=str(i), **CUDA64)


@pytest.mark.parametrize("cell,path", [("lstm", "persistent"), ("gru", "per-step")])
def test_benchmark_hook_runs_every_cell(cell, path):
    """fastbptt.cuda.benchmark (for `fastbptt bench --backend cuda --cell ...`) runs the cell."""
    r = fastbptt.cuda.benchmark(T=3, B=2, H=4, n_in=5, repeats=1, warmup=0, cell=cell,
                                recurrent=path)
    assert r["cell"] == cell and r["path"] == path and len(r["all"]) == 1 and r["seconds"] > 0
    assert r["device"] == "CUDA simulator"
