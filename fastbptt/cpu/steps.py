"""The cell-agnostic time loops: one product for the recurrent part, then the cell's kernel.

The loops never know which cell they run. The cell travels as a *tag*: an empty array whose
element type names the cell (:func:`cell_tag`), and :func:`cell_forward` /
:func:`cell_backward` call the cell's kernels, chosen from the tag's type when a loop
compiles (:func:`fastbptt.cpu._static.static_dispatch`). So each compiled loop contains one
cell's code only: compiling all three into every kernel made the first call several times
slower. These two tables are the only
place that maps a cell to its kernels (a fourth cell adds one entry to each).

Shapes (one run of n steps): ``pre [n, B, G·H]`` input projections x_t Uᵀ + b (consumed),
``rows [n+1, B, K·H]`` state rows with the initial state in row 0, ``delta [n, B, D·H]``,
``dstate [B, S·H]`` the one accumulating delta-state buffer.
"""
from __future__ import annotations

import inspect

import numpy as np
from numba import types

from .._jit import njit
from ._static import static_dispatch
from . import gru, lstm, rnn
from .blas import forward_transposed, gemm, transpose_into

_JIT = dict(cache=True, nogil=True, error_model="numpy")

# cell code -> (tag element type, pointwise forward, pointwise backward)
_KERNELS = {0: (np.int8, rnn.forward_pointwise, rnn.backward_pointwise),
            1: (np.int16, lstm.forward_pointwise, lstm.backward_pointwise),
            2: (np.int32, gru.forward_pointwise, gru.backward_pointwise)}
_TAGS = {code: np.empty(0, k[0]) for code, k in _KERNELS.items()}
_BY_TYPE = {types.int8: 0, types.int16: 1, types.int32: 2}


def cell_tag(cell):
    """The tag array the compiled loops take for a :class:`fastbptt.cells.Cell` (or its code)."""
    return _TAGS[getattr(cell, "code", cell)]


def cell_forward(tag, pre, rec, prev, cur, bn, H, act):
    """The cell's pointwise forward (chosen when the caller compiles)."""


def cell_backward(tag, dstate, cur, prev, delta, H, act):
    """The cell's pointwise backward (chosen when the caller compiles)."""


def _choose_cell(stub):
    """For a compiled call of ``stub``: the tag's cell's kernel, given every argument after the
    tag (:func:`fastbptt.cpu._static.static_dispatch`)."""
    which = 1 if stub is cell_forward else 2
    n = len(inspect.signature(stub).parameters)

    def choose(tag, *args):
        k = _BY_TYPE.get(getattr(tag, "dtype", None))
        return None if k is None else (_KERNELS[k][which], range(1, n), None)
    return choose


static_dispatch(cell_forward, _choose_cell(cell_forward))
static_dispatch(cell_backward, _choose_cell(cell_backward))


@njit(inline="always", **_JIT)
def forward_step(tag, split, pre_t, rec, prev, cur, W, WT, bn, act, sc, fs):
    """State row ``cur`` [B, K·H] from ``prev`` and pre_t [B, G·H] (overwritten if not split).

    WT: W's transpose [H, G·H] when the caller made one (:func:`fastbptt.cpu.blas.
    forward_transposed`), else empty: the product reads W transposed.
    """
    H = W.shape[1]
    h = prev[:, :H]
    out = rec if split else pre_t
    beta = 0.0 if split else 1.0                              # rec = / pre_t += h_{t-1} Wᵀ
    if WT.shape[0] > 0:
        gemm(h, 0, WT, 0, out, beta, sc, fs)
    else:
        gemm(h, 0, W, 1, out, beta, sc, fs)
    cell_forward(tag, pre_t, rec, prev, cur, bn, H, act)


@njit(inline="always", **_JIT)
def backward_step(tag, delta_t, cur, prev, dstate, W, act, sc, fs):
    """delta_t [B, D·H] from dstate; dstate becomes ∂L/∂(state at t-1)."""
    H = W.shape[1]
    GH = W.shape[0]
    cell_backward(tag, dstate, cur, prev, delta_t, H, act)
    gemm(delta_t[:, :GH], 0, W, 0, dstate[:, :H], 1.0, sc, fs)   # dh_{t-1} += δ_rec W


@njit(**_JIT)
def forward_steps(tag, split, pre, rows, W, WT, bn, rec, act, sc, fs):
    """Run the recurrence over n steps: rows[1:] from rows[0] and pre [n, B, G·H].

    rec [B, G·H] is scratch for split cells (any shape otherwise); WT as :func:`forward_step`.
    """
    for t in range(pre.shape[0]):
        forward_step(tag, split, pre[t], rec, rows[t], rows[t + 1], W, WT, bn, act, sc, fs)


def recurrent_operand(W, B):
    """W's transpose [H, G·H] for a time loop over B rows, or an empty [0, 0] array where
    the loop should read W as it is (:func:`fastbptt.cpu.blas.forward_transposed`)."""
    if not forward_transposed(B, W.dtype):
        return np.empty((0, 0), W.dtype)
    WT = np.empty((W.shape[1], W.shape[0]), W.dtype)
    transpose_into(W, WT)
    return WT


@njit(**_JIT)
def backward_steps(tag, dhe, inj0, rows, W, dstate, delta, act, sc, fs):
    """Backpropagate through n steps with one accumulating delta-state buffer.

    dhe [m, B, H]  ∂L/∂h_t from above for steps inj0 .. n-1 (m = n - inj0)
    rows [n+1, B, K·H], W [G·H, H]
    dstate [B, S·H]  in: ∂L/∂state_n from later steps; out: ∂L/∂state_0
    delta [n, B, D·H]  out
    """
    n = rows.shape[0] - 1
    H = W.shape[1]
    B = dstate.shape[0]
    for t in range(n - 1, -1, -1):
        if t >= inj0:
            e = dhe[t - inj0]
            for i in range(B):
                for j in range(H):
                    dstate[i, j] += e[i, j]
        backward_step(tag, delta[t], rows[t + 1], rows[t], dstate, W, act, sc, fs)


# --------------------------------------------------------------------------- weight gradients
# After a backward run, every weight gradient is one product over all of its T·B rows. The
# input side of the delta is a few column blocks (the cell's ``xblocks``, as int64 [nb, 3]
# in units of H: delta column, row of U, width).

@njit(inline="always", **_JIT)
def recurrent_grads(delta, hprev, gW, gbn, bn_col, beta, sc, fs):
    """gW (+)= δ_recᵀ h_prev and gbn (+)= Σ_rows δ[:, bn block]; delta [R, D·H], hprev [R, H]."""
    H = gW.shape[1]
    gemm(delta[:, :gW.shape[0]], 1, hprev, 0, gW, beta, sc, fs)
    if bn_col >= 0:
        c0 = bn_col * H
        if beta == 0:
            gbn[:] = 0
        for r in range(delta.shape[0]):
            for j in range(H):
                gbn[j] += delta[r, c0 + j]


@njit(**_JIT)
def input_grads(xblocks, delta, x, gU, gb, beta, sc, fs):
    """gU (+)= δ_xᵀ x [G·H, I] and gb (+)= Σ_rows δ_x, block by block; x [R, I]."""
    H = gU.shape[0] // _gates(xblocks)
    if beta == 0:
        gb[:] = 0
    for k in range(xblocks.shape[0]):
        dc, ur, w = xblocks[k, 0] * H, xblocks[k, 1] * H, xblocks[k, 2] * H
        gemm(delta[:, dc:dc + w], 1, x, 0, gU[ur:ur + w], beta, sc, fs)
        for r in range(delta.shape[0]):
            for j in range(w):
                gb[ur + j] += delta[r, dc + j]


@njit(**_JIT)
def onehot_grads(xblocks, delta, ids, gUT, gb, beta):
    """One-hot inputs: gUT [I, G·H] (+)= rows of δ_x scattered by id (repeats add), gb (+)= Σ δ_x."""
    H = gUT.shape[1] // _gates(xblocks)
    if beta == 0:
        gUT[:] = 0
        gb[:] = 0
    for r in range(delta.shape[0]):
        row = gUT[ids[r]]
        for k in range(xblocks.shape[0]):
            dc, ur, w = xblocks[k, 0] * H, xblocks[k, 1] * H, xblocks[k, 2] * H
            for j in range(w):
                row[ur + j] += delta[r, dc + j]
                gb[ur + j] += delta[r, dc + j]


@njit(**_JIT)
def input_delta(xblocks, delta, U, dx, sc, fs):
    """dx [R, I] = δ_x U: the gradient of the layer's inputs (embeddings, layers below)."""
    H = U.shape[0] // _gates(xblocks)
    for k in range(xblocks.shape[0]):
        dc, ur, w = xblocks[k, 0] * H, xblocks[k, 1] * H, xblocks[k, 2] * H
        gemm(delta[:, dc:dc + w], 0, U[ur:ur + w], 0, dx, 0.0 if k == 0 else 1.0, sc, fs)


@njit(inline="always", **_JIT)
def _gates(xblocks):
    """G: the rows of U the blocks cover, in units of H."""
    g = 0
    for k in range(xblocks.shape[0]):
        g = max(g, xblocks[k, 1] + xblocks[k, 2])
    return g
