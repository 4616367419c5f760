"""The measuring scripts in bench/ (train vs PyTorch, busy machine, paths, revisions).

Cheap checks run by default (argument errors, the README renderers on their JSON); the
scripts' own tiny runs are marked slow (``-m slow``): they compile kernels and, for the
train comparison, need PyTorch. Nothing here is timed: a timing is never asserted.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


bench_train = _load("bench/bench_train.py", "bench_train_script")
bench_busy = _load("bench/bench_busy.py", "bench_busy_script")
bench_paths = _load("bench/bench_paths.py", "bench_paths_script")
compare = _load("bench/compare_revisions.py", "compare_revisions_script")
rf = _load("docs/figures/readme_figures.py", "readme_figures_for_bench")

META = dict(command="python bench/x.py", date="2026-12-06 20:00 UTC", cpu="cpu", cores=2,
            load_average_1_5_15=[1.0, 1.0, 1.0])


@pytest.mark.parametrize("mod, argv, word", [
    (bench_train, ["--cells", "rnn,elman"], "--cells"),
    (bench_train, ["--rounds", "0"], "--rounds"),
    (bench_busy, ["--neighbours", "spin,fan"], "--neighbours"),
    (bench_busy, ["--sizes", "huge"], "--sizes"),
    (bench_paths, ["--paths", "full,teleport"], "--paths"),
    (bench_paths, ["--K", "0"], "--K"),
    (compare, ["--train-steps", "50,10"], "--train-steps"),
    (compare, ["--sizes", "tiny"], "--sizes"),
])
def test_bad_arguments_name_the_option(mod, argv, word, capsys):
    with pytest.raises(SystemExit) as exc:
        mod.main(argv)
    assert exc.value.code == 2
    assert word in capsys.readouterr().err


def test_paths_kwargs():
    assert bench_paths.path_kwargs("full", 100, 25, 8) == {}
    assert bench_paths.path_kwargs("truncate_k", 10, 25, 8) == {"truncate": 10}
    assert bench_paths.path_kwargs("truncate_1K", 100, 25, 8) == {"truncate": (1, 9)}
    assert bench_paths.path_kwargs("checkpoint", 100, 25, 8) == {"checkpoint": "sqrt"}
    with pytest.raises(ValueError, match="path"):
        bench_paths.path_kwargs("nope", 100, 25, 8)


def _train_js():
    row = dict(cell="rnn", rounds=3, ratio=2.0, torch_best="torch-2t",
               fastbptt=dict(chars_per_s=400e3), **{"torch-1t": dict(chars_per_s=150e3),
                                                     "torch-2t": dict(chars_per_s=200e3)},
               fastbptt_breakdown_share={"loss_and_grad": 0.9, "clip": 0.02, "optimizer": 0.08})
    cfg = dict(batch=32, bptt=32, hidden=128, vocab=96, clip=5.0, dtype="float32")
    return dict(meta=META, config=cfg, rows=[row])


def test_render_train_vs_torch():
    md = rf.RENDERERS["train_vs_torch"](_train_js())
    assert "| Elman (`nn.RNN`) | 400 k | 150 k | 200 k | **2.00×** |" in md
    assert "`loss_and_grad` 90%" in md and "Measured 2026-12-06" in md


def test_render_busy_and_paths():
    busy = dict(meta=META, rows=[dict(neighbour="spin", size="small", ms={"default": 12.0, "1": 10.0, "2": 30.0},
                                      default_over_best=1.2)])
    md = rf.RENDERERS["busy"](busy)
    assert "| one busy-loop process | small | 12.0 ms | 10.0 ms | 30.0 ms | 1.20× |" in md
    paths = dict(meta=META, dtype="float32", k=25, K=8, paths=["full", "masked", "truncate_1K"],
                 rows=[dict(cell="gru", size="small", ms={"full": 10.0, "masked": 11.0, "truncate_1K": 20.0},
                            ratio={"full": 1.0, "masked": 1.1, "truncate_1K": 2.0})])
    md = rf.RENDERERS["paths"](paths)
    assert "`truncate=(1, 9)`" in md and "| gru | small | 10.0 ms | 11.0 ms (1.10×) | 20.0 ms (2.00×) |" in md


def test_compare_markdown():
    side = dict(train_chars_per_s=300e3, loss_and_grad_ms={"small": 8.0}, minchar_adapter_ms=0.2,
                adapter_vs_gist=4.0, first_call_cold_s=10.0, first_call_warm_s=1.0)
    res = dict(base=dict(rev="50b72ae", sha="a" * 40, **side),
               work=dict(rev="working tree", sha="b" * 40, dirty=False,
                         **dict(side, loss_and_grad_ms={"small": 4.0}, first_call_cold_s=5.0)))
    md = compare.markdown(res)
    assert "| `loss_and_grad` small | 8 ms | 4 ms | 2.00x |" in md
    assert "| first call, cold cache | 10 s | 5 s | 2.00x |" in md
    assert "| `fastbptt train` defaults | 300 k chars/s | 300 k chars/s | 1.00x |" in md


# --------------------------------------------------------------------------- tiny real runs
def _script(name, *argv):
    """Run bench/NAME as a user does (its own process, this tree first on the path)."""
    import os
    import subprocess
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, str(ROOT / "bench" / name), *argv], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


@pytest.mark.slow
def test_bench_train_tiny_run(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "t.json"
    _script("bench_train.py", "--cells", "rnn", "--rounds", "1", "--steps", "2", "--warmup", "1",
            "--max-chars", "20000", "--breakdown", "--json", str(out))
    js = json.loads(out.read_text())
    r = js["rows"][0]
    best = max(r["torch-1t"]["chars_per_s"], r["torch-2t"]["chars_per_s"])
    assert r["ratio"] == pytest.approx(r["fastbptt"]["chars_per_s"] / best)
    assert js["config"]["vocab"] == r["vocab"] > 2
    assert "python bench/bench_train.py --cells rnn" in js["meta"]["command"]
    assert set(r["fastbptt_breakdown_share"]) == {"loss_and_grad", "clip", "optimizer"}
    rf.RENDERERS["train_vs_torch"](js)


@pytest.mark.slow
def test_bench_paths_tiny_run(tmp_path):
    out = tmp_path / "p.json"
    _script("bench_paths.py", "--cells", "lstm", "--sizes", "minchar", "--rounds", "1",
            "--min-time", "0.01", "--json", str(out))
    js = json.loads(out.read_text())
    assert js["rows"][0]["ratio"]["full"] == 1.0 and set(js["rows"][0]["ms"]) == set(bench_paths.PATHS)
    rf.RENDERERS["paths"](js)


@pytest.mark.slow
def test_bench_busy_tiny_run(tmp_path):
    out = tmp_path / "b.json"
    _script("bench_busy.py", "--sizes", "minchar", "--neighbours", "none,spin", "--rounds", "1",
            "--min-time", "0.01", "--json", str(out))
    js = json.loads(out.read_text())
    assert [r["neighbour"] for r in js["rows"]] == ["none", "spin"]
    rf.RENDERERS["busy"](js)


bench_products = _load("bench/bench_products.py", "bench_products_script")


@pytest.mark.parametrize("argv, word", [(["--cell", "elman"], "--cell"), (["--layout", "both"], "--layout"),
                                        (["--seconds", "0"], "--seconds")])
def test_products_bad_arguments_name_the_option(argv, word, capsys):
    with pytest.raises(SystemExit) as exc:
        bench_products.main(argv)
    assert exc.value.code == 2
    assert word in capsys.readouterr().err


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("size", ["small", "medium"])
def test_products_are_the_calls_products(cell, size):
    """The listed products add up to the bench's flop count: the fused call's exactly (per
    core, times the cores), the stacked direction's plus the upper layer's δ U, which the
    bench's formula leaves out."""
    from fastbptt.bench import SIZES, flops
    T, B, I, H, O = SIZES[size][:5]

    def total(rows, part=None):
        return sum(2 * m * k * n * c for _, (m, k, n, _, _), c, p in rows if part in (None, p))
    fused = bench_products.products(cell, size, "fused", cores=2)
    assert 2 * total(fused) == flops(T, B, I, H, O, cell=cell)
    stacked = bench_products.products(cell, size, "stacked", cores=2)
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    both = 2 * total(stacked, "call") + 2 * total(stacked, "head")   # two directions, two blocks
    assert both == flops(T, B, I, H, O, cell=cell, layers=2, bidirectional=True) + 2 * 2 * T * B * G * H * 2 * H
