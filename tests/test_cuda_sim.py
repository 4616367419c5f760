"""The CUDA backend without a GPU (simulator suite, clear errors) and with one (marked gpu).

The simulator tests live in ``tests/cuda_sim/``: ``NUMBA_ENABLE_CUDASIM=1`` must be set before
numba is imported, so they run in a child pytest started here, and this process keeps real
CUDA (the PTX tests and the GPU tests below use it).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbptt
from cases import make_case
from tolerances import CUDA32, CUDA64

HERE = Path(__file__).resolve().parent
try:
    import numba_cuda  # noqa: F401
    HAVE_NUMBA_CUDA = True
except ImportError:
    HAVE_NUMBA_CUDA = False
SIMULATING = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _real_gpu():
    if not HAVE_NUMBA_CUDA or SIMULATING:
        return False
    return fastbptt.cuda.available()[0]


@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda not installed (pip install -e '.[cuda]'; .ci/run installs it)")
def test_simulator_suite():
    """Every CUDA path against the CPU backend, in Numba's CUDA simulator (tests/cuda_sim)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        str(HERE / "cuda_sim")], cwd=HERE.parent, env=env,
                       capture_output=True, text=True, timeout=900)
    tail = (r.stdout[-6000:] + "\n" + r.stderr[-3000:]).strip()
    assert r.returncode == 0, tail
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], tail


def test_import_and_error_without_numba_cuda():
    """`import fastbptt` never needs numba-cuda; backend='cuda' then names what is missing."""
    code = (
        "import sys; sys.modules['numba_cuda'] = None\n"
        "import numpy as np, fastbptt, fastbptt.cuda\n"
        "ok, why = fastbptt.cuda.available(); assert not ok and 'numba-cuda' in why, why\n"
        "p = fastbptt.init_params(2, 3, 2, seed=0)\n"
        "try:\n"
        "    fastbptt.loss_and_grad(p, np.zeros((2, 1), int), np.zeros((2, 1), int), backend='cuda')\n"
        "except ImportError as e:\n"
        "    assert \"pip install 'fastbptt[cuda]'\" in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(not HAVE_NUMBA_CUDA or SIMULATING or _real_gpu(),
                    reason="needs numba-cuda and no usable GPU")
def test_clear_error_without_gpu():
    case = make_case(T=2, B=1, n_in=2, H=3, n_out=2)
    with pytest.raises(RuntimeError, match="no usable CUDA GPU.*NUMBA_ENABLE_CUDASIM=1"):
        fastbptt.loss_and_grad(**case, backend="cuda")
    with pytest.raises(RuntimeError, match="no usable CUDA GPU"):
        fastbptt.rnn_forward(np.zeros((2, 1, 2)), None, np.zeros((3, 2)), np.zeros((3, 3)),
                             np.zeros(3), backend="cuda")


# --------------------------------------------------------------------------- real GPU
gpu = pytest.mark.skipif(not _real_gpu(), reason="no CUDA GPU")

GPU_CASES = [
    (dict(input_kind="float", target_kind="ids"), {}, "auto"),
    (dict(input_kind="onehot", target_kind="ids", masked=True), {}, "per-step"),
    (dict(input_kind="embed", target_kind="probs", batch_first=True), {}, "persistent"),
    (dict(input_kind="float", target_kind="mse", many_to_one=True, masked=True), {}, "per-step"),
    (dict(input_kind="onehot", target_kind="ids", T=30), dict(truncate=(5, 10)), "persistent"),
    (dict(input_kind="embed", target_kind="ids", T=30, masked=True), dict(checkpoint="sqrt"), "per-step"),
    (dict(input_kind="float", target_kind="ids", dtype=np.float32), {}, "persistent"),
    (dict(input_kind="onehot", target_kind="ids", dtype=np.float32, H=300, B=20), {}, "per-step"),
    (dict(input_kind="float", target_kind="ids", H=300, B=8), {}, "cooperative"),
    (dict(input_kind="embed", target_kind="ids", H=40, T=30), dict(truncate=(4, 9)), "cooperative"),
]
for _cell in ("lstm", "gru"):
    GPU_CASES += [
        (dict(cell=_cell, input_kind="float", target_kind="ids"), {}, "auto"),
        (dict(cell=_cell, input_kind="onehot", target_kind="ids", masked=True), {}, "per-step"),
        (dict(cell=_cell, input_kind="embed", target_kind="probs", batch_first=True), {}, "persistent"),
        (dict(cell=_cell, input_kind="onehot", target_kind="ids", T=30), dict(truncate=(5, 10)), "persistent"),
        (dict(cell=_cell, input_kind="embed", target_kind="ids", T=30, masked=True),
         dict(checkpoint="sqrt"), "per-step"),
        (dict(cell=_cell, input_kind="onehot", target_kind="ids", dtype=np.float32, H=300, B=20), {}, "per-step"),
    ]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("kw,ekw,path", GPU_CASES)
def test_gpu_matches_cpu(kw, ekw, path, monkeypatch):
    from fastbptt.cuda import config
    monkeypatch.setattr(config, "RECURRENT", path)
    kw = {**dict(T=12, B=5, n_in=7, H=33, n_out=9, vocab=11), **kw}
    case = make_case(**kw)
    tol = CUDA64 if kw.get("dtype", np.float64) == np.float64 else CUDA32
    l1, g1, h1 = fastbptt.loss_and_grad(**case, backend="cpu", **ekw)
    l2, g2, h2 = fastbptt.loss_and_grad(**case, backend="cuda", **ekw)
    np.testing.assert_allclose(l2, l1, **tol)
    assert set(g2) == set(g1)
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k], err_msg=k, **tol)
    np.testing.assert_allclose(np.asarray(h2), np.asarray(h1), **tol)     # (h, c) for the LSTM


@pytest.mark.gpu
@gpu
def test_gpu_torch_tensors_stay_on_device():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    case = make_case(T=6, B=4, n_in=5, H=8, n_out=5, input_kind="float", target_kind="ids")
    ref = fastbptt.loss_and_grad(**case, backend="cpu")
    t = {k: torch.as_tensor(v, device="cuda") for k, v in case["params"].items()}
    got = fastbptt.loss_and_grad(t, torch.as_tensor(case["inputs"], device="cuda"),
                                 torch.as_tensor(case["targets"], device="cuda"),
                                 torch.as_tensor(case["h0"], device="cuda"), backend="cuda")
    np.testing.assert_allclose(got[0], ref[0], **CUDA64)
    for k in ref[1]:
        g = torch.as_tensor(got[1][k], device="cuda")       # __cuda_array_interface__, no copy
        np.testing.assert_allclose(g.cpu().numpy(), ref[1][k], err_msg=k, **CUDA64)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gpu_benchmark_hook_runs(cell):
    r = fastbptt.cuda.benchmark(T=20, B=4, H=64, repeats=2, cell=cell)
    assert r["seconds"] > 0 and r["path"] in ("persistent", "per-step") and r["cell"] == cell
