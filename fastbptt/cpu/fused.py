"""Full BPTT without a mask (the common case) in ONE compiled call, for every cell.

Input projection, recurrence, fused softmax/cross-entropy (or MSE) head, backward recurrence
and weight gradients run in :func:`fused_full_bptt`, every product through :func:`gemm`
(BLAS from compiled code). Why one call: at min-char-rnn's size (T=25, B=1, H=100) the
arithmetic takes tens of microseconds, less than the Python overhead of scheduling a dozen
NumPy calls. The time loops are :mod:`fastbptt.cpu.steps`'. The cell (its tag's type), the
input kind and the loss (which arguments are None) are compile-time choices, so a call
compiles only the code it runs.
"""
from __future__ import annotations

import numpy as np
from numba import types

from .._jit import njit
from ._static import static_dispatch
from .blas import LP64_MAX, gemm, gemm_scratch, register_blas, restore_threads, threads_now
from .heads import mse_rows, softmax_xent_ids, softmax_xent_probs
from .steps import (backward_step, cell_tag, forward_step, input_delta, input_grads, onehot_grads,
                    recurrent_grads, recurrent_operand)
from .workspace import held

_JIT = dict(cache=True, nogil=True, error_model="numpy")


# Input kinds and losses are compile-time choices: which arguments are None is part of the
# signature, and the stubs below (project, input_side_grads, head_loss) call the kernel their
# argument types choose when the caller compiles (cpu/_static.py), so a call compiles only
# its input kind's and its loss's code. (Numba's dead-branch pruning resolves ``x is None``
# only for None-typed arguments, never for an array, so ``if`` on None would still compile
# the other kinds' branches.)

def _none(t):
    return isinstance(t, types.NoneType)


@njit(**_JIT)
def _project_rows(x, U, b, pre, sc, fs):
    """pre [R, G·H] = x [R, I] Uᵀ + b."""
    R, GH = pre.shape
    for r in range(R):
        for j in range(GH):
            pre[r, j] = b[j]
    gemm(x, 0, U, 1, pre, 1.0, sc, fs)


@njit(**_JIT)
def _project_onehot(ids, U, b, pre):
    """pre [R, G·H] = the column of U each one-hot id selects, plus b."""
    R, GH = pre.shape
    for r in range(R):
        i = ids[r]
        for j in range(GH):
            pre[r, j] = U[j, i] + b[j]


@njit(**_JIT)
def _project_embed(ids, E, U, b, pre, xe, sc, fs):
    """Embedded rows gathered into xe [R, I] = E[ids], then pre = xe Uᵀ + b."""
    for r in range(xe.shape[0]):
        src = E[ids[r]]
        for j in range(xe.shape[1]):
            xe[r, j] = src[j]
    _project_rows(xe, U, b, pre, sc, fs)


def project(x, ids, E, U, b, pre, xe, sc, fs):
    """pre [R, G·H] = x Uᵀ + b for every row: float rows x (ids, E None), one-hot ids (x, E
    None) or ids into E (x None; the rows are gathered into xe [R, I] first)."""


def _choose_project(x, ids, E, U, b, pre, xe, sc, fs):
    if not _none(x):
        return _project_rows, (0, 3, 4, 5, 7, 8), None
    if _none(E):
        return _project_onehot, (1, 3, 4, 5), None
    return _project_embed, (1, 2, 3, 4, 5, 6, 7, 8), None


static_dispatch(project, _choose_project)


def input_side_grads(xblocks, delta, x, ids, E, xe, U, gU, gb, gE, beta, sc, fs):
    """gU, gb (and for embedded ids gE) (+)= their gradients from the deltas [R, D·H]
    (written for beta 0, added for beta 1); the kind as in :func:`project`. One-hot ids
    write gU transposed [I, G·H]."""


@njit(**_JIT)
def _embed_grads(xblocks, delta, ids, xe, U, gU, gb, gE, beta, sc, fs):
    input_grads(xblocks, delta, xe, gU, gb, beta, sc, fs)
    dx = xe                                                 # E[ids] is dead: δU goes there
    input_delta(xblocks, delta, U, dx, sc, fs)
    if beta == 0:
        gE[:] = 0
    for r in range(dx.shape[0]):
        row = gE[ids[r]]
        for j in range(dx.shape[1]):
            row[j] += dx[r, j]


def _choose_input_side_grads(xblocks, delta, x, ids, E, xe, U, gU, gb, gE, beta, sc, fs):
    if not _none(x):
        return input_grads, (0, 1, 2, 7, 8, 10, 11, 12), None
    if _none(E):
        return onehot_grads, (0, 1, 3, 7, 8, 10), None
    return _embed_grads, (0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 12), None


static_dispatch(input_side_grads, _choose_input_side_grads)


def head_loss(o, tgt, yprob, ymse, w):
    """The loss of logits o [R, O] against the one target that is not None: class ids tgt
    [R], probability rows yprob [R, O] or MSE targets ymse [R, O]; o becomes w·∂ℓ/∂o."""


def _choose_head_loss(o, tgt, yprob, ymse, w):
    if not _none(tgt):
        return softmax_xent_ids, (0, 1, 4), None
    if not _none(yprob):
        return softmax_xent_probs, (0, 2, 4), None
    return mse_rows, (0, 3, 4), None


static_dispatch(head_loss, _choose_head_loss)


@njit(inline="always", **_JIT)
def head_rows(h2, V, c, tgt, yprob, ymse, w, o, gV, gc, dhe, sc, fs):
    """Logits of rows h2 [R, H], the loss, gV/gc (written) and dhe [R, H] = ∂L/∂h.

    The loss is the one target that is not None (:func:`head_loss`).
    """
    R = h2.shape[0]
    for r in range(R):
        for k in range(o.shape[1]):
            o[r, k] = c[k]
    gemm(h2, 0, V, 1, o, 1.0, sc, fs)                           # [R, O]
    loss = head_loss(o, tgt, yprob, ymse, w)
    gemm(o, 1, h2, 0, gV, 0.0, sc, fs)
    gc[:] = 0
    for r in range(R):
        for k in range(o.shape[1]):
            gc[k] += o[r, k]
    gemm(o, 0, V, 0, dhe, 0.0, sc, fs)
    return loss


@njit(inline="always", **_JIT)
def workspace_layout(T, B, G, D, K, H, O, I, split, embed):
    """Element offsets of the fused call's one workspace: (size, buf, rows, o, rec, xe).

    buf [R, max(G, D)·H]: the input projection pre [R, G·H], then (pre dead) the deltas
    [R, D·H] with ∂L/∂h from the head in each delta row's first H columns (read before that
    row is written). rows [(T+1)·B, K·H] states, o [R, O] logits, rec [B, G·H] the split
    cells' recurrent product, xe [R, I] embedded inputs and later their gradient δU.
    Regions start on 16-element boundaries (64 bytes or more), so each row block is aligned.
    """
    R = T * B
    sizes = (R * max(G, D) * H, (T + 1) * B * K * H, R * O, B * G * H if split else 0,
             R * I if embed else 0)
    offs = np.zeros(6, np.int64)
    n = 0
    for k in range(5):
        offs[k + 1] = n
        n += (sizes[k] + 15) // 16 * 16
    offs[0] = n
    return offs


@njit(**_JIT)
def fused_full_bptt(tag, split, K, D, xblocks, bn_col, x, ids, E, U, W, b, bn, V, c,
                    state0, tgt, yprob, ymse, w, act, WT, nthreads, ws,
                    gU, gW, gb, gbn, gV, gc, gE, gstate0, last_state):
    """Loss and every gradient of full BPTT in one call (no mask, every step carries loss).

    Inputs: float rows x [R, I] (ids, E, gE None); one-hot ids [R] (x, E, gE None; gU is
    written transposed, [I, G·H]); or ids looked up in E [vocab, I] (x None). R = T·B rows,
    time-major. Loss: cross-entropy with class ids tgt [R], cross-entropy with probability
    rows yprob [R, O], or mse against ymse [R, O]; the two unused targets are None.
    w [R]: each row's loss weight. WT: W's transpose [H, G·H] for the forward steps, or
    empty (:func:`fastbptt.cpu.steps.recurrent_operand`).
    state0 [B, S·H] in; gstate0 and last_state [B, S·H] out. ws: the workspace, at least
    :func:`workspace_layout`'s size (one allocation per call: several made page faults a
    large part of the small size's time). Gradients are written, not added. Returns the loss
    (float64 sum).

    Which arguments are None is part of the signature, and :func:`project`,
    :func:`head_loss` and :func:`input_side_grads` pick their code from it when this kernel
    compiles: a call compiles only its input kind's and its loss's code
    (one compiled specialisation per cell, dtype, input kind and loss used). The cell is the
    tag's element type (:func:`fastbptt.cpu.steps.cell_tag`).
    """
    B = state0.shape[0]
    SH = state0.shape[1]
    GH, H = W.shape
    G = GH // H
    R = w.shape[0]
    T = R // B
    O = V.shape[0]
    sc, fs = gemm_scratch(nthreads, W)
    I = U.shape[1]
    ni = 0 if E is None else R                                  # embedded rows xe [R, I]
    lay = workspace_layout(T, B, G, D, K, H, O, I, split, ni > 0)
    pre = ws[lay[1]:lay[1] + R * GH].reshape(R, GH)
    rows = ws[lay[2]:lay[2] + (T + 1) * B * K * H].reshape((T + 1) * B, K * H)
    o = ws[lay[3]:lay[3] + R * O].reshape(R, O)
    rec = ws[lay[4]:lay[4] + (B * GH if split else 0)].reshape(B if split else 0, GH)
    xe = ws[lay[5]:lay[5] + ni * I].reshape(ni, I)
    project(x, ids, E, U, b, pre, xe, sc, fs)
    # rows: step t's state row in rows t·B .. t·B+B-1, the initial state first
    for r in range(B):
        for j in range(SH):
            rows[r, j] = state0[r, j]
    for t in range(T):
        forward_step(tag, split, pre[t * B:(t + 1) * B], rec, rows[t * B:(t + 1) * B],
                     rows[(t + 1) * B:(t + 2) * B], W, WT, bn, act, sc, fs)
    for r in range(B):
        for j in range(SH):
            last_state[r, j] = rows[T * B + r, j]
    # head over every step at once; ∂L/∂h lands in the deltas' rows (pre is dead by now)
    delta = ws[lay[1]:lay[1] + R * D * H].reshape(R, D * H)
    dhe = delta[:, :H]
    loss = head_rows(rows[B:, :H], V, c, tgt, yprob, ymse, w, o, gV, gc, dhe, sc, fs)
    # backward: delta row block t is read (dhe) before the step writes it
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
    input_side_grads(xblocks, delta, x, ids, E, xe, U, gU, gb, gE, 0.0, sc, fs)
    restore_threads(sc)
    return loss


def fused_eligible(p) -> bool:
    """Whether :func:`fused_loss_and_grad` handles the validated problem ``p``."""
    from ..engine import is_full
    return (is_full(p.T, p.truncate, p.checkpoint) and p.dense and not p.masked
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
    e1 = np.empty(0, dt)
    # unused inputs and targets are None: each call compiles only its own kinds' code
    if p.x is not None:
        in_kind, x, ids, E = 0, p.x.reshape(R, p.n_in), None, None
    elif p.E is None:
        in_kind, x, ids, E = 1, None, p.ids.reshape(R), None
    else:
        in_kind, x, ids, E = 2, None, p.ids.reshape(R), p.E
    tgt = yprob = ymse = None
    if p.tgt_ids is not None:
        tgt = p.tgt_ids.reshape(R)
    elif p.loss == "mse":
        ymse = p.y_rows
    else:
        yprob = p.y_rows
    g = {"U": np.empty((p.n_in, GH) if in_kind == 1 else (GH, p.n_in), dt),
         "W": np.empty((GH, H), dt), "b": np.empty(GH, dt),
         "V": np.empty((p.n_out, H), dt), "c": np.empty(p.n_out, dt)}
    gbn = np.empty(H, dt) if p.bn is not None else e1
    gE = np.empty(p.E.shape, dt) if in_kind == 2 else None
    lay = workspace_layout(p.T, p.B, cell.G, cell.D, cell.K, H, p.n_out, p.n_in, cell.split,
                           in_kind == 2)
    ws = held(int(lay[0]), dt)      # this thread's kept workspace (cpu/workspace.py)
    state0 = p.state0
    gstate0 = np.empty_like(state0)
    last_state = np.empty_like(state0)
    loss = fused_full_bptt(cell_tag(cell), cell.split, cell.K, cell.D, xblocks_of(cell), cell.bn_col,
                           x, ids, E, p.U, p.W, p.b, p.bn if p.bn is not None else e1,
                           p.V, p.c, state0, tgt, yprob, ymse, p.weights.reshape(-1),
                           p.act, recurrent_operand(p.W, p.B), threads_now(), ws,
                           g["U"], g["W"], g["b"], gbn, g["V"], g["c"], gE,
                           gstate0, last_state)
    if in_kind == 1:
        g["U"] = np.ascontiguousarray(g["U"].T)
    if in_kind == 2:
        g["E"] = gE
    if p.bn is not None:
        g["bn"] = gbn
    g["h0"] = gstate0
    return float(loss), g, last_state
