"""CLI option fuzzing: any combination of option values either runs or is refused in one line.

The contract of every subcommand: exit status 0, or exit status 2 with exactly one line
``error: ...`` on stderr and no traceback. Hypothesis draws several options at once from
values chosen to break parsers (signs, zero, huge, inf/nan, floats for ints, empty, text).
The work behind a valid command line is replaced by a stub, so the property checks argument
handling, not training or benchmarking (those have their own tests).
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from fastbptt import bench, cli, memory, train  # noqa: E402

TOKENS = ["0", "1", "2", "3", "-1", "-0", "17", "1.5", "1e3", "inf", "-inf", "nan", "", " ", "abc",
          "0x10", "99999999999999999999", "float16", "sqrt", "none", "1,2", "a,b", ",", "3,-1",
          "cpu", "cuda", "float64", "adagrad", "latin-1", "/nonexistent/x", "."]
TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40

OPTIONS = {
    "train": ["--steps", "--hidden", "--batch", "--bptt", "--optimizer", "--lr", "--clip", "--dtype",
              "--seed", "--save-every", "--sample-every", "--sample-len", "--temperature", "--threads",
              "--encoding", "--save", "--resume", "--text", "--plot"],
    "memprofile": ["--T", "--batch", "--hidden", "--vocab", "--intervals", "--checkpoint", "--dtype",
                   "--backend", "--repeat", "--seed", "--json"],
    "bench": ["--sizes", "--dtype", "--backend", "--impls", "--min-time", "--rounds", "--timeout",
              "--json"],
    "": ["--version", "--bogus"],
}
FLAGS = {"--no-save", "--no-progress", "--no-roofline", "--version", "--bogus"}


@pytest.fixture
def stubs(monkeypatch, tmp_path):
    """Cheap stand-ins for the work a valid command line starts."""
    def fake_step(state, data, cfg):
        return train.State(state.params, state.opt, state.h, state.step + 1, state.pos,
                           state.losses[:state.step] + [1.0])
    monkeypatch.setattr(train, "train_step", fake_step)
    monkeypatch.setattr(train, "sample", lambda *a, **k: "")
    monkeypatch.setattr(train, "plot_losses", lambda *a, **k: None)
    monkeypatch.setattr(memory, "profile", lambda *a, **k: dict(config={}, rows=[]))
    fake = dict(machine=dict(cpu="x", cores=1), dtype="float32", roofline=dict(gflops=None, sgemm="-",
                per_lib={}), rows=[], notes=[])
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text(TEXT)
    return tmp_path


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


# a real command line cannot hold NUL; surrogates can (undecodable bytes, surrogateescape)
@st.composite
def command_lines(draw):
    cmd = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [cmd] if cmd else []
    if cmd == "train":                      # small, fast defaults that the drawn options override
        argv += ["--text", "t.txt", "--steps", "2", "--hidden", "4", "--batch", "2", "--bptt", "3",
                 "--no-progress", "--no-save"]
    for opt in draw(st.lists(st.sampled_from(OPTIONS[cmd]), min_size=1, max_size=4)):
        argv.append(opt)
        if opt not in FLAGS:
            argv.append(draw(st.sampled_from(TOKENS) | st.text(st.characters(blacklist_characters="\x00"), max_size=6)))
    return argv


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=command_lines())
def test_every_command_line_runs_or_is_one_error_line(stubs, argv):
    code, out, err = run_cli(argv)
    assert "Traceback" not in err, (argv, err)
    if code == 0:
        return
    lines = err.strip().splitlines()
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)


@pytest.mark.parametrize("argv,words", [
    (["bench", "--timeout", "inf"], ["--timeout", "inf"]),
    (["bench", "--min-time", "inf"], ["--min-time"]),
    (["bench", "--json", "/nonexistent/x.json"], ["--json", "does not exist"]),
    (["bench", "--plot", "/nonexistent/x.png"], ["--plot", "does not exist"]),
    (["memprofile", "--seed", "-1"], ["--seed"]),
    (["memprofile", "--json", "/nonexistent/x.json"], ["--json", "does not exist"]),
    (["train", "--seed", "-1"], ["--seed"]),
])
def test_errors_that_used_to_escape(stubs, argv, words):
    code, _, err = run_cli(argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], lines[0]


def test_memprofile_cuda_without_a_gpu_is_one_line(stubs):
    try:
        from fastbptt import cuda
        ok, _ = cuda.available()
    except ImportError:
        ok = False
    if ok:
        pytest.skip("a CUDA GPU is available here")
    code, _, err = run_cli(["memprofile", "--backend", "cuda", "--T", "4"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--backend cuda" in lines[0], err


def test_bench_lists_each_impl_and_size_once():
    assert bench._parse_list("impls", "torch,reference,torch, reference", bench.IMPLS) == ["torch", "reference"]
    assert bench._parse_list("sizes", "small,small", tuple(bench.SIZES)) == ["small"]


def test_bench_plot_has_axis_labels(tmp_path, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot", reason="the plot needs matplotlib")
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    res = dict(dtype="float32", machine=dict(cores=2), roofline=dict(gflops=100.0),
               rows=[dict(size="small", impl=i, gflops=g) for i, g in (("fastbptt", 70.0), ("torch", 40.0))])
    bench.plot(res, str(tmp_path / "b.png"))
    ax = figs[0].axes[0]
    assert "size" in ax.get_xlabel() and "GFLOP/s" in ax.get_ylabel()
    assert np.isclose(ax.get_lines()[0].get_ydata()[0], 100.0)          # the roofline is drawn
