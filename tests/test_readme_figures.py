"""README figures cannot drift: each is re-rendered from its committed JSON and compared.

The mechanism is ``docs/figures/readme_figures.py`` (how to add a figure:
``docs/readme_figures.rst``). Besides the comparison, this file checks that every JSON under
``docs/figures/`` is shown somewhere, that no measured quantity sits in a README table outside
a figure block, and that the memory estimate holds the README's claim at the README's sizes.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from tolerances import ESTIMATE_README_REL

ROOT = Path(__file__).resolve().parent.parent
FIGDIR = ROOT / "docs" / "figures"
_spec = importlib.util.spec_from_file_location("readme_figures", FIGDIR / "readme_figures.py")
rf = importlib.util.module_from_spec(_spec)
sys.modules["readme_figures"] = rf
_spec.loader.exec_module(rf)

README = (ROOT / "README.md").read_text(encoding="utf-8")
FIGURES = rf.figures(README)


def test_there_are_figures():
    names = {name for name, *_ in FIGURES}
    assert {"memprofile", "bench_memory", "bench", "adapters", "train"} <= names, names


@pytest.mark.parametrize("name, paths, current, rendered", FIGURES,
                         ids=[f"{n}:{' '.join(p)}" for n, p, *_ in FIGURES])
def test_readme_figure_matches_its_json(name, paths, current, rendered):
    assert current == rendered, (
        f"README figure {name} ({' '.join(paths)}) differs from its JSON: run "
        "`python docs/figures/readme_figures.py` after re-measuring, never edit it by hand")


def test_every_figure_json_is_shown_and_says_how_it_was_measured():
    import json
    used = {p for _, paths, *_ in FIGURES for p in paths}
    on_disk = {p.relative_to(ROOT).as_posix() for p in FIGDIR.glob("*.json")}
    assert on_disk <= used, f"JSON without a README figure: {sorted(on_disk - used)}"
    assert used <= on_disk, f"figures without their JSON: {sorted(used - on_disk)}"
    for p in used:
        js = json.loads((ROOT / p).read_text(encoding="utf-8"))
        meta = js.get("meta") or {"command": js.get("command"), "date": js.get("time")}
        assert meta.get("command") and meta.get("date"), f"{p}: no command/date in its metadata"


# a time, a size, a rate or a speed-up ("1.3×", not a shape like "4×4")
MEASURED = re.compile(r"\d\s*(ms|µs|MiB|GiB|GFLOP)|\d×(?!\d)|\d\s+s\b")


def test_no_measured_table_outside_a_figure_block():
    outside = rf.BLOCK.sub("", README)
    outside = re.sub(r"```.*?```", "", outside, flags=re.S)          # code blocks are not tables
    rows = [ln for ln in outside.splitlines() if ln.lstrip().startswith("|") and MEASURED.search(ln)]
    assert not rows, "measured figures outside a figure block:\n" + "\n".join(rows)


def test_a_renderer_change_or_a_hand_edit_is_caught():
    name, paths, current, rendered = FIGURES[0]
    edited = README.replace(current, current.replace("MiB", "MB", 1), 1)
    assert any(c != r for _, _, c, r in rf.figures(edited))
    assert rf.update(edited) == rf.update(README)


def test_memory_estimate_holds_the_readme_claim(monkeypatch):
    """The memprofile figure states the estimate's accuracy; check it live at those sizes.

    A full-BPTT call at that size splits its batch across the cores (fastbptt.cpu.parallel);
    its parts run side by side, the case the estimate describes, as on an idle machine.
    """
    import fastbptt
    from fastbptt import memory as M
    from fastbptt.cpu import blas
    monkeypatch.setattr(blas, "threads_now", lambda clock=None: blas.NTHREADS)
    js = __import__("json").loads((FIGDIR / "memprofile.json").read_text(encoding="utf-8"))
    c = js["config"]
    T, B, H, V = c["T"], c["B"], c["n_hidden"], c["vocab"]
    params, x, y = M.make_problem(T, B, H, V, seed=0)
    for kw in (dict(truncate=8), dict(truncate=25), dict(checkpoint="sqrt"), dict()):
        fastbptt.loss_and_grad(params, x, y, **kw)              # compile outside the trace
        _, peak, _ = M.measure_peak(lambda: fastbptt.loss_and_grad(params, x, y, **kw))
        est = M.estimate(T, B, V, H, V, **kw).total
        assert abs(est / peak - 1) <= ESTIMATE_README_REL, (kw, peak, est)
    # and the JSON the README shows says the same
    worst = max(abs(r["estimate_bytes"] / r["peak_bytes"] - 1) for r in js["rows"] if r["estimate_bytes"])
    assert worst <= ESTIMATE_README_REL
    assert np.isfinite(worst)
