"""Property tests over the public API, the adapters and the CLI.

The properties that reach compiled code live in ``tests/robust_fuzz_props.py`` and run in a
child pytest, so a segfault fails ``test_fuzz_in_a_child_process`` instead of killing the
run. Example counts come from a Hypothesis profile: ``fastbptt-ci`` by default (small,
derandomised); the ``slow`` test runs ``fastbptt-full`` (600 examples per property), as does
``HYPOTHESIS_PROFILE=fastbptt-full python -m pytest tests/robust_fuzz_props.py``.

The CLI's argument errors are a short list, so they are all tested here, in-process.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from robust_util import ROOT, explain, require_slow

PROPS = ROOT / "tests" / "robust_fuzz_props.py"


# --------------------------------------------------------------------------- the CLI
# (subcommand, cheap valid options so an accidentally accepted bad value ends quickly)
CLI_BASE = {
    "train": ["--steps", "1", "--hidden", "4", "--batch", "2", "--bptt", "3", "--no-save",
              "--no-progress", "--sample-every", "0"],
    "memprofile": ["--T", "4", "--batch", "1", "--hidden", "2", "--vocab", "3", "--intervals", "1,4"],
    "bench": ["--sizes", "minchar", "--impls", "reference", "--min-time", "0.01", "--no-roofline"],
}
CLI_BAD = {
    "train": [("--steps", "abc"), ("--steps", "1.5"), ("--steps", "-1"), ("--hidden", "0"),
              ("--hidden", "-4"), ("--batch", "0"), ("--bptt", "0"), ("--bptt", "-2"),
              ("--optimizer", "sgd"), ("--lr", "abc"), ("--lr", "-1"), ("--lr", "nan"), ("--clip", "-1"),
              ("--dtype", "float16"), ("--seed", "abc"), ("--text", "/nonexistent/corpus.txt"),
              ("--resume", "/nonexistent/ckpt.npz"), ("--save-every", "-1"), ("--sample-len", "-1"),
              ("--temperature", "0"), ("--temperature", "-1"), ("--temperature", "nan"),
              ("--clip", "nan"), ("--threads", "0"), ("--bogus", None)],
    "memprofile": [("--T", "0"), ("--T", "-1"), ("--T", "abc"), ("--batch", "0"), ("--hidden", "0"),
                   ("--vocab", "0"), ("--intervals", "0"), ("--intervals", "a,b"), ("--intervals", "3,-1"),
                   ("--checkpoint", "cbrt"), ("--checkpoint", "0"), ("--dtype", "float16"),
                   ("--backend", "gpu"), ("--repeat", "0"), ("--bogus", None)],
    "bench": [("--sizes", "huge"), ("--dtype", "f16"), ("--backend", "tpu"), ("--impls", "tensorflow"),
              ("--min-time", "-1"), ("--min-time", "nan"), ("--rounds", "0"), ("--timeout", "-1"),
              ("--timeout", "nan"), ("--bogus", None)],
}


CLI_CASES = [(cmd, opt, val, k) for cmd, bad in CLI_BAD.items() for k, (opt, val) in enumerate(bad)]


@pytest.mark.parametrize("cmd, opt, val, k", CLI_CASES,
                         ids=[f"{c}{o}={v}" for c, o, v, _ in CLI_CASES])
def test_cli_argument_errors(cmd, opt, val, k):
    """Every bad option value (the list is small: all of it, at varying positions among valid
    options): exit status 2 and one line on stderr, naming the option, never a traceback."""
    import contextlib
    import io
    from fastbptt import cli
    base = CLI_BASE[cmd]
    pairs, i = [], 0
    while i < len(base):                       # option/value pairs, without the one under test
        n = 2 if i + 1 < len(base) and not base[i + 1].startswith("--") else 1
        if base[i] != opt:
            pairs.append(base[i:i + n])
        i += n
    pairs.insert(k % (len(pairs) + 1), [opt] if val is None else [opt, val])
    argv = [cmd] + [a for pair in pairs for a in pair]
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = cli.main(argv)
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    assert rc == 2, f"{argv}: exit {rc}, stderr {err.getvalue()[-800:]!r}"
    assert len(lines) == 1 and lines[0].startswith("error:"), f"{argv}: {err.getvalue()[-800:]!r}"
    assert opt.lstrip("-").replace("-", "_") in lines[0].replace("-", "_"), f"{argv}: {lines[0]}"


# --------------------------------------------------------------------------- the parent side
def _run_child(profile, timeout):
    env = dict(os.environ, HYPOTHESIS_PROFILE=profile)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-m", "", str(PROPS)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_fuzz_in_a_child_process():
    """Every property of robust_fuzz_props.py, in a child process: a crash is a failure."""
    proc = _run_child("fastbptt-ci", timeout=900)
    assert proc.returncode == 0, explain(proc)
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-2000:]


@pytest.mark.slow
def test_fuzz_full_run(request):
    """The same properties with the fastbptt-full profile (600 examples each)."""
    require_slow(request)
    proc = _run_child("fastbptt-full", timeout=3600)
    assert proc.returncode == 0, explain(proc)
