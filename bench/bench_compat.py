"""Each compat adapter against the original's own per-step NumPy loop; the README's figure.

Run (both sides single-threaded BLAS, so neither oversubscribes a shared machine)::

    OPENBLAS_NUM_THREADS=1 python bench/bench_compat.py --json docs/figures/adapters.json
    python docs/figures/readme_figures.py          # re-renders the README table from the JSON

"original" is the original's algorithm as the original code runs it: the copies in
tests/originals/ keep each script's per-step loop, dict/list caches and ``np.dot`` calls.
"fastbptt" is the drop-in from :mod:`fastbptt.compat`. Each case runs at the original's own
default sizes and at a realistic larger size, float64. The two sides are interleaved round by
round (alternating which goes first) and summarised by medians; the outputs are compared
once before timing, so a broken adapter is never timed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from originals import coursera as o_coursera          # noqa: E402
from originals import cs231n as o_cs231n              # noqa: E402
from originals import min_char_rnn as o_mcr           # noqa: E402
from originals import wildml as o_wildml              # noqa: E402

from fastbptt import compat                           # noqa: E402

OUT = ROOT / "docs" / "figures" / "adapters.json"


def _mcr(H, T, V):
    rng = np.random.default_rng(0)
    Wxh, Whh, Why = (rng.standard_normal(s) * 0.01 for s in ((H, V), (H, H), (V, H)))
    ns = o_mcr.script_namespace(Wxh, Whh, Why, np.zeros((H, 1)), np.zeros((V, 1)))
    args = (list(rng.integers(0, V, T)), list(rng.integers(0, V, T)), np.zeros((H, 1)))
    new = compat.min_char_rnn(ns)
    return (lambda: ns["lossFun"](*args)), (lambda: new(*args))


def _cs231n(cell, N, T, D, H):
    rng = np.random.default_rng(0)
    G = 4 if cell == "lstm" else 1
    x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    Wx, Wh = rng.standard_normal((D, G * H)) / np.sqrt(D), rng.standard_normal((H, G * H)) / np.sqrt(H)
    b, dh = np.zeros(G * H), rng.standard_normal((N, T, H))

    def run(mod):
        fwd, bwd = getattr(mod, f"{cell}_forward"), getattr(mod, f"{cell}_backward")
        return lambda: (lambda h, cache: (h,) + tuple(bwd(dh, cache)))(*fwd(x, h0, Wx, Wh, b))
    return run(o_cs231n), run(compat.cs231n)


def _wildml(H, vocab, T, k):
    rng = np.random.default_rng(0)
    U = rng.uniform(-1, 1, (H, vocab)) / np.sqrt(vocab)
    V = rng.uniform(-1, 1, (vocab, H)) / np.sqrt(H)
    W = rng.uniform(-1, 1, (H, H)) / np.sqrt(H)
    x, y = list(rng.integers(0, vocab, T)), list(rng.integers(0, vocab, T))
    return (lambda: o_wildml.bptt(x, y, U, V, W, k)), (lambda: compat.wildml.bptt(x, y, U, V, W, k))


def _coursera(cell, n_x, m, T, n_a, n_y):
    rng = np.random.default_rng(0)
    x, a0 = rng.standard_normal((n_x, m, T)), rng.standard_normal((n_a, m)) * 0.5
    if cell == "rnn":
        p = {"Wax": rng.standard_normal((n_a, n_x)) / np.sqrt(n_x),
             "Waa": rng.standard_normal((n_a, n_a)) / np.sqrt(n_a),
             "Wya": rng.standard_normal((n_y, n_a)), "ba": np.zeros((n_a, 1)), "by": np.zeros((n_y, 1))}
    else:
        p = {f"W{g}": rng.standard_normal((n_a, n_a + n_x)) / np.sqrt(n_a + n_x) for g in "fico"}
        p.update({f"b{g}": np.zeros((n_a, 1)) for g in "fico"})
        p.update(Wy=rng.standard_normal((n_y, n_a)), by=np.zeros((n_y, 1)))
    da = rng.standard_normal((n_a, m, T))

    def run(mod):
        fwd, bwd = getattr(mod, f"{cell}_forward"), getattr(mod, f"{cell}_backward")
        return lambda: (lambda out: out[:-1] + (bwd(da, out[-1]),))(fwd(x, a0, p))
    return run(o_coursera), run(compat.coursera)


def _karpathy(n, b, input_size, d):
    from originals import karpathy_lstm as o_k
    np.random.seed(0)
    W = o_k.LSTM.init(input_size, d)
    X, dH = np.random.randn(n, b, input_size), np.random.randn(n, b, d)

    def run(L):
        return lambda: (lambda out: out[:3] + L.backward(dH, out[3]))(L.forward(X, W))
    return run(o_k.LSTM), run(compat.karpathy_lstm.LSTM)


# (adapter, what is timed, size label, sizes, factory)
CASES = [
    ("min-char-rnn", "lossFun", "gist default", dict(H=100, T=25, V=65), lambda s: _mcr(**s)),
    ("min-char-rnn", "lossFun", "larger", dict(H=512, T=100, V=65), lambda s: _mcr(**s)),
    ("CS231n RNN", "rnn_forward + rnn_backward", "captioning default", dict(N=25, T=16, D=256, H=512),
     lambda s: _cs231n("rnn", **s)),
    ("CS231n RNN", "rnn_forward + rnn_backward", "larger", dict(N=128, T=16, D=256, H=512),
     lambda s: _cs231n("rnn", **s)),
    ("CS231n LSTM", "lstm_forward + lstm_backward", "captioning default", dict(N=25, T=16, D=256, H=512),
     lambda s: _cs231n("lstm", **s)),
    ("CS231n LSTM", "lstm_forward + lstm_backward", "larger", dict(N=128, T=16, D=256, H=512),
     lambda s: _cs231n("lstm", **s)),
    ("WildML", "bptt", "tutorial default", dict(H=100, vocab=8000, T=15, k=4), lambda s: _wildml(**s)),
    ("WildML", "bptt", "larger", dict(H=100, vocab=8000, T=50, k=4), lambda s: _wildml(**s)),
    ("Coursera RNN", "rnn_forward + rnn_backward", "notebook", dict(n_x=3, m=10, T=4, n_a=5, n_y=2),
     lambda s: _coursera("rnn", **s)),
    ("Coursera RNN", "rnn_forward + rnn_backward", "larger", dict(n_x=27, m=64, T=50, n_a=100, n_y=27),
     lambda s: _coursera("rnn", **s)),
    ("Coursera LSTM", "lstm_forward + lstm_backward", "notebook", dict(n_x=3, m=10, T=7, n_a=5, n_y=2),
     lambda s: _coursera("lstm", **s)),
    ("Coursera LSTM", "lstm_forward + lstm_backward", "larger", dict(n_x=90, m=60, T=30, n_a=64, n_y=90),
     lambda s: _coursera("lstm", **s)),
    ("Karpathy LSTM", "LSTM.forward + LSTM.backward", "gist checks", dict(n=5, b=3, input_size=10, d=4),
     lambda s: _karpathy(**s)),
    ("Karpathy LSTM", "LSTM.forward + LSTM.backward", "larger", dict(n=50, b=32, input_size=65, d=256),
     lambda s: _karpathy(**s)),
]


def _flat(out):
    if isinstance(out, dict):
        return [np.asarray(out[k], float) for k in sorted(out)]
    if isinstance(out, (tuple, list)):
        return [a for o in out for a in _flat(o)]
    return [np.asarray(out, float)]


def _agree(orig, new):
    a, b = _flat(orig()), _flat(new())
    assert len(a) == len(b), "the adapter returns a different number of arrays"
    for u, v in zip(a, b):
        np.testing.assert_allclose(v, u, rtol=1e-7, atol=1e-9)


def measure(orig, new, min_time, max_rounds):
    """Interleaved rounds until each side ran min_time seconds (at least 5 rounds)."""
    t_o, t_n = [], []
    for f in (orig, new):
        f()                                      # compile / first-touch outside the timing
    r = 0
    while r < max_rounds and (r < 5 or min(sum(t_o), sum(t_n)) < min_time):
        pair = ((orig, t_o), (new, t_n)) if r % 2 == 0 else ((new, t_n), (orig, t_o))
        for f, acc in pair:
            t0 = time.perf_counter()
            f()
            acc.append(time.perf_counter() - t0)
        r += 1
    ratios = [a / b for a, b in zip(t_o, t_n)]
    return {"rounds": r,
            "original_ms": 1e3 * statistics.median(t_o), "original_min_ms": 1e3 * min(t_o),
            "fastbptt_ms": 1e3 * statistics.median(t_n), "fastbptt_min_ms": 1e3 * min(t_n),
            "speedup": statistics.median(t_o) / statistics.median(t_n),
            "speedup_q1_q3": [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))]}


def run(min_time, max_rounds, only):
    """Every case (or those named in ``only``): ``{"dtype", "cases": [...]}``."""
    res = {"dtype": "float64", "cases": []}
    for name, what, label, sizes, make in CASES:
        if only and not any(o.lower() in name.lower() for o in only):
            continue
        orig, new = make(sizes)
        _agree(orig, new)
        load = os.getloadavg()[0]
        m = measure(orig, new, min_time, max_rounds)
        res["cases"].append({"adapter": name, "timed": what, "size": label, "sizes": sizes, **m,
                             "loadavg": round((load + os.getloadavg()[0]) / 2, 2),
                             "utc": time.strftime("%H:%M", time.gmtime())})
        print(f"{name:14s} {label:18s} original {m['original_ms']:9.3f} ms  fastbptt "
              f"{m['fastbptt_ms']:8.3f} ms  {m['speedup']:6.1f}x  ({m['rounds']} rounds)", flush=True)
    return res


def main(argv=None):
    from fastbptt.cli import measurement_metadata
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds per side per case (default 1)")
    ap.add_argument("--max-rounds", type=int, default=300)
    ap.add_argument("--only", nargs="*", help="adapters whose name contains one of these words")
    ap.add_argument("--json", type=Path, default=OUT, help="output (default docs/figures/adapters.json)")
    a = ap.parse_args(argv)
    command = " ".join(["python bench/bench_compat.py", *(sys.argv[1:] if argv is None else argv)])
    started = measurement_metadata(command)
    res = run(a.min_time, a.max_rounds, a.only)
    res["meta"] = measurement_metadata(command, started)
    if a.only and a.json.exists():       # a partial rerun replaces only its own cases
        old = json.loads(a.json.read_text())
        new = {(c["adapter"], c["size"]): c for c in res["cases"]}
        res["cases"] = [new.pop((c["adapter"], c["size"]), c) for c in old.get("cases", [])] + list(new.values())
        order = [(n, lbl) for n, _, lbl, _, _ in CASES]
        res["cases"].sort(key=lambda c: order.index((c["adapter"], c["size"])))
        res["meta"] = dict(old["meta"], partial_reruns=old["meta"].get("partial_reruns", []) + [res["meta"]])
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
