"""Numba's compilation cache never breaks fastbptt.

Each scenario runs in a child interpreter (the cache is per process, and a crash must fail
the test, not pytest). The child computes a loss and gradients with the compiled backend
and compares them with the NumPy reference.

We run as root in CI containers, where file permissions do not stop writes, so "unwritable"
is made real by pointing cache paths *inside a regular file* (nothing can create a directory
there) and by replacing the package's ``__pycache__`` with a regular file.
"""
from __future__ import annotations

import shutil

import numba
import pytest

from robust_util import ROOT, explain, require_slow, run_python

# Computes with the CPU kernels and checks against the reference; prints OK on success.
CHILD = """
import warnings, numpy as np, fastbptt
warnings.simplefilter("default")
p = fastbptt.init_params(3, 5, 4, dtype=np.float64, seed=0)
rng = np.random.default_rng(0)
ids = rng.integers(0, 3, (6, 2))
x = rng.standard_normal((6, 2, 3))
for inputs in (ids, x):
    l1, g1, h1 = fastbptt.loss_and_grad(p, inputs, ids)
    l2, g2, h2 = fastbptt.loss_and_grad(p, inputs, ids, backend="numpy")
    assert abs(l1 - l2) <= 1e-10 * abs(l2), (l1, l2)
    for k in g2:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-10, atol=1e-12)
print("OK", fastbptt.__file__)
"""


def _blocked(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file: no directory can be created below it\n")
    return blocker


def _copy_package(tmp_path, *, read_only):
    """A copy of the package with no cache of its own; read-only like a system install."""
    dst = tmp_path / "site"
    shutil.copytree(ROOT / "fastbptt", dst / "fastbptt",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    if read_only:
        for init in (dst / "fastbptt").rglob("__init__.py"):      # every package directory
            (init.parent / "__pycache__").write_text("blocks the in-tree cache, even for root\n")
        for f in sorted(dst.rglob("*"), reverse=True):
            f.chmod(0o555 if f.is_dir() else 0o444)
    return dst


def _restore_writable(path):
    for f in path.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)


def test_unwritable_numba_cache_dir(tmp_path):
    """NUMBA_CACHE_DIR that cannot be created: Numba falls back to another cache location."""
    blocker = _blocked(tmp_path)
    proc = run_python(CHILD, env={"NUMBA_CACHE_DIR": str(blocker / "cache")})
    assert proc.returncode == 0, explain(proc)
    assert "OK" in proc.stdout


def test_read_only_install_without_any_writable_cache(tmp_path):
    """Read-only package, no usable NUMBA_CACHE_DIR, HOME or XDG cache: compiles uncached."""
    site = _copy_package(tmp_path, read_only=True)
    blocker = _blocked(tmp_path)
    try:
        proc = run_python(CHILD, pythonpath=site, cwd=tmp_path, env={
            "NUMBA_CACHE_DIR": str(blocker / "numba"), "HOME": str(blocker / "home"),
            "XDG_CACHE_HOME": str(blocker / "xdg"), "PYTHONDONTWRITEBYTECODE": "1"})
    finally:
        _restore_writable(site)
    assert proc.returncode == 0, explain(proc)
    assert f"OK {site}" in proc.stdout, proc.stdout       # it really ran the read-only copy
    # one warning that names the fix, not one per kernel
    assert proc.stderr.count("CacheWarning") == 1, proc.stderr
    assert "NUMBA_CACHE_DIR" in proc.stderr


def _cache_files(cache_dir):
    return sorted(p for p in cache_dir.rglob("*") if p.suffix in (".nbi", ".nbc"))


def test_corrupt_cache_files_are_recompiled_and_rewritten(tmp_path):
    cache = tmp_path / "numba-cache"
    env = {"NUMBA_CACHE_DIR": str(cache)}
    first = run_python(CHILD, env=env)
    assert first.returncode == 0, explain(first)
    files = _cache_files(cache)
    assert any(f.suffix == ".nbi" for f in files) and any(f.suffix == ".nbc" for f in files), files

    # three kinds of damage: random bytes, an empty file, a truncated valid file
    for i, f in enumerate(files):
        data = f.read_bytes()
        f.write_bytes([b"\x80\x05garbage\x00" * 7, b"", data[: len(data) // 2]][i % 3])
    second = run_python(CHILD, env=env)
    assert second.returncode == 0, explain(second)
    assert "OK" in second.stdout

    # the damaged entries were replaced: a third run loads kernels from the cache again
    # (not asserting "nothing saved": a concurrent edit of cpu.py would recompile legitimately)
    third = run_python(CHILD, env=dict(env, NUMBA_DEBUG_CACHE="1"))
    assert third.returncode == 0, explain(third)
    assert "data loaded" in third.stdout, explain(third)


LOSS_CHILD = """
import numpy as np, fastbptt
p = fastbptt.init_params(3, 5, 4, dtype=np.float64, seed=0)
ids = np.random.default_rng(0).integers(0, 3, (6, 2))
print("LOSS", repr(fastbptt.loss_and_grad(p, ids, ids)[0]))
"""


@pytest.mark.slow
def test_stale_cache_after_source_change(tmp_path, request):
    """An edit to a kernel's *dependency* in another file reaches the cached kernel.

    The fused kernel (cpu/fused.py) calls gemm (cpu/blas.py). Numba alone checks a cached
    kernel against its own file only, so after an edit to blas.py it would run the old gemm
    from the cache. Here the edit doubles every product (alpha = 2): the loss must change.
    """
    require_slow(request)
    site = _copy_package(tmp_path, read_only=False)
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    first = run_python(LOSS_CHILD, pythonpath=site, cwd=tmp_path, env=env)
    assert first.returncode == 0, explain(first)
    blas = site / "fastbptt" / "cpu" / "blas.py"
    src = blas.read_text()
    assert src.count("fscratch[0] = 1\n") == 1
    blas.write_text(src.replace("fscratch[0] = 1\n", "fscratch[0] = 2\n"))
    second = run_python(LOSS_CHILD, pythonpath=site, cwd=tmp_path, env=env)
    assert second.returncode == 0, explain(second)
    loss = [r.stdout.split("LOSS")[1].strip() for r in (first, second)]
    assert loss[0] != loss[1], "the cached fused kernel ran the old gemm"


def test_every_kernel_is_stamped_with_the_whole_package(tmp_path):
    from fastbptt import _jit
    from fastbptt.cpu import blas, fused
    for disp in (fused.fused_full_bptt, blas._gemm):
        assert disp._cache._cache_file._source_stamp == _jit.package_stamp()
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "fastbptt", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = _jit.package_stamp(str(pkg))
    assert _jit.package_stamp(str(pkg)) == before
    f = pkg / "cpu" / "blas.py"
    f.write_text(f.read_text() + "\n")
    assert _jit.package_stamp(str(pkg)) != before


def _all_dispatchers():
    """Every Numba-compiled function defined in the fastbptt package's modules."""
    import importlib
    import pkgutil

    import fastbptt
    found = {}
    for info in pkgutil.walk_packages(fastbptt.__path__, "fastbptt."):
        if "cuda" in info.name or info.name.endswith("__main__"):
            continue                       # CUDA kernels are not numba.njit dispatchers
        try:
            mod = importlib.import_module(info.name)
        except Exception:
            continue                       # an optional extra that is not installed
        for name, obj in vars(mod).items():
            if isinstance(obj, numba.core.registry.CPUDispatcher) and obj.py_func.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def test_kernels_are_nogil_cached_and_never_cached_parallel():
    """cache=True with parallel=True crashes when the thread count changes (pynndescent)."""
    kernels = _all_dispatchers()
    assert "fastbptt.cpu.steps.forward_steps" in kernels and "fastbptt.cpu.steps.backward_steps" in kernels
    for name, disp in kernels.items():
        opts = disp.targetoptions        # cache=True is not kept here: it swaps in a disk cache
        cached = type(getattr(disp, "_cache", None)).__name__ not in ("NullCache", "NoneType")
        assert not (opts.get("parallel") and cached), f"{name}: cache=True with parallel=True"
        assert opts.get("nogil"), f"{name} holds the GIL (add nogil=True)"
        assert cached or opts.get("parallel"), f"{name} is not cached on disk"


def test_nothing_compiles_at_import():
    proc = run_python("""
        import fastbptt, fastbptt.cpu as c, numba
        n = sum(len(d.signatures) for d in vars(c).values()
                if isinstance(d, numba.core.registry.CPUDispatcher))
        print("compiled", n)
    """)
    assert proc.returncode == 0, explain(proc)
    assert "compiled 0" in proc.stdout
