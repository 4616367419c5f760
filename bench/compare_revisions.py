"""The performance issue's table for an older revision and the working tree, side by side.

    python bench/compare_revisions.py [--base 50b72ae] [--sizes minchar,small,medium,large]
                                      [--min-time 1.0] [--train-steps 300,1500]
                                      [--json FILE.json] [--markdown FILE.md]

The base revision is checked out with ``git worktree add --detach`` into a temporary folder
(removed afterwards); each tree is measured by subprocesses whose ``PYTHONPATH`` and working
directory point at that tree, with a new, empty ``NUMBA_CACHE_DIR`` of its own. Rows:

* cold / warm first call: ``fastbptt bench --sizes minchar --impls fastbptt`` twice on the
  tree's new cache folder (the first compiles, the second loads from the cache); the first
  call's wall time
* ``loss_and_grad`` per size: ``fastbptt bench --impls fastbptt --no-roofline`` (medians,
  each size in its own process)
* ``fastbptt train`` at its defaults, characters/s: two runs of ``--train-steps`` steps and the
  difference between them, so the first call's compilation or cache load cancels out
* the min-char-rnn adapter against the gist's ``lossFun`` (tests/originals), float64,
  ``OPENBLAS_NUM_THREADS=1``, interleaved calls, medians

Phase by phase the two trees run one after the other (base first), so load changes on a
shared machine hit both; the markdown's last column is the working tree's speed-up over the
base (> 1: faster).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)          # measure this tree's fastbptt, not an installed one
DEFAULT_BASE = "50b72ae"          # round 1 of the performance work

ADAPTER_CHILD = r"""
import json, statistics, sys, time
import numpy as np
sys.path.insert(0, "tests")
from originals import min_char_rnn as o
import fastbptt
from fastbptt import compat
H, T, V = 100, 25, 65
rng = np.random.default_rng(0)
Wxh, Whh, Why = (rng.standard_normal(s) * 0.01 for s in ((H, V), (H, H), (V, H)))
bh, by = np.zeros((H, 1)), np.zeros((V, 1))
args = (list(rng.integers(0, V, T)), list(rng.integers(0, V, T)), np.zeros((H, 1)))
gist, new = o.make_lossfun(Wxh, Whh, Why, bh, by), compat.min_char_rnn(Wxh, Whh, Why, bh, by)
for f in (gist, new, gist, new):
    f(*args)
tg, tn = [], []
start = time.perf_counter()
while len(tg) < 20 or (time.perf_counter() - start < MIN_TIME and len(tg) < 5000):
    for f, acc in ((gist, tg), (new, tn)):
        t0 = time.perf_counter(); f(*args); acc.append(time.perf_counter() - t0)
print(json.dumps(dict(gist_ms=1e3 * statistics.median(tg), adapter_ms=1e3 * statistics.median(tn),
                      fastbptt_file=fastbptt.__file__)))
"""


def _env(tree, cache, extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH", "FASTBPTT_NUM_THREADS")}
    env["PYTHONPATH"] = tree
    env["NUMBA_CACHE_DIR"] = cache
    env.update(extra or {})
    return env


def _run(cmd, tree, cache, timeout, extra=None):
    p = subprocess.run(cmd, cwd=tree, env=_env(tree, cache, extra), capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} in {tree} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout


def _bench(tree, cache, sizes, min_time, timeout):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "b.json")
        _run([sys.executable, "-m", "fastbptt", "bench", "--sizes", ",".join(sizes), "--impls", "fastbptt",
              "--no-roofline", "--min-time", str(min_time), "--json", out], tree, cache, timeout)
        with open(out, encoding="utf-8") as f:
            return {r["size"]: r for r in json.load(f)["rows"] if r["impl"] == "fastbptt"}


def _train_seconds(tree, cache, steps, timeout):
    """(seconds, characters) of a `fastbptt train --steps N` run, from its closing line."""
    out = _run([sys.executable, "-m", "fastbptt", "train", "--steps", str(steps), "--no-save",
                "--no-progress", "--sample-every", "0"], tree, cache, timeout)
    m = re.search(r"done: ([\d,]+) steps? \(([\d,]+) characters?\) in [\d.]+ s, ([\d,]+) chars/s", out)
    if not m:
        raise RuntimeError(f"fastbptt train in {tree}: no closing line in its output:\n{out[-1000:]}")
    chars, cps = int(m.group(2).replace(",", "")), int(m.group(3).replace(",", ""))
    return chars / cps, chars


def _check_tree(tree, cache):
    probe = _run([sys.executable, "-c", "import fastbptt; print(fastbptt.__file__)"], tree, cache, 120)
    if not os.path.realpath(probe.strip()).startswith(os.path.realpath(tree)):
        raise RuntimeError(f"{tree}: imported fastbptt from {probe.strip()}, not the tree")
    return probe.strip()


def measure_trees(trees, sizes, min_time, train_steps, timeout):
    """The issue's figures for each source tree, each on a new Numba cache of its own.

    Phase by phase, the trees one after the other (cold first calls of both, then warm, ...),
    so a change in the machine's load between phases hits both sides alike.
    """
    caches = [tempfile.mkdtemp(prefix="fastbptt_cmp_cache_") for _ in trees]
    res = [dict() for _ in trees]
    both = list(zip(trees, caches, res))
    try:
        for tree, cache, r in both:
            r["fastbptt_file"] = _check_tree(tree, cache)
        for key in ("first_call_cold_s", "first_call_warm_s"):
            for tree, cache, r in both:
                r[key] = _bench(tree, cache, ["minchar"], 0.5, timeout)["minchar"]["first_s"]
        for tree, cache, r in both:
            rows = _bench(tree, cache, sizes, min_time, timeout)
            r["loss_and_grad_ms"] = {s: rows[s]["ms"] for s in sizes if s in rows}
        for tree, cache, r in both:
            (t1, c1), (t2, c2) = (_train_seconds(tree, cache, n, timeout) for n in train_steps)
            r["train_chars_per_s"] = (c2 - c1) / (t2 - t1) if t2 > t1 else float("nan")
        for tree, cache, r in both:
            ad = json.loads(_run([sys.executable, "-c", ADAPTER_CHILD.replace("MIN_TIME", str(min_time))],
                                 tree, cache, timeout, {"OPENBLAS_NUM_THREADS": "1"}).strip().splitlines()[-1])
            r["minchar_gist_ms"], r["minchar_adapter_ms"] = ad["gist_ms"], ad["adapter_ms"]
            r["adapter_vs_gist"] = ad["gist_ms"] / ad["adapter_ms"]
        return res
    finally:
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)


def _git(*args):
    return subprocess.run(["git", "-C", ROOT, *args], check=True, capture_output=True, text=True).stdout.strip()


def compare(base, sizes, min_time, train_steps, timeout):
    base_sha = _git("rev-parse", "--verify", f"{base}^{{commit}}")
    head = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    tmp = tempfile.mkdtemp(prefix="fastbptt_base_")
    tree = os.path.join(tmp, "tree")
    _git("worktree", "add", "--detach", tree, base_sha)
    try:
        old, new = measure_trees([tree, ROOT], sizes, min_time, train_steps, timeout)
    finally:
        _git("worktree", "remove", "--force", tree)
        shutil.rmtree(tmp, ignore_errors=True)
    return dict(base=dict(rev=base, sha=base_sha, **old),
                work=dict(rev="working tree", sha=head, dirty=dirty, **new))


def rows_of(res):
    """(label, base value, work value, unit, higher is better) for the markdown table."""
    b, w = res["base"], res["work"]
    out = [("`fastbptt train` defaults", b["train_chars_per_s"], w["train_chars_per_s"], "chars/s", True)]
    for s in w["loss_and_grad_ms"]:
        if s in b["loss_and_grad_ms"]:
            out.append((f"`loss_and_grad` {s}", b["loss_and_grad_ms"][s], w["loss_and_grad_ms"][s], "ms", False))
    out += [("min-char-rnn adapter", b["minchar_adapter_ms"], w["minchar_adapter_ms"], "ms", False),
            ("adapter / gist speed-up", b["adapter_vs_gist"], w["adapter_vs_gist"], "x", True),
            ("first call, cold cache", b["first_call_cold_s"], w["first_call_cold_s"], "s", False),
            ("first call, warm cache", b["first_call_warm_s"], w["first_call_warm_s"], "s", False)]
    return out


def markdown(res):
    b, w = res["base"], res["work"]
    lines = [f"| what | {b['rev']} ({b['sha'][:7]}) | working tree ({w['sha'][:7]}"
             f"{', modified' if w['dirty'] else ''}) | speed-up |", "|---|---|---|---|"]
    for label, vb, vw, unit, higher in rows_of(res):
        fmt = (lambda v: f"{v / 1e3:,.0f} k") if unit == "chars/s" else (lambda v: f"{v:.3g}")
        su = (vw / vb if higher else vb / vw) if vb and vw else float("nan")
        if unit == "x":
            su_s = ""
        else:
            su_s = f"{su:.2f}x"
        lines.append(f"| {label} | {fmt(vb)} {unit} | {fmt(vw)} {unit} | {su_s} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=DEFAULT_BASE, help=f"revision to compare with (default {DEFAULT_BASE})")
    ap.add_argument("--sizes", default="minchar,small,medium,large")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per size")
    ap.add_argument("--train-steps", default="300,1500", help="the two `train --steps` runs, N1,N2 (N1 < N2)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per subprocess")
    ap.add_argument("--json", metavar="FILE.json")
    ap.add_argument("--markdown", metavar="FILE.md")
    args = ap.parse_args(argv)
    from fastbptt.bench import SIZES
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not sizes or any(s not in SIZES for s in sizes):
        ap.error(f"--sizes: expected a comma-separated subset of {', '.join(SIZES)}; got {args.sizes!r}")
    try:
        steps = [int(v) for v in args.train_steps.split(",")]
    except ValueError:
        steps = []
    if len(steps) != 2 or not 1 <= steps[0] < steps[1]:
        ap.error(f"--train-steps: expected N1,N2 with 1 <= N1 < N2; got {args.train_steps!r}")
    if not args.min_time > 0:
        ap.error(f"--min-time must be > 0; got {args.min_time}")
    from fastbptt.cli import measurement_metadata
    meta = measurement_metadata("python bench/compare_revisions.py " + shlex.join(sys.argv[1:] if argv is None else argv))
    res = compare(args.base, sizes, args.min_time, steps, args.timeout)
    res["meta"] = measurement_metadata(meta["command"], meta)
    md = markdown(res)
    print(md)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
