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
    """numba-cuda compiles what a kernel calls — the device functions of
    fastbptt.cuda.activations and of each cell, cuda.cg.this_grid() in the cooperative
    kernels — for the *current device*, which needs a GPU even inside compile_ptx. Answer
    that query with the target compute capability instead."""
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
    import fastbptt.cuda as C
    key = (np.dtype(dtype), cc)
    if key not in _PTX:
        with _device_query_answers(cc):
            _PTX[key] = {name: compile_ptx(fn, sig, cc=cc)[0] for name, fn, sig in C.ptx_specs(dtype)}
    return _PTX[key]


def _every_kernel(dtype):
    """{name: python function} of every kernel the CUDA modules define or build."""
    import importlib

    import fastbptt.cuda as C
    from fastbptt.cuda import config
    found = {}
    for m in C.KERNEL_MODULES:
        mod = importlib.import_module(f"fastbptt.cuda.{m}")
        spaces = [vars(mod)]
        if hasattr(mod, "build"):
            args = {"products": (config.TILE,), "heads": (config.THREADS,)}.get(m, ())
            spaces.append(vars(mod.build(dtype, *args)))
        for space in spaces:
            found.update({f"{m}.{n}": v.py_func for n, v in space.items()
                          if hasattr(v, "py_func") and not getattr(v, "targetoptions", {}).get("device")})
    return found


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)], ids=["sm80", "sm90"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_every_kernel_compiles_to_ptx(compile_ptx, dtype, cc):
    ptxs = _ptx(compile_ptx, dtype, cc)
    missing = set(_every_kernel(dtype)) - set(ptxs)
    assert not missing, f"kernels missing from ptx_specs: {sorted(missing)}"
    for name, ptx in ptxs.items():
        assert f".target sm_{cc[0]}{cc[1]}" in ptx, name
        assert ".entry" in ptx, name


def test_kernel_properties_in_ptx(compile_ptx):
    """float32 hot loops stay in float32 and in registers (no local memory: the cells'
    device functions are inlined); the tiled kernels stage through shared memory; the
    persistent kernels keep W in dynamic shared memory (the cooperative ones also sync the
    grid); the id scatters are atomic."""
    ptx = _ptx(compile_ptx, np.float32, (9, 0))
    loops = [f"{cell}.{k}" for cell, kernels in (
        ("rnn", ("step_forward", "step_backward", "persistent_forward", "persistent_backward",
                 "coop_forward", "coop_backward")),
        ("lstm", ("forward_pointwise", "backward_pointwise", "persistent_forward", "persistent_backward")),
        ("gru", ("forward_pointwise", "backward_pointwise", "persistent_forward", "persistent_backward")))
        for k in kernels]
    for name in ["products.gemm", "products.gemm_strided", "products.colsum_add"] + loops:
        f64 = [ln for ln in ptx[name].splitlines()
               if ".f64" in ln and any(op in ln for op in ("fma", "mul.", "add.", "sub.", "div.", "ex2."))]
        assert not f64, f"{name}: float64 arithmetic in a float32 kernel: {f64[:3]}"
        assert ".local" not in ptx[name], f"{name}: local memory (spills or an unrolled tuple)"
    for name in ("products.gemm", "products.colsum_add", "heads.head_loss"):
        assert "bar.sync" in ptx[name] and ".shared" in ptx[name], name
    persistent = [n for n in loops if ".persistent_" in n or ".coop_" in n]
    assert len(persistent) == 8
    for name in persistent:
        assert ".extern .shared" in ptx[name], name          # dynamic shared memory for W
        assert "bar.sync" in ptx[name], name
    for name in ("rnn.coop_forward", "rnn.coop_backward"):
        assert "cudaCGSynchronize" in ptx[name], name        # grid-wide sync (cudadevrt)
    for name in ("arrays.scatter_add_rows", "arrays.scatter_add_cols", "products.colsum_add"):
        assert "atom." in ptx[name] or "red." in ptx[name], name
