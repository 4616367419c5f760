"""CudaOps: the operations :mod:`fastbptt.engine` schedules, on the device.

The GPU twin of :class:`fastbptt.cpu.CpuOps`: the same methods, so :func:`fastbptt.engine.run`
drives full, truncated and checkpointed BPTT on the device unchanged. Products and heads come
from :mod:`.products` and :mod:`.heads`; the time loop from the cell's module.
"""
from __future__ import annotations

import numpy as np

from . import rnn
from .device import Device, nblocks


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


class CudaOps(Device):
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
            self.rows(self.arr.gather_rows, self.E, ids, out, out.size)
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
            self.arr.onehot_proj[nblocks(xu2.size, self.NT), self.NT](self.U, ids, self.b, xu2)
        else:
            self.gemm(x2, self.U, xu2, tb=1, bias=self.b)
        return xu

    def forward(self, xu, hs):
        rnn.forward(self, xu, hs, self)

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

    def backward(self, dhe, inj0, hs, dh, out=None):
        n = hs.shape[0] - 1
        da = out if out is not None else self.empty((n,) + tuple(dh.shape))
        return rnn.backward(self, dhe, inj0, hs, dh, da, self)

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
            self.rows(self.arr.scatter_add_cols, _get(g, "U"), ids, da2, da2.size)
        else:
            self.gemm(da2, x2, _get(g, "U"), ta=1, beta=1.0)
        if self.E is not None:                          # dE[id] += da @ U, repeated ids add
            ids = self.ids[t0 * p.B:t1 * p.B]
            dx = self.empty((R, p.n_in))
            self.gemm(da2, self.U, dx)
            self.rows(self.arr.scatter_add_rows, _get(g, "E"), ids, dx, dx.size)

    def capture(self, h_last, hs, t_first, sel):
        """h_last[b] = state after step last[b] for the sequences ``sel`` ending in hs."""
        steps = self.p.last[sel] - t_first + 1
        self.arr.capture[nblocks(len(sel) * self.p.H, self.NT), self.NT](
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
