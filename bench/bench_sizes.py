"""One forward + backward at the four benchmark sizes (fastbptt.bench.SIZES), float32, time-major.

python -m pytest bench/ --benchmark-only [--benchmark-json out.json] [-k small]
"""
import pytest

import fastbptt
from fastbptt import bench as B

from conftest import have, problem

SIZES = list(B.SIZES)


@pytest.mark.parametrize("size", SIZES)
def test_fastbptt_cpu(run_timed, size):
    params, x, y = problem(size)
    run_timed(size, lambda: fastbptt.loss_and_grad(params, x, y))


@pytest.mark.parametrize("size", SIZES)
def test_reference_numpy(run_timed, size):
    params, x, y = problem(size)
    run_timed(size, lambda: fastbptt.loss_and_grad(params, x, y, backend="numpy"))


@pytest.mark.skipif(not have("torch"), reason="PyTorch not installed")
@pytest.mark.parametrize("size", SIZES)
def test_torch_cpu(run_timed, size):
    run_timed(size, B._fn_torch(size, "float32", "cpu"))


@pytest.mark.skipif(not have("jax"), reason="JAX not installed")
@pytest.mark.parametrize("size", SIZES)
def test_jax_cpu(run_timed, size):
    run_timed(size, B._fn_jax(size, "float32", "cpu"))
