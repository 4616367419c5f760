"""CpuOps: the operations :mod:`fastbptt.engine` schedules, on host arrays, for every cell.

The engine calls these for masked, truncated and checkpointed problems (full BPTT without a
mask runs in one compiled call, :mod:`fastbptt.cpu.fused`). Only the recurrent product and
the pointwise work run inside the compiled time loops; the input projection and the weight
gradients are products over all rows of a segment. Every product goes through the one BLAS
of :func:`fastbptt.cpu.blas.gemm`: with NumPy's OpenBLAS, SciPy's and MKL each keeping its
own spinning thread pool, alternating between them made a checkpointed call 10-40x slower
than full BPTT on a busy 2-core machine.
"""
from __future__ import annotations

import numpy as np

from .blas import LP64_MAX, gemm, gemm_scratch, register_blas, restore_threads, threads_now
from .fused import xblocks_of
from .heads import gather_rows_bias, mse_rows, scatter_add_rows, softmax_xent_ids, softmax_xent_probs
from .steps import (backward_steps, cell_tag, forward_steps, input_delta, input_grads, onehot_grads,
                    recurrent_grads, recurrent_operand)


class CpuOps:
    """The engine's operations for one validated problem ``p`` (any cell)."""

    def __init__(self, p):
        self.p = p
        self.dtype = p.dtype
        cell = p.cell
        self.cell = cell
        self.row_width = cell.K * p.H            # a step's state row [B, K·H]
        self.state_width = cell.S * p.H          # its carried state, the first S·H columns
        self.GH = cell.G * p.H
        self.xblocks = xblocks_of(cell)
        self.UT = np.ascontiguousarray(p.U.T) if (p.ids is not None and p.E is None) else None
        self.bn = p.bn if p.bn is not None else np.empty(0, p.dtype)
        self.rec = np.empty((p.B if cell.split else 0, self.GH), p.dtype)
        self.WT = recurrent_operand(p.W, p.B)      # Wᵀ where the forward steps read it
        register_blas()
        self._sc, self._fs = gemm_scratch(threads_now(), p.W)      # W: only its dtype is used

    def _mm(self, A, ta, B, tb, C, beta=0.0):
        """C = op(A) op(B) + beta·C through :func:`gemm` (row-major 2-D arrays)."""
        if max(A.shape + B.shape) >= LP64_MAX:
            # the BLAS takes 32-bit sizes: NumPy's matmul splits what gemm cannot take
            a = A.T if ta else A
            b = B.T if tb else B
            if beta == 0.0:
                np.matmul(a, b, out=C)
            else:
                C *= beta
                C += a @ b
            return
        gemm(A, ta, B, tb, C, beta, self._sc, self._fs)

    # allocation
    def zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    def empty(self, shape):
        return np.empty(shape, dtype=self.dtype)

    def copy_into(self, dst, src):
        dst[...] = src

    def _x_rows(self, t0, t1):
        """x_t for steps [t0, t1) as rows [n·B, n_in]; None for one-hot ids."""
        p = self.p
        if p.x is not None:
            return p.x[t0:t1].reshape(-1, p.n_in)
        if p.E is not None:
            return p.E[p.ids[t0:t1].reshape(-1)]
        return None

    def proj(self, t0, t1):
        """pre [n, B, G·H] = x_t Uᵀ + b for steps [t0, t1): one product for all rows."""
        p = self.p
        pre = np.empty((t1 - t0, p.B, self.GH), dtype=self.dtype)
        pre2 = pre.reshape(-1, self.GH)
        x2 = self._x_rows(t0, t1)
        if x2 is None:
            gather_rows_bias(self.UT, p.ids[t0:t1].reshape(-1), p.b, pre2)
        else:
            pre2[...] = p.b
            self._mm(np.ascontiguousarray(x2), 0, p.U, 1, pre2, 1.0)
        return pre

    def forward(self, pre, rows):
        """rows[1:] [n, B, K·H] from rows[0] and pre [n, B, G·H] (consumed)."""
        c = self.cell
        forward_steps(cell_tag(c), c.split, pre, rows, self.p.W, self.WT, self.bn, self.rec,
                      self.p.act, self._sc, self._fs)

    def head(self, rows_out, t0, t1, g):
        """Loss of steps [t0, t1) and ∂L/∂h_t through the output layer.

        rows_out [n, B, K·H] holds the state rows of those steps. Accumulates dV and dc into
        g and returns (loss, dhe [n, B, H]); dhe is None when no step in the range carries loss.
        """
        p = self.p
        n, B = rows_out.shape[:2]
        H = p.H
        h2 = rows_out.reshape(-1, self.row_width)[:, :H]          # [n·B, H], strided
        w = p.weights[t0:t1].reshape(-1)
        if p.dense:
            rows = None
        else:
            rows = np.flatnonzero(w)
            if rows.size == 0:
                return 0.0, None
            h2 = h2[rows]
            w = w[rows]
        o = np.empty((h2.shape[0], p.n_out), dtype=self.dtype)   # logits, then their deltas
        o[...] = p.c
        self._mm(h2, 0, p.V, 1, o, 1.0)
        if p.loss == "cross_entropy" and p.tgt_ids is not None:
            y = p.tgt_ids[t0:t1].reshape(-1)
            loss = softmax_xent_ids(o, y if rows is None else y[rows], w)
        else:
            if p.y_map is None:
                y = p.y_rows[t0 * B:t1 * B]
                if rows is not None:
                    y = y[rows]
            else:
                m = p.y_map[t0:t1].reshape(-1)
                y = p.y_rows[m if rows is None else m[rows]]
            kernel = mse_rows if p.loss == "mse" else softmax_xent_probs
            loss = kernel(o, y, w)
        self._mm(o, 1, h2, 0, g["V"], 1.0)
        g["c"] += o.sum(axis=0)
        if rows is None:
            dhe = np.empty((n, B, H), dtype=self.dtype)
            self._mm(o, 0, p.V, 0, dhe.reshape(-1, H))
        else:
            dhe = np.zeros((n, B, H), dtype=self.dtype)
            dr = np.empty((rows.size, H), dtype=self.dtype)
            self._mm(o, 0, p.V, 0, dr)
            dhe.reshape(-1, H)[rows] = dr
        return float(loss), dhe

    def backward(self, dhe, inj0, rows, dstate):
        """delta [n, B, D·H] of the n steps of rows [n+1, B, K·H]; dstate [B, S·H] in/out."""
        n = rows.shape[0] - 1
        delta = np.empty((n, dstate.shape[0], self.cell.D * self.p.H), dtype=self.dtype)
        if dhe is None:
            dhe = np.empty((0, dstate.shape[0], self.p.H), dtype=self.dtype)
            inj0 = n
        backward_steps(cell_tag(self.cell), dhe, inj0, rows, self.p.W, dstate, delta, self.p.act,
                       self._sc, self._fs)
        return delta

    def weight_grads(self, t0, t1, delta, rows_prev, g):
        """dW, db, dU (and dbn, dE) from the deltas of steps [t0, t1), products over rows.

        delta [n, B, D·H]; rows_prev [n, B, K·H] the state rows of steps t0-1 .. t1-2.
        """
        p = self.p
        H = p.H
        d2 = delta.reshape(-1, delta.shape[2])
        hprev = rows_prev.reshape(-1, self.row_width)[:, :H]
        sc, fs = self._sc, self._fs
        recurrent_grads(d2, hprev, g["W"], g.get("bn", self.bn), self.cell.bn_col, 1.0, sc, fs)
        x2 = self._x_rows(t0, t1)
        if x2 is None:
            onehot_grads(self.xblocks, d2, p.ids[t0:t1].reshape(-1), g["UT"], g["b"], 1.0)
        else:
            input_grads(self.xblocks, d2, np.ascontiguousarray(x2), g["U"], g["b"], 1.0, sc, fs)
        if p.E is not None:
            dx = np.empty((d2.shape[0], p.n_in), dtype=self.dtype)
            input_delta(self.xblocks, d2, p.U, dx, sc, fs)
            scatter_add_rows(g["E"], p.ids[t0:t1].reshape(-1), dx)

    def zero_states(self, rows, pad):
        """rows[i, b] = 0 where pad[i, b]: whole state rows (state and gates), any cell.

        rows [n+1, B, K·H], pad [n+1, B] bool (host). A zero row's backward is exactly zero.
        """
        rows[pad] = 0

    def capture(self, h_last, rows, t_first, sel):
        """h_last[b] = state after step last[b], for the sequences ``sel`` ending in rows.

        rows [n+1, B, K·H] holds the rows from t_first on; sel are batch indices whose last
        valid step t satisfies t_first <= t < t_first + n.
        """
        h_last[sel] = rows[self.p.last[sel] - t_first + 1, sel, :self.state_width]

    def new_grads(self):
        p = self.p
        g = {k: np.zeros_like(getattr(p, k)) for k in ("W", "b", "V", "c")}
        if p.bn is not None:
            g["bn"] = np.zeros_like(p.bn)
        if p.ids is not None and p.E is None:
            g["UT"] = np.zeros((p.n_in, self.GH), dtype=self.dtype)   # rows scatter-add cheaply
        else:
            g["U"] = np.zeros_like(p.U)
        if p.E is not None:
            g["E"] = np.zeros_like(p.E)
        g["h0"] = np.zeros((p.B, self.state_width), dtype=self.dtype)
        return g

    def finish(self, g):
        restore_threads(self._sc)                     # the caller's BLAS thread setting
        if "UT" in g:
            g["U"] = np.ascontiguousarray(g.pop("UT").T)
        return g
