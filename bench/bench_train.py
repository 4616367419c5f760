"""``fastbptt train``'s step against the same model and loop written in PyTorch.

    python bench/bench_train.py [--cells rnn,lstm,gru] [--rounds 5] [--steps 100]
                                [--json docs/figures/train_vs_torch.json]

The fastbptt side is the real step of ``fastbptt train`` (:func:`fastbptt.train.train_step`:
one ``loss_and_grad`` interval through :class:`fastbptt.stream.TBPTTStream`, global-norm
clipping, Adam) at the command's defaults: ``--batch 32 --bptt 32 --hidden 128``, the
built-in corpus (its vocabulary, ~96 characters), Adam lr 2e-3, clip 5, float32, BLAS
limited to one thread as ``train --threads 1`` does.

The PyTorch side is the same model and loop: ``nn.RNN`` (tanh) / ``nn.LSTM`` / ``nn.GRU``
on one-hot inputs + ``nn.Linear``, ``cross_entropy`` (mean), the state carried from one
interval to the next with ``detach()``, ``clip_grad_norm_(5)``, ``torch.optim.Adam``. It runs
at 1 and at 2 threads (``torch.set_num_threads``), and its best is the peer.

Both run in one process, in interleaved rounds (fastbptt, torch 1 thread, torch 2 threads,
then again), so a change in the machine's load hits all of them. When the optional ``mkl``
package is installed (the ``train`` extra brings it on x86-64 Linux), fastbptt's one-thread
products run on MKL; a child process then runs the same step with ``FASTBPTT_BLAS=openblas``
in the same rounds (``fastbptt-openblas``: what fastbptt does without MKL). Each round times
``--steps`` consecutive steps after a warm-up, and the table reports the median over rounds
in characters per second and the ratio fastbptt / best PyTorch. ``--breakdown`` adds where
fastbptt's step goes (``loss_and_grad``, clipping, the optimizer), timed separately.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree's fastbptt
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/_cli.py, also when loaded by path
from _cli import finish, start  # noqa: E402

import numpy as np  # noqa: E402

from fastbptt import api  # noqa: E402
from fastbptt import train as tr  # noqa: E402
from fastbptt.stream import TBPTTStream  # noqa: E402

CELLS = ("rnn", "lstm", "gru")
TORCH_THREADS = (1, 2)


def corpus_streams(batch, bptt, max_chars=None):
    """(data [L, batch] int64, vocab) of the built-in corpus, as ``fastbptt train`` cuts it."""
    text, _ = tr.load_corpus(None)
    vocab = "".join(sorted(set(text)))            # the vocabulary of the whole corpus
    if max_chars:
        text = text[:max_chars]
    lut = {ch: i for i, ch in enumerate(vocab)}
    ids = np.fromiter((lut[ch] for ch in text), dtype=np.int64, count=len(text))
    return tr.make_streams(ids, batch, bptt), vocab


def fastbptt_runner(cell, data, V, cfg, seed=0):
    """step(): one ``fastbptt train`` step on a state kept here (as ``train.main`` builds it)."""
    dtype = np.dtype(cfg["dtype"])
    params = api.init_params(V, cfg["hidden"], V, cell=cell, dtype=dtype, seed=seed)
    params["V"] *= dtype.type(0.1)                # as train.main: the first loss ~ ln(vocab)
    h = tr._zero_state(cell, cfg["batch"], cfg["hidden"], dtype)
    box = [tr.State(params, tr.new_opt_state(cfg["optimizer"], params),
                    h[0] if len(h) == 1 else h, 0, 0, [])]
    cfg = dict(cfg, cell=cell)

    def step():
        box[0] = tr.train_step(box[0], data, cfg)
        return box[0].losses[-1]

    def breakdown(n):
        """Median seconds of loss_and_grad, clipping and the optimizer over n steps."""
        parts = {"loss_and_grad": [], "clip": [], "optimizer": []}
        for _ in range(n):
            s = box[0]
            stream = TBPTTStream(data, cfg["bptt"], h0=s.h, pos=s.pos, drop_last=True,
                                 reduction="mean", cell=cell)
            if stream.done():
                stream.reset(None)
            t0 = time.perf_counter()
            loss, grads, h_last = stream.step(s.params)
            t1 = time.perf_counter()
            g, _ = tr.clip_global_norm(grads, cfg["clip"])
            t2 = time.perf_counter()
            p, o = tr.apply_update(cfg["optimizer"], s.params, s.opt, g, cfg["lr"], s.step + 1)
            t3 = time.perf_counter()
            s.losses.append(loss)
            box[0] = tr.State(p, o, h_last, s.step + 1, stream.pos, s.losses)
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                parts[k].append(v)
        return {k: statistics.median(v) for k, v in parts.items()}
    return step, breakdown


def torch_runner(cell, data, V, cfg, seed=0):
    """step(): the same model and training loop in PyTorch."""
    import torch
    torch.manual_seed(seed)
    H, B, k = cfg["hidden"], cfg["batch"], cfg["bptt"]
    rnn = {"rnn": lambda: torch.nn.RNN(V, H, nonlinearity="tanh"),
           "lstm": lambda: torch.nn.LSTM(V, H), "gru": lambda: torch.nn.GRU(V, H)}[cell]()
    head = torch.nn.Linear(H, V)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8)
    eye = torch.eye(V)                            # one-hot rows by indexing, outside autograd
    dt = torch.from_numpy(data)
    L = data.shape[0]
    zero = torch.zeros(1, B, H)
    st = {"pos": 0, "h": (zero, zero.clone()) if cell == "lstm" else zero}

    def step():
        pos = st["pos"]
        if pos + k + 1 > L:                       # end of the streams: next epoch, fresh state
            pos, st["h"] = 0, (zero, zero.clone()) if cell == "lstm" else zero
        x = eye[dt[pos:pos + k]]                  # [k, B, V]
        y = dt[pos + 1:pos + k + 1].reshape(-1)   # [k*B]
        out, h = rnn(x, st["h"])
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg["clip"])
        opt.step()
        st["h"] = tuple(a.detach() for a in h) if cell == "lstm" else h.detach()
        st["pos"] = pos + k
        return loss.item()
    return step


class OpenblasChild:
    """fastbptt's step in a child process with every product on OpenBLAS (the BLAS mode is
    chosen once per process): ``child(n)`` runs n steps there and returns the seconds."""

    def __init__(self, cell, max_chars):
        env = dict(os.environ, FASTBPTT_BLAS="openblas")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child", cell, str(max_chars or 0)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def __call__(self, n):
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fastbptt-openblas child process ended")
        return float(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _child(cell, max_chars):
    """The child's loop: read n, run n steps, print the seconds they took."""
    cfg = {k: v for k, v in tr.DEFAULTS.items() if k != "cell"}
    cfg["lr"] = tr.DEFAULT_LR[cfg["optimizer"]]
    data, vocab = corpus_streams(cfg["batch"], cfg["bptt"], max_chars or None)
    step, _ = fastbptt_runner(cell, data, len(vocab), cfg)
    with tr._blas_threads(1) or contextlib.nullcontext():
        for line in sys.stdin:
            print(_timed(step, int(line)), flush=True)


def _mkl_installed():
    from fastbptt.bench import _available
    return _available("mkl")


def _timed(step, n):
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - t0


def measure(cells, rounds, steps, warmup, max_chars=None, torch_threads=TORCH_THREADS,
            breakdown=False):
    """Rows of chars/s per cell and implementation, medians over interleaved rounds."""
    import torch
    cfg = {k: v for k, v in tr.DEFAULTS.items() if k != "cell"}
    cfg["lr"] = tr.DEFAULT_LR[cfg["optimizer"]]
    data, vocab = corpus_streams(cfg["batch"], cfg["bptt"], max_chars)
    V = len(vocab)
    chars = cfg["batch"] * cfg["bptt"]
    rows = []
    for cell in cells:
        fb, fb_breakdown = fastbptt_runner(cell, data, V, cfg)
        th = torch_runner(cell, data, V, cfg)
        child = OpenblasChild(cell, max_chars) if _mkl_installed() else None
        impls = {"fastbptt": fb, **({"fastbptt-openblas": child} if child else {}),
                 **{f"torch-{n}t": th for n in torch_threads}}
        secs = {name: [] for name in impls}
        try:
            for r in range(rounds + 1):               # round 0 warms up (compilation), untimed
                for name, fn in impls.items():
                    n = warmup if r == 0 else steps
                    if name == "fastbptt-openblas":
                        t = fn(n)                     # timed in the child, as below
                    else:
                        if name == "fastbptt":
                            ctx = tr._blas_threads(1) or contextlib.nullcontext()  # train --threads 1
                        else:
                            torch.set_num_threads(int(name.split("-")[1][:-1]))
                            ctx = contextlib.nullcontext()
                        with ctx:
                            t = _timed(fn, n)
                    if r:
                        secs[name].append(t / steps)
        finally:
            if child:
                child.close()
        row = dict(cell=cell, batch=cfg["batch"], bptt=cfg["bptt"], hidden=cfg["hidden"], vocab=V,
                   chars_per_step=chars, steps_per_round=steps, rounds=rounds,
                   blas=sys.modules["fastbptt.cpu.blas"].BLAS_NAME)
        for name, v in secs.items():
            row[name] = dict(ms_per_step=1e3 * statistics.median(v), chars_per_s=chars / statistics.median(v),
                             ms_rounds=[1e3 * s for s in v])
        best = max((n for n in impls if n.startswith("torch")), key=lambda n: row[n]["chars_per_s"])
        row["torch_best"] = best
        row["ratio"] = row["fastbptt"]["chars_per_s"] / row[best]["chars_per_s"]
        if breakdown:
            with tr._blas_threads(1) or contextlib.nullcontext():
                parts = fb_breakdown(max(steps, 5))
            total = sum(parts.values())
            row["fastbptt_breakdown_ms"] = {k: 1e3 * v for k, v in parts.items()}
            row["fastbptt_breakdown_share"] = {k: v / total for k, v in parts.items()}
        rows.append(row)
    return dict(config=dict(cfg, corpus="Python standard-library docstrings", vocab=V,
                            corpus_chars=None if not max_chars else max_chars,
                            torch_threads=list(torch_threads), torch_input="one-hot rows"),
                rows=rows)


def format_table(res):
    lines = ["| cell | fastbptt chars/s (BLAS) | fastbptt, OpenBLAS only | PyTorch chars/s (threads) "
             "| best PyTorch | ratio |", "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        tt = ", ".join(f"{r[n]['chars_per_s'] / 1e3:,.0f} k ({n.split('-')[1][:-1]})"
                       for n in r if n.startswith("torch-"))
        ob = (f"{r['fastbptt-openblas']['chars_per_s'] / 1e3:,.0f} k" if "fastbptt-openblas" in r
              else "–")
        lines.append(f"| {r['cell']} | {r['fastbptt']['chars_per_s'] / 1e3:,.0f} k ({r['blas']}) | {ob} | "
                     f"{tt} | {r[r['torch_best']]['chars_per_s'] / 1e3:,.0f} k | {r['ratio']:.2f}x |")
        if "fastbptt_breakdown_share" in r:
            sh = r["fastbptt_breakdown_share"]
            lines.append("|  | step: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in sh.items())
                         + " | | | | |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated: rnn, lstm, gru")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per implementation")
    ap.add_argument("--steps", type=int, default=100, help="training steps per round")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps before the first round")
    ap.add_argument("--max-chars", type=int, default=None,
                    help="use only the corpus' first N characters (tests; the vocabulary stays)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time fastbptt's step in parts (loss_and_grad, clip, optimizer)")
    ap.add_argument("--json", metavar="FILE.json", help="write the rows and provenance here")
    ap.add_argument("--child", nargs=2, metavar=("CELL", "MAX_CHARS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child[0], int(args.child[1]))
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in cells if c not in CELLS]
    if bad or not cells:
        ap.error(f"--cells: expected a comma-separated subset of {', '.join(CELLS)}; got {args.cells!r}")
    for name in ("rounds", "steps", "warmup"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1; got {getattr(args, name)}")
    meta = start("bench_train.py", argv)
    res = measure(cells, args.rounds, args.steps, args.warmup, args.max_chars, breakdown=args.breakdown)
    return finish(res, meta, format_table(res), args.json)


if __name__ == "__main__":
    sys.exit(main())
