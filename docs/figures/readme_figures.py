"""README figures: every measured table in README.md is rendered from a committed JSON file.

In README.md a figure sits between two markers that name its renderer and its JSON file(s)::

    <!-- figure: memprofile docs/figures/memprofile.json -->
    ...the Markdown this module renders from the JSON...
    <!-- /figure -->

The JSON is written by the command that measures the figure (``--json``), and records the
command, the date and the machine's load average (``meta``). ``python
docs/figures/readme_figures.py`` re-renders every figure in README.md in place;
``--check`` only compares (exit status 1 on a difference), which is what
``tests/test_readme_figures.py`` does. To add a figure, see docs/readme_figures.rst.
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- figure: (\S+) ([^>]+?) -->\n)(.*?)(<!-- /figure -->)", re.S)
RENDERERS = {}


def renderer(name):
    """Register ``fn(*jsons) -> str`` (Markdown) under ``name``, the marker's first word."""
    def register(fn):
        RENDERERS[name] = fn
        return fn
    return register


# --------------------------------------------------------------------------- formatting
def ms(seconds):
    """Milliseconds with three significant digits (at least one decimal below 10 ms)."""
    v = seconds * 1e3
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def mib(nbytes):
    return f"{nbytes / 2**20:.2f} MiB"


def provenance(meta):
    """One line: when, where, under what load and by which command a figure was measured."""
    load = meta.get("load_average_1_5_15")
    end = meta.get("load_average_at_end")
    where = f"{meta.get('cpu', '?')}, {meta.get('cores', '?')} cores"
    if load:
        where += f", load average {load[0]:.1f}" + (f" → {end[0]:.1f}" if end else "")
    return f"<sub>Measured {meta['date']} ({where}) by `{meta['command']}`.</sub>"


# --------------------------------------------------------------------------- renderers
def _call_name(row, T):
    name = row["setting"]
    ck = row.get("checkpoint")
    if name == "full":
        return "full BPTT"
    if ck == "sqrt" and row.get("truncate") is None:
        return f'`checkpoint="sqrt"` (s = {math.ceil(math.sqrt(T))})'
    return "`" + name.replace("checkpoint=sqrt", 'checkpoint="sqrt"').replace(",", ", ") + "`"


def _deviation(cos, rel):
    if rel == 0:
        return "1 / 0"
    if cos > 0.99999:
        return f"{cos:.6f} / " + re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{rel:.0e}")
    return f"{cos:.3f} / {rel:.2f}"


@renderer("memprofile")
def memprofile(js):
    """``fastbptt memprofile --json``: peak, estimate, gradient deviation and time per setting."""
    c, rows = js["config"], js["rows"]
    cell = c.get("cell", "rnn")
    out = [f"{'Elman RNN' if cell == 'rnn' else cell.upper()}, "
           f"T = {c['T']}, B = {c['B']}, H = {c['n_hidden']}, one-hot input ids and cross-entropy over "
           f"a vocabulary of {c['vocab']} (n_in = n_out = {c['vocab']}), {c['dtype']}, backend "
           f"`{c['backend']}`" + (" (times in the next table):" if cell == "rnn" else ":"),
           "",
           "| call | peak memory | estimate | gradient vs full BPTT (U, W, b): cosine / rel. error |",
           "|---|---:|---:|---|"]
    for r in rows:
        est = mib(r["estimate_bytes"]) if r.get("estimate_bytes") else "–"
        out.append(f"| {_call_name(r, c['T'])} | {mib(r['peak_bytes'])} | {est} | "
                   f"{_deviation(r['cosine_recurrent'], r['rel_error_recurrent'])} |")
    est_rows = [r for r in rows if r.get("estimate_bytes")]
    worst = max((abs(r["estimate_bytes"] / r["peak_bytes"] - 1) for r in est_rows), default=0)
    arr = c["T"] * c["B"] * c["n_hidden"] * np.dtype(c["dtype"]).itemsize
    if cell == "rnn":
        what = (f"Full BPTT's {mib(rows[0]['peak_bytes'])} are mostly three `[T, B, {c['n_hidden']}]` "
                f"{c['dtype']} arrays of {mib(arr)} each: states, logits, deltas. ")
    else:
        K, G, D = {"lstm": (6, 4, 4), "gru": (5, 3, 4)}[cell]
        what = (f"Full BPTT ({mib(rows[0]['peak_bytes'])}) keeps per step a state row of {K}H "
                f"(state and activated gates), the {G}H input projection and, once the logits are "
                f"freed, {D}H deltas. ")
    out += ["", what + f"The estimate is within {100 * worst:.1f}% of the measured peak in every "
            "row.", "", provenance(js["meta"])]
    return "\n".join(out)


@renderer("bench_memory")
def bench_memory(js):
    """``python bench/bench_memory.py --json``: one-hot and float inputs, memory and time vs full."""
    c = js["config"]
    out = ["| inputs | call | peak memory | % of full | time vs full |",
           "|---|---|---:|---:|---:|"]
    fulls = []
    for r in js["rows"]:
        inputs = "one-hot ids" if r["inputs"] == "onehot" else f"float `[{c['T']}, {c['B']}, {c['n']}]`"
        if r["setting"] == "full BPTT":
            fulls.append(f"{inputs}: {mib(r['peak_bytes'])}, {ms(r['seconds'])} ms")
            continue
        call = "`" + r["setting"].replace("'", '"') + "`"
        out.append(f"| {inputs} | {call} | {mib(r['peak_bytes'])} | {100 * r['peak_vs_full']:.1f}% | "
                   f"{r['time_vs_full']:.2f}× |")
    out += ["", f"Full BPTT ({c['dtype']}, T = {c['T']}, B = {c['B']}, H = {c['H']}, best of "
            f"{c['repeat']}): " + "; ".join(fulls) + ".", "", provenance(js["meta"])]
    return "\n".join(out)


def _f(v, fmt):
    return "–" if v is None else format(v, fmt)


def _blas_note(rows):
    """Which BLAS the fastbptt rows ran on (``fastbptt bench`` records it per row)."""
    blas = next((r.get("blas") for r in rows if r["impl"] == "fastbptt" and r.get("blas")), None)
    note = f" fastbptt's BLAS: {blas}." if blas else ""
    if any(r["impl"] == "fastbptt-openblas" for r in rows):
        note += (" `fastbptt-openblas` is the same call with every product on OpenBLAS "
                 "(`FASTBPTT_BLAS=openblas`): fastbptt without the `mkl` package.")
    return note


@renderer("bench")
def bench(js):
    """``fastbptt bench --json``: time, GFLOP/s, % of the roofline and speed-ups per size."""
    from fastbptt.bench import SIZES
    roof, v = js["roofline"], js["versions"]
    libs = ", ".join(f"{'NumPy/OpenBLAS' if k == 'numpy' else 'PyTorch/MKL' if k == 'torch' else k} "
                     f"{g:.0f}" for k, g in roof["per_lib"].items())
    peers = [p for p in ("torch", "jax", "reference") if any(r["impl"] == p for r in js["rows"])]
    cell = {"lstm": "LSTM", "gru": "GRU"}.get(js.get("cell", "rnn"), "Elman RNN")
    out = [f"{cell}: one forward + backward, {js['dtype']}, time-major, cross-entropy (`sum`); medians of "
           f"{js['rounds']} interleaved rounds. GFLOP/s count `{js['flops_formula'].replace('*', '·')}`; "
           f"the roofline is the best {roof['sgemm']} sgemm measured in the same run ({libs} GFLOP/s). "
           + ", ".join(f"{k} {v[k]}" for k in ("numpy", "numba", "scipy", "torch", "jax") if k in v) + "."
           + _blas_note(js["rows"]),
           "",
           "| size (T, B, n_in, H, n_out) | impl | ms | GFLOP/s | % roofline | "
           + " | ".join(f"× {p}" for p in peers) + " |",
           "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in peers) + " |"]
    last = None
    for r in js["rows"]:
        T, B, n_in, H, n_out, ids = SIZES[r["size"]]
        size = "" if r["size"] == last else f"{r['size']} ({T}, {B}, {n_in}{' ids' if ids else ''}, {H}, {n_out})"
        last = r["size"]
        bold = r["impl"] == "fastbptt"
        b = (lambda s: f"**{s}**") if bold else (lambda s: s)
        ups = [_f(r.get(f"speedup_vs_{p}"), ".2f") for p in peers]
        ups = [b(u) if bold and p != "reference" else u for u, p in zip(ups, peers)]
        out.append(f"| {size} | {b(r['impl'])} | {b(ms(r['ms'] / 1e3))} | {r['gflops']:.3g} | "
                   f"{_f(r['pct_roofline'], '.1f')} | " + " | ".join(ups) + " |")
    meta = js.get("meta") or dict(date=js["time"], cpu=js["machine"]["cpu"], cores=js["machine"]["cores"],
                                  command=js["command"])
    out += ["", provenance(meta)]
    return "\n".join(out)


@renderer("bench_layers")
def bench_layers(*runs):
    """``fastbptt bench --layers N [--bidirectional] --json``, one run per cell: fastbptt
    against PyTorch's ``nn.RNN``/``nn.LSTM``/``nn.GRU(num_layers=N, bidirectional=...)`` (built
    by ``fastbptt.to_torch`` from the same params) and JAX, per cell and size."""
    from fastbptt.bench import SIZES
    first = runs[0]
    L, bidi = first.get("num_layers", 1), first.get("bidirectional", False)
    peers = [p for p in ("torch", "jax") if any(r["impl"] == p for js in runs for r in js["rows"])]
    names = {"rnn": "Elman RNN", "lstm": "LSTM", "gru": "GRU"}
    out = [f"{L} stacked{' bidirectional' if bidi else ''} layers: one forward + backward, "
           f"{first['dtype']}, cross-entropy (`sum`); medians of {first['rounds']} interleaved rounds. "
           f"GFLOP/s count `{first['flops_formula'].replace('*', '·')}`."
           + _blas_note([r for js in runs for r in js["rows"]]),
           "",
           "| cell | size (T, B, n_in, H, n_out) | fastbptt ms | GFLOP/s | "
           + " | ".join(f"{p} ms | × {p}" for p in peers) + " |",
           "| --- | --- | ---: | ---: | " + " | ".join("---: | ---:" for _ in peers) + " |"]
    for js in runs:
        if (js.get("num_layers", 1), js.get("bidirectional", False)) != (L, bidi):
            raise ValueError("bench_layers: every run must have the same --layers and --bidirectional")
        by = {(r["size"], r["impl"]): r for r in js["rows"]}
        for size in dict.fromkeys(r["size"] for r in js["rows"]):
            f = by.get((size, "fastbptt"))
            if f is None:
                continue
            T, B, n_in, H, n_out, ids = SIZES[size]
            cells = [f"{ms(by[(size, p)]['ms'] / 1e3)} | **{_f(f.get(f'speedup_vs_{p}'), '.2f')}**"
                     if (size, p) in by else "– | –" for p in peers]
            out.append(f"| {names.get(js.get('cell', 'rnn'), js.get('cell'))} | {size} ({T}, {B}, "
                       f"{n_in}{' ids' if ids else ''}, {H}, {n_out}) | **{ms(f['ms'] / 1e3)}** | "
                       f"{f['gflops']:.3g} | " + " | ".join(cells) + " |")
    out.append("")
    for js in runs:
        meta = js.get("meta") or dict(date=js["time"], cpu=js["machine"]["cpu"],
                                      cores=js["machine"]["cores"], command=js["command"])
        out.append(provenance(meta))
    return "\n".join(out)


@renderer("bench_dtype")
def bench_dtype(js64, js32):
    """A second ``fastbptt bench --json`` run in another dtype, against the first run's times."""
    size = js64["rows"][0]["size"]
    t = {r["impl"]: r["ms"] for r in js64["rows"] if r["size"] == size}
    t32 = {r["impl"]: r["ms"] for r in js32["rows"] if r["size"] == size}
    s = f"{js64['dtype']} at {size}: {ms(t['fastbptt'] / 1e3)} ms"
    if "fastbptt" in t32:
        s += f", {t['fastbptt'] / t32['fastbptt']:.2f}× the {js32['dtype']} time"
    if "torch" in t:
        r = t["torch"] / t["fastbptt"]
        s += (f", {r:.2f}× PyTorch's speed in {js64['dtype']} "
              f"({ms(t['torch'] / 1e3)} ms)")
    meta = js64.get("meta") or dict(date=js64["time"], cpu=js64["machine"]["cpu"],
                                    cores=js64["machine"]["cores"], command=js64["command"])
    return s + ".\n\n" + provenance(meta)


@renderer("first_call")
def first_call(cold, warm):
    """Two ``fastbptt bench --json`` runs sharing a new ``NUMBA_CACHE_DIR``: compile, then load."""
    c, w = cold["rows"][0], warm["rows"][0]
    load = [js["meta"].get("load_average_1_5_15") for js in (cold, warm)]
    at = f", at load average {load[0][0]:.1f} and {load[1][0]:.1f}" if all(load) else ""
    return (f"First call in a fresh process ({c['size']} size, `{c['impl']}`): {c['first_s']:.1f} s with an "
            f"empty Numba cache (everything compiles), {w['first_s']:.2f} s with the cache warm{at}; "
            "`import fastbptt` compiles nothing (`test_nothing_compiles_at_import`).\n\n"
            + provenance(cold["meta"]) + "\n" + provenance(warm["meta"]))


@renderer("adapters")
def adapters(js):
    """``python bench/bench_compat.py``: each adapter against the original's per-step loop."""
    out = ["| adapter | timed | sizes | original | fastbptt | speed-up |", "|---|---|---|---|---|---|"]
    for c in js["cases"]:
        sizes = ", ".join(f"{k} {v}" for k, v in c["sizes"].items())
        q1, q3 = c["speedup_q1_q3"]
        out.append(f"| {c['adapter']} | `{c['timed']}` | {c['size']}: {sizes} | "
                   f"{ms(c['original_ms'] / 1e3)} ms | {ms(c['fastbptt_ms'] / 1e3)} ms | "
                   f"**{c['speedup']:.1f}×** ({q1:.1f}–{q3:.1f}) |")
    rounds = [c["rounds"] for c in js["cases"]]
    out += ["", f"{js['dtype']}, medians of {min(rounds)}–{max(rounds)} interleaved rounds; in brackets "
            "the quartiles of the per-round ratio.", "", provenance(js["meta"])]
    return "\n".join(out)


@renderer("train")
def train(js):
    """``fastbptt train --json``: the loss at a few steps, speed and the final sample."""
    losses, c = js["losses"], js["config"]
    n = len(losses)
    marks = sorted({1} | {round(n * i / 4) for i in range(1, 5)})
    cells = [f"{losses[0]:.3f}"] + [f"{sum(losses[max(0, m - 50):m]) / len(losses[max(0, m - 50):m]):.3f}"
                                    for m in marks[1:]]
    cells[-1] = f"**{cells[-1]}**"
    chars = js["last_step"] * c["batch"] * c["bptt"]
    final = float(cells[-1].strip("*"))
    out = ["| | " + " | ".join(f"step {m}" if m == 1 else str(m) for m in marks) + " |",
           "|---|" + "---|" * len(marks),
           "| loss, nats/char (mean of the last 50 steps; step 1: that step) | " + " | ".join(cells) + " |",
           "",
           f"{losses[0]:.2f} is about a uniform guess over the {js['vocab_size']} characters "
           f"(ln {js['vocab_size']} = {math.log(js['vocab_size']):.2f}); {final:.2f} nats = "
           f"{final / math.log(2):.2f} bits per character. {n} steps ({chars / 1e6:.1f} M characters) took "
           f"{js['train_seconds']:.1f} s of training ({js['chars_per_second'] / 1e3:,.0f} k characters/s), "
           f"{js['total_seconds']:.1f} s for the whole command. The run is deterministic on a given "
           "machine: the same losses and samples every time (another CPU's BLAS kernels round "
           "differently, so the last digits can differ there). Its final sample (temperature "
           f"{c['temperature']:g}):",
           "",
           "```",
           js["final_sample"].strip("\n"),
           "```",
           "",
           provenance(js["meta"])]
    return "\n".join(out)


@renderer("train_vs_torch")
def train_vs_torch(js):
    """``python bench/bench_train.py --json``: ``fastbptt train``'s step against PyTorch's."""
    c = js["config"]
    ob = any("fastbptt-openblas" in r for r in js["rows"])
    out = ["| cell | fastbptt | " + ("fastbptt, OpenBLAS only | " if ob else "")
           + "PyTorch, 1 thread | PyTorch, 2 threads | fastbptt / best PyTorch |",
           "|---|---:|" + ("---:|" if ob else "") + "---:|---:|---|"]
    names = {"rnn": "Elman (`nn.RNN`)", "lstm": "LSTM (`nn.LSTM`)", "gru": "GRU (`nn.GRU`)"}
    for r in js["rows"]:
        t = [f"{r[f'torch-{n}t']['chars_per_s'] / 1e3:,.0f} k" if f"torch-{n}t" in r else "–" for n in (1, 2)]
        o = (f"{r['fastbptt-openblas']['chars_per_s'] / 1e3:,.0f} k | " if "fastbptt-openblas" in r
             else "– | " if ob else "")
        out.append(f"| {names.get(r['cell'], r['cell'])} | {r['fastbptt']['chars_per_s'] / 1e3:,.0f} k | "
                   f"{o}{t[0]} | {t[1]} | **{r['ratio']:.2f}×** |")
    rounds = js["rows"][0]["rounds"] if js["rows"] else 0
    blas = js["rows"][0].get("blas") if js["rows"] else None
    text = (f"Characters per second of one training step at `fastbptt train`'s defaults (batch {c['batch']}, "
            f"bptt {c['bptt']}, hidden {c['hidden']}, {c['vocab']} characters, Adam, clip {c['clip']:g}, "
            f"{c['dtype']}); PyTorch runs the same model and loop (one-hot inputs, `nn.Linear` head, state "
            f"carried with `detach()`, `clip_grad_norm_`, `torch.optim.Adam`). Medians of {rounds} "
            "interleaved rounds in one process.")
    if blas:
        text += f" fastbptt's BLAS: {blas}."
    if ob:
        text += (" *OpenBLAS only* is the same step in a child process with `FASTBPTT_BLAS=openblas`, "
                 "in the same rounds: what fastbptt does without the `mkl` package.")
    shares = [r for r in js["rows"] if "fastbptt_breakdown_share" in r]
    if shares:
        text += " Where fastbptt's step goes: " + "; ".join(
            f"{r['cell']}: " + ", ".join(f"`{k}` {100 * v:.0f}%" for k, v in r["fastbptt_breakdown_share"].items())
            for r in shares) + "."
    return "\n".join(out + ["", text, "", provenance(js["meta"])])


@renderer("busy")
def busy(js):
    """``python bench/bench_busy.py --json``: default threads against 1 and 2 next to a neighbour."""
    what = {"none": "none", "spin": "one busy-loop process", "blas2": "a 2-thread BLAS matmul loop"}
    out = ["| neighbour | size | default | `FASTBPTT_NUM_THREADS=1` | `=2` | default / best |",
           "|---|---|---:|---:|---:|---|"]
    for r in js["rows"]:
        m = r["ms"]
        out.append(f"| {what.get(r['neighbour'], r['neighbour'])} | {r['size']} | {ms(m['default'] / 1e3)} ms | "
                   f"{ms(m['1'] / 1e3)} ms | {ms(m['2'] / 1e3)} ms | {r['default_over_best']:.2f}× |")
    worst = max((r["default_over_best"] for r in js["rows"]), default=float("nan"))
    out += ["", f"One `loss_and_grad` (float32, medians; each setting in its own process, interleaved). "
            f"Worst default / best: {worst:.2f}× (target ≤ 1.2×).", "", provenance(js["meta"])]
    return "\n".join(out)


@renderer("paths")
def paths_figure(js):
    """``python bench/bench_paths.py --json``: every path against the fused full-BPTT call."""
    others = [p for p in js["paths"] if p != "full"]
    label = {"masked": "mask", "truncate_k": f"`truncate={js['k']}`",
             "truncate_1K": f"`truncate=(1, {js['K'] + 1})`", "checkpoint": "`checkpoint=\"sqrt\"`"}
    out = ["| cell | size | full BPTT | " + " | ".join(label.get(p, p) for p in others) + " |",
           "|---|---|---:|" + "---:|" * len(others)]
    for r in js["rows"]:
        out.append(f"| {r['cell']} | {r['size']} | {ms(r['ms']['full'] / 1e3)} ms | "
                   + " | ".join(f"{ms(r['ms'][p] / 1e3)} ms ({r['ratio'][p]:.2f}×)" for p in others) + " |")
    out += ["", f"{js['dtype']}, medians of interleaved rounds; in brackets the ratio to the full-BPTT call "
            "(target ≤ 1.25×; checkpointing: plus one forward pass).", "", provenance(js["meta"])]
    return "\n".join(out)


@renderer("revisions")
def revisions(js):
    """``python bench/compare_revisions.py --json``: an older revision and this tree, side by side."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("compare_revisions", ROOT / "bench" / "compare_revisions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return "\n".join([mod.markdown(js), "", "Each tree in its own processes on an empty Numba cache, "
                      "phase by phase (base first); `loss_and_grad` float32 medians; the adapter "
                      "row float64 against the gist's `lossFun`, one BLAS thread.", "",
                      provenance(js["meta"])])


# --------------------------------------------------------------------------- README
def render(name, paths):
    """The Markdown of figure ``name`` from the JSON files at ``paths`` (relative to the repo)."""
    if name not in RENDERERS:
        raise KeyError(f"no renderer {name!r}; known: {', '.join(sorted(RENDERERS))}")
    jsons = [json.loads((ROOT / p).read_text(encoding="utf-8")) for p in paths]
    return RENDERERS[name](*jsons).rstrip("\n") + "\n"


def figures(text):
    """(name, paths, current Markdown, rendered Markdown) for every figure block in ``text``."""
    return [(m.group(2), m.group(3).split(), m.group(4), render(m.group(2), m.group(3).split()))
            for m in BLOCK.finditer(text)]


def update(text):
    """``text`` with every figure block re-rendered from its JSON."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group(2), m.group(3).split()) + m.group(5), text)


@renderer("distributed")
def distributed(js):
    """``python bench/bench_distributed.py --json``: fastbptt.distributed against one process."""
    out = ["| measurement | single process | distributed | result (medians) | target |",
           "|---|---:|---:|---|---|"]
    targets = {"tiny": "overhead ≤ 5 ms", "large": "efficiency ≥ 85%"}
    for name, r in js["calls"].items():
        T, B, n_in, H, n_out = r["size"]
        what = f"{name} ({T}, {B}, {n_in}{' ids' if r['ids'] else ''}, {H}, {n_out}): one `loss_and_grad`"
        if name == "tiny":
            result = f"overhead {r['overhead_ms']:.1f} ms"
        else:
            result = (f"efficiency {100 * r['efficiency']:.0f}% (speed-up {r['speedup']:.2f}×); slowest "
                      f"shard {r['slowest_shard_ms']:.0f} ms, {r['outside_compute_ms']:.0f} ms outside compute")
        out.append(f"| {what} | {ms(r['single_ms'] / 1e3)} ms | {ms(r['distributed_ms'] / 1e3)} ms "
                   f"({r['workers']} workers) | {result} | {targets.get(name, '')} |")
    c = js.get("ceiling")
    if c:
        out.append(f"| no Dask: {c['size']}, the batch in {c['workers']} processes at once (`multiprocessing`) "
                   f"| {ms(c['whole_batch_ms'] / 1e3)} ms | {ms(c['pieces_at_once_ms'] / 1e3)} ms | "
                   f"efficiency {100 * c['efficiency']:.0f}%: this machine's ceiling | |")
    out.append(f"| one empty Dask task (`submit(...).result()`) | | {ms(js['round_trip_ms'] / 1e3)} ms | "
               "Dask's own latency, per dependent hop | |")
    t = js.get("train")
    if t:
        out.append(f"| `fastbptt train` ({t['steps']} steps, default model) | "
                   f"{t['single_chars_per_s'] / 1e3:.0f} k chars/s | {t['workers_chars_per_s'] / 1e3:.0f} k "
                   f"chars/s (`--workers {t['workers']}`) | {t['ratio']:.2f}×; {t['wait_s']:.1f} of "
                   f"{t['train_s']:.1f} s waiting on the cluster | |")
    g = js["grad_bytes"]
    out += ["", "Gradient per step, float32: "
            + "; ".join(f"{k.split(', float32')[0]} {n / 2**10:.0f} KiB" if n < 2**20 else
                        f"{k.split(', float32')[0]} {n / 2**20:.1f} MiB" for k, n in g.items()) + ".",
            "", provenance(js["meta"])]
    return "\n".join(out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text = README.read_text(encoding="utf-8")
    new = update(text)
    if "--check" in argv:
        stale = [f"{n} ({' '.join(p)})" for n, p, cur, ren in figures(text) if cur != ren]
        print("README figures up to date" if not stale else "stale: " + ", ".join(stale))
        return 1 if stale else 0
    if new != text:
        README.write_text(new, encoding="utf-8")
        print(f"re-rendered {len(figures(new))} figures in {README.name}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
