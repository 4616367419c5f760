"""fastbptt.memory: the estimate against tracemalloc, how peak memory scales, memprofile."""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

import fastbptt
from fastbptt import memory as M
from fastbptt.cli import main as cli_main
from fastbptt.cpu import blas, parallel
from tolerances import ESTIMATE_SMALL_REL


def measured(T, B, H, V, cell="rnn", side_by_side=True, **kw):
    """Peak bytes of one call. A call that splits its batch (fastbptt.cpu.parallel) runs
    its parts side by side, the case the estimate bounds, unless side_by_side is False."""
    params, x, y = M.make_problem(T, B, H, V, seed=1, cell=cell)
    kw["cell"] = cell
    # compile / load kernels first, on the call itself: a shorter one could take another
    # path (truncate=k or checkpoint=s at T <= k, s cuts nothing: full BPTT's fused call)
    fastbptt.loss_and_grad(params, x, y, **kw)
    real = blas.threads_now
    blas.threads_now = (lambda clock=None: blas.NTHREADS) if side_by_side else (lambda clock=None: 1)
    try:
        _, peak, _ = M.measure_peak(lambda: fastbptt.loss_and_grad(params, x, y, **kw))
    finally:
        blas.threads_now = real
    return peak


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_estimate_bounds_a_split_call_run_in_turn(cell, monkeypatch):
    """On a busy machine a split call's parts run one after another: less than the bound."""
    monkeypatch.setattr(blas, "NTHREADS", 2)
    T, B, H, V = 400, 16, 64, 48
    assert parallel.parts_for(T, B, 4 if cell == "lstm" else 1, H, V, V) == 2
    est = M.estimate(T, B, V, H, V, cell=cell)
    assert est.components["batch_split"] > 0
    side = measured(T, B, H, V, cell=cell)
    turn = measured(T, B, H, V, cell=cell, side_by_side=False)
    assert turn <= est.total and abs(est.total - side) <= ESTIMATE_SMALL_REL * side


@pytest.mark.parametrize("kw", [dict(), dict(truncate=8), dict(truncate=32), dict(truncate=128),
                                dict(truncate=(8, 40)), dict(checkpoint="sqrt"), dict(checkpoint=10),
                                dict(truncate=40, checkpoint="sqrt"), dict(truncate=(4, 60), checkpoint=8)],
                         ids=str)
def test_estimate_within_tolerance_at_small_sizes(kw):
    T, B, H, V = 400, 16, 64, 48
    peak = measured(T, B, H, V, **kw)
    est = M.estimate(T, B, V, H, V, **kw)
    fixed = est.total - est.rnn
    assert abs(est.rnn - (peak - fixed)) <= ESTIMATE_SMALL_REL * (peak - fixed), (kw, peak, est)
    assert abs(est.total - peak) <= ESTIMATE_SMALL_REL * peak


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("kw", [dict(), dict(truncate=16), dict(checkpoint="sqrt"),
                                dict(truncate=(4, 40), checkpoint=8)], ids=str)
def test_estimate_counts_the_gated_cells_state_and_gates(cell, kw):
    """The LSTM's (h, c) and four gates, the GRU's three gates and hn, at the same accuracy."""
    T, B, H, V = 300, 16, 64, 48
    peak = measured(T, B, H, V, cell=cell, **kw)
    est = M.estimate(T, B, V, H, V, cell=cell, **kw)
    fixed = est.total - est.rnn
    assert abs(est.rnn - (peak - fixed)) <= ESTIMATE_SMALL_REL * (peak - fixed), (kw, peak, est)
    assert abs(est.total - peak) <= ESTIMATE_SMALL_REL * peak
    assert est.total > M.estimate(T, B, V, H, V, **kw).total      # wider than the Elman cell's


def test_estimate_components_and_errors():
    e = M.estimate(1000, 32, 256, 256, 256)
    assert e.phase and e.total == sum(e.components.values())
    assert e.components["logits"] == 1000 * 32 * 256 * 4            # full BPTT holds [T, B, n_out]
    c = M.estimate(1000, 32, 10_000, 256, 10_000, checkpoint="sqrt")
    assert c.components.get("logits", 0) <= 32 * 32 * 10_000 * 4   # ... checkpointing one segment's
    assert M.estimate(10, 2, 3, 4, 5, dtype=np.float64).total > M.estimate(10, 2, 3, 4, 5).total
    assert "MiB" in str(e)
    with pytest.raises(ValueError, match="truncate"):
        M.estimate(10, 2, 3, 4, 5, truncate=(3, 2))
    with pytest.raises(ValueError, match="checkpoint"):
        M.estimate(10, 2, 3, 4, 5, checkpoint="log")
    with pytest.raises(ValueError, match="n_hidden"):
        M.estimate(10, 2, 3, 0, 5)
    with pytest.raises(ValueError, match="inputs"):
        M.estimate(10, 2, 3, 4, 5, inputs="sparse")


def test_chunked_peak_grows_linearly_in_k():
    T, B, H, V = 512, 8, 64, 64
    ks = np.array([16, 32, 64, 128, 256])
    peaks = np.array([measured(T, B, H, V, truncate=int(k)) for k in ks], dtype=float)
    slope, icpt = np.polyfit(ks, peaks, 1)
    fit = slope * ks + icpt
    r2 = 1 - np.sum((peaks - fit) ** 2) / np.sum((peaks - peaks.mean()) ** 2)
    assert r2 > 0.995, (peaks, r2)
    # the slope is what each step of the window costs: states, logits, head deltas
    per_step = (B * H + B * V + B * H) * 4
    assert 0.85 * per_step <= slope <= 1.15 * per_step, (slope, per_step)


def test_checkpoint_peak_grows_like_sqrt_T():
    B, H, V = 8, 64, 64
    rnn = {}
    for T in (256, 1024):
        est = M.estimate(T, B, V, H, V, checkpoint="sqrt")
        rnn[T] = measured(T, B, H, V, checkpoint="sqrt") - (est.total - est.rnn)
    ratio = rnn[1024] / rnn[256]                               # sqrt(4) = 2; full BPTT: 4
    assert 1.6 < ratio < 2.5, rnn


def test_checkpoint_is_a_tenth_of_full_and_head_is_per_segment():
    T, B, H, V = 1000, 8, 64, 64
    full = measured(T, B, H, V)
    ck = measured(T, B, H, V, checkpoint="sqrt")
    assert ck <= 0.10 * full, (ck, full)
    # a large vocabulary: no [T, B, n_out] logits array with checkpointing
    T, B, H, V = 200, 4, 16, 1000
    logits_all = T * B * V * 4
    assert measured(T, B, H, V) > logits_all
    assert measured(T, B, H, V, checkpoint="sqrt") < 0.2 * logits_all


def test_profile_rows():
    res = M.profile(64, 4, 16, 8, intervals=[1, 4, 64], checkpoints=("sqrt", 5),
                    combined=[(4, "sqrt")])
    rows = {r["setting"]: r for r in res["rows"]}
    assert list(rows) == ["full", "truncate=1", "truncate=4", "checkpoint=sqrt", "checkpoint=5",
                          "truncate=4,checkpoint=sqrt"]
    assert rows["full"]["cosine"] == pytest.approx(1.0) and rows["full"]["rel_error"] == 0.0
    for name in ("checkpoint=sqrt", "checkpoint=5"):
        assert rows[name]["rel_error"] < 1e-5 and rows[name]["cosine"] > 0.99999
    assert rows["truncate=1"]["rel_error_recurrent"] > rows["truncate=4"]["rel_error_recurrent"] > 0
    assert rows["truncate=4,checkpoint=sqrt"]["rel_error"] == pytest.approx(rows["truncate=4"]["rel_error"], rel=1e-3)
    assert all(r["peak_bytes"] > 0 and r["seconds"] > 0 for r in res["rows"])
    assert M.default_intervals(10) == [1, 2, 4, 8, 10]
    cos, rel = M.gradient_deviation({"W": np.ones(3)}, {"W": 2 * np.ones(3)})
    assert cos == pytest.approx(1.0) and rel == pytest.approx(0.5)


def test_memprofile_cli(tmp_path, capsys):
    js, png = tmp_path / "m.json", tmp_path / "m.png"
    plot = importlib.util.find_spec("matplotlib") is not None    # the plot extra is optional
    rc = cli_main(["memprofile", "--T", "32", "--batch", "2", "--hidden", "8", "--vocab", "5",
                   "--intervals", "1,4,32", "--checkpoint", "sqrt,3", "--json", str(js)]
                  + (["--plot", str(png)] if plot else []))
    assert rc == 0
    out = capsys.readouterr().out
    assert "checkpoint=sqrt" in out and "truncate=4" in out and "peak MiB" in out
    res = json.loads(js.read_text())
    assert res["config"]["T"] == 32 and len(res["rows"]) == 5
    if plot:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        pytest.skip("matplotlib is not installed: the JSON was checked, the plot was not")


@pytest.mark.parametrize("argv,msg", [(["--intervals", "1,x"], "--intervals"),
                                      (["--intervals", "0"], "--intervals"),
                                      (["--checkpoint", "log"], "--checkpoint"),
                                      (["--T", "0"], "--T")])
def test_memprofile_cli_errors(argv, msg, capsys):
    assert cli_main(["memprofile", "--T", "8", "--batch", "2", "--hidden", "4", "--vocab", "3"] + argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_memprofile_plot_without_matplotlib(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import matplotlib -> ImportError
    rc = cli_main(["memprofile", "--T", "8", "--batch", "2", "--hidden", "4", "--vocab", "3",
                   "--plot", str(tmp_path / "x.png")])
    assert rc == 2
    assert "matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("kw", [dict(truncate=32), dict(checkpoint="sqrt"), dict(truncate=(8, 40))],
                         ids=str)
def test_estimate_of_a_split_memory_saving_call_with_float_inputs(kw, monkeypatch):
    """The engine's parts read float inputs through views and gather a window's rows at a
    time: the estimate (no input copy, the gathered rows per phase) within tolerance."""
    monkeypatch.setattr(blas, "NTHREADS", 2)
    T, B, I, H, O = 400, 16, 48, 64, 48
    est = M.estimate(T, B, I, H, O, inputs="float", **kw)
    assert "batch_split" in est.components
    rng = np.random.default_rng(1)
    params = fastbptt.init_params(I, H, O, dtype=np.float32, seed=1)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    y = rng.integers(0, O, (T, B))
    real = blas.threads_now
    blas.threads_now = lambda clock=None: blas.NTHREADS
    try:
        fastbptt.loss_and_grad(params, x, y, **kw)      # compile the parts' kernels first
        _, peak, _ = M.measure_peak(lambda: fastbptt.loss_and_grad(params, x, y, **kw))
    finally:
        blas.threads_now = real
    assert abs(est.total - peak) <= ESTIMATE_SMALL_REL * peak, (kw, peak, est)
