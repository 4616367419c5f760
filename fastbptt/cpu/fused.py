"""Full BPTT without a mask (the common case) in ONE compiled call, for every cell.

Input projection, recurrence, fused softmax/cross-entropy (or MSE) head, backward recurrence
and weight gradients run in :func:`fused_full_bptt`, every product through :func:`gemm`
(BLAS from compiled code). Why one call: at min-char-rnn's size (T=25, B=1, H=100) the
arithmetic takes tens of microseconds, less than the Python overhead of scheduling a dozen
NumPy calls. The time loops are :mod:`fastbptt.cpu.steps`'; the cell is a small integer.
"""
from __future__ import annotations

import numpy as np

from .._jit import njit
from .blas import LP64_MAX, gemm, gemm_scratch, register_blas, restore_threads, threads_now
from .heads import mse_rows, softmax_xent_ids, softmax_xent_probs
from .steps import (backward_step, cell_tag, forward_step, input_delta, input_grads, onehot_grads,
                    recurrent_grads)

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def project(in_kind, x, ids, E, U, b, pre, xe, sc, fs):
    """pre [R, G·H] = x Uᵀ + b for every row: one product (float or embedded inputs), or the
    column of U each one-hot id selects. Embedded rows are gathered into xe [R, I] first."""
    R, GH = pre.shape
    if in_kind == 1:
        for r in range(R):
            i = ids[r]
            for j in range(GH):
                pre[r, j] = U[j, i] + b[j]
        return
    for r in range(R):
        for j in range(GH):
            pre[r, j] = b[j]
    if in_kind == 0:
        gemm(x, 0, U, 1, pre, 1.0, sc, fs)
    else:
        for r in range(R):
            src = E[ids[r]]
            for j in range(xe.shape[1]):
                xe[r, j] = src[j]
        gemm(xe, 0, U, 1, pre, 1.0, sc, fs)


@njit(**_JIT)
def head_rows(loss_kind, h2, V, c, tgt, yrows, w, o, gV, gc, dhe, sc, fs):
    """Logits of rows h2 [R, H], the loss, gV/gc (written) and dhe [R, H] = ∂L/∂h."""
    R = h2.shape[0]
    for r in range(R):
        for k in range(o.shape[1]):
            o[r, k] = c[k]
    gemm(h2, 0, V, 1, o, 1.0, sc, fs)                           # [R, O]
    if loss_kind == 0:
        loss = softmax_xent_ids(o, tgt, w)
    elif loss_kind == 1:
        loss = softmax_xent_probs(o, yrows, w)
    else:
        loss = mse_rows(o, yrows, w)
    gemm(o, 1, h2, 0, gV, 0.0, sc, fs)
    gc[:] = 0
    for r in range(R):
        for k in range(o.shape[1]):
            gc[k] += o[r, k]
    gemm(o, 0, V, 0, dhe, 0.0, sc, fs)
    return loss


@njit(**_JIT)
def fused_full_bptt(tag, split, K, D, xblocks, bn_col, in_kind, x, ids, E, U, W, b, bn, V, c,
                    state0, loss_kind, tgt, yrows, w, act, nthreads,
                    gU, gW, gb, gbn, gV, gc, gE, gstate0, last_state):
    """Loss and every gradient of full BPTT in one call (no mask, every step carries loss).

    in_kind 0: float inputs x [R, I];  1: one-hot ids [R] (gU is written transposed,
    [I, G·H]);  2: ids looked up in E [vocab, I].  R = T·B rows, time-major.
    loss_kind 0: cross-entropy with class ids tgt [R];  1: cross-entropy with probability
    rows yrows [R, O];  2: mse against yrows.   w [R]: each row's loss weight.
    state0 [B, S·H] in; gstate0 and last_state [B, S·H] out. Arrays an input kind does not
    use are passed empty. Gradients are written, not added. Returns the loss (float64 sum).
    """
    B = state0.shape[0]
    SH = state0.shape[1]
    GH, H = W.shape
    R = w.shape[0]
    T = R // B
    dt = W.dtype
    sc, fs = gemm_scratch(nthreads, W)
    I = U.shape[1]
    # pre [R, G·H]: x Uᵀ + b, consumed by the forward pass; then its memory holds dhe [R, H]
    buf = np.empty(R * GH, dt)
    pre = buf.reshape(R, GH)
    xe = np.empty((R if in_kind == 2 else 0, I), dt)
    project(in_kind, x, ids, E, U, b, pre, xe, sc, fs)
    # rows [(T+1)·B, K·H]: step t's state row in rows t·B .. t·B+B-1, the initial state first
    rows = np.empty(((T + 1) * B, K * H), dt)
    for r in range(B):
        for j in range(SH):
            rows[r, j] = state0[r, j]
    rec = np.empty((B if split else 0, GH), dt)
    for t in range(T):
        forward_step(tag, split, pre[t * B:(t + 1) * B], rec, rows[t * B:(t + 1) * B],
                     rows[(t + 1) * B:(t + 2) * B], W, bn, act, sc, fs)
    for r in range(B):
        for j in range(SH):
            last_state[r, j] = rows[T * B + r, j]
    # head over every step at once
    o = np.empty((R, V.shape[0]), dt)
    dhe = buf[:R * H].reshape(R, H)                              # pre is dead by now
    loss = head_rows(loss_kind, rows[B:, :H], V, c, tgt, yrows, w, o, gV, gc, dhe, sc, fs)
    # backward: delta [R, D·H]; with D = 1 it shares dhe's memory (row t is read, then written)
    delta = dhe if D == 1 else np.empty((R, D * H), dt)
    dstate = gstate0
    dstate[:] = 0
    for t in range(T - 1, -1, -1):
        r0 = t * B
        for i in range(B):
            for j in range(H):
                dstate[i, j] += dhe[r0 + i, j]
        backward_step(tag, delta[r0:r0 + B], rows[r0 + B:r0 + 2 * B], rows[r0:r0 + B],
                      dstate, W, act, sc, fs)
    # weight gradients: products over all T·B rows
    recurrent_grads(delta, rows[:R, :H], gW, gbn, bn_col, 0.0, sc, fs)
    if in_kind == 0:
        input_grads(xblocks, delta, x, gU, gb, 0.0, sc, fs)
    elif in_kind == 1:
        onehot_grads(xblocks, delta, ids, gU, gb, 0.0)
    else:
        input_grads(xblocks, delta, xe, gU, gb, 0.0, sc, fs)
        dx = np.empty((R, I), dt)
        input_delta(xblocks, delta, U, dx, sc, fs)
        gE[:] = 0
        for r in range(R):
            row = gE[ids[r]]
            for j in range(I):
                row[j] += dx[r, j]
    restore_threads(sc)
    return loss


def fused_eligible(p) -> bool:
    """Whether :func:`fused_loss_and_grad` handles the validated problem ``p``."""
    return (p.truncate is None and p.checkpoint is None and p.dense and not p.masked
            and p.y_map is None and p.T * p.B * max(p.n_in, p.H * p.cell.K, p.n_out) < LP64_MAX)


_XBLOCKS = {}


def xblocks_of(cell):
    """The cell's input-side delta blocks as the int64 [nb, 3] array the kernels take."""
    a = _XBLOCKS.get(cell.name)
    if a is None:
        a = _XBLOCKS[cell.name] = np.array(cell.xblocks, dtype=np.int64)
    return a


def fused_loss_and_grad(p):
    """``loss_and_grad`` for an eligible problem in one compiled call.

    Returns (loss, grads, last_state) with ``grads["h0"]`` and ``last_state`` [B, S·H].
    """
    register_blas()
    dt = p.dtype
    cell = p.cell
    H, GH, R = p.H, p.cell.G * p.H, p.T * p.B
    e2 = np.empty((0, 0), dt)
    e1 = np.empty(0, dt)
    ei = np.empty(0, np.int64)
    if p.x is not None:
        in_kind, x, ids, E = 0, p.x.reshape(R, p.n_in), ei, e2
    elif p.E is None:
        in_kind, x, ids, E = 1, e2, p.ids.reshape(R), e2
    else:
        in_kind, x, ids, E = 2, e2, p.ids.reshape(R), p.E
    if p.tgt_ids is not None:
        loss_kind, tgt, yrows = 0, p.tgt_ids.reshape(R), e2
    else:
        loss_kind, tgt, yrows = (2 if p.loss == "mse" else 1), ei, p.y_rows
    g = {"U": np.empty((p.n_in, GH) if in_kind == 1 else (GH, p.n_in), dt),
         "W": np.empty((GH, H), dt), "b": np.empty(GH, dt),
         "V": np.empty((p.n_out, H), dt), "c": np.empty(p.n_out, dt)}
    gbn = np.empty(H, dt) if p.bn is not None else e1
    gE = np.empty(p.E.shape, dt) if in_kind == 2 else e2
    state0 = p.state0
    gstate0 = np.empty_like(state0)
    last_state = np.empty_like(state0)
    loss = fused_full_bptt(cell_tag(cell), cell.split, cell.K, cell.D, xblocks_of(cell), cell.bn_col,
                           in_kind, x, ids, E, p.U, p.W, p.b, p.bn if p.bn is not None else e1,
                           p.V, p.c, state0, loss_kind, tgt, yrows, p.weights.reshape(-1),
                           p.act, threads_now(), g["U"], g["W"], g["b"], gbn, g["V"], g["c"], gE,
                           gstate0, last_state)
    if in_kind == 1:
        g["U"] = np.ascontiguousarray(g["U"].T)
    if in_kind == 2:
        g["E"] = gE
    if p.bn is not None:
        g["bn"] = gbn
    g["h0"] = gstate0
    return float(loss), g, last_state
