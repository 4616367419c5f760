"""CudaOps: the operations :mod:`fastbptt.engine` schedules, on the device.

The GPU twin of :class:`fastbptt.cpu.CpuOps`: the same methods, so :func:`fastbptt.engine.run`
drives full, truncated and checkpointed BPTT on the device unchanged. Products and heads come
from :mod:`.products` and :mod:`.heads`; the time loop from the cell's module.
"""
from __future__ import annotations

import numpy as np

from .device import Device, cell_module, nblocks


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


def cell_weight_grads(dev, cell, d2, h_prev, x2, ids, U, g, dx=None):
    """Accumulate a cell's weight gradients from the delta rows of a run of steps.

    d2 [R, D·H] delta rows, h_prev [R, H] the states they follow (any row stride), x2 [R, n_in]
    the inputs (None: one-hot ``ids`` [R] select columns of U), U [G·H, n_in]; g: device
    arrays ``W``, ``b``, ``U`` (and ``bn``) that are added to; dx [R, n_in], when given, is
    overwritten with the input-side deltas times U (∂L/∂x).
    """
    H = h_prev.shape[1]
    GH = cell.G * H
    dev.gemm(d2[:, :GH], h_prev, g["W"], ta=1, beta=1.0)           # recurrent side: dW
    if cell.bn_col >= 0:                                           # GRU: dbn
        dev.colsum(d2[:, cell.bn_col * H:(cell.bn_col + 1) * H], g["bn"])
    # the input-side deltas as (delta column, U row, width) blocks, in units of H
    for i, (col, urow, width) in enumerate(cell.xblocks):
        dblk = d2[:, col * H:(col + width) * H]                    # [R, width·H]
        u0, u1 = urow * H, (urow + width) * H
        dev.colsum(dblk, g["b"][u0:u1])
        if x2 is None:                           # one-hot: dU[:, id] += delta, repeated ids add
            dev.rows(dev.arr.scatter_add_cols, g["U"][u0:u1], ids, dblk, dblk.size)
        else:
            dev.gemm(dblk, x2, g["U"][u0:u1], ta=1, beta=1.0)
        if dx is not None:
            dev.gemm(dblk, U[u0:u1], dx, beta=float(i > 0))


class CudaOps(Device):
    """The operations :mod:`fastbptt.engine` schedules, on device arrays, for one problem.

    Cell-agnostic: the cell's module (:mod:`.rnn`, :mod:`.lstm`, :mod:`.gru`) runs the time
    loop; everything else reads the numbers the cell declares (:mod:`fastbptt.cells`).
    Shapes, with G·H gate rows, state rows [n+1, B, K·H] and delta rows [n, B, D·H]:
    ``proj -> pre [n, B, G·H]``, ``forward(pre, rows)``, ``backward(dhe, inj0, rows, dstate)
    -> delta``, ``weight_grads(t0, t1, delta, rows_prev, g)``.

    Parameters
    ----------
    p : fastbptt._validate.Problem
        The validated problem (host arrays).
    dev : dict, optional
        Device arrays replacing fields of ``p`` (``"U"``, ``"W"``, ``"b"``, ``"bn"``, ``"V"``,
        ``"c"``, ``"E"``, ``"x"``, ``"ids"``, ``"h0"``, ``"c0"``, ``"tgt_ids"``, ``"y_rows"``):
        C-contiguous and time-major like the fields they replace. The others are uploaded.
    """

    def __init__(self, p, dev=None):
        super().__init__(p.dtype, p.act)
        self.p = p
        self.cell = p.cell
        self.loop = cell_module(p.cell)                               # its time loop
        dev = dev or {}

        def get(name, host, dtype=None):
            if name in dev:
                return dev[name]
            return None if host is None else self.upload(host, dtype)

        self.U, self.W, self.b = get("U", p.U), get("W", p.W), get("b", p.b)  # [GH, n_in], [GH, H], [GH]
        self.bn = get("bn", getattr(p, "bn", None))                           # [H] (gru)
        self.V, self.c, self.E = get("V", p.V), get("c", p.c), get("E", p.E)
        self.x = get("x", p.x)                                        # [T, B, n_in]
        ids = get("ids", p.ids, np.int64)                             # [T, B]
        self.ids = None if ids is None else ids.reshape(-1)           # [T*B]
        self.state0 = self._state0(p, dev)                            # [B, S·H]: h0 (, c0)
        self.state_width = p.cell.S * p.H                             # S·H
        self.row_width = p.cell.K * p.H                               # K·H
        self.WT = self.transpose(self.W) if p.cell.name == "rnn" else None   # [H, H]
        tgt = get("tgt_ids", p.tgt_ids, np.int64)
        self.tgt = None if tgt is None else tgt.reshape(-1)           # [T*B] class ids
        self.y_rows = get("y_rows", p.y_rows)                         # [R, n_out]
        self.y_map = None if p.y_map is None else self.upload(p.y_map, np.int64).reshape(-1)
        self.w = self.upload(p.weights).reshape(-1)                   # [T*B] loss weights
        self.loss_acc = self.cuda.device_array(1, dtype=np.float64)
        self._lossbuf = np.zeros(1, dtype=np.float64)

    def _state0(self, p, dev):
        """The initial state [B, S·H] on the device (h0, then c0 for the LSTM)."""
        H = p.H
        c0 = getattr(p, "c0", None)
        if "h0" not in dev and "c0" not in dev:
            return self.upload(p.h0 if c0 is None else np.concatenate([p.h0, c0], axis=1))
        if c0 is None:
            return dev["h0"]
        s0 = self.empty((p.B, 2 * H))
        for k, (name, host) in enumerate((("h0", p.h0), ("c0", c0))):
            self.copy_into(s0[:, k * H:(k + 1) * H], dev[name] if name in dev else self.upload(host))
        return s0

    # x_t rows for steps [t0, t1): [n*B, n_in]; None for one-hot ids
    def _x_rows(self, t0, t1):
        p = self.p
        if self.x is not None:
            return self.x[t0:t1].reshape(-1, p.n_in)
        if self.E is not None:
            ids = self.ids[t0 * p.B:t1 * p.B]
            out = self.empty((ids.shape[0], p.n_in))
            self.rows(self.arr.gather_rows, self.E, ids, out, out.size)
            return out
        return None

    def _h_rows(self, rows):
        """2-D [n·B, H] view of the h columns of states [n, B, ·] (a copy if they are strided)."""
        if not rows.is_c_contiguous():
            rows = self.contiguous(rows)
        n, B, KH = rows.shape
        return rows.reshape(n * B, KH)[:, :self.p.H]

    def proj(self, t0, t1):
        """pre [n, B, G·H] = x_t Uᵀ + b for steps [t0, t1): one product over all n*B rows."""
        p = self.p
        GH = self.cell.G * p.H
        pre = self.empty((t1 - t0, p.B, GH))
        pre2 = pre.reshape(-1, GH)
        x2 = self._x_rows(t0, t1)
        if x2 is None:
            ids = self.ids[t0 * p.B:t1 * p.B]
            self.arr.onehot_proj[nblocks(pre2.size, self.NT), self.NT](self.U, ids, self.b, pre2)
        else:
            self.gemm(x2, self.U, pre2, tb=1, bias=self.b)
        return pre

    def forward(self, pre, rows):
        """rows[1:] [n, B, K·H] from rows[0] and pre (the cell's time loop)."""
        self.loop.forward(self, pre, rows, self)

    def backward(self, dhe, inj0, rows, dstate, out=None):
        """delta [n, B, D·H]; dstate [B, S·H] enters from later steps, leaves as ∂L/∂state_0."""
        n = rows.shape[0] - 1
        delta = out if out is not None else self.empty((n, self.p.B, self.cell.D * self.p.H))
        return self.loop.backward(self, dhe, inj0, rows, dstate, delta, self)

    def head(self, hs_out, t0, t1, g):
        """Loss of steps [t0, t1) and ∂L/∂h_t through the output layer (as CpuOps.head)."""
        p = self.p
        n, B = hs_out.shape[:2]
        H = p.H
        R = n * B
        h2 = self._h_rows(hs_out)                                  # [R, H]
        sel = rows_dev = None
        if not p.dense:
            rows = np.flatnonzero(p.weights[t0:t1].reshape(-1))
            if rows.size == 0:
                return 0.0, None
            rows_dev = self.upload(rows, np.int64)
            sel = self.upload(rows + t0 * B, np.int64)            # flat (t, b) of each row
            hsel = self.empty((rows.size, H))
            self.rows(self.arr.gather_rows, h2, rows_dev, hsel, hsel.size)
            h2 = hsel
        Rr = h2.shape[0]
        o = self.empty((Rr, p.n_out))                              # logits, then their deltas
        self.gemm(h2, self.V, o, tb=1, bias=self.c)
        if p.loss == "mse":
            mode = 2
        else:
            mode = 0 if self.tgt is not None else 1
        self.arr.fill[1, 1](self.loss_acc, 0)
        self.heads.head_loss[Rr, self.NT](
            o, self.dummy_ids if sel is None else sel, int(sel is not None), t0 * B, self.w,
            self.dummy_ids if self.tgt is None else self.tgt,
            self.dummy2 if self.y_rows is None else self.y_rows,
            self.dummy_ids if self.y_map is None else self.y_map, int(self.y_map is not None),
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
            self.rows(self.arr.scatter_rows, dhe.reshape(R, H), rows_dev, tmp, tmp.size)
        self.loss_acc.copy_to_host(self._lossbuf)
        return float(self._lossbuf[0]), dhe

    def weight_grads(self, t0, t1, delta, rows_prev, g):
        """dW, db, dU (dbn, dE) from the deltas of steps [t0, t1) (as CpuOps.weight_grads).

        delta [n, B, D·H]; rows_prev [n, B, ·]: the states h_{t-1} in their first H columns."""
        p = self.p
        x2 = self._x_rows(t0, t1)
        ids = None if self.ids is None else self.ids[t0 * p.B:t1 * p.B]
        dx = None if self.E is None else self.empty((delta.shape[0] * p.B, p.n_in))
        cell_weight_grads(self, self.cell, delta.reshape(-1, self.cell.D * p.H),
                          self._h_rows(rows_prev), x2, ids, self.U, {k: _get(g, k) for k in g}, dx)
        if dx is not None:                       # dE[id] += delta U, repeated ids add
            self.rows(self.arr.scatter_add_rows, _get(g, "E"), ids, dx, dx.size)

    def zero_states(self, rows, pad):
        """rows[i, b] = 0 where pad[i, b]: whole state rows, any cell (as CpuOps.zero_states).

        rows [n+1, B, K·H] (C-contiguous), pad [n+1, B] bool on the host."""
        idx = np.flatnonzero(pad)
        KH = rows.shape[2]
        z = self.zeros((idx.size, KH))
        self.rows(self.arr.scatter_rows, rows.reshape(-1, KH), self.upload(idx, np.int64), z, z.size)

    def capture(self, h_last, hs, t_first, sel):
        """h_last[b] = state after step last[b] for the sequences ``sel`` ending in hs.

        h_last [B, S·H], hs [n+1, B, K·H] state rows."""
        steps = self.p.last[sel] - t_first + 1
        self.arr.capture[nblocks(len(sel) * h_last.shape[1], self.NT), self.NT](
            h_last, hs, self.upload(steps, np.int64), self.upload(sel, np.int64))

    def new_grads(self):
        p = self.p
        shapes = {"U": p.U.shape, "W": p.W.shape, "b": p.b.shape, "V": p.V.shape, "c": p.c.shape,
                  "h0": (p.B, self.cell.S * p.H)}                  # [B, S·H]: h0 (, c0)
        if self.bn is not None:
            shapes["bn"] = (p.H,)
        if p.E is not None:
            shapes["E"] = p.E.shape
        return _Grads(self, {k: self.zeros(s) for k, s in shapes.items()})

    def finish(self, g):
        return dict(g.items())
