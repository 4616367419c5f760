"""CUDA backend (numba-cuda): ``backend="cuda"`` of :func:`fastbptt.loss_and_grad`,
:func:`fastbptt.rnn_forward` and :func:`fastbptt.rnn_backward`.

:class:`CudaOps` is the GPU twin of :class:`fastbptt.cpu.CpuOps`: the same methods, so
:func:`fastbptt.engine.run` drives full, truncated and checkpointed BPTT on the device
unchanged. The kernels live in :mod:`fastbptt._cuda_kernels`; tunables in
:mod:`fastbptt.config`.

Arrays: NumPy inputs are copied to the device and results copied back as NumPy arrays.
Device arrays (anything with ``__cuda_array_interface__``: Numba device arrays, CuPy, PyTorch
CUDA tensors) are used in place and the gradients and ``h_last`` stay on the device (as Numba
device arrays; wrap them with ``torch.as_tensor(g, device="cuda")`` or ``cupy.asarray(g)``).
Validation of device arguments checks shapes and dtypes without copying them to the host; id
ranges are checked by a reduction on the device. Two small arrays are copied to the host
because the host-side scheduler needs their values: a device ``mask`` ``[T, B]`` and
many-to-one class-id targets ``[B]``.

Importing this module never needs numba-cuda or a GPU; using it raises an ``ImportError``
(numba-cuda missing) or a ``RuntimeError`` (no usable GPU) that says what is missing.
"""
from __future__ import annotations

import os
import time

import numpy as np

from . import _validate as V
from . import config

__all__ = ["CudaOps", "available", "loss_and_grad", "rnn_forward", "rnn_backward", "benchmark",
           "is_device_array"]

_NO_NUMBA_CUDA = ("backend='cuda' needs numba-cuda, which is not installed: "
                  "pip install 'fastbptt[cuda]' (numba-cuda with the CUDA 13 toolkit wheels; "
                  "use pip install 'numba-cuda[cu12]' for a CUDA 12 driver)")
_NO_GPU = ("backend='cuda' found no usable CUDA GPU: numba.cuda.is_available() is False "
           "(no NVIDIA GPU, or no driver visible to this process). To run the CUDA kernels "
           "without a GPU, set NUMBA_ENABLE_CUDASIM=1 before numba is imported (Numba's CUDA "
           "simulator: exact but very slow, for testing only)")


def _cuda():
    """``numba.cuda`` once it is known to be numba-cuda with a GPU (or the simulator)."""
    try:
        import numba_cuda  # noqa: F401  (numba's built-in CUDA target is deprecated: not used)
    except ImportError:
        raise ImportError(_NO_NUMBA_CUDA) from None
    from numba import cuda
    if not cuda.is_available():
        raise RuntimeError(_NO_GPU)
    return cuda


def available():
    """Whether ``backend="cuda"`` can run here, and why not.

    Returns
    -------
    ok : bool
    reason : str
        ``""`` when ok, else the message ``backend="cuda"`` would raise.
    """
    try:
        _cuda()
    except (ImportError, RuntimeError) as exc:
        return False, str(exc)
    return True, ""


def _kernels(dtype):
    from . import _cuda_kernels as K
    return K.build(dtype, config.THREADS, config.TILE), K.GENERIC


# --------------------------------------------------------------------------- device arrays
def is_device_array(a) -> bool:
    """True for CUDA device arrays: ``__cuda_array_interface__`` or a Numba (simulator) array."""
    return getattr(a, "__cuda_ndarray__", False) is True or hasattr(a, "__cuda_array_interface__")


def _as_device(cuda, a):
    if getattr(a, "__cuda_ndarray__", False) is True:
        return a                                   # Numba device array (or the simulator's)
    return cuda.as_cuda_array(a)                   # CuPy, PyTorch, ...: a zero-copy view


def _stand_in(a, swap):
    """A host array of a's shape and dtype kind for the validator, without its data.

    np.zeros is calloc'ed: untouched pages cost no memory. Integer ids become int64 so the
    validator's int64 conversion is a no-op. ``swap``: the validator will swap the first two
    axes (batch_first) and then make the array contiguous; building it already swapped makes
    that a no-op too.
    """
    shape = tuple(int(s) for s in a.shape)
    dt = np.dtype(a.dtype)
    if np.issubdtype(dt, np.integer):
        dt = np.dtype(np.int64)
    if swap and len(shape) >= 2:
        return np.zeros((shape[1], shape[0]) + shape[2:], dtype=dt).swapaxes(0, 1)
    return np.zeros(shape, dtype=dt)


def _addr(a):
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is not None:
        return cai["data"][0]
    return a.__array_interface__["data"][0]       # the simulator's arrays wrap NumPy arrays


def _nblocks(n, per):
    return max(1, (int(n) + per - 1) // per)


class _Device:
    """Kernel launchers and buffers on one device, for one float dtype (shared by the layer
    API and :class:`CudaOps`)."""

    def __init__(self, dtype, act):
        self.cuda = _cuda()
        self.dtype = np.dtype(dtype)
        self.act = int(act)
        self.k, self.gk = _kernels(self.dtype)
        self.NT = self.k.NT
        cu = self.cuda
        self._d1 = cu.device_array(1, dtype=self.dtype)
        self._d2 = cu.device_array((1, 1), dtype=self.dtype)
        self._d3 = cu.device_array((1, 1, 1), dtype=self.dtype)
        self._l1 = cu.device_array(1, dtype=np.int64)

    # allocation and copies
    def empty(self, shape):
        return self.cuda.device_array(shape, dtype=self.dtype)

    def zeros(self, shape):
        a = self.empty(shape)
        flat = a.reshape(-1)
        self.k.fill[_nblocks(flat.shape[0], self.NT), self.NT](flat, 0)
        return a

    def upload(self, a, dtype=None):
        return self.cuda.to_device(np.ascontiguousarray(a, dtype=dtype))

    def copy_into(self, dst, src):
        """dst[...] = src for C-contiguous device arrays of one shape; they may overlap."""
        nbytes = dst.size * dst.dtype.itemsize
        if nbytes == 0:
            return
        d0, s0 = _addr(dst), _addr(src)
        if d0 < s0 + nbytes and s0 < d0 + nbytes and d0 != s0:
            tmp = self.cuda.device_array(src.shape, dtype=src.dtype)
            tmp.copy_to_device(src)                  # overlapping ranges: through a buffer
            src = tmp
        elif d0 == s0:
            return
        dst.copy_to_device(src)

    def add_into(self, dst, src):
        d, s = dst.reshape(-1), src.reshape(-1)
        self.k.add_into[_nblocks(d.shape[0], self.NT), self.NT](d, s)

    def contiguous(self, a, dtype=None, swap=0):
        """A C-contiguous copy of a device array (time-major when ``swap``), or a itself."""
        dtype = np.dtype(a.dtype if dtype is None else dtype)
        if not swap and a.dtype == dtype and a.is_c_contiguous():
            return a
        if a.ndim == 1:
            return self.upload(a.copy_to_host(), dtype)   # a strided vector: tiny, via host
        shape = tuple(a.shape)
        if swap:
            shape = (shape[1], shape[0]) + shape[2:]
        out = self.cuda.device_array(shape, dtype=dtype)
        n = int(np.prod(shape))
        kern = self.gk.to_time_major2 if a.ndim == 2 else self.gk.to_time_major3
        kern[_nblocks(n, self.NT), self.NT](a, out, int(swap))
        return out

    def transpose(self, a):
        return self.contiguous(a, swap=1)

    # kernels
    def gemm(self, A, B, C, ta=0, tb=0, beta=0.0, bias=None):
        """C = op(A) @ op(B) (+ beta*C) (+ bias): the tiled shared-memory product."""
        M, N = C.shape
        TL = self.k.TL
        grid = (_nblocks(M, TL), _nblocks(N, TL))
        self.k.gemm[grid, (TL, TL)](A, B, C, int(ta), int(tb), float(beta),
                                    self._d1 if bias is None else bias, int(bias is not None))

    def colsum(self, X, out):
        """out += X.sum(axis=0) (db, dc)."""
        R, N = X.shape
        TL = self.k.TL
        grid = (_nblocks(N, TL), min(_nblocks(R, TL), 1024))
        self.k.colsum_add[grid, (TL, TL)](X, out)

    def rows(self, kern, dst, idx, src, n):
        kern[_nblocks(n, self.NT), self.NT](dst, idx, src)

    def recurrent_path(self, B, H):
        """Which time-loop kernels run: "persistent", "cooperative" or "per-step"."""
        mode = config.RECURRENT
        if mode not in ("auto", "persistent", "cooperative", "per-step"):
            raise ValueError(f"fastbptt.config.RECURRENT must be 'auto', 'persistent', "
                             f"'cooperative' or 'per-step'; got {mode!r}")
        fits = H * H * self.dtype.itemsize <= config.PERSISTENT_MAX_SMEM
        if mode == "auto":
            return "persistent" if fits and B * H <= config.PERSISTENT_MAX_BH else "per-step"
        if mode == "persistent" and not fits:
            return "per-step"                    # W does not fit in one block's shared memory
        return mode

    def _coop_cols(self, H):
        """Columns of W per block of the cooperative kernels (their slice fills the budget)."""
        return max(1, min(H, config.PERSISTENT_MAX_SMEM // (H * self.dtype.itemsize)))

    def _launch_coop(self, kern, H, args):
        cols = self._coop_cols(H)
        G = _nblocks(H, cols)
        smem = H * cols * self.dtype.itemsize
        nt = config.PERSISTENT_THREADS
        try:                                     # every block must be resident at once
            spec = kern.specialize(*args, cols)
            most = next(iter(spec.overloads.values())).max_cooperative_grid_blocks(nt, smem)
        except Exception:                        # the simulator (one block): nothing to ask
            most = G
        if G > most:
            return False
        kern[G, nt, 0, smem](*args, cols)
        return True

    def forward(self, xu, hs, WT):
        """hs[1:] from hs[0] and xu [n, B, H], with the kernels :meth:`recurrent_path` picks."""
        n, B, H = xu.shape
        path = self.recurrent_path(B, H)
        if path == "persistent":
            smem = H * H * self.dtype.itemsize
            self.k.persistent_forward[1, config.PERSISTENT_THREADS, 0, smem](xu, hs, WT, self.act)
            return
        if path == "cooperative" and self._launch_coop(self.k.coop_forward, H, (xu, hs, WT, self.act)):
            return
        grid = _nblocks(B * H, self.NT)
        for t in range(n):
            self.k.step_forward[grid, self.NT](xu, hs, WT, t, self.act)

    def backward(self, dhe, inj0, hs, W, dh, da):
        """da [n, B, H] for every step and dh <- the delta leaving step 0 (as CpuOps.backward)."""
        n, B, H = da.shape
        if dhe is None:
            dhe, inj0 = self._d3, n
        path = self.recurrent_path(B, H)
        if path == "persistent":
            smem = H * H * self.dtype.itemsize
            self.k.persistent_backward[1, config.PERSISTENT_THREADS, 0, smem](
                da, hs, W, dhe, int(inj0), dh, self.act)
            return da
        if path == "cooperative" and self._launch_coop(
                self.k.coop_backward, H, (da, hs, W, dhe, int(inj0), dh, self.act)):
            return da
        grid = _nblocks(B * H, self.NT)
        for t in range(n - 1, -1, -1):
            self.k.step_backward[grid, self.NT](da, hs, W, dhe, int(inj0), dh, t, self.act)
        self.gemm(da[0], W, dh)                       # the delta leaving the first step
        return da


# --------------------------------------------------------------------------- engine ops
class _Acc:
    """``g[k] += d`` on a device array (the engine's update of g["h0"])."""

    __slots__ = ("dev", "arr")

    def __init__(self, dev, arr):
        self.dev, self.arr = dev, arr

    def __iadd__(self, other):
        self.dev.add_into(self.arr, other.arr if isinstance(other, _Acc) else other)
        return self


class _Grads(dict):
    """Gradient buffers on the device; item access supports ``+=`` through an add kernel."""

    def __init__(self, dev, items):
        super().__init__(items)
        self._dev = dev

    def __getitem__(self, k):
        return _Acc(self._dev, dict.__getitem__(self, k))

    def __setitem__(self, k, v):
        dict.__setitem__(self, k, v.arr if isinstance(v, _Acc) else v)


_get = dict.__getitem__


class CudaOps(_Device):
    """The operations :mod:`fastbptt.engine` schedules, on device arrays, for one problem.

    Parameters
    ----------
    p : fastbptt._validate.Problem
        The validated problem (host arrays).
    dev : dict, optional
        Device arrays replacing fields of ``p`` (``"U"``, ``"W"``, ``"b"``, ``"V"``, ``"c"``,
        ``"E"``, ``"x"``, ``"ids"``, ``"h0"``, ``"tgt_ids"``, ``"y_rows"``): C-contiguous and
        time-major like the fields they replace. The others are uploaded from ``p``.
    """

    def __init__(self, p, dev=None):
        super().__init__(p.dtype, p.act)
        self.p = p
        dev = dev or {}

        def get(name, host, dtype=None):
            if name in dev:
                return dev[name]
            return None if host is None else self.upload(host, dtype)

        self.U, self.W, self.b = get("U", p.U), get("W", p.W), get("b", p.b)
        self.V, self.c, self.E = get("V", p.V), get("c", p.c), get("E", p.E)
        self.x = get("x", p.x)                                        # [T, B, n_in]
        ids = get("ids", p.ids, np.int64)                             # [T, B]
        self.ids = None if ids is None else ids.reshape(-1)           # [T*B]
        self.h0 = get("h0", p.h0)                                     # [B, H]
        # the engine's state-row interface, for the Elman cell: a row is [h]
        self.state0 = self.h0
        self.row_width = self.state_width = p.H
        self.WT = self.transpose(self.W)                              # [H, H]
        tgt = get("tgt_ids", p.tgt_ids, np.int64)
        self.tgt = None if tgt is None else tgt.reshape(-1)           # [T*B] class ids
        self.y_rows = get("y_rows", p.y_rows)                         # [R, n_out]
        self.y_map = None if p.y_map is None else self.upload(p.y_map, np.int64).reshape(-1)
        self.w = self.upload(p.weights).reshape(-1)                   # [T*B] loss weights
        self.loss_acc = self.cuda.device_array(1, dtype=np.float64)
        self._lossbuf = np.zeros(1, dtype=np.float64)

    # x_t rows for steps [t0, t1): [n*B, n_in]; None for one-hot ids
    def _x_rows(self, t0, t1):
        p = self.p
        if self.x is not None:
            return self.x[t0:t1].reshape(-1, p.n_in)
        if self.E is not None:
            ids = self.ids[t0 * p.B:t1 * p.B]
            out = self.empty((ids.shape[0], p.n_in))
            self.rows(self.k.gather_rows, self.E, ids, out, out.size)
            return out
        return None

    def proj(self, t0, t1):
        """xu [n, B, H] = x_t Uᵀ + b for steps [t0, t1): one product over all n*B rows."""
        p = self.p
        xu = self.empty((t1 - t0, p.B, p.H))
        xu2 = xu.reshape(-1, p.H)
        x2 = self._x_rows(t0, t1)
        if x2 is None:
            ids = self.ids[t0 * p.B:t1 * p.B]
            self.k.onehot_proj[_nblocks(xu2.size, self.NT), self.NT](self.U, ids, self.b, xu2)
        else:
            self.gemm(x2, self.U, xu2, tb=1, bias=self.b)
        return xu

    def forward(self, xu, hs):
        super().forward(xu, hs, self.WT)

    def head(self, hs_out, t0, t1, g):
        """Loss of steps [t0, t1) and ∂L/∂h_t through the output layer (as CpuOps.head)."""
        p = self.p
        n, B, H = hs_out.shape
        R = n * B
        h2 = hs_out.reshape(R, H)
        sel = rows_dev = None
        if not p.dense:
            rows = np.flatnonzero(p.weights[t0:t1].reshape(-1))
            if rows.size == 0:
                return 0.0, None
            rows_dev = self.upload(rows, np.int64)
            sel = self.upload(rows + t0 * B, np.int64)            # flat (t, b) of each row
            hsel = self.empty((rows.size, H))
            self.rows(self.k.gather_rows, h2, rows_dev, hsel, hsel.size)
            h2 = hsel
        Rr = h2.shape[0]
        o = self.empty((Rr, p.n_out))                              # logits, then their deltas
        self.gemm(h2, self.V, o, tb=1, bias=self.c)
        if p.loss == "mse":
            mode = 2
        else:
            mode = 0 if self.tgt is not None else 1
        self.k.fill[1, 1](self.loss_acc, 0)
        self.k.head_loss[Rr, self.NT](
            o, self._l1 if sel is None else sel, int(sel is not None), t0 * B, self.w,
            self._l1 if self.tgt is None else self.tgt,
            self._d2 if self.y_rows is None else self.y_rows,
            self._l1 if self.y_map is None else self.y_map, int(self.y_map is not None),
            mode, self.loss_acc)
        self.gemm(o, h2, _get(g, "V"), ta=1, beta=1.0)
        self.colsum(o, _get(g, "c"))
        if sel is None:
            dhe = self.empty((n, B, H))
            self.gemm(o, self.V, dhe.reshape(R, H))
        else:
            dhe = self.zeros((n, B, H))
            tmp = self.empty((Rr, H))
            self.gemm(o, self.V, tmp)
            self.rows(self.k.scatter_rows, dhe.reshape(R, H), rows_dev, tmp, tmp.size)
        self.loss_acc.copy_to_host(self._lossbuf)
        return float(self._lossbuf[0]), dhe

    def backward(self, dhe, inj0, hs, dh, out=None):
        n = hs.shape[0] - 1
        da = out if out is not None else self.empty((n,) + tuple(dh.shape))
        return super().backward(dhe, inj0, hs, self.W, dh, da)

    def weight_grads(self, t0, t1, da, hs_prev, g):
        """dW, db, dU (and dE) from the deltas of steps [t0, t1) (as CpuOps.weight_grads)."""
        p = self.p
        H = p.H
        da2 = da.reshape(-1, H)
        R = da2.shape[0]
        self.gemm(da2, hs_prev.reshape(-1, H), _get(g, "W"), ta=1, beta=1.0)
        self.colsum(da2, _get(g, "b"))
        x2 = self._x_rows(t0, t1)
        if x2 is None:                                  # one-hot: dU[:, id] += da, repeated ids add
            ids = self.ids[t0 * p.B:t1 * p.B]
            self.rows(self.k.scatter_add_cols, _get(g, "U"), ids, da2, da2.size)
        else:
            self.gemm(da2, x2, _get(g, "U"), ta=1, beta=1.0)
        if self.E is not None:                          # dE[id] += da @ U, repeated ids add
            ids = self.ids[t0 * p.B:t1 * p.B]
            dx = self.empty((R, p.n_in))
            self.gemm(da2, self.U, dx)
            self.rows(self.k.scatter_add_rows, _get(g, "E"), ids, dx, dx.size)

    def zero_states(self, hs, pad):
        """hs[i, b] = 0 where pad[i, b] (as CpuOps.zero_states); pad [n+1, B] is on the host."""
        idx = np.flatnonzero(pad)
        z = self.zeros((idx.size, self.p.H))
        self.rows(self.k.scatter_rows, hs.reshape(-1, self.p.H), self.upload(idx, np.int64), z, z.size)

    def capture(self, h_last, hs, t_first, sel):
        """h_last[b] = state after step last[b] for the sequences ``sel`` ending in hs."""
        steps = self.p.last[sel] - t_first + 1
        self.k.capture[_nblocks(len(sel) * self.p.H, self.NT), self.NT](
            h_last, hs, self.upload(steps, np.int64), self.upload(sel, np.int64))

    def new_grads(self):
        p = self.p
        shapes = {"U": p.U.shape, "W": p.W.shape, "b": p.b.shape, "V": p.V.shape, "c": p.c.shape,
                  "h0": (p.B, p.H)}
        if p.E is not None:
            shapes["E"] = p.E.shape
        return _Grads(self, {k: self.zeros(s) for k, s in shapes.items()})

    def finish(self, g):
        return dict(g.items())


# --------------------------------------------------------------------------- public entry points
def _check_ids_on_device(dev, name, d, high, what):
    """The validator's id range check, as a min/max reduction on the device."""
    out = dev.upload(np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).min], dtype=np.int64))
    if d.size:
        dev.gk.id_range[_nblocks(d.size, dev.NT), dev.NT](d, out)
        lo, hi = (int(v) for v in out.copy_to_host())
        if lo < 0 or hi >= high:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} holds id {bad}, outside [0, {high}) ({what})")


def _host_copy(cuda, a):
    d = _as_device(cuda, a)
    if not d.is_c_contiguous():
        d = _Device(np.float32, 0).contiguous(d)
    return d.copy_to_host()


def loss_and_grad(params, inputs, targets, h0=None, *, activation="tanh", loss="cross_entropy",
                  reduction="sum", mask=None, batch_first=False, truncate=None, checkpoint=None,
                  cell="rnn"):
    """:func:`fastbptt.loss_and_grad` with ``backend="cuda"`` (same arguments and results).

    Host (NumPy) arguments are copied to the device and the gradients and ``h_last`` come
    back as NumPy arrays. If any argument is a device array, the gradients and ``h_last`` are
    Numba device arrays left on the device.
    """
    from .cells import get as get_cell
    if get_cell(cell).name != "rnn":
        raise NotImplementedError(f"cell={cell!r} has no CUDA kernels yet")
    cuda = _cuda()
    dev = {}                                        # argument name -> device array

    def sub(name, a, swap=False):
        if a is not None and is_device_array(a):
            dev[name] = _as_device(cuda, a)
            return _stand_in(dev[name], swap)
        return a

    hp = params
    if hasattr(params, "keys") and hasattr(params, "__getitem__"):
        hp = {k: (sub(k, params[k]) if k in V.PARAM_KEYS + ("E",) else params[k]) for k in params.keys()}
    h_inputs = sub("inputs", inputs, swap=bool(batch_first))
    h_targets = targets
    if targets is not None and is_device_array(targets):
        targets = _as_device(cuda, targets)
        is_int = np.issubdtype(np.dtype(targets.dtype), np.integer)
        if is_int and len(targets.shape) == 1:
            h_targets = _host_copy(cuda, targets)      # many-to-one ids [B]: tiny, needed on host
        else:
            h_targets = sub("targets", targets, swap=bool(batch_first) and len(targets.shape) == (2 if is_int else 3))
    h_mask = _host_copy(cuda, mask) if (mask is not None and is_device_array(mask)) else mask
    h_h0 = sub("h0", h0)
    ondev = bool(dev) or h_targets is not targets or h_mask is not mask   # any device argument
    p = V.validate_loss_and_grad(hp, h_inputs, h_targets, h_h0, activation, loss, reduction, h_mask,
                                 batch_first, "cuda", truncate, checkpoint)

    d = _Device(p.dtype, p.act)
    swap = int(bool(batch_first))
    if "inputs" in dev:
        a = dev["inputs"]
        if p.ids is not None:
            vocab = p.E.shape[0] if p.E is not None else p.n_in
            _check_ids_on_device(d, "inputs", a, vocab, "the vocabulary size, "
                                 + ("rows of E" if p.E is not None else "columns of U (one-hot)"))
            dev["ids"] = d.contiguous(a, np.int64, swap)
        else:
            dev["x"] = d.contiguous(a, None, swap)
    if "targets" in dev:
        a = dev["targets"]
        if p.tgt_ids is not None:                      # per-step class ids [T, B]
            _check_ids_on_device(d, "targets", a, p.n_out, "n_out classes, rows of V")
            dev["tgt_ids"] = d.contiguous(a, np.int64, swap if len(a.shape) == 2 else 0)
        elif p.many_to_one:                            # [B, n_out]
            dev["y_rows"] = d.contiguous(a)
        else:                                          # [T, B, n_out] -> rows [T*B, n_out]
            dev["y_rows"] = d.contiguous(a, None, swap).reshape(p.T * p.B, p.n_out)
    for k in V.PARAM_KEYS + ("E", "h0"):
        if k in dev:
            dev[k] = d.contiguous(dev[k])
    from . import engine
    ops = CudaOps(p, dev)
    lval, grads, h_last = engine.run(p, ops)
    if not ondev:
        grads = {k: v.copy_to_host() for k, v in grads.items()}
        h_last = h_last.copy_to_host()
    return lval, grads, h_last


def rnn_forward(x, h0, U, W, b, *, activation="tanh", batch_first=False):
    """:func:`fastbptt.rnn_forward` with ``backend="cuda"``.

    With device arrays among the arguments, ``hs`` is a device array: a view of the cache for
    time-major input (do not write to it), a transposed copy for batch-first input.
    """
    from .layer import LayerCache
    from .cells import CELLS
    cuda = _cuda()
    V.check_choice("activation", activation, tuple(V.ACTIVATIONS))
    ondev = any(a is not None and is_device_array(a) for a in (x, h0, U, W, b))

    def host_view(name, a, swap=False):
        if is_device_array(a):
            return _stand_in(_as_device(cuda, a), swap)
        return V.as_array(name, a)

    Uh, Wh, bh = host_view("U", U), host_view("W", W), host_view("b", b)
    n_in, H, dtype = V.check_weights(Uh, Wh, bh)
    xh = host_view("x", x)
    if xh.ndim != 3:
        raise ValueError(f"x must be 3-D [{'B, T' if batch_first else 'T, B'}, n_in]; got shape {xh.shape}")
    if xh.dtype != dtype:
        raise TypeError(f"x has dtype {xh.dtype} but the weights have {dtype}; "
                        "cast explicitly, fastbptt does not mix precisions")
    T, B = (xh.shape[1], xh.shape[0]) if batch_first else xh.shape[:2]
    if xh.shape[2] != n_in:
        raise ValueError(f"x must have n_in = {n_in} features (columns of U); got shape {xh.shape}")
    if T == 0 or B == 0:
        raise ValueError(f"x must have T > 0 and B > 0; got shape {xh.shape}")
    if h0 is not None:
        h0h = host_view("h0", h0)
        if h0h.dtype != dtype:
            raise TypeError(f"h0 has dtype {h0h.dtype} but the weights have {dtype}")
        if h0h.shape != (B, H):
            raise ValueError(f"h0 must be [B, H] = [{B}, {H}]; got shape {h0h.shape}")

    d = _Device(dtype, V.ACTIVATIONS[activation])

    def to_dev(a, swap=0):
        if is_device_array(a):
            return d.contiguous(_as_device(cuda, a), None, swap)
        a = np.asarray(a)
        return d.upload(a.transpose(1, 0, 2) if swap else a)

    xd = to_dev(x, int(bool(batch_first)))                  # [T, B, n_in]
    Ud, Wd, bd = to_dev(U), to_dev(W), to_dev(b)
    hs = d.empty((T + 1, B, H))                             # [T+1, B, H], h0 in slot 0
    if h0 is None:
        d.k.fill[_nblocks(B * H, d.NT), d.NT](hs[0].reshape(-1), 0)
    else:
        d.copy_into(hs[0], to_dev(h0))
    xu = d.empty((T, B, H))
    d.gemm(xd.reshape(T * B, n_in), Ud, xu.reshape(T * B, H), tb=1, bias=bd)
    d.forward(xu, hs, d.transpose(Wd))
    cache = LayerCache(cell=CELLS["rnn"], x=xd, rows=hs, U=Ud, W=Wd, activation=activation,
                       act=V.ACTIVATIONS[activation], backend="cuda", batch_first=batch_first)
    if ondev:
        out = hs[1:]
        if batch_first:
            out = d.contiguous(out, None, 1)
        return out, cache
    out = hs.copy_to_host()[1:]
    if batch_first:
        out = out.transpose(1, 0, 2)
    out.flags.writeable = False
    return out, cache


def rnn_backward(dhs, cache):
    """:func:`fastbptt.rnn_backward` for a cache from ``rnn_forward(..., backend="cuda")``.

    Results are device arrays when ``dhs`` is one, NumPy arrays otherwise.
    """
    cuda = _cuda()
    hs, xd, Ud, Wd = cache.rows, cache.x, cache.U, cache.W
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    n_in = xd.shape[2]
    dtype = np.dtype(hs.dtype)
    ondev = is_device_array(dhs)
    dh_h = _stand_in(_as_device(cuda, dhs), False) if ondev else V.as_array("dhs", dhs)
    if dh_h.dtype != dtype:
        raise TypeError(f"dhs has dtype {dh_h.dtype} but the layer runs in {dtype}")
    want = (B, T, H) if cache.batch_first else (T, B, H)
    if dh_h.shape != want:
        raise ValueError(f"dhs must be {list(want)}, the shape of hs; got shape {dh_h.shape}")
    d = _Device(dtype, cache.act)
    swap = int(bool(cache.batch_first))
    if ondev:
        dhd = d.contiguous(_as_device(cuda, dhs), None, swap)
    else:
        dhd = d.upload(dh_h.transpose(1, 0, 2) if swap else dh_h)
    dh0 = d.zeros((B, H))
    da = d.backward(dhd, 0, hs, Wd, dh0, d.empty((T, B, H)))
    da2 = da.reshape(T * B, H)
    dx = d.empty((T, B, n_in))
    d.gemm(da2, Ud, dx.reshape(T * B, n_in))
    dU, dW, db = d.empty((H, n_in)), d.empty((H, H)), d.zeros(H)
    d.gemm(da2, xd.reshape(T * B, n_in), dU, ta=1)
    d.gemm(da2, hs[:-1].reshape(T * B, H), dW, ta=1)
    d.colsum(da2, db)
    if swap:
        dx = d.contiguous(dx, None, 1)
    out = (dx, dh0, dU, dW, db)
    if not ondev:
        out = tuple(a.copy_to_host() for a in out)
    return out


# --------------------------------------------------------------------------- benchmark hook
def benchmark(T, B, H, *, n_in=None, n_out=None, dtype=np.float32, repeats=5,
              warmup=1, recurrent="auto", seed=0):
    """Time one ``loss_and_grad(backend="cuda")`` with every array already on the device.

    For ``fastbptt bench --backend cuda``. Inputs are one-hot ids over ``n_in`` (default H)
    with class-id targets over ``n_out`` (default n_in), cross-entropy, sum reduction, tanh — the char-LM case.
    The first ``warmup`` calls (kernel compilation) are not timed; each timed call ends with
    a device synchronisation.

    Returns
    -------
    dict
        ``seconds`` (median), ``all`` (every timed call), ``path`` (the time-loop kernels:
        "persistent", "cooperative" or "per-step"; see :mod:`fastbptt.config`), ``device``
        (GPU name) and the sizes.
    """
    cuda = _cuda()
    from .api import init_params
    n_in = n_in or H
    n_out = n_out or n_in
    rng = np.random.default_rng(seed)
    params = init_params(n_in, H, n_out, dtype=dtype, seed=seed)
    dparams = {k: cuda.to_device(v) for k, v in params.items()}
    ids = cuda.to_device(rng.integers(0, n_in, size=(T, B)).astype(np.int64))
    tgt = cuda.to_device(rng.integers(0, n_out, size=(T, B)).astype(np.int64))
    old = config.RECURRENT
    config.RECURRENT = recurrent
    try:
        path = _Device(dtype, 0).recurrent_path(B, H)
        times = []
        for i in range(warmup + repeats):
            cuda.synchronize()
            t0 = time.perf_counter()
            loss_and_grad(dparams, ids, tgt)
            cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        config.RECURRENT = old
    try:
        name = cuda.get_current_device().name
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # the simulator's device has no name
        name = "CUDA simulator" if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else "unknown"
    return dict(seconds=float(np.median(times)), all=times, path=path, device=name,
                T=T, B=B, H=H, n_in=n_in, n_out=n_out, dtype=str(np.dtype(dtype)))

