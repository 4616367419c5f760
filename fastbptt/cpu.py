"""Numba CPU backend: compiled time loops and the operations the engine schedules.

Kernels are module-level ``@njit(cache=True, nogil=True)`` functions over caller-owned,
C-contiguous arrays: nothing is compiled at import, compiled code is cached on disk, and the
activation is chosen by an integer code (0 tanh, 1 sigmoid, 2 relu) so one compiled kernel
serves all three without passing functions around.

Only the recurrent product and the pointwise work run inside the time loops; the input
projection and the weight gradients are large matrix products over all rows of a segment,
done by NumPy's BLAS in :class:`CpuOps`.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True, error_model="numpy")


# --------------------------------------------------------------------------- pointwise
@njit(**_JIT)
def _activate_add(xt, acc, out, act):
    """out = f(xt + acc) for [B, H] arrays; the branch sits outside the loops."""
    B, H = out.shape
    if act == 0:
        for i in range(B):
            for j in range(H):
                out[i, j] = np.tanh(xt[i, j] + acc[i, j])
    elif act == 1:
        for i in range(B):
            for j in range(H):
                out[i, j] = 1.0 / (1.0 + np.exp(-(xt[i, j] + acc[i, j])))
    else:
        for i in range(B):
            for j in range(H):
                a = xt[i, j] + acc[i, j]
                out[i, j] = a if a > 0 else 0.0


@njit(**_JIT)
def _delta(dh, h, out, act):
    """out = dh * f'(a), with f' written in terms of the saved output h = f(a)."""
    B, H = out.shape
    if act == 0:
        for i in range(B):
            for j in range(H):
                out[i, j] = dh[i, j] * (1.0 - h[i, j] * h[i, j])
    elif act == 1:
        for i in range(B):
            for j in range(H):
                out[i, j] = dh[i, j] * h[i, j] * (1.0 - h[i, j])
    else:
        for i in range(B):
            for j in range(H):
                out[i, j] = dh[i, j] if h[i, j] > 0 else 0.0


# --------------------------------------------------------------------------- time loops
@njit(**_JIT)
def forward_steps(xu, WT, hs, tmp, act):
    """Run the recurrence over n steps.

    xu  [n, B, H]    input projection x_t Uᵀ + b of each step
    WT  [H, H]       Wᵀ, C-contiguous
    hs  [n+1, B, H]  states; hs[0] is the initial state (read), hs[1:] are written
    tmp [B, H]       workspace for h_{t-1} Wᵀ
    """
    for t in range(xu.shape[0]):
        np.dot(hs[t], WT, tmp)
        _activate_add(xu[t], tmp, hs[t + 1], act)


@njit(**_JIT)
def backward_steps(dhe, inj0, hs, W, dh, da, act):
    """Backpropagate through n steps with one accumulating hidden-delta buffer.

    dhe [m, B, H]    ∂L/∂h_t from the output layer for steps inj0 .. n-1 (m = n - inj0)
    hs  [n+1, B, H]  the states the forward pass saved (h_{t-1} in slot t)
    W   [H, H]
    dh  [B, H]       in: ∂L/∂h_n from later steps; out: ∂L/∂h_0 (the delta leaving step 0)
    da  [n, B, H]    out: ∂L/∂a_t, the pre-activation deltas of every step
    """
    n = hs.shape[0] - 1
    for t in range(n - 1, -1, -1):
        if t >= inj0:
            dh += dhe[t - inj0]
        _delta(dh, hs[t + 1], da[t], act)
        np.dot(da[t], W, dh)


# --------------------------------------------------------------------------- heads
@njit(**_JIT)
def softmax_xent_ids(o, y, w):
    """Fused, stable softmax + NLL over rows; o [R, K] is overwritten with w·(p − onehot(y)).

    Returns Σ_r w_r · (logsumexp(o_r) − o_r[y_r]), accumulated in float64.
    """
    R, K = o.shape
    total = 0.0
    for r in range(R):
        m = o[r, 0]
        for k in range(1, K):
            if o[r, k] > m:
                m = o[r, k]
        s = 0.0
        for k in range(K):
            s += np.exp(o[r, k] - m)
        lse = m + np.log(s)
        total += w[r] * (lse - o[r, y[r]])
        for k in range(K):
            o[r, k] = w[r] * np.exp(o[r, k] - lse)
        o[r, y[r]] -= w[r]
    return total


@njit(**_JIT)
def softmax_xent_probs(o, y, w):
    """As :func:`softmax_xent_ids` with target rows y [R, K]: loss −Σ y log p, delta p·Σy − y."""
    R, K = o.shape
    total = 0.0
    for r in range(R):
        m = o[r, 0]
        for k in range(1, K):
            if o[r, k] > m:
                m = o[r, k]
        s = 0.0
        for k in range(K):
            s += np.exp(o[r, k] - m)
        lse = m + np.log(s)
        ysum = 0.0
        for k in range(K):
            if y[r, k] != 0:  # 0·log 0 is 0, not NaN
                total += w[r] * y[r, k] * (lse - o[r, k])
            ysum += y[r, k]
        for k in range(K):
            o[r, k] = w[r] * (np.exp(o[r, k] - lse) * ysum - y[r, k])
    return total


@njit(**_JIT)
def mse_rows(o, y, w):
    """½‖o − y‖² per row; o is overwritten with w·(o − y)."""
    R, K = o.shape
    total = 0.0
    for r in range(R):
        s = 0.0
        for k in range(K):
            d = o[r, k] - y[r, k]
            s += d * d
            o[r, k] = w[r] * d
        total += 0.5 * w[r] * s
    return total


# --------------------------------------------------------------------------- ids
@njit(**_JIT)
def gather_rows_bias(table, ids, bias, out):
    """out[r] = table[ids[r]] + bias: the one-hot input projection without a one-hot array."""
    for r in range(ids.shape[0]):
        row = table[ids[r]]
        for j in range(out.shape[1]):
            out[r, j] = row[j] + bias[j]


@njit(**_JIT)
def scatter_add_rows(dst, ids, src):
    """dst[ids[r]] += src[r]; repeated ids accumulate."""
    for r in range(ids.shape[0]):
        i = ids[r]
        for j in range(src.shape[1]):
            dst[i, j] += src[r, j]


# --------------------------------------------------------------------------- engine ops
class CpuOps:
    """The operations :mod:`fastbptt.engine` schedules, on host arrays for one problem."""

    def __init__(self, p):
        self.p = p
        self.dtype = p.dtype
        self.WT = np.ascontiguousarray(p.W.T)         # [H, H] so the step product is h @ WT
        self.UT = np.ascontiguousarray(p.U.T) if (p.ids is not None and p.E is None) else None
        self._tmp = np.empty((p.B, p.H), dtype=p.dtype)

    # allocation
    def zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    def empty(self, shape):
        return np.empty(shape, dtype=self.dtype)

    def to_host(self, a):
        return a

    def copy_into(self, dst, src):
        dst[...] = src

    # x_t for steps [t0, t1) as rows [n*B, n_in]; None for one-hot ids
    def _x_rows(self, t0, t1):
        p = self.p
        if p.x is not None:
            return p.x[t0:t1].reshape(-1, p.n_in)
        if p.E is not None:
            return p.E[p.ids[t0:t1].reshape(-1)]
        return None

    def proj(self, t0, t1):
        """xu [n, B, H] = x_t Uᵀ + b for steps [t0, t1): one matrix product for all rows."""
        p = self.p
        n = t1 - t0
        xu = np.empty((n, p.B, p.H), dtype=self.dtype)
        x2 = self._x_rows(t0, t1)
        if x2 is None:
            gather_rows_bias(self.UT, p.ids[t0:t1].reshape(-1), p.b, xu.reshape(-1, p.H))
        else:
            np.dot(x2, p.U.T, out=xu.reshape(-1, p.H))
            xu += p.b
        return xu

    def forward(self, xu, hs):
        forward_steps(xu, self.WT, hs, self._tmp, self.p.act)

    def head(self, hs_out, t0, t1, g):
        """Loss of steps [t0, t1) and ∂L/∂h_t through the output layer.

        hs_out [n, B, H] holds h_t for those steps. Accumulates dV and dc into g and returns
        (loss, dhe [n, B, H]); dhe is None when no step in the range carries loss.
        """
        p = self.p
        n, B, H = hs_out.shape
        h2 = hs_out.reshape(-1, H)
        w = p.weights[t0:t1].reshape(-1)
        if p.dense:
            rows = None
        else:
            rows = np.flatnonzero(w)
            if rows.size == 0:
                return 0.0, None
            h2 = h2[rows]
            w = w[rows]
        o = h2 @ p.V.T                                # [R, n_out] logits, then their deltas
        o += p.c
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
        g["V"] += o.T @ h2
        g["c"] += o.sum(axis=0)
        if rows is None:
            dhe = (o @ p.V).reshape(n, B, H)
        else:
            dhe = np.zeros((n, B, H), dtype=self.dtype)
            dhe.reshape(-1, H)[rows] = o @ p.V
        return float(loss), dhe

    def backward(self, dhe, inj0, hs, dh, out=None):
        n = hs.shape[0] - 1
        da = out if out is not None else np.empty((n,) + dh.shape, dtype=self.dtype)
        if dhe is None:
            dhe = np.empty((0,) + dh.shape, dtype=self.dtype)
            inj0 = n
        backward_steps(dhe, inj0, hs, self.p.W, dh, da, self.p.act)
        return da

    def weight_grads(self, t0, t1, da, hs_prev, g):
        """dW, db, dU (and dE) from the deltas of steps [t0, t1) as matrix products over rows.

        da [n, B, H] and hs_prev [n, B, H] = h_{t-1} of those steps.
        """
        p = self.p
        H = p.H
        da2 = da.reshape(-1, H)
        g["W"] += da2.T @ hs_prev.reshape(-1, H)
        g["b"] += da2.sum(axis=0)
        x2 = self._x_rows(t0, t1)
        if x2 is None:
            scatter_add_rows(g["UT"], p.ids[t0:t1].reshape(-1), da2)
        else:
            g["U"] += da2.T @ x2
        if p.E is not None:
            scatter_add_rows(g["E"], p.ids[t0:t1].reshape(-1), da2 @ p.U)

    def capture(self, h_last, hs, t_first, sel):
        """h_last[b] = state after step last[b], for the sequences ``sel`` ending in hs.

        hs [n+1, B, H] holds h_{t_first} .. ; sel are batch indices whose last valid step
        t satisfies t_first <= t < t_first + n.
        """
        h_last[sel] = hs[self.p.last[sel] - t_first + 1, sel]

    def new_grads(self):
        p = self.p
        g = {k: np.zeros_like(getattr(p, k)) for k in ("W", "b", "V", "c")}
        if p.ids is not None and p.E is None:
            g["UT"] = np.zeros((p.n_in, p.H), dtype=self.dtype)   # rows scatter-add cheaply
        else:
            g["U"] = np.zeros_like(p.U)
        if p.E is not None:
            g["E"] = np.zeros_like(p.E)
        g["h0"] = np.zeros_like(p.h0)
        return g

    def finish(self, g):
        if "UT" in g:
            g["U"] = np.ascontiguousarray(g.pop("UT").T)
        return g
