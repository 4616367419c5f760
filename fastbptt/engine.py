"""Backend-agnostic BPTT scheduler: full, truncated BPTT(k2; k1) and checkpointed.

The scheduler decides which steps are run forward, which states are kept and which windows
are backpropagated; a backend's ``ops`` object (:class:`fastbptt.cpu.CpuOps`, the CUDA twin)
does the arithmetic. One loop covers every mode::

    for each block [s0, s1) of k1 steps (one block of T steps without truncation):
        run the forward pass over the block, keeping what the state store keeps
        (without checkpointing: forward and output head for a group of blocks, ~k2 steps)
        backpropagate the window [lo, s1), lo = max(0, s0 - (k2 - k1)),
            segment by segment from the last (one segment without checkpointing),
            injecting the output-layer gradient of the block's own steps only

Without checkpointing the store keeps the states of the current window (all T+1 states for
full BPTT, ``k2 + 1`` with truncation); with checkpointing it keeps one state every ``s``
steps and recomputes a segment's states just before that segment is backpropagated (except
the segment the forward pass just ended on, still in the scratch buffer), so every array that
scales with time — input projection, states, logits, deltas — is held for one segment only:
the output head runs per segment, never over ``[T, B, n_out]``. ``fastbptt.memory.estimate``
models these phases.
"""
from __future__ import annotations

import numpy as np


def _segments(lo: int, hi: int, seg):
    """[lo, hi) cut at multiples of seg (absolute step numbers), in backward order."""
    if seg is None:
        return [(lo, hi)]
    cuts = list(range((lo // seg + 1) * seg, hi, seg))
    bounds = [lo] + cuts + [hi]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 2, -1, -1)]


class _WindowStore:
    """Keeps every state row of the current window: rows base .. base+count-1."""

    def __init__(self, ops, p, k1, hist):
        self.ops, self.p = ops, p
        cap = min(p.T, hist + k1) + 1
        self.buf = ops.empty((cap, p.B, ops.row_width))   # [k2+1, B, K·H] (or [T+1, B, K·H])
        ops.copy_into(self.buf[0, :, :ops.state_width], p_state0(ops, p))
        self.base, self.count = 0, 1

    def advance(self, s0, s1, lo, capture):
        # drop the states the next window no longer needs (keeps h_lo .. h_s0)
        if lo > self.base:
            drop = lo - self.base
            keep = self.count - drop
            self.ops.copy_into(self.buf[:keep], self.buf[drop:self.count])   # may overlap
            self.base, self.count = lo, keep
        i = s0 - self.base
        hs = self.buf[i:i + (s1 - s0) + 1]
        self.ops.forward(self.ops.proj(s0, s1), hs)
        clear_padding(self.ops, self.p, hs, s0)
        self.count = i + (s1 - s0) + 1
        capture(hs, s0)

    def states(self, a, e):
        return self.buf[a - self.base:e - self.base + 1]

    def final(self):
        return self.buf[self.count - 1, :, :self.ops.state_width]


class _CheckpointStore:
    """Keeps the state at t for t a multiple of ``seg``; recomputes a segment's rows on demand."""

    def __init__(self, ops, p, seg):
        self.ops, self.p, self.seg = ops, p, seg
        self.S = ops.state_width
        self.ckpt = {0: p_state0(ops, p)}              # [B, S·H] each
        self.scratch = ops.empty((seg + 1, p.B, ops.row_width))  # [s+1, B, K·H]
        self.held = None                               # (c, e): scratch holds rows c .. e
        self.h = self.ckpt[0]                          # state at the end of the last block

    def _run(self, c, e):
        """Rows c .. e (e - c <= seg) into scratch, starting from the stored state at c."""
        hs = self.scratch[:e - c + 1]
        self.ops.copy_into(hs[0, :, :self.S], self.ckpt[c])
        self.ops.forward(self.ops.proj(c, e), hs)
        clear_padding(self.ops, self.p, hs, c)
        self.held = (c, e)
        return hs

    def advance(self, s0, s1, lo, capture):
        seg = self.seg
        floor_lo = (lo // seg) * seg
        for t in [t for t in self.ckpt if t < floor_lo]:
            del self.ckpt[t]
        t = s0
        while t < s1:
            e = min(s1, (t // seg + 1) * seg)
            hs = self.scratch[:e - t + 1]
            self.ops.copy_into(hs[0, :, :self.S], self.h)   # the state the last run ended on
            self.ops.forward(self.ops.proj(t, e), hs)
            clear_padding(self.ops, self.p, hs, t)
            self.held = (t, e)
            capture(hs, t)
            self.h = self.ops.empty((self.p.B, self.S))
            self.ops.copy_into(self.h, hs[-1, :, :self.S])
            if e % seg == 0:
                self.ckpt[e] = self.h
            t = e

    def states(self, a, e):
        if self.held is not None and self.held[0] <= a and self.held[1] == e:
            c = self.held[0]       # the segment the forward pass just ended on: no recompute
            return self.scratch[a - c:e - c + 1]
        c = (a // self.seg) * self.seg
        hs = self._run(c, e)
        return hs[a - c:]

    def final(self):
        return self.h


def p_state0(ops, p):
    """The initial state [B, S·H] on the backend's device."""
    return getattr(ops, "state0", None) if getattr(ops, "state0", None) is not None else p.state0


def clear_padding(ops, p, hs, t_first):
    """Zero the states that padding produced in hs = h_{t_first} .. (in place).

    Padding (the steps after a sequence's last valid step) carries no loss, so its deltas are
    exactly 0 if its states are finite; zeroing them keeps overflowing (relu) or NaN states
    out of every sum (0·inf is NaN). h_{last+1}, the sequence's last valid state, is kept.
    """
    if not p.masked:
        return
    steps = t_first + np.arange(hs.shape[0])              # hs[i] = h_{t_first+i}
    pad = steps[:, None] >= p.last[None, :] + 2            # [n+1, B]: made by a padded step
    if pad.any():
        ops.zero_states(hs, pad)


def plan(T, truncate, checkpoint):
    """The schedule of a call: ``(k1, k2, hist, seg, group)``.

    Blocks of k1 steps; each block's window reaches ``hist = k2 - k1`` steps back; ``seg`` is
    the checkpoint segment (None: every state of a window is kept); ``group`` is how many
    steps one forward run and one head call cover. :func:`run` follows it, and
    :func:`fastbptt.memory.estimate` sizes its buffers from it.
    """
    k1, k2 = truncate if truncate is not None else (T, T)
    seg = checkpoint
    if seg is not None and seg >= min(T, k2):
        seg = None                 # one segment covers every window: nothing to recompute
    # Without checkpointing, the forward pass and the output head run for a group of
    # consecutive blocks at once (about k2 steps): with k1 << k2, e.g. WildML's (1, K+1),
    # that is one head product per k2 steps instead of one per step, and the memory still
    # follows the window, O(k2·B·(H + n_out)).
    group = k1 * max(1, -(-k2 // k1)) if seg is None else k1
    return k1, k2, k2 - k1, seg, group


def is_full(T, truncate, checkpoint):
    """Whether the schedule (validated ``truncate`` pair and checkpoint segment, or None) is
    full BPTT: one block over all T steps with every state kept. ``truncate=(k1, k2)`` with
    k1 >= T cuts nothing, and a checkpoint segment as long as the window recomputes nothing,
    so such calls take full BPTT's paths (the fused CPU call), with the same memory."""
    k1, _, _, seg, _ = plan(T, truncate, checkpoint)
    return k1 >= T and seg is None


def run(p, ops):
    """Loss, gradients and h_last of the validated problem ``p`` on the backend ``ops``."""
    T = p.T
    k1, k2, hist, seg, group = plan(T, p.truncate, p.checkpoint)
    g = ops.new_grads()
    store = _WindowStore(ops, p, group, hist) if seg is None else _CheckpointStore(ops, p, seg)

    h_last = None
    if p.masked:                   # sequences end at different steps: gather as we go
        h_last = ops.empty((p.B, ops.state_width))
        ops.copy_into(h_last, p_state0(ops, p))      # a sequence with no valid step keeps h0

    def capture(hs, t_first):
        if h_last is None:
            return
        n = hs.shape[0] - 1
        sel = np.nonzero((p.last >= t_first) & (p.last < t_first + n))[0]
        if sel.size:
            ops.capture(h_last, hs, t_first, sel)

    loss = 0.0
    for g0 in range(0, T, group):
        g1 = min(T, g0 + group)
        store.advance(g0, g1, max(0, g0 - hist), capture)
        dhe_group = None
        if seg is None:                               # the group's head, all steps at once
            l, dhe_group = ops.head(store.states(g0, g1)[1:], g0, g1, g)
            loss += l
        for s0 in range(g0, g1, k1):
            s1 = min(g1, s0 + k1)
            lo = max(0, s0 - hist)
            dh = ops.zeros((p.B, ops.state_width))    # the one delta-state buffer [B, S·H]
            for a, e in _segments(lo, s1, seg):
                hs = store.states(a, e)               # [e-a+1, B, K·H]: rows a .. e
                i0 = max(a, s0)                       # first step whose loss is injected
                dhe = None
                if seg is None:
                    if dhe_group is not None:
                        dhe = dhe_group[s0 - g0:s1 - g0]
                elif i0 < e:
                    l, dhe = ops.head(hs[i0 - a + 1:], i0, e, g)
                    loss += l
                # da is allocated per segment, not kept in one reused buffer: a buffer kept
                # across segments would be alive during the next head call, the peak phase
                da = ops.backward(dhe, i0 - a, hs, dh)
                del dhe                               # not needed by the weight gradients
                ops.weight_grads(a, e, da, hs[:-1], g)
                del da, hs
            if lo == 0:
                g["h0"] += dh
        del dhe_group
    if h_last is None:
        h_last = ops.empty((p.B, ops.state_width))
        ops.copy_into(h_last, store.final())         # a copy: the store's buffers are dropped
    grads = ops.finish(g)
    return loss, grads, h_last
