"""A prepared ``loss_and_grad``: validate and allocate once, check per call only what can change.

At min-char-rnn's size (T=25, B=1, H=100) the arithmetic of one call takes tens of
microseconds, as long as :func:`fastbptt.loss_and_grad`'s validation, which normalises every
argument into a :class:`fastbptt._validate.Problem`. A training loop calls with the same
shapes, dtypes and options every time, so :func:`make_loss_and_grad` validates a template
call once and the returned function only confirms that each new argument still matches the
template (shape, dtype, contiguity: attribute reads) and that ids are in range. Anything else
goes through :func:`fastbptt.loss_and_grad` itself, so a bad argument gets exactly its error.
"""
from __future__ import annotations

import inspect
import threading
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from . import _validate as V
from . import api
from ._jit import njit
from ._memcheck import check_fits

_FAST_DEFAULTS = dict(num_layers=1, bidirectional=False, mask=None, batch_first=False,
                      backend="cpu", truncate=None, checkpoint=None)


@njit(cache=True, nogil=True)
def _ids_in_range(ids, n_ids, tgt, n_tgt):
    """Whether every input id is in [0, n_ids) and every target id in [0, n_tgt)."""
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= n_ids:
            return False
    for i in range(tgt.shape[0]):
        if tgt[i] < 0 or tgt[i] >= n_tgt:
            return False
    return True


def make_loss_and_grad(params: Mapping[str, ArrayLike], inputs: ArrayLike, targets: ArrayLike,
                       h0: api.State = None, *, reuse_grads: bool = False, **options):
    """A ``loss_and_grad`` for repeated calls with the template's shapes, dtypes and options.

    Parameters
    ----------
    params, inputs, targets, h0
        A template call, as for :func:`fastbptt.loss_and_grad`. When the options allow the
        fast path it is validated now (raising loss_and_grad's errors) and fixes the shapes
        and dtypes of the fast path; otherwise each call is validated as it comes. Its arrays
        are not kept.
    reuse_grads : bool
        False (default): every call returns new gradient arrays. True: the gradient arrays
        are allocated once and overwritten by each call, so a call's grads are valid only
        until the next call (copy them to keep them); saves a few microseconds per call.
        Such a function must not be called from two threads at once; with False it may be.
    **options
        Keyword arguments of :func:`fastbptt.loss_and_grad` (``cell``, ``loss``,
        ``reduction``, ``check_finite``, ...), fixed for every call.

    Returns
    -------
    fn : callable
        ``fn(params, inputs, targets, h0=None) -> (loss, grads, h_last)``, equal bit for bit
        to ``loss_and_grad(params, inputs, targets, h0, **options)``. Fast path: C-contiguous
        NumPy arrays of the template's shapes and dtypes (ids: the template's integer dtype,
        the LSTM's ``h0``: the template's kind, tuple or array), and options the single
        compiled call handles (``backend="cpu"``, one layer, no ``mask``, ``truncate`` or
        ``checkpoint``, time-major) at a size that does not split its batch across the
        cores (:mod:`fastbptt.cpu.parallel`: such calls take milliseconds, and the prepared
        call's saving is microseconds). Any other argument, or other options, or a bigger
        size, run through :func:`fastbptt.loss_and_grad` unchanged, with its checks and
        errors.

    Examples
    --------
    >>> fn = fastbptt.make_loss_and_grad(params, x, y, cell="lstm")      # doctest: +SKIP
    >>> for x, y in batches:                                              # doctest: +SKIP
    ...     loss, grads, h = fn(params, x, y, h)
    """
    if not isinstance(reuse_grads, (bool, np.bool_)):
        raise TypeError(f"reuse_grads must be a bool; got {reuse_grads!r}")
    # unknown option names: the TypeError Python gives loss_and_grad itself
    inspect.signature(api.loss_and_grad).bind(params, inputs, targets, h0, **options)
    opts = dict(options)
    fast = all(_same(opts.get(k, v), v) for k, v in _FAST_DEFAULTS.items())
    if not fast:
        return _Plain(opts)
    check_finite = opts.get("check_finite", False)
    if not isinstance(check_finite, (bool, np.bool_)):
        raise TypeError(f"check_finite must be a bool; got {check_finite!r}")
    from . import layers
    layers.reject_layer_keys(params)
    p = V.validate_loss_and_grad(params, inputs, targets, h0, opts.get("activation", "tanh"),
                                 opts.get("loss", "cross_entropy"), opts.get("reduction", "sum"),
                                 None, False, "cpu", None, None, cell=opts.get("cell", "rnn"))
    from .cpu import fused_eligible
    from .cpu.parallel import parts_of
    # a call big enough to split its batch across the cores runs for milliseconds: the
    # microseconds a prepared call saves do not matter there, and the plain call splits
    if not fused_eligible(p) or p.many_to_one or parts_of(p) > 1:
        return _Plain(opts)
    check_fits(p, fused=True)
    return _Prepared(p, params, inputs, targets, h0, opts, bool(check_finite), bool(reuse_grads))


def _same(a, b):
    return a is b or (type(a) is type(b) and a == b)


class _Plain:
    """Options the fast path does not take: every call is :func:`fastbptt.loss_and_grad`."""

    def __init__(self, opts):
        self._opts = opts

    def __call__(self, params, inputs, targets, h0=None):
        return api.loss_and_grad(params, inputs, targets, h0, **self._opts)


def _int64(a):
    return a if a.dtype == np.int64 else a.astype(np.int64)


def _sig(a):
    """(shape, dtype) an array must keep for the fast path."""
    return a.shape, a.dtype


class _Prepared:
    """The fast path of :func:`make_loss_and_grad` (see there)."""

    def __init__(self, p, params, inputs, targets, h0, opts, check_finite, reuse_grads):
        from .cpu.blas import register_blas, threads_now
        from .cpu.fused import fused_full_bptt, workspace_layout, xblocks_of
        from .cpu.steps import cell_tag, recurrent_operand
        from .cpu.workspace import workspace
        register_blas()
        self._opts = opts
        self._check_finite = check_finite
        self._threads_now = threads_now
        self._wt, self._B = recurrent_operand, p.B      # Wᵀ per call where the steps read it
        self._cell = cell = p.cell
        dt = self._dtype = p.dtype
        H, GH, R = p.H, cell.G * p.H, p.T * p.B
        self._H, self._R = H, R
        # what each argument must be: key -> (shape, dtype) of the template's arrays
        self._pkeys = frozenset(params.keys())
        self._psig = {k: _sig(V.as_array(k, params[k])) for k in self._pkeys}
        self._porder = tuple(k for k in ("U", "W", "b", "bn", "V", "c", "E") if k in self._pkeys)
        ins = V.as_array("inputs", inputs)
        tgs = V.as_array("targets", targets)
        self._isig, self._tsig = _sig(ins), _sig(tgs)
        self._in_kind = 0 if p.x is not None else (1 if p.E is None else 2)
        self._n_ids = p.n_in if p.E is None else p.E.shape[0]
        self._loss_kind = 0 if p.tgt_ids is not None else (2 if p.loss == "mse" else 1)
        self._n_out = p.n_out
        # the h0 forms the fast path takes: None, [B, H] (each cell) or (h, c) for the LSTM
        self._hsig = ((p.B, H), dt)
        e1, ei = np.empty(0, dt), np.empty(0, np.int64)
        self._e1, self._ei = e1, ei
        self._zeros = np.zeros((p.B, cell.S * H), dt)     # read only by the kernel
        self._weights = np.ascontiguousarray(p.weights.reshape(-1))
        self._gshapes = {"U": (p.n_in, GH) if self._in_kind == 1 else (GH, p.n_in),
                         "W": (GH, H), "b": (GH,), "V": (p.n_out, H), "c": (p.n_out,)}
        self._has_bn = p.bn is not None
        self._head = (cell_tag(cell), cell.split, cell.K, cell.D, xblocks_of(cell), cell.bn_col)
        self._act = p.act
        # the kernel's workspace, allocated once; a call made while another thread is inside
        # this function (the kernel releases the GIL) gets its own
        lay = workspace_layout(p.T, p.B, cell.G, cell.D, cell.K, H, p.n_out, p.n_in, cell.split,
                               self._in_kind == 2)
        self._new_ws = lambda: workspace(int(lay[0]), dt)
        self._ws = self._new_ws()
        self._busy = threading.Lock()
        self._reuse = reuse_grads
        self._grads = self._new_grads() if reuse_grads else None
        # the compiled kernel's entry point for exactly these argument types: calling it skips
        # the dispatcher's typing of ~30 arguments, which costs more than the validation saved
        g = self._new_grads()
        g["last"] = np.empty_like(self._zeros)
        args = self._args(p.U, p.W, p.b, p.bn, p.V, p.c, p.E, p.x, p.ids, p.tgt_ids, p.y_rows,
                          p.state0, g, self._ws)
        sig = tuple(fused_full_bptt.typeof_pyval(a) for a in args)
        self._kernel = fused_full_bptt.compile(sig)
        ei = self._ei
        self._in_range = _ids_in_range.compile(
            tuple(_ids_in_range.typeof_pyval(a) for a in (ei, 1, ei, 1)))

    def _new_grads(self):
        dt = self._dtype
        g = {k: np.empty(s, dt) for k, s in self._gshapes.items()}
        g["bn"] = np.empty(self._H, dt) if self._has_bn else self._e1
        g["E"] = np.empty(self._psig["E"][0], dt) if self._in_kind == 2 else None
        g["h0"] = np.empty_like(self._zeros)
        return g

    def _args(self, U, W, b, bn, Vm, c, E, x, ids, tgt, yrows, state0, g, ws):
        R = self._R
        e1 = self._e1
        k, lk = self._in_kind, self._loss_kind
        # unused inputs and targets are None, as fused_loss_and_grad passes them: the kernel
        # compiled for this input kind and loss only
        return (*self._head,
                x.reshape(R, -1) if k == 0 else None, ids.reshape(R) if k else None,
                E if k == 2 else None, U, W, b, bn if self._has_bn else e1, Vm, c, state0,
                tgt.reshape(R) if lk == 0 else None, yrows.reshape(R, -1) if lk == 1 else None,
                yrows.reshape(R, -1) if lk == 2 else None, self._weights, self._act,
                self._wt(W, self._B), self._threads_now(), ws,
                g["U"], g["W"], g["b"], g["bn"], g["V"], g["c"], g["E"],
                g["h0"], g["last"])      # g["last"]: h_last, fresh every call

    def _plain(self, params, inputs, targets, h0):
        return api.loss_and_grad(params, inputs, targets, h0, **self._opts)

    def __call__(self, params, inputs, targets, h0=None):
        """``(loss, grads, h_last)`` of ``loss_and_grad(params, inputs, targets, h0, **options)``."""
        psig = self._psig
        if type(params) is not dict or params.keys() != self._pkeys:
            return self._plain(params, inputs, targets, h0)
        for k, s in psig.items():
            a = params[k]
            if type(a) is not np.ndarray or (a.shape, a.dtype) != s or not a.flags.c_contiguous:
                return self._plain(params, inputs, targets, h0)
        for a, s in ((inputs, self._isig), (targets, self._tsig)):
            if type(a) is not np.ndarray or (a.shape, a.dtype) != s or not a.flags.c_contiguous:
                return self._plain(params, inputs, targets, h0)
        state0 = self._state0(h0)
        if state0 is None:
            return self._plain(params, inputs, targets, h0)
        # the kernel was compiled for int64 ids: other integer types are converted, as
        # loss_and_grad's validation does
        ids = _int64(inputs) if self._in_kind else self._ei
        tgt = _int64(targets) if self._loss_kind == 0 else self._ei
        if (self._in_kind or self._loss_kind == 0) and not self._in_range(
                ids.reshape(-1), self._n_ids, tgt.reshape(-1), self._n_out):
            return self._plain(params, inputs, targets, h0)
        g = dict(self._grads) if self._reuse else self._new_grads()
        g["last"] = np.empty_like(self._zeros)       # never reused: often the next call's h0
        pv = params.get
        own = self._busy.acquire(blocking=False)
        try:
            args = self._args(params["U"], params["W"], params["b"], pv("bn"), params["V"],
                              params["c"], pv("E"), inputs, ids, tgt, targets, state0, g,
                              self._ws if own else self._new_ws())
            loss = self._kernel(*args)
        finally:
            if own:
                self._busy.release()
        grads = {"U": g["U"].T.copy() if self._in_kind == 1 else g["U"], "W": g["W"], "b": g["b"],
                 "V": g["V"], "c": g["c"]}
        if self._in_kind == 2:
            grads["E"] = g["E"]
        if self._has_bn:
            grads["bn"] = g["bn"]
        grads["h0"] = g["h0"]
        out = api.present(self._cell, self._H, float(loss), grads, g["last"])
        if self._check_finite:
            api._check_finite(*out[:2])
        return out

    def _state0(self, h0):
        """The kernel's initial state [B, S·H] for h0, or None when h0 needs the plain path."""
        if h0 is None:
            return self._zeros
        if self._cell.S == 1:
            if type(h0) is np.ndarray and (h0.shape, h0.dtype) == self._hsig and h0.flags.c_contiguous:
                return h0
            return None
        H, st = self._H, np.empty_like(self._zeros)    # the LSTM's h0 | c0, per call
        if type(h0) is tuple and len(h0) == 2:
            h, c = h0
        else:
            h, c = h0, None
        for a in (h, h if c is None else c):       # c None: c0 = 0, as loss_and_grad
            if type(a) is not np.ndarray or (a.shape, a.dtype) != self._hsig:
                return None
        st[:, :H] = h
        if c is None:
            st[:, H:] = 0
        else:
            st[:, H:] = c
        return st
