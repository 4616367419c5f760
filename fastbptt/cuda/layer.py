"""The layer API on CUDA: one recurrent layer of any cell, forward and backward, on explicit
state (``rnn_forward``/``lstm_forward``/``gru_forward`` and their backward passes with
``backend="cuda"``).

:func:`layer_forward` returns the hidden states and the fields of the layer's cache (device
arrays); :mod:`fastbptt.layer` keeps them in its ``LayerCache`` and hands that back to
:func:`layer_backward`. This module never imports the public API (no import cycle).

NumPy arguments are copied to the device and results come back as NumPy arrays; with any
device array among the arguments (``__cuda_array_interface__``), results stay on the device.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .. import _validate as V
from .device import Device, as_device, cell_module, cuda_module, is_device_array, stand_in


def layer_forward(cell, x, h0, c0, U, W, b, bn=None, *, activation="tanh", batch_first=False):
    """Run one layer of ``cell`` over x on the device.

    Parameters
    ----------
    cell : fastbptt.cells.Cell or str
    x : [T, B, n_in] (``[B, T, n_in]`` with ``batch_first``)
    h0, c0 : [B, H] or None (c0: the LSTM only)
    U [G·H, n_in], W [G·H, H], b [G·H], bn [H] (GRU only)
    activation : the Elman cell's f

    Returns
    -------
    hs : [T, B, H] (``[B, T, H]`` with ``batch_first``)
    fields : dict
        The cache's device arrays ``x [T, B, n_in]``, ``rows [T+1, B, K·H]``, ``U``, ``W``,
        ``b``, ``bn`` and ``act``, plus ``h_last`` and ``c_last`` (``[B, H]``, NumPy unless
        an argument was a device array).
    """
    from .. import cells
    cl = cells.get(cell) if isinstance(cell, str) else cell
    V.check_activation(activation, cl)
    cuda = cuda_module()
    ondev = any(a is not None and is_device_array(a) for a in (x, h0, c0, U, W, b, bn))

    def host_view(name, a, swap=False):
        if is_device_array(a):
            return stand_in(as_device(cuda, a), swap)
        return V.as_array(name, a)

    Uh, Wh, bh = host_view("U", U), host_view("W", W), host_view("b", b)
    extra = {"bn": ("bn", host_view("bn", bn))} if "bn" in cl.extra else {}
    n_in, H, dtype = V.check_weights(Uh, Wh, bh, cell=cl, extra=extra)
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
    if c0 is not None and cl.S == 1:
        raise TypeError(f"c0 applies to the LSTM only; this is a {cl.name} layer")
    for name, s in (("h0", h0), ("c0", c0)):
        if s is not None:
            sh = host_view(name, s)
            if sh.dtype != dtype:
                raise TypeError(f"{name} has dtype {sh.dtype} but the weights have {dtype}")
            if sh.shape != (B, H):
                raise ValueError(f"{name} must be [B, H] = [{B}, {H}]; got shape {sh.shape}")

    act = V.ACTIVATIONS[activation]
    d = Device(dtype, act)
    swap = int(bool(batch_first))

    def to_dev(a, swap=0):
        if a is None:
            return None
        if is_device_array(a):
            return d.contiguous(as_device(cuda, a), None, swap)
        a = np.asarray(a)
        return d.upload(a.transpose(1, 0, 2) if swap else a)

    xd = to_dev(x, swap)                                    # [T, B, n_in]
    Ud, Wd, bd, bnd = to_dev(U), to_dev(W), to_dev(b), to_dev(bn)
    GH = cl.G * H
    rows = d.empty((T + 1, B, cl.K * H))                    # [T+1, B, K·H], state 0 in row 0
    d.arr.fill[d.blocks(B * cl.K * H), d.NT](rows[0].reshape(-1), 0)
    for k, s in enumerate((h0, c0)):
        if s is not None:
            d.copy_into(rows[0][:, k * H:(k + 1) * H], to_dev(s))
    pre = d.empty((T, B, GH))                               # [T, B, G·H] = x Uᵀ + b
    d.gemm(xd.reshape(T * B, n_in), Ud, pre.reshape(T * B, GH), tb=1, bias=bd)
    w = SimpleNamespace(W=Wd, WT=d.transpose(Wd) if cl.name == "rnn" else None, bn=bnd, act=act)
    cell_module(cl).forward(d, pre, rows, w)

    hs = d.contiguous(rows[1:, :, :H], None, swap)          # [T, B, H] (a view when K = 1)
    last = [d.contiguous(rows[T][:, k * H:(k + 1) * H]) for k in range(cl.S)]
    if not ondev:
        hs = hs.copy_to_host()
        hs.flags.writeable = False
        last = [a.copy_to_host() for a in last]
    fields = dict(x=xd, rows=rows, U=Ud, W=Wd, b=bd, bn=bnd, act=act, h_last=last[0],
                  c_last=last[1] if cl.S == 2 else None)
    return hs, fields


def layer_backward(dhs, cache, dh_last=None, dc_last=None, input_grad=True):
    """Backpropagate a layer run by :func:`layer_forward`.

    Parameters
    ----------
    dhs : [T, B, H] (``[B, T, H]`` if the forward pass was batch-first)
        ∂L/∂h_t from the layers above, for every step.
    cache : object with the fields :func:`layer_forward` returned and ``cell``,
        ``batch_first``.
    dh_last, dc_last : [B, H] or None
        The gradient on the final state (c: the LSTM only), e.g. from a decoder.
    input_grad : bool
        False: dx is None and its product is skipped.

    Returns
    -------
    dx [T, B, n_in], dstate0 [B, S·H] (∂L/∂h0, then ∂L/∂c0), dU, dW, db, dbn (None but for
    the GRU): device arrays when ``dhs`` is one, NumPy arrays otherwise.
    """
    from .ops import cell_weight_grads
    cuda = cuda_module()
    cl, rows, xd, Ud, Wd = cache.cell, cache.rows, cache.x, cache.U, cache.W
    T, B = xd.shape[:2]
    H, n_in = Wd.shape[1], xd.shape[2]
    GH = cl.G * H
    dtype = np.dtype(rows.dtype)
    ondev = is_device_array(dhs)
    dh_h = stand_in(as_device(cuda, dhs), False) if ondev else V.as_array("dhs", dhs)
    if dh_h.dtype != dtype:
        raise TypeError(f"dhs has dtype {dh_h.dtype} but the layer runs in {dtype}")
    want = (B, T, H) if cache.batch_first else (T, B, H)
    if dh_h.shape != want:
        raise ValueError(f"dhs must be {list(want)}, the shape of hs; got shape {dh_h.shape}")
    if dc_last is not None and cl.S == 1:
        raise TypeError(f"dc_last applies to the LSTM only; this is a {cl.name} layer")
    d = Device(dtype, cache.act)
    swap = int(bool(cache.batch_first))
    if ondev:
        dhd = d.contiguous(as_device(cuda, dhs), None, swap)
    else:
        dhd = d.upload(dh_h.transpose(1, 0, 2) if swap else dh_h)
    dstate = d.zeros((B, cl.S * H))                         # [B, S·H]: ∂L/∂h, ∂L/∂c
    for k, (name, a) in enumerate((("dh_last", dh_last), ("dc_last", dc_last))):
        if a is None:
            continue
        ah = stand_in(as_device(cuda, a), False) if is_device_array(a) else V.as_array(name, a)
        if ah.dtype != dtype:
            raise TypeError(f"{name} has dtype {ah.dtype} but the layer runs in {dtype}")
        if ah.shape != (B, H):
            raise ValueError(f"{name} must be [B, H] = [{B}, {H}]; got shape {ah.shape}")
        src = d.contiguous(as_device(cuda, a)) if is_device_array(a) else d.upload(ah)
        d.copy_into(dstate[:, k * H:(k + 1) * H], src)
    w = SimpleNamespace(W=Wd, WT=None, bn=cache.bn, act=cache.act)
    delta = cell_module(cl).backward(d, dhd, 0, rows, dstate, d.empty((T, B, cl.D * H)), w)
    g = {"W": d.zeros((GH, H)), "b": d.zeros(GH), "U": d.zeros((GH, n_in))}
    if cache.bn is not None:
        g["bn"] = d.zeros(H)
    dx = d.empty((T, B, n_in)) if input_grad else None
    cell_weight_grads(d, cl, delta.reshape(T * B, cl.D * H),
                      rows[:-1].reshape(T * B, cl.K * H)[:, :H], xd.reshape(T * B, n_in), None,
                      Ud, g, None if dx is None else dx.reshape(T * B, n_in))
    if swap and dx is not None:
        dx = d.contiguous(dx, None, 1)
    out = (dx, dstate, g["U"], g["W"], g["b"], g.get("bn"))
    if not ondev:
        out = tuple(None if a is None else a.copy_to_host() for a in out)
    return out
