"""The layer API on the CPU: one layer's forward rows and backward gradients, any cell."""
from __future__ import annotations

import numpy as np

from .blas import gemm, gemm_scratch, register_blas, restore_threads, threads_now
from .fused import xblocks_of
from .steps import (backward_steps, cell_tag, forward_steps, input_delta, input_grads, recurrent_grads,
                    recurrent_operand)
from .workspace import held


def forward(cell, x, state0, U, W, b, bn, act, alloc=None):
    """State rows [T+1, B, K·H] of the layer over x [T, B, n_in] from state0 [B, S·H].

    alloc(shape, dtype): where the rows come from (default np.empty; a stacked model's call
    passes its :class:`~fastbptt.cpu.workspace.Arena`)."""
    register_blas()
    T, B, n_in = x.shape
    H, GH, dt = W.shape[1], W.shape[0], W.dtype
    sc, fs = gemm_scratch(threads_now(), W)
    pre = held(T * B * GH, dt).reshape(T, B, GH)        # x Uᵀ + b, all rows at once (dead
                                                         # on return: this thread's workspace)
    pre2 = pre.reshape(-1, GH)
    pre2[...] = b
    gemm(x.reshape(-1, n_in), 0, U, 1, pre2, 1.0, sc, fs)
    rows = (alloc or np.empty)((T + 1, B, cell.K * H), dt)
    rows[0, :, :cell.S * H] = state0
    rec = np.empty((B if cell.split else 0, GH), dt)
    forward_steps(cell_tag(cell), cell.split, pre, rows, W, recurrent_operand(W, B),
                  bn if bn is not None else np.empty(0, dt), rec, act, sc, fs)
    restore_threads(sc)
    return rows


def backward(cell, dhs, dstate, x, rows, U, W, bn, act, input_grad=True):
    """(dx, dU, dW, db, dbn) given ∂L/∂h_t for every step; dstate [B, S·H] in/out.

    dx is None without ``input_grad`` (its product δ U is skipped)."""
    register_blas()
    T, B, n_in = x.shape
    H, dt = W.shape[1], W.dtype
    sc, fs = gemm_scratch(threads_now(), W)
    delta = held(T * B * cell.D * H, dt).reshape(T, B, cell.D * H)    # dead on return
    backward_steps(cell_tag(cell), dhs, 0, rows, W, dstate, delta, act, sc, fs)
    d2 = delta.reshape(-1, cell.D * H)
    xb = xblocks_of(cell)
    dW = np.empty_like(W)
    dbn = np.empty(H, dt) if bn is not None else np.empty(0, dt)
    recurrent_grads(d2, rows[:-1].reshape(-1, cell.K * H)[:, :H], dW, dbn, cell.bn_col, 0.0, sc, fs)
    dU = np.empty_like(U)
    db = np.empty(U.shape[0], dt)
    input_grads(xb, d2, x.reshape(-1, n_in), dU, db, 0.0, sc, fs)
    dx = None
    if input_grad:
        dx = np.empty((T, B, n_in), dt)
        input_delta(xb, d2, U, dx.reshape(-1, n_in), sc, fs)
    restore_threads(sc)
    return dx, dU, dW, db, (dbn if bn is not None else None)
