"""Packaging: one version, a wheel that holds the whole package, an sdist that can run the tests.

CI (``.ci/run``) also installs the wheel into a fresh environment and runs it from outside
the source tree; this file checks what can be checked without installing.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import fastbptt

ROOT = Path(__file__).resolve().parent.parent


def test_version_has_one_source():
    toml = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = re.search(r"^\[project\]\n(.*?)^\[", toml, re.M | re.S).group(1)
    assert re.search(r'^dynamic = \["version"\]', project, re.M), "the version must come from the package"
    assert not re.search(r"^version\s*=", project, re.M), "pyproject.toml must not repeat the version"
    assert 'version = { attr = "fastbptt.__version__" }' in toml
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", fastbptt.__version__)
    assert f"## [{fastbptt.__version__}]" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_test_extra_is_light():
    """The README's test command must not pull torch or the CUDA toolkit wheels."""
    toml = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    test = re.search(r"^test = \[(.*?)\]", toml, re.M | re.S).group(1)
    for heavy in ("torch", "numba-cuda", "jax", "nvidia"):
        assert heavy not in test, f"the test extra installs {heavy}"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert '"torch==2.13.0"' in ci and "numba-cuda[cu13]" in ci      # CI still runs those tests


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    pytest.importorskip("build", reason="needs the build package (pip install build)")
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: setuptools is already here, and a build needs no network
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
                        "--outdir", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return next(out.glob("*.whl")), next(out.glob("*.tar.gz"))


def test_wheel_holds_every_module_the_version_and_the_command(dists):
    whl, _ = dists
    assert f"fastbptt-{fastbptt.__version__}-" in whl.name
    names = set(zipfile.ZipFile(whl).namelist())
    src = {p.relative_to(ROOT).as_posix() for p in (ROOT / "fastbptt").rglob("*.py")}
    missing = sorted(src - names)
    assert not missing, f"not in the wheel: {missing}"
    assert "fastbptt/py.typed" in names
    meta = zipfile.ZipFile(whl).read(f"fastbptt-{fastbptt.__version__}.dist-info/METADATA").decode()
    assert f"Version: {fastbptt.__version__}" in meta
    entry = zipfile.ZipFile(whl).read(f"fastbptt-{fastbptt.__version__}.dist-info/entry_points.txt").decode()
    assert "fastbptt = fastbptt.cli:main" in entry
    assert not any(n.startswith(("tests/", "docs/", "bench/")) for n in names)


def test_sdist_can_run_the_tests_and_build_the_docs(dists):
    _, sdist = dists
    top = f"fastbptt-{fastbptt.__version__}/"
    names = {n[len(top):] for n in tarfile.open(sdist).getnames() if n.startswith(top)}
    for need in ("CHANGELOG.md", "README.md", "tests/tolerances.py", "tests/cases.py", "docs/conf.py",
                 "docs/figures/readme_figures.py", "fastbptt/py.typed"):
        assert need in names, f"not in the sdist: {need}"
    assert not any("__pycache__" in n or n.startswith("docs/_build") for n in names)
