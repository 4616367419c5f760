"""``fastbptt train``: a character-level language model trained with fastbptt.

The text is cut into ``--batch`` parallel streams (contiguous pieces of the corpus, one per
batch row, :func:`fastbptt.stream.batch_stream`) and read ``--bptt`` characters at a time by
:class:`fastbptt.stream.TBPTTStream`. Each interval is one :func:`fastbptt.loss_and_grad` call that starts from the streams' last hidden states and
backpropagates within the interval only (truncated BPTT with the state carried across
intervals), followed by gradient-norm clipping and an Adam or Adagrad update.

Training state is replaced as a whole after every step, so Ctrl-C (SIGINT) or SIGTERM at any
moment leaves the last completed step intact; it is saved to the checkpoint before exiting
(status 130 after SIGINT, 143 after SIGTERM, as a shell reports a process killed by them).

The module is three separable parts: :func:`configure_parser` (the options),
:func:`train_step` (one interval: gradients, clipping, update; a pure function of a
:class:`State`) and :func:`main` (data, checkpoints, the loop and the report).
"""
from __future__ import annotations

import argparse
import codecs
import hashlib
import json
import math
import os
import signal
import sys
import time
import zipfile

import numpy as np

from . import api
from . import corpus as corpus_mod
from .cli import CLIError, check_output_path, measurement_metadata, plural
from .cli import int_at_least as _int_at_least
from .stream import TBPTTStream, batch_stream

CHECKPOINT_FORMAT = "fastbptt-charlm-1"
DEFAULTS = dict(hidden=128, batch=32, bptt=32, optimizer="adam", dtype="float32", clip=5.0,
                cell="rnn", layers=1)
DEFAULT_LR = {"adam": 2e-3, "adagrad": 0.1}
PARAM_KEYS = ("U", "W", "b", "V", "c")     # every cell's; the GRU adds "bn", layers l >= 1 "U_l1" ...
STATE_KEYS = ("h0", "c0")
# plain stacked recurrent layers (no residual connections) do not train far beyond a few, and
# a bound keeps a mistyped --layers from building a model for minutes
MAX_LAYERS = 64

# --------------------------------------------------------------------------- arguments
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


def _int_between(lo, hi):
    def parse(s):
        v = _int_at_least(lo)(s)
        if v > hi:
            raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}; got {v}")
        return v
    parse.__name__ = "int"
    return parse


def _encoding(s):
    try:
        return codecs.lookup(s).name
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {s!r} (e.g. utf-8, latin-1, cp1252)") from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``fastbptt train``'s options to ``parser``."""
    a = parser.add_argument
    a("--text", metavar="FILE", help="train on this text file, UTF-8 unless --encoding says "
      "otherwise (default: the built-in corpus of Python standard-library docstrings, no download)")
    a("--encoding", type=_encoding, default="utf-8",
      help="encoding of --text (default utf-8; a byte that does not decode is an error)")
    a("--steps", type=_int_at_least(1), default=4000,
      help="training steps (intervals of --batch x --bptt characters) to run (default 4000, "
      "about a minute on 2 cores)")
    a("--hidden", type=_int_at_least(1), default=None, help=f"hidden units (default {DEFAULTS['hidden']})")
    a("--cell", choices=("rnn", "lstm", "gru"), default=None,
      help="recurrent cell (default rnn, the Elman RNN; a checkpoint keeps its own)")
    a("--layers", type=_int_between(1, MAX_LAYERS), default=None,
      help=f"stacked recurrent layers of --cell, 1 to {MAX_LAYERS} (default 1; a checkpoint keeps its own). There is "
      "no --bidirectional: a language model predicts each character from the ones before it, and "
      "a reverse direction would read the very character it predicts")
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
    a("--seed", type=_int_at_least(0), default=0, help="initialisation and sampling seed (default 0)")
    a("--save", metavar="FILE.npz", default=None,
      help="checkpoint written every --save-every steps, at the end, on Ctrl-C and on SIGTERM "
      "(default: the --resume file, else charlm.npz)")
    a("--no-save", action="store_true", help="write no checkpoint (not with --save)")
    a("--save-every", type=_int_at_least(0), default=1000, help="steps between checkpoints (0: end only)")
    a("--resume", metavar="FILE.npz", help="continue from this checkpoint (model, optimizer, streams)")
    a("--sample-every", type=_int_at_least(0), default=1000, help="steps between samples (0: none)")
    a("--sample-len", type=_int_at_least(1), default=200, help="characters per sample (default 200)")
    a("--temperature", type=_float_pos(), default=0.8, help="sampling temperature (default 0.8)")
    a("--plot", metavar="FILE.png",
      help="save the loss curve to this image (needs matplotlib: pip install 'fastbptt[plot]')")
    a("--json", metavar="FILE.json",
      help="write a summary (the loss of every step, times, the final sample) as JSON")
    a("--threads", type=_int_at_least(1), default=1,
      help="BLAS threads (default 1: the products here are small, and extra threads only "
      "contend on a busy machine; needs threadpoolctl, else the BLAS default is kept). The "
      "batch's rows still run in one block per core, each on one BLAS thread; "
      "FASTBPTT_NUM_THREADS=1 keeps everything on one core")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--workers", type=_int_at_least(1), default=None,
      help="train data-parallel on a local Dask cluster of N worker processes (needs fastbptt[dask])")
    a("--scheduler", metavar="ADDRESS", help="train data-parallel on the existing Dask cluster at ADDRESS")


# --------------------------------------------------------------------------- data
def load_corpus(path: str | None, encoding: str = "utf-8") -> tuple[str, str]:
    """(text, name) of the training text; CLIError when it is missing, empty or undecodable."""
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
        text = corpus_mod.read_text(path, encoding)
    except OSError as exc:
        raise CLIError(f"--text {path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1].hex()
        raise CLIError(f"--text {path}: not valid {encoding}: byte 0x{bad} at offset {exc.start} "
                       "does not decode; give the file's encoding with --encoding "
                       "(e.g. --encoding latin-1)") from None
    if not text:
        raise CLIError(f"--text {path}: the file is empty")
    return text, path


def make_streams(ids: np.ndarray, batch: int, bptt: int) -> np.ndarray:
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


def new_opt_state(kind: str, params: dict) -> dict:
    if kind == "adam":
        return {**{f"m_{k}": np.zeros_like(v) for k, v in params.items()},
                **{f"v_{k}": np.zeros_like(v) for k, v in params.items()}}
    return {f"g2_{k}": np.zeros_like(v) for k, v in params.items()}


def clip_global_norm(grads: dict, max_norm: float) -> tuple[dict, float]:
    """Scale the gradients so their global L2 norm is at most max_norm (0: no clipping)."""
    keys = [k for k in grads if k not in STATE_KEYS]
    norm = math.sqrt(sum(float(np.vdot(grads[k], grads[k])) for k in keys))
    if max_norm > 0 and norm > max_norm:
        s = max_norm / (norm + 1e-12)
        return {k: grads[k] * s for k in keys}, norm
    return grads, norm


ADAM_BETAS_EPS = (0.9, 0.999, 1e-8)      # b1, b2, eps: PyTorch's and the paper's defaults


def _adam_compiled(p, g, m, v, lr, t):
    """(new p, new m, new v) from :func:`fastbptt.cpu.optim.adam_step` when the four arrays
    share a float dtype and are contiguous, else None (the caller uses NumPy)."""
    dt = p.dtype
    if not (dt in (np.float32, np.float64) and g.dtype == m.dtype == v.dtype == dt
            and p.shape == g.shape == m.shape == v.shape
            and all(a.flags.c_contiguous for a in (p, g, m, v))):
        return None
    from .cpu.optim import adam_step
    b1, b2, eps = ADAM_BETAS_EPS
    k = np.array([b1, 1 - b1, b2, 1 - b2, 1 - b1 ** t, 1 - b2 ** t, lr, eps], dtype=dt)
    out = [np.empty_like(p) for _ in range(3)]
    adam_step(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), k,
              *(a.reshape(-1) for a in out))
    return out


def apply_update(kind: str, params: dict, opt: dict, grads: dict, lr: float, t: int) -> tuple[dict, dict]:
    """New (params, opt) after one Adam or Adagrad step; the inputs are left untouched.

    Adam runs compiled (:mod:`fastbptt.cpu.optim`, the same bits as the NumPy formula below,
    which serves any other dtype or layout).
    """
    newp, newo = {}, {}
    for k in params:
        g = grads[k]
        if kind == "adam":
            fast = _adam_compiled(params[k], g, opt[f"m_{k}"], opt[f"v_{k}"], lr, t)
            if fast is not None:
                newp[k], newo[f"m_{k}"], newo[f"v_{k}"] = fast
                continue
            b1, b2, eps = ADAM_BETAS_EPS
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


def train_step(state: State, data: np.ndarray, cfg: dict) -> State:
    """One interval: loss and gradients from fastbptt, clipping, the optimizer. A new State."""
    # the streaming helper walks the streams; State keeps its position and carried state so
    # a step stays one rebinding (Ctrl-C safe) and a checkpoint can resume mid-pass
    stream = TBPTTStream(data, cfg["bptt"], h0=state.h, pos=state.pos, drop_last=True,
                         reduction="mean", cell=cfg.get("cell", "rnn"),
                         num_layers=cfg.get("layers", 1))
    if stream.done():                                # end of the streams: next epoch, fresh state
        stream.reset(None)
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
def sample(params: dict, vocab: str, n: int, temperature: float, rng: np.random.Generator,
           seed_char: str = "\n", cell: str = "rnn") -> str:
    """``n`` characters drawn from the model, one at a time, starting after ``seed_char``."""
    from .cells import get as get_cell
    from .layers import param_key
    step = get_cell(cell).ref.forward                # the cell's NumPy step (fastbptt/cells/)
    p = {k: v.astype(np.float64) for k, v in params.items()}
    # weights of layer l as {"U", "W", "b"(, "bn")}: layer 0 has no suffix, l >= 1 "_l{l}"
    nets = []
    while param_key("W", len(nets)) in p:
        nets.append({k: p[param_key(k, len(nets))] for k in ("U", "W", "b", "bn")
                     if param_key(k, len(nets)) in p})
    index = {ch: i for i, ch in enumerate(vocab)}
    x = index.get(seed_char, 0)
    H = p["W"].shape[1]
    states = [(np.zeros((1, H)),) * (2 if cell == "lstm" else 1) for _ in nets]
    out = []
    for _ in range(n):
        pre = (p["U"][:, x] + p["b"])[None]          # layer 0 reads a one-hot row: a column of U
        for layer, w in enumerate(nets):
            if layer:
                pre = states[layer - 1][0] @ w["U"].T + w["b"]
            states[layer], _ = step(pre, states[layer], w["W"], w, "tanh")
        o = (p["V"] @ states[-1][0][0] + p["c"]) / temperature
        e = np.exp(o - o.max())
        e /= e.sum()
        if not np.all(np.isfinite(e)):               # a diverged model: say so, don't crash
            return "(no sample: the model's outputs are not finite)"
        x = int(rng.choice(len(vocab), p=e))
        out.append(vocab[x])
    return "".join(out)


# --------------------------------------------------------------------------- checkpoints
def text_digest(text: str) -> str:
    """SHA-256 of the training text: a checkpoint's streams continue only on the same text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_checkpoint(path: str, state: State, cfg: dict, vocab: str, digest: str = "") -> None:
    """Write ``state`` atomically to ``path`` (a temporary file, then a rename)."""
    arrays = dict(state.params)
    arrays.update({f"opt_{k}": v for k, v in state.opt.items()})
    h = state.h if isinstance(state.h, tuple) else (state.h,)
    arrays.update(
        format=np.array(CHECKPOINT_FORMAT), vocab=np.array([ord(ch) for ch in vocab], dtype=np.int64),
        cell=np.array(cfg.get("cell", "rnn")), num_layers=np.int64(cfg.get("layers", 1)), h=h[0], **({"c_state": h[1]} if len(h) == 2 else {}),
        step=np.int64(state.step), pos=np.int64(state.pos),
        losses=np.asarray(state.losses[:state.step], dtype=np.float64),
        optimizer=np.array(cfg["optimizer"]), lr=np.float64(cfg["lr"]), clip=np.float64(cfg["clip"]),
        batch=np.int64(cfg["batch"]), bptt=np.int64(cfg["bptt"]), text_sha256=np.array(digest),
    )
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:                   # a file object: np.savez adds no ".npz"
            np.savez(f, **arrays)
        os.replace(tmp, path)                        # never leave a half-written checkpoint
    except OSError as exc:
        raise CLIError(f"--save {path}: cannot write the checkpoint: {exc.strerror or exc}") from None


def load_checkpoint(path: str) -> dict:
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
        step, pos = _scalar(ck, "step", 0), _scalar(ck, "pos", 0)
        batch, bptt = _scalar(ck, "batch", 1), _scalar(ck, "bptt", 1)
        lr, clip = _scalar(ck, "lr", 0, real=True), _scalar(ck, "clip", 0, real=True)
        if not lr > 0:
            raise ValueError(f"lr must be > 0; got {lr}")
        if ck["vocab"].ndim != 1 or ck["vocab"].dtype.kind not in "iu":
            raise ValueError("vocab must be a 1-d array of code points")
        vocab = "".join(chr(int(i)) for i in ck["vocab"])
        cell = str(ck.get("cell", "rnn"))          # checkpoints before the cells were Elman
        if cell not in ("rnn", "lstm", "gru"):
            raise ValueError(f"unknown cell {cell!r}")
        num_layers = _scalar(ck, "num_layers", 1) if "num_layers" in ck else 1   # older: 1 layer
        from .cells import get as get_cell
        from .layers import param_shapes
        cl = get_cell(cell)
        if ck["W"].ndim != 2:
            raise ValueError(f"W must be 2-d; got shape {ck['W'].shape}")
        H, n_v = ck["W"].shape[1], len(vocab)
        shapes = param_shapes(cell, n_v, H, num_layers=num_layers, n_out=n_v)
        params = {k: np.ascontiguousarray(ck[k]) for k in shapes if k in ck}
        if set(params) != set(shapes):
            raise ValueError(f"missing {sorted(set(shapes) - set(params))}")
        hshape = (batch, H) if num_layers == 1 else (num_layers, batch, H)
        dts = {a.dtype for a in params.values()}
        opt_kind = str(ck["optimizer"])
        if (any(params[k].shape != s for k, s in shapes.items()) or len(dts) != 1
                or dts.pop() not in (np.dtype(np.float32), np.dtype(np.float64))
                or opt_kind not in DEFAULT_LR or ck["h"].shape != hshape
                or ck["h"].dtype.kind != "f"
                or (cl.S == 2) != ("c_state" in ck)
                or ("c_state" in ck and ck["c_state"].shape != hshape)):
            raise ValueError("inconsistent shapes")
        if ck["losses"].shape != (step,):
            raise ValueError("loss history does not match the step count")
        opt = {k[4:]: np.ascontiguousarray(ck[k]) for k in ck if k.startswith("opt_")}
        want_opt = new_opt_state(opt_kind, params)
        if set(opt) != set(want_opt) or any(opt[k].shape != want_opt[k].shape for k in opt):
            raise ValueError("inconsistent optimizer state")
    except (ValueError, TypeError, OverflowError) as exc:
        raise CLIError(f"--resume {path}: corrupt checkpoint ({exc})") from None
    h = np.ascontiguousarray(ck["h"])
    if cl.S == 2:
        h = (h, np.ascontiguousarray(ck["c_state"]))
    return dict(vocab=vocab, params=params, opt=opt, h=h, cell=cell, layers=num_layers,
                step=step, pos=pos, losses=[float(v) for v in ck["losses"]],
                optimizer=opt_kind, lr=lr, clip=clip, batch=batch, bptt=bptt,
                text_sha256=str(ck.get("text_sha256", "")))


def _scalar(ck, key, lo, real=False):
    """A checkpoint's scalar field as int (or finite float) >= lo; ValueError otherwise."""
    v = ck[key]
    kinds = "iuf" if real else "iu"
    if v.ndim != 0 or v.dtype.kind not in kinds:
        raise ValueError(f"{key} must be a {'number' if real else 'integer'}; got {v.dtype} of shape {v.shape}")
    v = float(v) if real else int(v)
    if not (math.isfinite(v) and v >= lo):
        raise ValueError(f"{key} must be >= {lo}; got {v}")
    return v


# --------------------------------------------------------------------------- report
def smoothed(losses: list[float], n: int = 50) -> float:
    """Mean of the last n losses (the figure the summary reports)."""
    tail = losses[-n:]
    return float(np.mean(tail)) if tail else float("nan")


def plot_losses(path: str, losses: list[float], title: str, vocab_size: int) -> None:
    """Save the loss curve, its running mean and the uniform-guess level ln(vocab) to ``path``."""
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
    ax.axhline(math.log(vocab_size), lw=0.8, ls=":", color="gray",
               label=f"ln {vocab_size} = {math.log(vocab_size):.2f}: a uniform guess")
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
        H = ck["params"]["W"].shape[1]
        dt = str(ck["params"]["W"].dtype)
        if args.cell is not None and args.cell != ck["cell"]:
            raise CLIError(f"--cell {args.cell} does not match the checkpoint's {ck['cell']} cell")
        cfg["cell"] = ck["cell"]
        if args.layers is not None and args.layers != ck["layers"]:
            raise CLIError(f"--layers {args.layers} does not match the checkpoint's "
                           f"{plural(ck['layers'], 'layer')}")
        cfg["layers"] = ck["layers"]
        if args.hidden is not None and args.hidden != H:
            raise CLIError(f"--hidden {args.hidden} does not match the checkpoint's {H} hidden units")
        if args.dtype is not None and args.dtype != dt:
            raise CLIError(f"--dtype {args.dtype} does not match the checkpoint's {dt}")
        if cfg["optimizer"] != ck["optimizer"]:
            raise CLIError(f"--optimizer {cfg['optimizer']} does not match the checkpoint's {ck['optimizer']}")
        cfg["hidden"], cfg["dtype"] = H, dt
        cfg["lr"] = args.lr if args.lr is not None else ck["lr"]
    else:
        cfg["cell"] = args.cell or DEFAULTS["cell"]
        cfg["layers"] = args.layers if args.layers is not None else DEFAULTS["layers"]
        cfg["hidden"] = args.hidden if args.hidden is not None else DEFAULTS["hidden"]
        cfg["dtype"] = args.dtype or DEFAULTS["dtype"]
        cfg["lr"] = args.lr if args.lr is not None else DEFAULT_LR[cfg["optimizer"]]
    return cfg


def _state_shape(B, H, layers=1):
    """Shape of each state array: [B, H], or [layers, B, H] for a stacked model."""
    return (B, H) if layers == 1 else (layers, B, H)


def _zero_state(cell, B, H, dtype, layers=1):
    """The streams' initial state as a tuple: (h,), or (h, c) for the LSTM."""
    return tuple(np.zeros(_state_shape(B, H, layers), dtype) for _ in range(2 if cell == "lstm" else 1))


def _check_model_fits(H, V, B, k, dtype, layers=1):
    """CLIError naming --hidden/--batch/--bptt when one step cannot fit in this machine's memory."""
    # params, gradients and two Adam moments, plus one interval's states, logits and deltas
    need = (4 * (layers * 2 * H * H + 2 * H * V + H + V) + 3 * k * B * (layers * H + V)) * dtype.itemsize
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):     # not POSIX: let the allocation decide
        return
    if need > have:
        raise CLIError(f"--hidden {H} with --batch {B} x --bptt {k}: one training step needs about "
                       f"{need / 2**30:,.1f} GiB, more than this machine's {have / 2**30:,.1f} GiB")


class _Stop(BaseException):
    """Raised by the SIGTERM handler: stop like Ctrl-C (a BaseException, so nothing swallows it)."""


def _raise_stop(signum, frame):
    raise _Stop(signum)


def _output_paths(args):
    """The checkpoint path (None: none) after checking --save, --no-save and --plot."""
    if args.no_save and args.save is not None:
        raise CLIError(f"--no-save and --save {args.save} contradict each other; give one")
    save_path = None if args.no_save else (args.save or args.resume or "charlm.npz")
    if save_path:
        check_output_path("--save" if args.save or not args.resume else "--resume", save_path)
    if args.json:
        check_output_path("--json", args.json)
    if args.plot:
        check_output_path("--plot", args.plot)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CLIError("--plot needs matplotlib, which is not installed: pip install 'fastbptt[plot]'") from None
    return save_path


def main(args: argparse.Namespace) -> int:
    """Run ``fastbptt train`` with parsed ``args``; the exit status (130 after Ctrl-C, 143 after SIGTERM)."""
    t_start = time.perf_counter()
    save_path = _output_paths(args)
    meta = measurement_metadata(getattr(args, "command_line", "fastbptt train")) if args.json else None
    ck = load_checkpoint(args.resume) if args.resume else None
    text, name = load_corpus(args.text, args.encoding)
    cfg = _settings(args, ck)
    if cfg["layers"] > 1 and (args.workers is not None or args.scheduler is not None):
        # the cluster splits and joins states [B, H] by row, not the stacked [L, B, H]
        raise CLIError(f"--layers {cfg['layers']} cannot train on Dask (--workers/--scheduler): "
                       "the data-parallel trainer runs single-layer models only")
    digest = text_digest(text)

    if ck:
        vocab = ck["vocab"]
        unknown = sorted(set(text) - set(vocab))
        if unknown:
            raise CLIError(f"the text has {plural(len(unknown), 'character')} the checkpoint's vocabulary "
                           f"lacks (e.g. {unknown[0]!r}); resume on the text it was trained on")
    else:
        vocab = "".join(sorted(set(text)))
    if len(vocab) < 2:
        raise CLIError(f"the text has {plural(len(vocab), 'distinct character')}; at least 2 are needed")
    lut = {ch: i for i, ch in enumerate(vocab)}
    ids = np.fromiter((lut[ch] for ch in text), dtype=np.int64, count=len(text))
    data = make_streams(ids, cfg["batch"], cfg["bptt"])

    dtype = np.dtype(cfg["dtype"])
    H, B = cfg["hidden"], cfg["batch"]
    layers = cfg["layers"]
    _check_model_fits(H, len(vocab), B, cfg["bptt"], dtype, layers)
    note = ""
    if ck:
        # the streams go on where they stopped on the same text cut the same way; on another
        # text or --batch, the model and optimizer go on and the streams start from the beginning
        h_ck = ck["h"] if isinstance(ck["h"], tuple) else (ck["h"],)
        same = h_ck[0].shape == _state_shape(B, H, layers) and ck["text_sha256"] in ("", digest)
        if same and ck["pos"] > data.shape[0] - 1:
            if ck["text_sha256"]:
                raise CLIError(f"--resume {args.resume}: corrupt checkpoint (pos {ck['pos']} is past the "
                               f"end of the text's {data.shape[0] - 1}-step streams)")
            same = False                               # an older checkpoint on another text
        h = tuple(a.astype(dtype) for a in h_ck) if same else _zero_state(cfg["cell"], B, H, dtype, layers)
        if len(h) == 1:
            h = h[0]
        pos = ck["pos"] if same else 0
        state = State(ck["params"], ck["opt"], h, ck["step"], pos, ck["losses"])
        note = f"; resuming at step {state.step}" + ("" if same else ", streams restarted on this text")
    else:
        params = api.init_params(len(vocab), H, len(vocab), cell=cfg["cell"], num_layers=layers,
                                 dtype=dtype, seed=args.seed)
        # min-char-rnn style small output weights: the first loss is ~ln(vocab), a uniform guess
        params["V"] *= dtype.type(0.1)
        h = _zero_state(cfg["cell"], B, H, dtype, layers)
        state = State(params, new_opt_state(cfg["optimizer"], params), h[0] if len(h) == 1 else h, 0, 0, [])

    rng = np.random.default_rng(args.seed + state.step)
    chars_per_step = B * cfg["bptt"]
    first_step = state.step
    print(f"fastbptt train: {name}, {plural(len(text), 'character')}, vocabulary {len(vocab)}; "
          f"{cfg['cell']} cell" + (f" x {layers} layers" if layers > 1 else "") + f", hidden {H}, {B} streams x {cfg['bptt']}-step intervals, {cfg['optimizer']} lr {cfg['lr']:g}, "
          f"clip {cfg['clip']:g}, {cfg['dtype']}" + note, flush=True)

    trainer = None
    if args.workers is not None or args.scheduler is not None:
        try:
            from .distributed import trainer_from_args  # data-parallel steps on Dask
        except ImportError as exc:
            raise CLIError(str(exc)) from None
        trainer = trainer_from_args(args, data)
    step = trainer.step if trainer else train_step
    bar = _Progress(first_step + args.steps, first_step, enabled=not args.no_progress)
    stopped = None                                     # the signal that stopped the run
    limits = _blas_threads(args.threads)
    old_term = _install(signal.SIGTERM, _raise_stop)
    t0 = time.perf_counter()
    try:
        while state.step < first_step + args.steps:
            state = step(state, data, cfg)            # one rebinding: a signal never sees half a step
            if not math.isfinite(state.losses[-1]):
                raise CLIError(f"the loss became {state.losses[-1]} at step {state.step}; "
                               "try a smaller --lr or --clip (no checkpoint written)")
            done = state.step - first_step
            el = time.perf_counter() - t0
            bar.update(smoothed(state.losses, 20), done * chars_per_step / max(el, 1e-9))
            if args.sample_every and done % args.sample_every == 0 and state.step < first_step + args.steps:
                bar.write(f"--- sample at step {state.step} (loss {smoothed(state.losses):.3f}) ---\n"
                          + sample(state.params, vocab, args.sample_len, args.temperature, rng, cell=cfg["cell"]))
            if save_path and args.save_every and done % args.save_every == 0:
                save_checkpoint(save_path, state, cfg, vocab, digest)
    except KeyboardInterrupt:
        stopped = signal.SIGINT
    except _Stop:
        stopped = signal.SIGTERM
    finally:
        _install(signal.SIGTERM, old_term)
        bar.close()
        if limits is not None:
            limits.restore_original_limits()
        if trainer:
            trainer.close()
    elapsed = time.perf_counter() - t0

    if stopped is not None:
        print(f"{'interrupted' if stopped == signal.SIGINT else 'terminated (SIGTERM)'} at step {state.step}",
              file=sys.stderr, flush=True)
    if save_path:
        save_checkpoint(save_path, state, cfg, vocab, digest)
    done = state.step - first_step
    losses = state.losses[:state.step]
    final_sample = sample(state.params, vocab, args.sample_len, args.temperature, rng, cell=cfg["cell"]) if losses else ""
    if losses:
        print(f"--- sample (temperature {args.temperature:g}) ---\n" + final_sample)
    if args.plot and losses:
        plot_losses(args.plot, losses, f"fastbptt train: {name} (hidden {H}, {B}x{cfg['bptt']})", len(vocab))
    cps = done * chars_per_step / elapsed if elapsed > 0 else float("nan")
    first = losses[0] if losses else float("nan")
    print(f"done: {plural(done, 'step')} ({plural(done * chars_per_step, 'character')}) in {elapsed:.1f} s, "
          f"{cps:,.0f} chars/s; loss {first:.3f} at step 1 -> {smoothed(losses):.3f} (mean of the last "
          f"{plural(min(50, len(losses)), 'step')}, nats/char) at step {state.step}"
          + (f"; checkpoint {save_path}" if save_path else "")
          + (f"; plot {args.plot}" if args.plot and losses else "")
          + (f"; {trainer.summary()}" if trainer else ""), flush=True)
    if args.json:
        summary = dict(meta=measurement_metadata(meta["command"], meta), corpus=name,
                       characters=len(text), vocab_size=len(vocab),
                       config=dict(cfg, steps=args.steps, seed=args.seed, temperature=args.temperature),
                       first_step=first_step, last_step=state.step, losses=[round(v, 6) for v in losses],
                       train_seconds=elapsed, total_seconds=time.perf_counter() - t_start,
                       chars_per_second=cps, stopped_by=None if stopped is None else signal.Signals(stopped).name,
                       final_sample=final_sample)
        try:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=1)
        except OSError as exc:
            raise CLIError(f"--json {args.json}: cannot write: {exc.strerror or exc}") from None
    return 128 + int(stopped) if stopped is not None else 0


_UNSET = object()


def _install(signum, handler):
    """Set a signal handler where Python allows it (the main thread); returns the previous one.

    Returns ``_UNSET`` where nothing was installed, and passing ``_UNSET`` back does nothing.
    """
    if handler is _UNSET:
        return _UNSET
    try:
        old = signal.signal(signum, handler)
    except ValueError:                                  # not the main thread: leave signals alone
        return _UNSET
    return signal.SIG_DFL if old is None else old       # None: a handler not set from Python
