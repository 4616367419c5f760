"""Data-parallel BPTT on Dask: the gradient of a whole batch from shards on a cluster.

The batch axis is cut into shards that live on the workers (:func:`shard`); each call
(:func:`loss_and_grad`) sends the params once, every worker runs
:func:`fastbptt.loss_and_grad` with ``reduction="sum"`` on its shards, the sums meet in a
tree reduction on the workers, and the client divides once by the global count of valid
steps. Every sequence of a batch is independent of the others (truncation, checkpointing
and masks act per sequence), so the result is the single-process call's up to summation
order::

    from dask.distributed import Client
    client = Client()                                    # or Client("tcp://scheduler:8786")
    shards = fastbptt.distributed.shard(client, inputs, targets, mask=mask)
    loss, grads, h_last = fastbptt.distributed.loss_and_grad(client, params, shards,
                                                             reduction="mean", truncate=25)

Needs ``dask[distributed]`` (``pip install 'fastbptt[dask]'``); ``import fastbptt`` never
imports it. :class:`Trainer` is the loop behind ``fastbptt train --workers N``.
"""
from __future__ import annotations

import inspect
import time

import numpy as np

try:
    from dask.distributed import Client, LocalCluster, wait
    from distributed.client import CancelledError
except ImportError as exc:                            # pragma: no cover - depends on the install
    raise ImportError("fastbptt.distributed needs dask.distributed: pip install 'fastbptt[dask]'"
                      f" ({exc})") from None

from . import __version__
from . import api

__all__ = ["shard", "loss_and_grad", "Shards", "Trainer", "ClusterError"]

# gradients with one row per sequence: concatenated in batch order, never summed
BATCH_GRADS = ("h0", "c0")
# keywords fixed when the data are sharded, not per call
SHARD_KEYWORDS = ("inputs", "targets", "h0", "mask", "batch_first")
# how long a call waits for a client that is not connected before giving up
LOST_AFTER_S = 10.0
POLL_S = 0.5
# a worker that died while holding a shard: put the shard back from the client and retry
RETRIES = 3
SCATTER_TIMEOUT_S = 15
CONNECT_TIMEOUT_S = 20
# params up to this size travel inside each shard's task; larger ones are scattered once
INLINE_PARAMS_BYTES = 1 << 20


class ClusterError(RuntimeError):
    """The Dask client is closed, the scheduler is gone, or a worker cannot run fastbptt."""


# --------------------------------------------------------------------------- cluster checks
def _version_probe():
    # a local function: cloudpickle sends it by value, so a worker without fastbptt can run it
    def probe():
        try:
            import fastbptt
        except Exception as exc:                     # noqa: BLE001 - report any import failure
            return f"not importable ({type(exc).__name__}: {exc})"
        return str(getattr(fastbptt, "__version__", "unknown"))
    return probe


def _check_client(client):
    """ClusterError unless ``client`` is a running dask.distributed Client."""
    if not isinstance(client, Client):
        raise TypeError(f"client must be a dask.distributed.Client; got {type(client).__name__}")
    status = getattr(client, "status", None)
    if status in ("closing", "closed", "failed"):
        raise ClusterError(f"the Dask client is closed (status {status!r}); create a new Client")
    if status != "running":
        raise ClusterError(f"the Dask client is not connected to its scheduler (status {status!r}); "
                           "the scheduler may be gone")


def check_workers(client):
    """Raise ClusterError naming every worker whose fastbptt is missing or another version.

    Returns the number of worker threads (the default number of shards).
    """
    _check_client(client)
    try:
        found = client.run(_version_probe(), on_error="return")
    except OSError as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {client.scheduler.address}: {exc}") from None
    if not found:
        raise ClusterError(f"the Dask cluster at {client.scheduler.address} has no workers")
    # a worker that could not even run the probe (another Python, a broken install) returns
    # its exception instead of a version
    found = {w: v if isinstance(v, str) else f"not importable ({type(v).__name__}: {v})"
             for w, v in found.items()}
    bad = {w: v for w, v in found.items() if v != __version__}
    if bad:
        lines = "; ".join(f"worker {w} has fastbptt {v}" if not v.startswith("not importable")
                          else f"worker {w}: fastbptt {v}" for w, v in sorted(bad.items()))
        raise ClusterError(f"{lines}; this client has fastbptt {__version__}. Install the same "
                           "version on every worker (pip install 'fastbptt[dask]').")
    return sum(client.nthreads().values())


class _Lost(Exception):
    """Data a call depends on was lost with a worker (it is placed again and the call rerun)."""


def _result(client, future, inputs=()):
    """``future.result()`` that raises ClusterError instead of hanging on a lost scheduler.

    ``inputs``: futures without lineage (scattered data); _Lost when one of them is gone.
    """
    since = None
    while True:
        try:
            wait(future, timeout=POLL_S)
        except TimeoutError:
            pass
        except (OSError, RuntimeError) as exc:        # a closed event loop, a closed comm
            _check_client(client)
            raise ClusterError(f"lost the Dask scheduler while waiting ({type(exc).__name__}: {exc})") from None
        if future.done():
            return future.result()
        if any(f.status != "finished" for f in inputs):
            raise _Lost("a worker holding data of this call died")
        status = client.status
        if status in ("closing", "closed", "failed"):
            raise ClusterError(f"the Dask client closed while a call was running (status {status!r}); "
                               "the scheduler is gone or the client was closed")
        if status != "running":
            since = since or time.monotonic()
            if time.monotonic() - since > LOST_AFTER_S:
                raise ClusterError(f"lost the Dask scheduler: the client has not been connected for "
                                   f"{LOST_AFTER_S:.0f} s (status {status!r})")
        else:
            since = None


# --------------------------------------------------------------------------- sharding
def _batch_axis(per_step, batch_first):
    return 0 if batch_first or not per_step else 1


def _targets_per_step(targets):
    is_int = np.issubdtype(targets.dtype, np.integer) and targets.dtype != np.bool_
    return targets.ndim == (2 if is_int else 3)


def _is_ids(a):
    return np.issubdtype(a.dtype, np.integer) and a.dtype != np.bool_


def _n_valid(targets, mask, batch_first, T, B):
    """The count ``reduction="mean"`` divides by: valid (t, b), or sequences for many-to-one."""
    if _targets_per_step(targets):
        return T * B if mask is None else int(np.count_nonzero(mask))
    if mask is None:
        return B
    return int(np.count_nonzero(np.asarray(mask).astype(bool).any(axis=1 if batch_first else 0)))


class _Placed:
    """Pieces of data held on the client and placed on the workers, put back if a worker dies."""

    def __init__(self, client, pieces):
        self.client, self.pieces = client, pieces
        self.futures = [None] * len(pieces)
        self.place()

    def place(self):
        """Scatter every piece not held by a worker, round-robin over the current workers."""
        todo = [i for i, f in enumerate(self.futures) if f is None or f.status != "finished"]
        workers = sorted(self.client.nthreads()) if todo else []
        for i in todo:
            w = [workers[i % len(workers)]] if workers else None
            self.futures[i] = self.client.scatter([self.pieces[i]], workers=w, hash=False,
                                                  timeout=SCATTER_TIMEOUT_S)[0]


class Shards:
    """Handle to a batch split along its batch axis and placed on the workers (:func:`shard`).

    Attributes
    ----------
    T, B : int
        Steps and sequences of the whole batch.
    sizes : list of int
        Sequences per shard, in batch order.
    n_valid : int
        What ``reduction="mean"`` divides by: valid steps (sequences for many-to-one).
    """

    def __init__(self, client, placed, sizes, T, B, n_valid, batch_first, probe):
        self.client, self._placed = client, placed
        self.sizes, self.T, self.B, self.n_valid = sizes, T, B, n_valid
        self.batch_first, self._probe = batch_first, probe

    def __len__(self):
        return len(self.sizes)

    def __repr__(self):
        return f"Shards(T={self.T}, B={self.B}, shards={self.sizes})"


def shard(client, inputs, targets, *, mask=None, h0=None, batch_first=False, n_shards=None):
    """Split a batch along its batch axis and place the pieces on the workers, once.

    Parameters
    ----------
    client : dask.distributed.Client
    inputs, targets, mask, h0, batch_first
        As in :func:`fastbptt.loss_and_grad`: inputs ``[T, B, n_in]`` floats or ``[T, B]``
        ids, per-step targets ``[T, B(, n_out)]`` or many-to-one ``[B(, n_out)]``, mask
        ``[T, B]``, h0 ``[B, H]`` or the LSTM's ``(h0, c0)`` (``[B, T, ...]`` with
        ``batch_first=True``).
    n_shards : int, optional
        Pieces to cut the batch into (default: one per worker thread); more than B gives
        one sequence per shard. Shards go to the workers round-robin.

    Returns
    -------
    Shards
        Pass to :func:`loss_and_grad` as often as needed: the data is not sent again. The
        client keeps a view of each piece so that a shard lost with a worker is placed again.
    """
    n_threads = check_workers(client)
    if n_shards is None:
        n_shards = n_threads
    if isinstance(n_shards, bool) or not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
        raise ValueError(f"n_shards must be None or a positive int; got {n_shards!r}")
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be a bool; got {batch_first!r}")
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    if inputs.ndim not in (2, 3):
        raise ValueError(f"inputs must be [T, B, n_in] floats or [T, B] ids; got shape {inputs.shape}")
    T, B = (inputs.shape[1], inputs.shape[0]) if batch_first else inputs.shape[:2]
    if T == 0 or B == 0:
        raise ValueError(f"inputs must have T > 0 and B > 0; got T={T}, B={B}")
    per_step = _targets_per_step(targets)
    t_axis = _batch_axis(per_step, batch_first)
    arrays = {"inputs": (inputs, _batch_axis(True, batch_first)), "targets": (targets, t_axis)}
    if mask is not None:
        arrays["mask"] = (np.asarray(mask), _batch_axis(True, batch_first))
    if isinstance(h0, tuple):                        # the LSTM's (h0, c0)
        if len(h0) != 2:
            raise ValueError(f"h0 must be an array [B, H] or a pair (h0, c0); got a tuple of {len(h0)}")
        arrays["h0"], arrays["c0"] = (np.asarray(h0[0]), 0), (np.asarray(h0[1]), 0)
    elif h0 is not None:
        arrays["h0"] = (np.asarray(h0), 0)
    for name, (a, axis) in arrays.items():
        if a.ndim <= axis or a.shape[axis] != B:
            raise ValueError(f"{name} must have the batch size B = {B} (from inputs) on axis {axis}; "
                             f"got shape {a.shape}")
    n = min(int(n_shards), B)
    bounds = np.linspace(0, B, n + 1).round().astype(int)
    pieces = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        pieces.append({name: a[(slice(None),) * axis + (slice(lo, hi),)] for name, (a, axis) in arrays.items()})
    # a two-sequence stand-in for the batch: validates params against the data on the client,
    # with the extreme ids so that an id out of range is caught too
    rows = [0, B - 1]
    probe = {name: np.take(a, rows, axis=axis) for name, (a, axis) in arrays.items()}
    t_first = (slice(None), slice(0, 1)) if batch_first else (slice(0, 1),)
    for name in ("inputs", "mask"):
        if name in probe:
            probe[name] = probe[name][t_first]
    if per_step:
        probe["targets"] = probe["targets"][t_first]
    for name in ("inputs", "targets"):
        a = arrays[name][0]
        if _is_ids(a) and a.size:
            probe[name] = probe[name].copy()
            flat = probe[name].reshape(-1)
            flat[0], flat[-1] = a.min(), a.max()
    placed = _Placed(client, pieces)
    n_valid = _n_valid(targets, arrays.get("mask", (None,))[0], batch_first, T, B)
    return Shards(client, placed, [int(s) for s in np.diff(bounds)], T, B, n_valid, bool(batch_first), probe)


# --------------------------------------------------------------------------- worker tasks
def _shard_grad(params, piece, kwargs, h0=None, window=None, batch_first=False):
    """Summed loss and gradients of one shard (runs on a worker).

    ``window=(a, e)``: the piece is a ``[L, b]`` id stream and the call is its interval
    ``data[a:e] -> data[a+1:e+1]`` (``fastbptt train``).
    """
    if window is not None:
        a, e = window
        data = piece["inputs"]
        inputs, targets, mask = data[a:e], data[a + 1:e + 1], None
    else:
        inputs, targets, mask = piece["inputs"], piece["targets"], piece.get("mask")
        h0 = _state(piece) if h0 is None else h0
    loss, grads, h_last = api.loss_and_grad(params, inputs, targets, h0, mask=mask,
                                            batch_first=batch_first, **kwargs)
    return loss, grads, h_last


def _state(d):
    """h0 of a piece (or probe): an array, the LSTM's (h0, c0), or None."""
    return (d["h0"], d["c0"]) if "c0" in d else d.get("h0")


def _rows(h, lo, hi):
    """Sequences lo:hi of a state: an array, the LSTM's (h, c), or None (zeros)."""
    if h is None:
        return None
    return tuple(x[lo:hi] for x in h) if isinstance(h, tuple) else h[lo:hi]


def _concat(a, b):
    if isinstance(a, tuple):                          # (h, c) states
        return tuple(_concat(x, y) for x, y in zip(a, b))
    return np.concatenate([a, b], axis=0)


def _combine(a, b):
    """Sum two shards' results; per-sequence parts are concatenated in batch order."""
    la, ga, ha = a
    lb, gb, hb = b
    grads = {k: _concat(ga[k], gb[k]) if k in BATCH_GRADS else ga[k] + gb[k] for k in ga}
    return la + lb, grads, _concat(ha, hb)


def _tree(client, futures):
    """Pairwise reduction on the workers, keeping batch order; one future."""
    level = list(futures)
    while len(level) > 1:
        nxt = [client.submit(_combine, level[i], level[i + 1], pure=False)
               for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _scale(loss, grads, n):
    """Divide a summed result by the global count (0 valid steps: everything stays 0)."""
    if n <= 1:
        return loss, grads
    return loss / n, {k: (tuple(x / x.dtype.type(n) for x in g) if isinstance(g, tuple)
                          else g / g.dtype.type(n)) for k, g in grads.items()}


def _split_kwargs(kwargs):
    """(kwargs for the shards, reduction, check_finite); TypeError for keywords set at shard()."""
    for k in SHARD_KEYWORDS:
        if k in kwargs:
            raise TypeError(f"{k}= is given to fastbptt.distributed.shard(), not to loss_and_grad()")
    sig = inspect.signature(api.loss_and_grad)
    try:
        sig.bind(None, None, None, **kwargs)
    except TypeError as exc:
        raise TypeError(f"fastbptt.distributed.loss_and_grad: {exc} (it takes the keywords of "
                        "fastbptt.loss_and_grad)") from None
    reduction = kwargs.get("reduction", "sum")
    check_finite = kwargs.get("check_finite", False)
    return {**kwargs, "reduction": "sum", "check_finite": False}, reduction, check_finite


def _run(client, params, placed, submit_shard, n_valid, reduction):
    """Send params, run one task per shard, reduce on the workers; retry after lost shards."""
    for attempt in range(RETRIES + 1):
        _check_client(client)
        try:
            placed.place()
            lineless = list(placed.futures)
            if sum(np.asarray(v).nbytes for v in params.values()) <= INLINE_PARAMS_BYTES:
                pf = params                   # small: inside each task, one round trip fewer
            else:
                # to one worker, the others fetch it from there (a broadcast stalls on a dead worker)
                pf = client.scatter([params], hash=False, timeout=SCATTER_TIMEOUT_S)[0]
                lineless.append(pf)
            parts = [submit_shard(pf, f, i) for i, f in enumerate(placed.futures)]
            loss, grads, h_last = _result(client, _tree(client, parts), lineless)
            break
        except (_Lost, CancelledError, OSError) as exc:
            # a worker died with a shard or the params on it: place them again and rerun
            _check_client(client)
            if attempt == RETRIES:
                raise ClusterError(f"the call failed {RETRIES + 1} times as workers were lost "
                                   f"({type(exc).__name__}: {exc})") from None
    if reduction == "mean":
        loss, grads = _scale(loss, grads, n_valid)
    return float(loss), grads, h_last


def loss_and_grad(client, params, shards, **kwargs):
    """:func:`fastbptt.loss_and_grad` of the batch behind ``shards``, computed on the cluster.

    Parameters
    ----------
    client : dask.distributed.Client
    params : dict
        As for :func:`fastbptt.loss_and_grad`; sent once per call.
    shards : Shards
        From :func:`shard` on the same client.
    **kwargs
        Every keyword of :func:`fastbptt.loss_and_grad` except the data (``mask``, ``h0``,
        ``batch_first`` are given to :func:`shard`): ``activation``, ``loss``, ``reduction``,
        ``truncate``, ``checkpoint``, ``backend`` (run on the workers), ``check_finite`` ...

    Returns
    -------
    loss : float
    grads : dict
        Summed over shards on the workers (tree reduction); ``"h0"`` (and the LSTM's ``"c0"``)
        in batch order.
    h_last : array [B, H] (the LSTM: a tuple (h, c))
        In batch order.

    Raises
    ------
    ValueError, TypeError
        When the params or keywords do not fit the shards: raised on the client, before
        anything is sent, with :func:`fastbptt.loss_and_grad`'s message.
    ClusterError
        The client is closed or the scheduler was lost (within about ``LOST_AFTER_S``).
    """
    if not isinstance(shards, Shards):
        raise TypeError(f"shards must be the Shards returned by fastbptt.distributed.shard; "
                        f"got {type(shards).__name__}")
    _check_client(client)
    if shards.client is not client:
        raise ValueError("shards were placed through another client; shard the data on this client")
    call_kwargs, reduction, check_finite = _split_kwargs(kwargs)
    probe_kwargs = {**call_kwargs, "reduction": reduction}
    if probe_kwargs.get("backend", "cpu") in ("cpu", "cuda"):
        probe_kwargs["backend"] = "numpy"            # validation only: the reference is cheapest
    pr = shards._probe
    try:
        api.loss_and_grad(params, pr["inputs"], pr["targets"], _state(pr), mask=pr.get("mask"),
                          batch_first=shards.batch_first, **probe_kwargs)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"the shards do not fit these params or keywords: {exc} (checked on a "
                        f"one-step, two-sequence sample of the shards; the batch is T={shards.T}, "
                        f"B={shards.B})") from None

    def submit_shard(pf, piece, i):
        return client.submit(_shard_grad, pf, piece, call_kwargs, batch_first=shards.batch_first,
                             pure=False)

    loss, grads, h_last = _run(client, params, shards._placed, submit_shard, shards.n_valid, reduction)
    if check_finite:
        api._check_finite(loss, grads)
    return loss, grads, h_last


# --------------------------------------------------------------------------- training
class Trainer:
    """Synchronous data-parallel steps of ``fastbptt train`` on a Dask cluster.

    The ``[L, B]`` id streams are split by column across the workers once; each step sends
    the params and every shard's carried state with its task, sums the gradients on the
    workers and returns the mean over the batch. The states come back to the client after
    every step, so a worker that dies loses nothing: its tasks run again elsewhere.

    Parameters
    ----------
    data : array [L, B] of ids
    workers : int, optional
        Start a LocalCluster of this many single-threaded worker processes.
    scheduler : str, optional
        Address of an existing scheduler to join instead.
    """

    def __init__(self, data, *, workers=None, scheduler=None, client=None):
        self.cluster = None
        if client is not None:
            self.client, self._own_client = client, False
        elif scheduler is not None:
            try:
                self.client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                raise ClusterError(f"cannot connect to the Dask scheduler at {scheduler}: {exc}") from None
            self._own_client = True
        else:
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=":0")
            self.client, self._own_client = Client(self.cluster), True
        try:
            n = check_workers(self.client)
            B = data.shape[1]
            bounds = np.linspace(0, B, min(n, B) + 1).round().astype(int)
            pieces = [{"inputs": np.ascontiguousarray(data[:, lo:hi])} for lo, hi in zip(bounds[:-1], bounds[1:])]
            self.bounds = bounds
            self.placed = _Placed(self.client, pieces)
        except BaseException:
            self.close()
            raise
        self.n_workers = len(self.client.nthreads())
        self.wait_s = 0.0

    def loss_and_grad(self, params, window, h0, **kwargs):
        """Mean loss, gradients and new states of the interval ``window=(a, e)``."""
        call_kwargs, _, _ = _split_kwargs({**kwargs, "reduction": "sum"})
        b = self.bounds

        def submit_shard(pf, piece, i):
            return self.client.submit(_shard_grad, pf, piece, call_kwargs, h0=_rows(h0, b[i], b[i + 1]),
                                      window=window, pure=False)

        t0 = time.perf_counter()
        n_valid = (window[1] - window[0]) * int(b[-1])
        out = _run(self.client, params, self.placed, submit_shard, n_valid, "mean")
        self.wait_s += time.perf_counter() - t0
        return out

    def step(self, state, data, cfg):
        """``fastbptt.train.train_step`` with the gradient computed on the cluster."""
        from .stream import TBPTTStream
        from .train import train_update
        stream = TBPTTStream(data, cfg["bptt"], h0=state.h, pos=state.pos, drop_last=True)
        if stream.done():                             # end of the streams: next epoch, fresh state
            stream.reset(None)
        a = stream.pos
        e = min(stream.steps, a + stream.k)
        loss, grads, h_last = self.loss_and_grad(state.params, (a, e), stream.h, cell=cfg.get("cell", "rnn"))
        return train_update(state, cfg, loss, grads, h_last, e)

    def summary(self):
        return f"{self.n_workers} Dask workers, {self.wait_s:.1f} s waiting on the cluster"

    def close(self):
        if self._own_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def trainer_from_args(args, data):
    """The Trainer for ``fastbptt train --workers N`` / ``--scheduler ADDRESS``; CLIError if not."""
    from .cli import CLIError
    if args.workers is not None and args.scheduler is not None:
        raise CLIError("--workers starts a local cluster and --scheduler joins one: give one of them")
    try:
        trainer = Trainer(data, workers=args.workers, scheduler=args.scheduler)
    except ClusterError as exc:
        raise CLIError(str(exc)) from None
    print(f"on Dask: {trainer.n_workers} workers "
          + (f"at {args.scheduler}" if args.scheduler else "(a local cluster of processes)")
          + f", {len(trainer.placed.pieces)} shards of the {data.shape[1]} streams", flush=True)
    return trainer
