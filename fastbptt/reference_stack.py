"""The NumPy reference for stacked and bidirectional models: per-step loops, the oracle.

Built on each cell's NumPy step functions (``fastbptt.cells.<name>.forward/backward``) exactly
as :mod:`fastbptt.reference` is for one layer. Size letters: T steps, B batch, H hidden units
per direction, L layers, D directions (2 when bidirectional).

Forward, layer by layer (layer l reads ``[T, B, D·H]``, the outputs of layer l−1, or the
inputs for l = 0)::

    direction 0 (forward): step s touches every sequence at time t = s
    direction 1 (reverse): step s touches the sequences with last[b] >= s, at t = last[b] − s
    outs[l][t, b] = [h_fwd_t | h_rev_t]                  [T, B, D·H]
    o_t = outs[L−1][t] Vᵀ + c                            [B, n_out]

so the reverse direction of each sequence starts at its last valid step and its state is
frozen after step 0 (PyTorch's packed sequences); a sequence without valid steps keeps its
initial state. Backward runs the layers from the top down: the gradient each layer sends to
its input is the gradient of the outputs of the layer below. Truncated BPTT(k2; k1) (one
direction only) repeats this once per block of k1 steps, every layer's gradient confined to
the block's window [lo, s1).
"""
from __future__ import annotations

import numpy as np

from .layers import collect
from .reference import step_loss


def _steps(p, reverse):
    """(rows, times) of every step s of one direction."""
    if not reverse:
        return [(np.arange(p.B), np.full(p.B, s)) for s in range(p.T)]
    out = []
    for s in range(p.T):
        rows = np.nonzero(p.last >= s)[0]
        out.append((rows, p.last[rows] - s))
    return out


def loss_and_grad(p, st):
    """Loss, gradients and final states of a stacked model.

    Parameters
    ----------
    p : fastbptt._validate.Problem
        The validated call (inputs, targets, loss weights, ``last``, truncation).
    st : fastbptt.layers.Stack
        The weights and initial states of every layer and direction.

    Returns
    -------
    loss : float
    grads : dict
        ``{key: gradient}`` for every params key, plus ``"h0"`` (and ``"c0"``) ``[L·D, B, H]``.
    last : tuple of [L·D, B, H]
        The final state (h, then c for the LSTM) of each layer and direction, index l·D + d:
        the forward direction's at each sequence's last valid step, the reverse's after step 0.
    """
    T, B, H, L, D = p.T, p.B, st.H, st.L, st.D
    cell, act = p.cell.ref, p.activation
    steps = [_steps(p, d == 1) for d in range(D)]

    def layer_input(layer, times, rows):
        if layer > 0:
            return outs[layer - 1][times, rows]
        if p.x is not None:
            return p.x[times, rows]
        if p.E is not None:
            return p.E[p.ids[times, rows]]
        return None                                  # one-hot ids select columns of U

    # ---- forward: each layer and direction keeps its per-step tape ----
    outs = [np.zeros((T, B, D * H), dtype=p.dtype) for _ in range(L)]
    tapes = [[None] * D for _ in range(L)]
    finals = []
    for layer in range(L):
        for d in range(D):
            w = st.weights[layer][d]
            state = tuple(a.copy() for a in st.state0[layer][d])
            tape, history = [], [state]
            for rows, times in steps[d]:
                x = layer_input(layer, times, rows)
                pre = (x @ w["U"].T if x is not None else w["U"][:, p.ids[times, rows]].T) + w["b"]
                prev = tuple(a[rows] for a in state)
                new, cache = cell.forward(pre, prev, w["W"], w, act)
                tape.append((rows, times, x, prev, cache))
                state = tuple(a.copy() for a in state)
                for a, v in zip(state, new):
                    a[rows] = v
                history.append(state)
                outs[layer][times, rows, d * H:(d + 1) * H] = new[0]
            tapes[layer][d] = tape
            # forward: the state at each sequence's last valid step; reverse: after step 0
            at = p.last + 1 if d == 0 else np.full(B, T)
            finals.append(tuple(np.stack([history[i][j][b] for b, i in enumerate(at)])
                                for j in range(len(state))))

    # ---- output layer ----
    top = outs[L - 1]
    loss = 0.0
    dtop = np.zeros_like(top)                        # ∂L/∂outs[L−1] through the head only
    dV, dc = np.zeros_like(st.V), np.zeros_like(st.c)
    for t in range(T):
        rows = np.nonzero(p.weights[t])[0]
        if len(rows) == 0:
            continue
        h = top[t, rows]
        lt, do = step_loss(h @ st.V.T + st.c, p, t, rows)
        wt = p.weights[t, rows]
        loss += float(np.sum(wt * lt))
        do = do * wt[:, None]
        dV += do.T @ h
        dc += do.sum(axis=0)
        dtop[t, rows] = do @ st.V

    # ---- backward, from the top layer down, once per truncation block ----
    grads = [[{k: np.zeros_like(v) for k, v in st.weights[layer][d].items()} for d in range(D)]
             for layer in range(L)]
    dE = np.zeros_like(p.E) if p.E is not None else None
    dstate0 = [[tuple(np.zeros_like(a) for a in st.state0[layer][d]) for d in range(D)]
               for layer in range(L)]
    k1, k2 = p.truncate if p.truncate is not None else (T, T)
    for s0 in range(0, T, k1):
        s1 = min(T, s0 + k1)
        lo = max(0, s0 - (k2 - k1))
        dcur = np.zeros_like(dtop)
        dcur[s0:s1] = dtop[s0:s1]                    # the block's own losses
        for layer in range(L - 1, -1, -1):
            dbelow = np.zeros_like(outs[layer - 1]) if layer > 0 else None
            for d in range(D):
                w, g = st.weights[layer][d], grads[layer][d]
                dstate = tuple(np.zeros((B, H), dtype=p.dtype) for _ in st.state0[layer][d])
                for s in range(s1 - 1, lo - 1, -1):
                    rows, times, x, prev, cache = tapes[layer][d][s]
                    ds = tuple(a[rows] for a in dstate)
                    ds = (ds[0] + dcur[times, rows, d * H:(d + 1) * H],) + ds[1:]
                    dpre_x, dpre_h, dprev = cell.backward(ds, cache, prev, w["W"], w, act)
                    g["W"] += dpre_h.T @ prev[0]
                    for k, v in cell.bias_grads(dpre_x, dpre_h).items():
                        g[k] += v
                    if x is not None:
                        g["U"] += dpre_x.T @ x
                    else:
                        np.add.at(g["U"].T, p.ids[times, rows], dpre_x)
                    if layer > 0:
                        np.add.at(dbelow, (times, rows), dpre_x @ w["U"])
                    elif dE is not None:
                        np.add.at(dE, p.ids[times, rows], dpre_x @ w["U"])
                    for a, v in zip(dstate, dprev):
                        a[rows] = v
                if lo == 0:
                    for a, v in zip(dstate0[layer][d], dstate):
                        a += v
            dcur = dbelow

    out, last = collect(grads, dV, dc, dE, dstate0, finals)
    return loss, out, last
