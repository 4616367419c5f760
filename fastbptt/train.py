"""``fastbptt train``: a character-level language model trained with fastbptt.

The text is cut into ``--batch`` parallel streams (contiguous pieces of the corpus, one per
batch row, :func:`fastbptt.stream.batch_stream`) and read ``--bptt`` characters at a time by
:class:`fastbptt.stream.TBPTTStream`. Each interval is one :func:`fastbptt.loss_and_grad` call that starts from the streams' last hidden states and
backpropagates within the interval only (truncated BPTT with the state carried across
intervals), followed by gradient-norm clipping and an Adam or Adagrad update.

Training state is replaced as a whole after every step, so Ctrl-C at any moment leaves the
last completed step intact; it is saved to the checkpoint before exiting.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import zipfile

import numpy as np

from . import api
from . import corpus as corpus_mod
from .cli import CLIError
from .stream import TBPTTStream, batch_stream

CHECKPOINT_FORMAT = "fastbptt-charlm-1"
DEFAULTS = dict(hidden=128, batch=32, bptt=32, optimizer="adam", dtype="float32", clip=5.0)
DEFAULT_LR = {"adam": 2e-3, "adagrad": 0.1}
PARAM_KEYS = ("U", "W", "b", "V", "c")

# --------------------------------------------------------------------------- arguments
def _int_at_least(lo):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}; got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}; got {v}")
        return v
    parse.__name__ = "int"
    return parse


def _float_pos(allow_zero=False):
    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number; got {s!r}") from None
        if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"expected a finite number {'>= 0' if allow_zero else '> 0'}; got {s}")
        return v
    parse.__name__ = "float"
    return parse


def configure_parser(parser):
    """Add ``fastbptt train``'s options to ``parser``."""
    a = parser.add_argument
    a("--text", metavar="FILE", help="train on this UTF-8 text file (default: the built-in corpus "
      "of Python standard-library docstrings, no download)")
    a("--steps", type=_int_at_least(1), default=4000,
      help="training steps (intervals of --batch x --bptt characters) to run (default 4000, "
      "about a minute on 2 cores)")
    a("--hidden", type=_int_at_least(1), default=None, help=f"hidden units (default {DEFAULTS['hidden']})")
    a("--batch", type=_int_at_least(1), default=None,
      help=f"parallel streams over the text (default {DEFAULTS['batch']})")
    a("--bptt", type=_int_at_least(1), default=None,
      help=f"truncated-BPTT interval in characters (default {DEFAULTS['bptt']})")
    a("--optimizer", choices=("adam", "adagrad"), default=None,
      help="adam (default) or adagrad (min-char-rnn's update)")
    a("--lr", type=_float_pos(), default=None, help="learning rate (default 2e-3 adam, 0.1 adagrad)")
    a("--clip", type=_float_pos(allow_zero=True), default=None,
      help=f"clip the gradient's global L2 norm to this (0: off; default {DEFAULTS['clip']})")
    a("--dtype", choices=("float32", "float64"), default=None, help="precision (default float32)")
    a("--seed", type=int, default=0, help="initialisation and sampling seed (default 0)")
    a("--save", metavar="FILE.npz", default="charlm.npz",
      help="checkpoint written every --save-every steps, at the end and on Ctrl-C (default charlm.npz)")
    a("--no-save", action="store_true", help="write no checkpoint")
    a("--save-every", type=_int_at_least(0), default=1000, help="steps between checkpoints (0: end only)")
    a("--resume", metavar="FILE.npz", help="continue from this checkpoint (model, optimizer, streams)")
    a("--sample-every", type=_int_at_least(0), default=1000, help="steps between samples (0: none)")
    a("--sample-len", type=_int_at_least(1), default=200, help="characters per sample (default 200)")
    a("--temperature", type=_float_pos(), default=0.8, help="sampling temperature (default 0.8)")
    a("--plot", metavar="FILE.png", help="save the loss curve to this image (needs matplotlib)")
    a("--threads", type=_int_at_least(1), default=1,
      help="BLAS threads (default 1: the products here are small, and extra threads only "
      "contend on a busy machine; needs threadpoolctl, else the BLAS default is kept)")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--workers", type=_int_at_least(1), default=None,
      help="train data-parallel on a local Dask cluster of N worker processes (needs fastbptt[dask])")
    a("--scheduler", metavar="ADDRESS", help="train data-parallel on the existing Dask cluster at ADDRESS")


# --------------------------------------------------------------------------- data
def load_corpus(path):
    """(text, name) of the training text; CLIError when it is missing or empty."""
    if path is None:
        text = corpus_mod.stdlib_docstrings()
        if not text:
            raise CLIError("the built-in corpus is empty (no standard-library sources found); use --text FILE")
        return text, "Python standard-library docstrings"
    if not os.path.exists(path):
        raise CLIError(f"--text {path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"--text {path}: is a directory, expected a text file")
    try:
        text = corpus_mod.read_text(path)
    except OSError as exc:
        raise CLIError(f"--text {path}: cannot read: {exc.strerror or exc}") from None
    if not text:
        raise CLIError(f"--text {path}: the file is empty")
    return text, path


def make_streams(ids, batch, bptt):
    """Cut ``ids`` into ``batch`` contiguous streams: data [L, batch] (time-major)."""
    L = len(ids) // batch                            # ids per stream; L - 1 predicting steps
    if L - 1 < bptt:
        raise CLIError(f"the corpus has {len(ids)} characters, shorter than one interval: "
                       f"--batch {batch} x --bptt {bptt} needs at least {batch * (bptt + 1)}")
    return batch_stream(ids, batch)


# --------------------------------------------------------------------------- state
class State:
    """Everything a step changes. Steps build a new State and rebind it in one statement."""

    __slots__ = ("params", "opt", "h", "step", "pos", "losses")

    def __init__(self, params, opt, h, step, pos, losses):
        self.params, self.opt, self.h = params, opt, h
        self.step, self.pos, self.losses = step, pos, losses


def new_opt_state(kind, params):
    if kind == "adam":
        return {**{f"m_{k}": np.zeros_like(v) for k, v in params.items()},
                **{f"v_{k}": np.zeros_like(v) for k, v in params.items()}}
    return {f"g2_{k}": np.zeros_like(v) for k, v in params.items()}


def clip_global_norm(grads, max_norm):
    """Scale the gradients so their global L2 norm is at most max_norm (0: no clipping)."""
    norm = math.sqrt(sum(float(np.vdot(grads[k], grads[k])) for k in PARAM_KEYS))
    if max_norm > 0 and norm > max_norm:
        s = max_norm / (norm + 1e-12)
        return {k: grads[k] * s for k in PARAM_KEYS}, norm
    return grads, norm


def apply_update(kind, params, opt, grads, lr, t):
    """New (params, opt) after one Adam or Adagrad step; the inputs are left untouched."""
    newp, newo = {}, {}
    for k in PARAM_KEYS:
        g = grads[k]
        if kind == "adam":
            b1, b2, eps = 0.9, 0.999, 1e-8
            m = b1 * opt[f"m_{k}"] + (1 - b1) * g
            v = b2 * opt[f"v_{k}"] + (1 - b2) * (g * g)
            mhat = m / (1 - b1 ** t)
            vhat = v / (1 - b2 ** t)
            newp[k] = (params[k] - lr * mhat / (np.sqrt(vhat) + eps)).astype(params[k].dtype, copy=False)
            newo[f"m_{k}"], newo[f"v_{k}"] = m.astype(g.dtype, copy=False), v.astype(g.dtype, copy=False)
        else:   # Adagrad, as min-char-rnn: mem += g², p -= lr g / sqrt(mem + 1e-8)
            g2 = opt[f"g2_{k}"] + g * g
            newp[k] = (params[k] - lr * g / np.sqrt(g2 + 1e-8)).astype(params[k].dtype, copy=False)
            newo[f"g2_{k}"] = g2.astype(g.dtype, copy=False)
    return newp, newo


def train_step(state, data, cfg):
    """One interval: loss and gradients from fastbptt, clipping, the optimizer. A new State."""
    # the streaming helper walks the streams; State keeps its position and carried state so
    # a step stays one rebinding (Ctrl-C safe) and a checkpoint can resume mid-pass
    stream = TBPTTStream(data, cfg["bptt"], h0=state.h, pos=state.pos, drop_last=True, reduction="mean")
    if stream.done():                                # end of the streams: next epoch, fresh state
        stream.reset(np.zeros_like(state.h))
    loss, grads, h_last = stream.step(state.params)
    return train_update(state, cfg, loss, grads, h_last, stream.pos)


def train_update(state, cfg, loss, grads, h_last, pos):
    """The State after an interval's (loss, grads, h_last): clipping and the optimizer."""
    grads, _ = clip_global_norm(grads, cfg["clip"])
    params, opt = apply_update(cfg["optimizer"], state.params, state.opt, grads, cfg["lr"], state.step + 1)
    # the loss history is one shared list (copying it every step would cost O(steps²));
    # entries past state.step belong to a step that was never committed and are ignored
    del state.losses[state.step:]
    state.losses.append(loss)
    return State(params, opt, h_last, state.step + 1, pos, state.losses)


# --------------------------------------------------------------------------- sampling
def sample(params, vocab, n, temperature, rng, seed_char="\n"):
    """``n`` characters drawn from the model, one at a time, starting after ``seed_char``."""
    U, W, b, V, c = (params[k].astype(np.float64) for k in PARAM_KEYS)
    index = {ch: i for i, ch in enumerate(vocab)}
    x = index.get(seed_char, 0)
    h = np.zeros(W.shape[0])
    out = []
    for _ in range(n):
        h = np.tanh(U[:, x] + W @ h + b)
        o = (V @ h + c) / temperature
        p = np.exp(o - o.max())
        p /= p.sum()
        if not np.all(np.isfinite(p)):               # a diverged model: say so, don't crash
            return "(no sample: the model's outputs are not finite)"
        x = int(rng.choice(len(vocab), p=p))
        out.append(vocab[x])
    return "".join(out)


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, state, cfg, vocab):
    arrays = {k: state.params[k] for k in PARAM_KEYS}
    arrays.update({f"opt_{k}": v for k, v in state.opt.items()})
    arrays.update(
        format=np.array(CHECKPOINT_FORMAT), vocab=np.array([ord(ch) for ch in vocab], dtype=np.int64),
        h=state.h, step=np.int64(state.step), pos=np.int64(state.pos),
        losses=np.asarray(state.losses[:state.step], dtype=np.float64),
        optimizer=np.array(cfg["optimizer"]), lr=np.float64(cfg["lr"]), clip=np.float64(cfg["clip"]),
        batch=np.int64(cfg["batch"]), bptt=np.int64(cfg["bptt"]),
    )
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:                   # a file object: np.savez adds no ".npz"
            np.savez(f, **arrays)
        os.replace(tmp, path)                        # never leave a half-written checkpoint
    except OSError as exc:
        raise CLIError(f"--save {path}: cannot write the checkpoint: {exc.strerror or exc}") from None


def load_checkpoint(path):
    """The checkpoint's arrays as a dict; CLIError if it is missing, corrupt or not ours."""
    if not os.path.isfile(path):
        raise CLIError(f"--resume {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            ck = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CLIError(f"--resume {path}: not a readable checkpoint ({type(exc).__name__})") from None
    except Exception as exc:    # zlib.error and other decoding failures of a damaged archive
        raise CLIError(f"--resume {path}: not a readable checkpoint ({type(exc).__name__})") from None
    need = ("format", "vocab", "h", "step", "pos", "losses", "optimizer", "lr", "clip", "batch", "bptt") + PARAM_KEYS
    missing = [k for k in need if k not in ck]
    if missing or str(ck.get("format", "")) != CHECKPOINT_FORMAT:
        raise CLIError(f"--resume {path}: not a fastbptt train checkpoint "
                       f"({'missing ' + ', '.join(missing) if missing else 'unknown format'})")
    try:
        vocab = "".join(chr(int(i)) for i in ck["vocab"])
        params = {k: np.ascontiguousarray(ck[k]) for k in PARAM_KEYS}
        H, n_v = params["W"].shape[0], len(vocab)
        shapes = {"U": (H, n_v), "W": (H, H), "b": (H,), "V": (n_v, H), "c": (n_v,)}
        dts = {params[k].dtype for k in PARAM_KEYS}
        opt_kind = str(ck["optimizer"])
        if (any(params[k].shape != s for k, s in shapes.items()) or len(dts) != 1
                or dts.pop() not in (np.dtype(np.float32), np.dtype(np.float64))
                or opt_kind not in DEFAULT_LR or ck["h"].ndim != 2 or ck["h"].shape[1] != H):
            raise ValueError("inconsistent shapes")
        if ck["losses"].shape != (int(ck["step"]),):
            raise ValueError("loss history does not match the step count")
        opt = {k[4:]: np.ascontiguousarray(ck[k]) for k in ck if k.startswith("opt_")}
        want_opt = new_opt_state(opt_kind, params)
        if set(opt) != set(want_opt) or any(opt[k].shape != want_opt[k].shape for k in opt):
            raise ValueError("inconsistent optimizer state")
    except (ValueError, TypeError, OverflowError) as exc:
        raise CLIError(f"--resume {path}: corrupt checkpoint ({exc})") from None
    return dict(vocab=vocab, params=params, opt=opt, h=np.ascontiguousarray(ck["h"]),
                step=int(ck["step"]), pos=int(ck["pos"]), losses=[float(v) for v in ck["losses"]],
                optimizer=opt_kind, lr=float(ck["lr"]), clip=float(ck["clip"]),
                batch=int(ck["batch"]), bptt=int(ck["bptt"]))


# --------------------------------------------------------------------------- report
def smoothed(losses, n=50):
    """Mean of the last n losses (the figure the summary reports)."""
    tail = losses[-n:]
    return float(np.mean(tail)) if tail else float("nan")


def plot_losses(path, losses, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = np.arange(1, len(losses) + 1)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, losses, lw=0.6, alpha=0.35, color="C0", label="loss per interval")
    w = max(1, min(50, len(losses) // 10))
    if len(losses) >= w:
        ma = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], ma, lw=1.8, color="C0", label=f"mean of {w}")
    ax.axhline(losses[0], lw=0.6, ls=":", color="gray")      # where training started
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / character)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class _Progress:
    """tqdm when available and wanted, else nothing; ``write`` keeps the bar intact."""

    def __init__(self, total, initial, enabled):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                                file=sys.stderr, disable=None)

    def update(self, loss, cps):
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.3f}, {cps:,.0f} chars/s", refresh=False)
            self.bar.update(1)

    def write(self, s):
        if self.bar is not None:
            self.bar.write(s, file=sys.stdout)
        else:
            print(s, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- main
def _blas_threads(n):
    """Limit every loaded BLAS (NumPy's and the one Numba's np.dot calls) to n threads."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (load Numba's BLAS so it is limited too)
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n, user_api="blas")


def _settings(args, ck):
    """The run's configuration: explicit options, else the checkpoint's, else defaults."""
    cfg = {}
    for key in ("batch", "bptt", "optimizer", "clip"):
        val = getattr(args, key)
        cfg[key] = val if val is not None else (ck[key] if ck else DEFAULTS[key])
    if ck:
        H = ck["params"]["W"].shape[0]
        dt = str(ck["params"]["W"].dtype)
        if args.hidden is not None and args.hidden != H:
            raise CLIError(f"--hidden {args.hidden} does not match the checkpoint's {H} hidden units")
        if args.dtype is not None and args.dtype != dt:
            raise CLIError(f"--dtype {args.dtype} does not match the checkpoint's {dt}")
        if cfg["optimizer"] != ck["optimizer"]:
            raise CLIError(f"--optimizer {cfg['optimizer']} does not match the checkpoint's {ck['optimizer']}")
        cfg["hidden"], cfg["dtype"] = H, dt
        cfg["lr"] = args.lr if args.lr is not None else ck["lr"]
    else:
        cfg["hidden"] = args.hidden if args.hidden is not None else DEFAULTS["hidden"]
        cfg["dtype"] = args.dtype or DEFAULTS["dtype"]
        cfg["lr"] = args.lr if args.lr is not None else DEFAULT_LR[cfg["optimizer"]]
    return cfg


def main(args) -> int:
    """Run ``fastbptt train`` with parsed ``args``; returns the exit status (130 after Ctrl-C)."""
    save_path = None if args.no_save else args.save
    for opt, path in (("--save", save_path), ("--plot", args.plot)):
        if path:
            d = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(d):
                raise CLIError(f"{opt} {path}: directory {d} does not exist")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CLIError("--plot needs matplotlib: pip install 'fastbptt[plot]'") from None

    ck = load_checkpoint(args.resume) if args.resume else None
    text, name = load_corpus(args.text)
    cfg = _settings(args, ck)

    if ck:
        vocab = ck["vocab"]
        unknown = sorted(set(text) - set(vocab))
        if unknown:
            raise CLIError(f"the text has {len(unknown)} characters the checkpoint's vocabulary lacks "
                           f"(e.g. {unknown[0]!r}); resume on the text it was trained on")
    else:
        vocab = "".join(sorted(set(text)))
    if len(vocab) < 2:
        raise CLIError("the text has fewer than 2 distinct characters; nothing to learn")
    lut = {ch: i for i, ch in enumerate(vocab)}
    ids = np.fromiter((lut[ch] for ch in text), dtype=np.int64, count=len(text))
    data = make_streams(ids, cfg["batch"], cfg["bptt"])

    dtype = np.dtype(cfg["dtype"])
    H, B = cfg["hidden"], cfg["batch"]
    if ck:
        # same streams (same --batch): carry on where the checkpoint stopped; else start over
        same = ck["h"].shape == (B, H)
        h = ck["h"].astype(dtype) if same else np.zeros((B, H), dtype)
        pos = ck["pos"] if same else 0
        state = State(ck["params"], ck["opt"], h, ck["step"], pos, ck["losses"])
    else:
        params = api.init_params(len(vocab), H, len(vocab), dtype=dtype, seed=args.seed)
        # min-char-rnn style small output weights: the first loss is ~ln(vocab), a uniform guess
        params["V"] *= dtype.type(0.1)
        state = State(params, new_opt_state(cfg["optimizer"], params), np.zeros((B, H), dtype), 0, 0, [])

    rng = np.random.default_rng(args.seed + state.step)
    chars_per_step = B * cfg["bptt"]
    first_step = state.step
    print(f"fastbptt train: {name}, {len(text):,} characters, vocabulary {len(vocab)}; "
          f"hidden {H}, {B} streams x {cfg['bptt']}-step intervals, {cfg['optimizer']} lr {cfg['lr']:g}, "
          f"clip {cfg['clip']:g}, {cfg['dtype']}"
          + (f"; resuming at step {state.step}" if ck else ""), flush=True)

    trainer = None
    if args.workers is not None or args.scheduler is not None:
        try:
            from .distributed import trainer_from_args  # data-parallel steps on Dask
        except ImportError as exc:
            raise CLIError(str(exc)) from None
        trainer = trainer_from_args(args, data)
    step = trainer.step if trainer else train_step
    bar = _Progress(first_step + args.steps, first_step, enabled=not args.no_progress)
    interrupted = False
    limits = _blas_threads(args.threads)
    t0 = time.perf_counter()
    try:
        while state.step < first_step + args.steps:
            state = step(state, data, cfg)            # one rebinding: Ctrl-C never sees half a step
            if not math.isfinite(state.losses[-1]):
                raise CLIError(f"the loss became {state.losses[-1]} at step {state.step}; "
                               "try a smaller --lr or --clip (no checkpoint written)")
            done = state.step - first_step
            el = time.perf_counter() - t0
            bar.update(smoothed(state.losses, 20), done * chars_per_step / max(el, 1e-9))
            if args.sample_every and done % args.sample_every == 0 and state.step < first_step + args.steps:
                bar.write(f"--- sample at step {state.step} (loss {smoothed(state.losses):.3f}) ---\n"
                          + sample(state.params, vocab, args.sample_len, args.temperature, rng))
            if save_path and args.save_every and done % args.save_every == 0:
                save_checkpoint(save_path, state, cfg, vocab)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if limits is not None:
            limits.restore_original_limits()
        if trainer:
            trainer.close()
    elapsed = time.perf_counter() - t0

    if interrupted:
        print(f"interrupted at step {state.step}", file=sys.stderr, flush=True)
    if save_path:
        save_checkpoint(save_path, state, cfg, vocab)
    done = state.step - first_step
    losses = state.losses[:state.step]
    if losses:
        print(f"--- sample (temperature {args.temperature:g}) ---\n"
              + sample(state.params, vocab, args.sample_len, args.temperature, rng))
    if args.plot and losses:
        plot_losses(args.plot, losses, f"fastbptt train: {name} (hidden {H}, {B}x{cfg['bptt']})")
    cps = done * chars_per_step / elapsed if elapsed > 0 else float("nan")
    first = losses[0] if losses else float("nan")
    print(f"done: {done} steps ({done * chars_per_step:,} characters) in {elapsed:.1f} s, {cps:,.0f} chars/s; "
          f"loss {first:.3f} at step 1 -> {smoothed(losses):.3f} (mean of the last {min(50, len(losses))} "
          f"steps, nats/char) at step {state.step}"
          + (f"; checkpoint {save_path}" if save_path else "")
          + (f"; plot {args.plot}" if args.plot and losses else "")
          + (f"; {trainer.summary()}" if trainer else ""), flush=True)
    return 130 if interrupted else 0
