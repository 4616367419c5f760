"""CUDA backend (numba-cuda): ``backend="cuda"`` of :func:`fastbptt.loss_and_grad` and of
the layer API (:func:`fastbptt.rnn_forward`, ``lstm_forward``, ``gru_forward`` and their
backward passes, through :func:`layer_forward` / :func:`layer_backward`).

Where things are:

* this module: the public entry points (validation, device-array handling, dispatch);
* :mod:`.ops`: :class:`CudaOps`, the operations :mod:`fastbptt.engine` schedules;
* :mod:`.layer`: one layer of any cell on explicit state (the layer API);
* :mod:`.device`: finding numba-cuda and a GPU, :class:`~.device.Device` (launchers, buffers);
* one module per cell with its pointwise and time-loop kernels: :mod:`.rnn`, :mod:`.lstm`,
  :mod:`.gru` (:mod:`.gated`: the backward time loop the gated cells share);
* shared kernels: :mod:`.products` (tiled products, column sums), :mod:`.heads` (softmax,
  cross-entropy, MSE), :mod:`.arrays` (rows, ids, layouts), :mod:`.activations` (the
  pointwise math, once);
* :mod:`.config`: tunables (threads per block, tiles, the time-loop kernel form).

Arrays: NumPy inputs are copied to the device and results copied back as NumPy arrays.
Device arrays (anything with ``__cuda_array_interface__``: Numba device arrays, CuPy, PyTorch
CUDA tensors) are used in place and the gradients and ``h_last`` stay on the device (as Numba
device arrays; wrap them with ``torch.as_tensor(g, device="cuda")`` or ``cupy.asarray(g)``).
Validation of device arguments checks shapes and dtypes without copying them to the host; id
ranges are checked by a reduction on the device. Two small arrays are copied to the host
because the host-side scheduler needs their values: a device ``mask`` ``[T, B]`` and
many-to-one class-id targets ``[B]``.

Importing this package never imports numba or needs a GPU; using it raises an ``ImportError``
(numba-cuda missing) or a ``RuntimeError`` (no usable GPU) that says what is missing.
"""
from __future__ import annotations

import os
import time

import numpy as np

from .. import _validate as V
from . import config
from .device import Device, as_device, available, cuda_module, is_device_array, stand_in
from .layer import layer_backward, layer_forward

__all__ = ["CudaOps", "available", "loss_and_grad", "layer_forward", "layer_backward",
           "benchmark", "is_device_array", "split_state", "config"]


# every module with kernels, for the PTX tests (a new cell's module is added here)
KERNEL_MODULES = ("products", "heads", "arrays", "rnn", "lstm", "gru")


def ptx_specs(dtype):
    """("module.kernel", python function, signature) of every CUDA kernel for float ``dtype``:
    the PTX tests compile each with ``numba.cuda.compile_ptx`` for the real target."""
    import importlib
    return [(f"{m}.{name}", fn, sig) for m in KERNEL_MODULES
            for name, fn, sig in importlib.import_module(f".{m}", __name__).ptx_specs(dtype)]


def __getattr__(name):
    if name == "CudaOps":                 # its module imports numba: only once numba-cuda is known
        cuda_module()
        from .ops import CudaOps
        return CudaOps
    raise AttributeError(f"module 'fastbptt.cuda' has no attribute {name!r}")


def _check_ids_on_device(dev, name, d, high, what):
    """The validator's id range check, as a min/max reduction on the device."""
    out = dev.upload(np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).min], dtype=np.int64))
    if d.size:
        dev.arr.id_range[dev.blocks(d.size), dev.NT](d, out)
        lo, hi = (int(v) for v in out.copy_to_host())
        if lo < 0 or hi >= high:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name} holds id {bad}, outside [0, {high}) ({what})")


def _host_copy(cuda, a):
    d = as_device(cuda, a)
    if not d.is_c_contiguous():
        d = Device(np.float32, 0).contiguous(d)
    return d.copy_to_host()


def loss_and_grad(params, inputs, targets, h0=None, *, cell="rnn", activation="tanh",
                  loss="cross_entropy", reduction="sum", mask=None, batch_first=False,
                  truncate=None, checkpoint=None):
    """:func:`fastbptt.loss_and_grad` with ``backend="cuda"`` (same arguments and results).

    Host (NumPy) arguments are copied to the device and the gradients and ``h_last`` come
    back as NumPy arrays. If any argument is a device array, the gradients and ``h_last`` are
    Numba device arrays left on the device.
    """
    cuda = cuda_module()
    dev = {}                                        # argument name -> device array

    def sub(name, a, swap=False):
        if a is not None and is_device_array(a):
            dev[name] = as_device(cuda, a)
            return stand_in(dev[name], swap)
        return a

    hp = params
    if hasattr(params, "keys") and hasattr(params, "__getitem__"):
        hp = {k: (sub(k, params[k]) if k in V.PARAM_KEYS + ("E", "bn") else params[k])
              for k in params.keys()}
    h_inputs = sub("inputs", inputs, swap=bool(batch_first))
    h_targets = targets
    if targets is not None and is_device_array(targets):
        targets = as_device(cuda, targets)
        is_int = np.issubdtype(np.dtype(targets.dtype), np.integer)
        if is_int and len(targets.shape) == 1:
            h_targets = _host_copy(cuda, targets)      # many-to-one ids [B]: tiny, needed on host
        else:
            h_targets = sub("targets", targets, swap=bool(batch_first) and len(targets.shape) == (2 if is_int else 3))
    h_mask = _host_copy(cuda, mask) if (mask is not None and is_device_array(mask)) else mask
    if isinstance(h0, tuple) and len(h0) == 2:         # the LSTM's (h0, c0)
        h_h0 = (sub("h0", h0[0]), sub("c0", h0[1]))
    else:
        h_h0 = sub("h0", h0)
    ondev = bool(dev) or h_targets is not targets or h_mask is not mask   # any device argument
    p = V.validate_loss_and_grad(hp, h_inputs, h_targets, h_h0, activation, loss, reduction, h_mask,
                                 batch_first, "cuda", truncate, checkpoint, cell=cell)

    d = Device(p.dtype, p.act)
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
    for k in V.PARAM_KEYS + ("E", "bn", "h0", "c0"):
        if k in dev:
            dev[k] = d.contiguous(dev[k])
    from .. import engine
    from .ops import CudaOps
    ops = CudaOps(p, dev)
    lval, grads, h_last = engine.run(p, ops)
    if p.cell.S == 2:                                  # state [B, 2H] -> h0, c0 and (h, c)
        grads["h0"], grads["c0"] = split_state(grads["h0"], 2)
        h_last = split_state(h_last, 2)
    if not ondev:
        grads = {k: v.copy_to_host() for k, v in grads.items()}
        h_last = (tuple(a.copy_to_host() for a in h_last) if isinstance(h_last, tuple)
                  else h_last.copy_to_host())
    return lval, grads, h_last


def split_state(a, S):
    """A device state array [B, S·H] as S C-contiguous device arrays [B, H] (h, then c).

    Numba device arrays have no ``copy()``: ``a[:, :H].copy()`` works on NumPy arrays only."""
    d = Device(a.dtype)
    H = a.shape[1] // S
    return tuple(d.contiguous(a[:, k * H:(k + 1) * H]) for k in range(S))


# --------------------------------------------------------------------------- benchmark hook
def benchmark(T, B, H, *, n_in=None, n_out=None, dtype=np.float32, repeats=5,
              warmup=1, recurrent="auto", seed=0, cell="rnn"):
    """Time one ``loss_and_grad(backend="cuda")`` with every array already on the device.

    For ``fastbptt bench --backend cuda``. Inputs are one-hot ids over ``n_in`` (default H)
    with class-id targets over ``n_out`` (default n_in), cross-entropy, sum reduction, tanh — the char-LM case —
    through ``cell`` ("rnn", "lstm" or "gru").
    The first ``warmup`` calls (kernel compilation) are not timed; each timed call ends with
    a device synchronisation.

    Returns
    -------
    dict
        ``seconds`` (median), ``all`` (every timed call), ``path`` (the time-loop kernels:
        "persistent", "cooperative" or "per-step"; see :mod:`fastbptt.cuda.config`), ``device``
        (GPU name) and the sizes.
    """
    cuda = cuda_module()
    n_in = n_in or H
    n_out = n_out or n_in
    rng = np.random.default_rng(seed)
    from .. import cells
    cl = cells.get(cell)
    shapes = dict(cl.shapes(n_in, H), V=(n_out, H), c=(n_out,))
    # weights scaled by 1/√fan_in keep tanh out of saturation; the values do not change the time
    dparams = {k: cuda.to_device((rng.standard_normal(s) / np.sqrt(s[-1])).astype(dtype))
               for k, s in shapes.items()}
    ids = cuda.to_device(rng.integers(0, n_in, size=(T, B)).astype(np.int64))
    tgt = cuda.to_device(rng.integers(0, n_out, size=(T, B)).astype(np.int64))
    old = config.RECURRENT
    config.RECURRENT = recurrent
    try:
        path = Device(dtype, 0).recurrent_path(B, H, cl.G * H * H)
        if cl.name != "rnn" and path == "cooperative":
            path = "per-step"                            # the gated cells have no cooperative kernels
        times = []
        for i in range(warmup + repeats):
            cuda.synchronize()
            t0 = time.perf_counter()
            loss_and_grad(dparams, ids, tgt, cell=cl.name)
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
                T=T, B=B, H=H, n_in=n_in, n_out=n_out, dtype=str(np.dtype(dtype)), cell=cl.name)

