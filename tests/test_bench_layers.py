"""`fastbptt bench --layers N --bidirectional`: flops per layer, the peers compute the same
model, and the CLI path records the layout (tiny size, short timings)."""
import json

import numpy as np
import pytest

from fastbptt import bench, cli


def test_flops_count_each_layer_and_direction():
    T, B, n_in, H, n_out = 3, 2, 5, 4, 6
    assert bench.flops(T, B, n_in, H, n_out, "lstm", 1, False) == bench.flops(T, B, n_in, H, n_out, "lstm")
    G, D = 4, 2
    want = 2 * T * B * H * (D * G * (2 * n_in + 3 * H) + D * G * (2 * D * H + 3 * H) + 3 * D * n_out)
    assert bench.flops(T, B, n_in, H, n_out, "lstm", 2, True) == want


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_peers_compute_the_same_stacked_model(cell):
    """The loss of every peer at the same params (float64): the table compares like with like."""
    fns = [bench._fn_fastbptt, bench._fn_reference]
    for mod, fn in (("torch", bench._fn_torch), ("jax", bench._fn_jax)):
        if bench._available(mod):
            fns.append(fn)
    losses = []
    for fn in fns:
        r = fn("minchar", "float64", "cpu", cell, 2, True)()
        losses.append(r[0] if isinstance(r, tuple) else r)
    np.testing.assert_allclose(losses, losses[0], rtol=1e-10)


def test_bench_cli_layers_records_the_layout(tmp_path, capsys):
    out = tmp_path / "b.json"
    code = cli.main(["bench", "--sizes", "minchar", "--impls", "fastbptt,reference", "--min-time",
                     "0.05", "--no-roofline", "--layers", "2", "--bidirectional", "--cell", "gru",
                     "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    res = json.loads(out.read_text())
    assert res["num_layers"] == 2 and res["bidirectional"] is True and res["cell"] == "gru"
    rows = {r["impl"]: r for r in res["rows"]}
    assert set(rows) == {"fastbptt", "reference"}
    row = rows["fastbptt"]
    assert row["num_layers"] == 2 and row["bidirectional"] is True
    assert row["gflops"] == pytest.approx(bench.flops(*bench.SIZES["minchar"][:5], "gru", 2, True)
                                          / (row["ms"] * 1e-3) / 1e9, rel=1e-6)
    assert "2 layers; bidirectional" in printed


def test_bad_layers_is_one_line_error(capsys):
    assert cli.main(["bench", "--layers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--layers" in err[0]


def test_bench_layers_renderer():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "figures"))
    import readme_figures as rf

    def run(cell, ms_f, ms_t):
        rows = [dict(size="medium", impl="fastbptt", ms=ms_f, gflops=12.0, speedup_vs_torch=ms_t / ms_f),
                dict(size="medium", impl="torch", ms=ms_t, gflops=8.0, speedup_vs_torch=1.0)]
        return dict(rows=rows, cell=cell, num_layers=2, bidirectional=True, dtype="float32", rounds=3,
                    flops_formula="f", meta=dict(date="d", command=f"fastbptt bench --cell {cell}"))
    md = rf.RENDERERS["bench_layers"](run("lstm", 100.0, 150.0), run("gru", 80.0, 100.0))
    assert "2 stacked bidirectional layers" in md
    assert "| LSTM | medium (100, 64, 256, 512, 256) | **100** | 12 | 150 | **1.50** |" in md
    assert "| GRU |" in md and "fastbptt bench --cell gru" in md
    with pytest.raises(ValueError, match="same --layers"):
        rf.RENDERERS["bench_layers"](run("lstm", 1.0, 1.0), dict(run("gru", 1.0, 1.0), num_layers=3))
