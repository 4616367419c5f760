"""Every CUDA kernel compiled to PTX for the real target (compute capability 8.0 and 9.0).

``numba.cuda.compile_ptx`` types and lowers a kernel exactly as for a GPU launch and runs NVVM,
so typing errors, unsupported operations and precision slips that the simulator (plain
Python) cannot see are caught here, without a GPU. NVVM comes with ``numba-cuda[cu13]``.
"""
import os
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest

try:
    import numba_cuda  # noqa: F401
    HAVE_NUMBA_CUDA = True
except ImportError:
    HAVE_NUMBA_CUDA = False

pytestmark = [
    pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda not installed (pip install -e '.[cuda]'; .ci/run installs it)"),
    pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", reason="simulator: no PTX"),
]


@pytest.fixture(scope="module")
def compile_ptx():
    from numba import cuda, float32
    try:
        cuda.compile_ptx(lambda a: None, (float32[::1],), cc=(8, 0))
    except Exception as exc:          # NVVM missing: not a failure of fastbptt
        pytest.skip(f"NVVM not available for compile_ptx: {type(exc).__name__}: {str(exc)[:200]}")
    return cuda.compile_ptx


_PTX = {}


@contextmanager
def _device_query_answers(cc):
    """numba-cuda compiles what a kernel calls through an overload (here cuda.cg.this_grid(),
    in the cooperative kernels) for the *current device*, which needs a GPU even inside
    compile_ptx. Answer that query with the target compute capability instead."""
    import numba.cuda.dispatcher as D
    old = getattr(D, "get_current_device", None)
    if old is None:
        yield
        return
    D.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        D.get_current_device = old


def _ptx(compile_ptx, dtype, cc):
    """{kernel name: PTX} for float ``dtype`` at compute capability ``cc`` (compiled once)."""
    from fastbptt import _cuda_kernels as K
    key = (np.dtype(dtype), cc)
    if key not in _PTX:
        with _device_query_answers(cc):
            _PTX[key] = {name: compile_ptx(fn, sig, cc=cc)[0] for name, fn, sig in K.ptx_specs(dtype)}
    return _PTX[key]


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm80", "sm90"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_every_kernel_compiles_to_ptx(compile_ptx, dtype, cc):
    from fastbptt import _cuda_kernels as K
    ptxs = _ptx(compile_ptx, dtype, cc)
    built = {n for n, v in vars(K.build(dtype, 256, 16)).items() if hasattr(v, "py_func")}
    assert set(ptxs) == built | set(vars(K.GENERIC)), "a kernel is missing from ptx_specs"
    for name, ptx in ptxs.items():
        assert f".target sm_{cc[0]}{cc[1]}" in ptx, name
        assert ".entry" in ptx, name


def test_kernel_properties_in_ptx(compile_ptx):
    """float32 hot loops stay in float32; the tiled kernels stage through shared memory; the
    persistent kernels keep W in dynamic shared memory (the cooperative ones also sync the
    grid); the id scatters are atomic."""
    ptx = _ptx(compile_ptx, np.float32, (9, 0))
    for name in ("gemm", "step_forward", "step_backward", "persistent_forward",
                 "persistent_backward", "coop_forward", "coop_backward", "colsum_add"):
        f64 = [ln for ln in ptx[name].splitlines()
               if ".f64" in ln and any(op in ln for op in ("fma", "mul.", "add.", "sub."))]
        assert not f64, f"{name}: float64 arithmetic in a float32 kernel: {f64[:3]}"
    for name in ("gemm", "colsum_add", "head_loss"):
        assert "bar.sync" in ptx[name] and ".shared" in ptx[name], name
    for name in ("persistent_forward", "persistent_backward", "coop_forward", "coop_backward"):
        assert ".extern .shared" in ptx[name], name          # dynamic shared memory for W
        assert "bar.sync" in ptx[name], name
    for name in ("coop_forward", "coop_backward"):
        assert "cudaCGSynchronize" in ptx[name], name        # grid-wide sync (cudadevrt)
    for name in ("scatter_add_rows", "scatter_add_cols", "colsum_add"):
        assert "atom." in ptx[name] or "red." in ptx[name], name
