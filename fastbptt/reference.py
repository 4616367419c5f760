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

Truncated BPTT(k2; k1) repeats the backward loop once per block of k1 steps, starting with
``dh = 0`` and stopping k2 - k1 steps before the block's first step (never before step 0).
"""
from __future__ import annotations

import numpy as np

from ._validate import Problem
from .cells._math import ACTIVATE, DERIVATIVE


def activate(a: np.ndarray, activation: str) -> np.ndarray:
    return ACTIVATE[activation](a)


def activation_grad(h: np.ndarray, activation: str) -> np.ndarray:
    """f'(a) written in terms of the output h = f(a)."""
    return DERIVATIVE[activation](h)


def step_loss(o: np.ndarray, p: Problem, t: int, rows: np.ndarray):
    """Loss and ∂loss/∂o for the batch rows ``rows`` of step t (unweighted)."""
    if p.loss == "mse":
        y = _float_targets(p, t)[rows]
        diff = o - y
        return 0.5 * np.sum(diff * diff, axis=1), diff
    # softmax + negative log-likelihood, stable for large logits
    m = o.max(axis=1, keepdims=True)
    logz = m + np.log(np.sum(np.exp(o - m), axis=1, keepdims=True))
    logp = o - logz
    prob = np.exp(logp)
    if p.tgt_ids is not None:
        y = p.tgt_ids[t, rows]
        loss = -logp[np.arange(len(rows)), y]
        do = prob.copy()
        do[np.arange(len(rows)), y] -= 1
        return loss, do
    y = _float_targets(p, t)[rows]
    loss = -np.sum(y * logp, axis=1)
    return loss, prob * y.sum(axis=1, keepdims=True) - y


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
        do = do * w[:, None]
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


def rnn_forward(x, h0, U, W, b, activation):
    """Layer forward: hs [T+1, B, H] with h0 in slot 0."""
    T, B = x.shape[:2]
    hs = np.zeros((T + 1, B, W.shape[0]), dtype=W.dtype)
    hs[0] = h0
    for t in range(T):
        hs[t + 1] = activate(x[t] @ U.T + hs[t] @ W.T + b, activation)
    return hs


def rnn_backward(dhs, x, hs, U, W, activation):
    """Layer backward: (dx, dh0, dU, dW, db) given ∂L/∂h_t for every step."""
    T = dhs.shape[0]
    dx = np.zeros_like(x)
    dU, dW, db = np.zeros_like(U), np.zeros_like(W), np.zeros(W.shape[0], dtype=W.dtype)
    dh = np.zeros_like(hs[0])
    for t in range(T - 1, -1, -1):
        dh = dh + dhs[t]
        da = dh * activation_grad(hs[t + 1], activation)
        dx[t] = da @ U
        dU += da.T @ x[t]
        dW += da.T @ hs[t]
        db += da.sum(axis=0)
        dh = da @ W
    return dx, dh, dU, dW, db
