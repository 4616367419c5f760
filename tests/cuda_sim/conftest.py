"""Tests here run only under Numba's CUDA simulator, in their own process.

``tests/test_cuda_sim.py`` starts ``pytest tests/cuda_sim`` with ``NUMBA_ENABLE_CUDASIM=1``
set before numba is imported; in the main test run this folder is not collected (numba is
already imported there, for real CUDA).
"""
import os
import sys
from pathlib import Path

import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
if not SIM:
    collect_ignore_glob = ["test_*.py"]
else:
    # The simulator runs each CUDA thread as a Python thread and its block manager busy-polls
    # them: with the default 5 ms GIL switch interval a launch takes ~5x longer.
    sys.setswitchinterval(1e-5)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # tests/: cases, tolerances

    # The simulator's shared-memory allocator checks and fills its per-block dict without a
    # lock: two threads reaching cuda.shared.array together can each get a private array,
    # which silently breaks the reductions (seen here as a wrong loss in ~1 run in 30 with
    # the short switch interval). Same logic, under a lock.
    import threading

    import numpy as np
    from numba.cuda.simulator import kernelapi

    _lock = threading.Lock()

    def _locked_shared_array(self, shape, dtype, alignment=None):
        if alignment is not None:
            raise RuntimeError("Array alignment is not supported in cudasim")
        from numba.cuda import types
        from numba.cuda.np import numpy_support
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        if shape == 0:
            count = self._dynshared_size // dtype.itemsize
            return np.frombuffer(self._dynshared.data, dtype=dtype, count=count)
        f = sys._getframe(1)
        caller = (f.f_code.co_filename, f.f_lineno)
        with _lock:
            res = self._allocations.get(caller)
            if res is None:
                res = np.empty(shape, dtype)
                self._allocations[caller] = res
        return res

    kernelapi.FakeCUDAShared.array = _locked_shared_array


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 8 threads and 4x4 tiles: the tiny test problems span several blocks and tiles."""
    from fastbptt.cuda import config
    monkeypatch.setattr(config, "THREADS", 8)
    monkeypatch.setattr(config, "TILE", 4)
    monkeypatch.setattr(config, "PERSISTENT_THREADS", 8)
    monkeypatch.setattr(config, "RECURRENT", "per-step")
    yield
