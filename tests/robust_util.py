"""Helpers shared by the robustness tests (tests/test_robust_*.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, *, env=None, timeout=300, cwd=None, pythonpath=None):
    """Run ``code`` in a fresh interpreter; return the CompletedProcess.

    A segfault in compiled code shows up as a negative return code here instead of killing
    pytest. ``pythonpath`` replaces the repository root on ``PYTHONPATH``.
    """
    e = dict(os.environ)
    e.update(env or {})
    for k, v in list(e.items()):
        if v is None:
            del e[k]
    e["PYTHONPATH"] = str(pythonpath or ROOT) + os.pathsep + str(ROOT / "tests")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=e, cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout)


def explain(proc) -> str:
    """A failure message for a child process: how it ended and the tail of its output."""
    how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
           else f"exit status {proc.returncode}")
    return f"child {how}\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"


def snapshot(obj):
    """Deep copy of every ndarray reachable through dicts/lists/tuples (for mutation checks)."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return obj


def assert_unchanged(before, after, name="argument"):
    """``after`` holds exactly the values (bitwise, NaN-aware) and dtypes of ``before``."""
    if isinstance(before, np.ndarray):
        assert isinstance(after, np.ndarray), f"{name} was replaced"
        assert after.dtype == before.dtype and after.shape == before.shape, f"{name} changed shape/dtype"
        assert np.array_equal(after, before, equal_nan=before.dtype.kind in "fc"), f"{name} was modified"
    elif isinstance(before, dict):
        assert set(after) == set(before), f"{name} gained or lost keys: {set(after) ^ set(before)}"
        for k in before:
            assert_unchanged(before[k], after[k], f"{name}[{k!r}]")
    elif isinstance(before, (list, tuple)):
        for i, (b, a) in enumerate(zip(before, after)):
            assert_unchanged(b, a, f"{name}[{i}]")


def require_slow(request):
    """Skip a ``@pytest.mark.slow`` test unless the run selected it with ``-m ...slow...``.

    pyproject's marker says slow cases are excluded from the default run; this keeps that
    promise for these files even when no ``-m "not slow"`` is configured.
    """
    import pytest
    if "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("slow: run with -m slow")
