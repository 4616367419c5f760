"""pytest-benchmark suites: ``python -m pytest bench/ --benchmark-only``.

Files here are named ``bench_*.py`` so the default test run (testpaths = tests) never
collects them; this conftest makes pytest collect them when ``bench/`` is named explicitly.
Every benchmark warms up (compilation, first-touch allocation) outside the timed region.
``fastbptt bench`` is the authoritative comparison (each measurement in its own process);
these suites run everything in one process and are meant for regressions and
``--benchmark-json`` / ``--benchmark-compare``.
"""
import importlib.util

import numpy as np
import pytest

from fastbptt.bench import SIZES, flops

ROUNDS = {"minchar": 300, "small": 30, "medium": 8, "large": 4}


def pytest_collect_file(parent, file_path):
    # a file named on the command line is already collected by pytest itself: not twice
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") \
            and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)


_META = {}


def pytest_sessionstart(session):
    from fastbptt.cli import measurement_metadata
    import shlex
    import sys
    _META.update(measurement_metadata("python -m pytest " + shlex.join(sys.argv[1:])))


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """``--benchmark-json`` files say when, where and under what load they were measured."""
    from fastbptt.cli import measurement_metadata
    output_json["meta"] = measurement_metadata(_META.get("command", ""), _META)


def have(mod):
    return importlib.util.find_spec(mod) is not None


@pytest.fixture
def run_timed(benchmark):
    """run_timed(size, fn): warm fn up twice untimed, then time it in ``ROUNDS[size]`` rounds."""
    def go(size, fn):
        fn()
        fn()
        benchmark.group = size
        T, B, n_in, H, n_out, _ = SIZES[size]
        benchmark.extra_info["gflop"] = flops(T, B, n_in, H, n_out) / 1e9
        benchmark.extra_info.update(T=T, B=B, n_in=n_in, H=H, n_out=n_out)
        return benchmark.pedantic(fn, rounds=ROUNDS[size], iterations=1, warmup_rounds=0)
    return go


def problem(size, dtype=np.float32):
    from fastbptt.bench import _problem
    return _problem(size, np.dtype(dtype).name)
