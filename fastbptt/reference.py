"""The NumPy reference: plain, per-step BPTT that follows the seed derivations line by line.

This module is the oracle every fast path is tested against. It favours clarity over speed:
one Python iteration per time step, no fused kernels, no buffers shared between steps.

Model (row vectors, batch first within a step, seed 002's notation)::

    a_t = x_t Uᵀ + h_{t-1} Wᵀ + b        [B, H]
    h_t = f(a_t)                          [B, H]
    o_t = h_t Vᵀ + c                      [B, n_out]
    L   = Σ_t Σ_b w[t, b] · ℓ(o_t[b], y_t[b])

Backward, from the last step to the first (the hidden delta ``dh`` is one buffer, seed 004)::

    dh   += (∂L/∂o_t) V                   gradient arriving from the output at step t
    da_t  = dh ⊙ f'(a_t)                  f' computed from the saved h_t
    dW   += da_tᵀ h_{t-1};  dU += da_tᵀ x_t;  db += Σ_b da_t
    dh    = da_t W                        sent back to step t-1

Padding, the steps after a sequence's last valid step, carries no loss and the states it
produces are set to 0, so its deltas are 0 and nothing it holds (NaN, overflowing relu
states) reaches a sum as 0·inf.

Truncated BPTT(k2; k1) repeats the backward loop once per block of k1 steps, starting with
``dh = 0`` and stopping k2 - k1 steps before the block's first step (never before step 0).

The loops above are the Elman cell's; for every cell they are the same, with the step itself
taken from the cell (``fastbptt/cells/<name>.py``: ``forward`` returns the new state tuple,
(h,) or (h, c), and what the step's backward needs; ``backward`` returns the input-side and
recurrent-side pre-activation gradients and the gradient of the previous state).
"""
from __future__ import annotations

import numpy as np

from ._validate import Problem


def step_loss(o: np.ndarray, p: Problem, t: int, rows: np.ndarray):
    """Loss (float64) and ∂loss/∂o (the params' dtype) for the batch rows ``rows`` of step t.

    Per-element terms are in the params' dtype and sums in float64, as the compiled kernels
    do, so float32 near its overflow gives the same inf/NaN pattern on every backend.
    """
    f8 = np.float64
    if p.loss == "mse":
        y = _float_targets(p, t)[rows]
        diff = o - y
        return 0.5 * np.sum((diff * diff).astype(f8), axis=1), diff
    # softmax + negative log-likelihood, stable for large logits
    m = o.max(axis=1, keepdims=True)
    logz = m.astype(f8) + np.log(np.sum(np.exp(o - m), axis=1, keepdims=True, dtype=f8))
    logp = o.astype(f8) - logz
    if p.tgt_ids is not None:
        y = p.tgt_ids[t, rows]
        loss = -logp[np.arange(len(rows)), y]
        do = np.exp(logp).astype(o.dtype)
        do[np.arange(len(rows)), y] -= 1
        return loss, do
    y = _float_targets(p, t)[rows]
    loss = -np.sum(y.astype(f8) * logp, axis=1)
    return loss, np.exp(logp) * y.sum(axis=1, keepdims=True, dtype=f8) - y


def _float_targets(p: Problem, t: int) -> np.ndarray:
    if p.y_map is None:
        return p.y_rows[t * p.B:(t + 1) * p.B]
    return p.y_rows[p.y_map[t]]


def input_at(p: Problem, t: int) -> np.ndarray:
    """x_t [B, n_in] (None for one-hot ids, which index columns of U instead)."""
    if p.x is not None:
        return p.x[t]
    if p.E is not None:
        return p.E[p.ids[t]]
    return None


def loss_and_grad(p: Problem):
    """Loss, gradients and final states of a validated problem, by per-step loops.

    Returns ``(loss, grads, h_last)`` with the state in one array: ``h_last`` and
    ``grads["h0"]`` are ``[B, S·H]`` (h, then c for the LSTM); the API splits them.
    """
    T, B, H = p.T, p.B, p.H
    cell, act = p.cell.ref, p.activation
    U, W, V, c = p.U, p.W, p.V, p.c
    extra = {"bn": p.bn}

    # ---- forward: every state and step cache kept, the initial state in slot 0 ----
    states = [(p.h0,) if p.c0 is None else (p.h0, p.c0)]
    caches = []
    loss = 0.0
    dh_out = np.zeros((T, B, H), dtype=p.dtype)     # ∂L/∂h_t through the output layer only
    dV = np.zeros_like(V)
    dc = np.zeros_like(c)
    for t in range(T):
        x = input_at(p, t)
        pre = (x @ U.T if x is not None else U[:, p.ids[t]].T) + p.b     # [B, G·H]
        state, cache = cell.forward(pre, states[t], W, extra, act)
        if p.masked:
            for s in state:                # padding's states: 0, so they reach no sum as inf/NaN
                s[t > p.last] = 0
        states.append(state)
        caches.append(cache)
        rows = np.nonzero(p.weights[t])[0]
        if len(rows) == 0:
            continue
        h = state[0][rows]
        o = h @ V.T + c
        lt, do = step_loss(o, p, t, rows)
        w = p.weights[t, rows]
        loss += float(np.sum(w * lt))
        do = (do * w[:, None]).astype(p.dtype)
        dV += do.T @ h
        dc += do.sum(axis=0)
        dh_out[t, rows] = do @ V

    # ---- backward, once per truncation block ----
    grads = {"U": np.zeros_like(U), "W": np.zeros_like(W)}
    grads.update({k: np.zeros(H if k == "bn" else p.b.shape, p.dtype) for k in ("b",) + p.cell.extra})
    dE = np.zeros_like(p.E) if p.E is not None else None
    dstate0 = [np.zeros_like(s) for s in states[0]]
    k1, k2 = p.truncate if p.truncate is not None else (T, T)
    for s0 in range(0, T, k1):
        s1 = min(T, s0 + k1)
        lo = max(0, s0 - (k2 - k1))
        dstate = tuple(np.zeros((B, H), dtype=p.dtype) for _ in states[0])
        for t in range(s1 - 1, lo - 1, -1):
            if t >= s0:
                dstate = (dstate[0] + dh_out[t],) + dstate[1:]
            dpre_x, dpre_h, dstate = cell.backward(dstate, caches[t], states[t], W, extra, act)
            grads["W"] += dpre_h.T @ states[t][0]
            for k, v in cell.bias_grads(dpre_x, dpre_h).items():
                grads[k] += v
            x = input_at(p, t)
            if x is not None:
                grads["U"] += dpre_x.T @ x
            else:
                np.add.at(grads["U"].T, p.ids[t], dpre_x)
            if p.E is not None:
                np.add.at(dE, p.ids[t], dpre_x @ U)
        if lo == 0:
            for d, s in zip(dstate0, dstate):
                d += s

    grads.update({"V": dV, "c": dc, "h0": np.concatenate(dstate0, axis=1)})
    if dE is not None:
        grads["E"] = dE
    last = np.concatenate([np.stack([s[j] for s in states]) for j in range(len(states[0]))], axis=2)
    h_last = last[p.last + 1, np.arange(B)]                  # [B, S·H]
    return loss, grads, h_last


def layer_forward(cell, x, state0, U, W, b, bn, activation):
    """One layer over x [T, B, n_in] from state0 [B, S·H]: (states, caches), per step."""
    H = W.shape[1]
    states = [tuple(state0[:, j * H:(j + 1) * H] for j in range(cell.S))]
    caches = []
    for t in range(x.shape[0]):
        state, cache = cell.ref.forward(x[t] @ U.T + b, states[t], W, {"bn": bn}, activation)
        states.append(state)
        caches.append(cache)
    return states, caches


def layer_backward(cell, dhs, dstate, x, rows, U, W, b, bn, activation, input_grad=True):
    """(dx, dstate0 [B, S·H], dU, dW, db, dbn) of one layer given ∂L/∂h_t for every step
    (dx None without ``input_grad``)."""
    states, caches = rows
    H = W.shape[1]
    grads = {"b": np.zeros_like(b), "bn": np.zeros(H, dtype=W.dtype)}
    dx, dU, dW = np.zeros_like(x), np.zeros_like(U), np.zeros_like(W)
    d = tuple(dstate[:, j * H:(j + 1) * H] for j in range(cell.S))
    for t in range(x.shape[0] - 1, -1, -1):
        d = (d[0] + dhs[t],) + d[1:]
        dpre_x, dpre_h, d = cell.ref.backward(d, caches[t], states[t], W, {"bn": bn}, activation)
        dW += dpre_h.T @ states[t][0]
        dU += dpre_x.T @ x[t]
        if input_grad:
            dx[t] = dpre_x @ U
        for k, v in cell.ref.bias_grads(dpre_x, dpre_h).items():
            grads[k] += v
    return (dx if input_grad else None, np.concatenate(d, axis=1), dU, dW, grads["b"],
            (grads["bn"] if bn is not None else None))
