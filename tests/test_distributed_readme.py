"""The README's Dask table is the one bench/bench_distributed.py prints from its stored JSON."""
import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_distributed", ROOT / "bench" / "bench_distributed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_dask_table_matches_the_json():
    res = json.loads((ROOT / "bench" / "results" / "distributed.json").read_text())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- table:dask -->\n(.*?)\n<!-- /table:dask -->", readme, re.S).group(1)
    assert table == _bench().format_table(res)
    # the prose quotes the gradient sizes of the stored run
    sizes = res["grad_bytes"]
    assert f"{sizes['train default (vocab 96, hidden 128), float32'] / 1024:.0f} KiB" in readme
    assert f"{sizes['large (1024, 1024, 1024), float32'] / 2 ** 20:.1f} MiB" in readme
