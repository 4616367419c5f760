"""The Elman cell on CUDA: ``h_t = f(x_t Uᵀ + h_{t-1} Wᵀ + b)``, f = tanh, sigmoid or relu.

State rows ``[n+1, B, H]`` (K = 1: the row is h), deltas ``[n, B, H]`` (D = 1: da = ∂L/∂a_t).
The recurrent product is fused into the pointwise step: each thread owns one (b, j) and
computes its dot product with W's column, so a step is one kernel. Three forms of the time
loop (:func:`fastbptt.cuda.device.Device.recurrent_path` picks): one launch per step, one
persistent block with W in shared memory, a cooperative grid with W's columns sliced.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

from numba import cuda

from . import activations, config
from .activations import nbfloat

@functools.lru_cache(maxsize=None)
def build(dtype):  # noqa: C901 - one closure per kernel
    """The Elman time-loop kernels for float ``dtype``."""
    DT = nbfloat(dtype)
    A = activations.build(dtype)
    activate, derivative = A.activate, A.derivative

    # ----------------------------------------------------------------- per step
    @cuda.jit
    def step_forward(xu, hs, WT, t, act):
        """hs[t+1] = f(xu[t] + hs[t] @ WT): product, input term, activation and cache write.

        xu [n, B, H] (x Uᵀ + b), hs [n+1, B, H], WT [H, H] = Wᵀ; one thread per (b, j):
        threads of a warp share b (broadcast reads of hs[t, b]) and read WT coalesced.
        """
        B, H = hs.shape[1], hs.shape[2]
        i = cuda.grid(1)
        if i < B * H:
            b = i // H
            j = i - b * H
            acc = xu[t, b, j]
            for k in range(H):
                acc += hs[t, b, k] * WT[k, j]
            h = activate(acc, act)
            hs[t + 1, b, j] = h

    @cuda.jit
    def step_backward(da, hs, W, dhe, inj0, dh, t, act):
        """da[t] = (∂L/∂h_t) * f'(a_t), with ∂L/∂h_t = da[t+1] @ W (dh at the last step) + dhe[t-inj0].

        da [n, B, H] (written at t), hs [n+1, B, H], W [H, H], dhe [m, B, H] (injected for
        t >= inj0), dh [B, H] the delta entering from later steps. The hidden delta of a step
        lives only in a register: the chain runs through da, so one launch per step suffices.
        """
        n = da.shape[0]
        B, H = da.shape[1], da.shape[2]
        i = cuda.grid(1)
        if i < B * H:
            b = i // H
            j = i - b * H
            if t == n - 1:
                v = dh[b, j]
            else:
                v = DT(0)
                for k in range(H):
                    v += da[t + 1, b, k] * W[k, j]
            if t >= inj0:
                v += dhe[t - inj0, b, j]
            h = hs[t + 1, b, j]
            d = derivative(h, act)
            da[t, b, j] = v * d

    # ----------------------------------------------------------------- persistent (one block)
    @cuda.jit
    def persistent_forward(xu, hs, WT, act):
        """The whole forward time loop in one launch of one block, Wᵀ in shared memory.

        xu [n, B, H], hs [n+1, B, H] (hs[0] read, hs[1:] written), WT [H, H]. Dynamic shared
        memory: H*H elements. __syncthreads between steps makes h_t (global) visible to the
        block before step t+1 reads it.
        """
        sW = cuda.shared.array(0, DT)
        n = xu.shape[0]
        B, H = hs.shape[1], hs.shape[2]
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        for e in range(tid, H * H, nt):
            sW[e] = WT[e // H, e % H]
        cuda.syncthreads()
        for t in range(n):
            for e in range(tid, B * H, nt):
                b = e // H
                j = e - b * H
                acc = xu[t, b, j]
                for k in range(H):
                    acc += hs[t, b, k] * sW[k * H + j]
                h = activate(acc, act)
                hs[t + 1, b, j] = h
            cuda.syncthreads()

    @cuda.jit
    def persistent_backward(da, hs, W, dhe, inj0, dh, act):
        """The whole backward time loop in one launch of one block, W in shared memory.

        Same arrays as :func:`step_backward`; at the end dh [B, H] is overwritten with the delta
        leaving step 0 (da[0] @ W). Dynamic shared memory: H*H elements.
        """
        sW = cuda.shared.array(0, DT)
        n = da.shape[0]
        B, H = da.shape[1], da.shape[2]
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        for e in range(tid, H * H, nt):
            sW[e] = W[e // H, e % H]
        cuda.syncthreads()
        for s in range(n):
            t = n - 1 - s
            for e in range(tid, B * H, nt):
                b = e // H
                j = e - b * H
                if t == n - 1:
                    v = dh[b, j]
                else:
                    v = DT(0)
                    for k in range(H):
                        v += da[t + 1, b, k] * sW[k * H + j]
                if t >= inj0:
                    v += dhe[t - inj0, b, j]
                h = hs[t + 1, b, j]
                d = derivative(h, act)
                da[t, b, j] = v * d
            cuda.syncthreads()
        for e in range(tid, B * H, nt):
            b = e // H
            j = e - b * H
            v = DT(0)
            for k in range(H):
                v += da[0, b, k] * sW[k * H + j]
            dh[b, j] = v

    # ----------------------------------------------------------------- persistent (grid)
    @cuda.jit
    def coop_forward(xu, hs, WT, act, cols):
        """The forward time loop in one cooperative launch of G = ceil(H / cols) blocks.

        Block g owns hidden units j in [g*cols, g*cols + cols) and keeps those columns of Wᵀ
        ([H, cols]) in dynamic shared memory; a grid-wide sync after each step publishes
        h_t to every block. For W too large for one block's shared memory (Persistent RNNs).
        """
        sW = cuda.shared.array(0, DT)
        grid = cuda.cg.this_grid()
        n = xu.shape[0]
        B, H = hs.shape[1], hs.shape[2]
        j0 = cuda.blockIdx.x * cols
        nc = min(cols, H - j0)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        for e in range(tid, H * nc, nt):
            k = e // nc
            sW[e] = WT[k, j0 + e - k * nc]          # sW[k, jj] = Wᵀ[k, j0 + jj]
        cuda.syncthreads()
        for t in range(n):
            for e in range(tid, B * nc, nt):
                b = e // nc
                jj = e - b * nc
                acc = xu[t, b, j0 + jj]
                for k in range(H):
                    acc += hs[t, b, k] * sW[k * nc + jj]
                h = activate(acc, act)
                hs[t + 1, b, j0 + jj] = h
            grid.sync()

    @cuda.jit
    def coop_backward(da, hs, W, dhe, inj0, dh, act, cols):
        """The backward time loop in one cooperative launch (as :func:`coop_forward`).

        Block g owns columns j of W (∂L/∂h_{t-1}[:, j] = da[t] @ W[:, j]) and of da; the
        arrays are those of :func:`step_backward`, dh ends as the delta leaving step 0.
        """
        sW = cuda.shared.array(0, DT)
        grid = cuda.cg.this_grid()
        n = da.shape[0]
        B, H = da.shape[1], da.shape[2]
        j0 = cuda.blockIdx.x * cols
        nc = min(cols, H - j0)
        tid = cuda.threadIdx.x
        nt = cuda.blockDim.x
        for e in range(tid, H * nc, nt):
            k = e // nc
            sW[e] = W[k, j0 + e - k * nc]           # sW[k, jj] = W[k, j0 + jj]
        cuda.syncthreads()
        for s in range(n):
            t = n - 1 - s
            for e in range(tid, B * nc, nt):
                b = e // nc
                jj = e - b * nc
                j = j0 + jj
                if t == n - 1:
                    v = dh[b, j]
                else:
                    v = DT(0)
                    for k in range(H):
                        v += da[t + 1, b, k] * sW[k * nc + jj]
                if t >= inj0:
                    v += dhe[t - inj0, b, j]
                h = hs[t + 1, b, j]
                d = derivative(h, act)
                da[t, b, j] = v * d
            grid.sync()
        for e in range(tid, B * nc, nt):
            b = e // nc
            jj = e - b * nc
            v = DT(0)
            for k in range(H):
                v += da[0, b, k] * sW[k * nc + jj]
            dh[b, j0 + jj] = v
    return SimpleNamespace(step_forward=step_forward, step_backward=step_backward,
                           persistent_forward=persistent_forward,
                           persistent_backward=persistent_backward,
                           coop_forward=coop_forward, coop_backward=coop_backward)


def forward(dev, xu, hs, w):
    """hs[1:] from hs[0] and xu [n, B, H] (x Uᵀ + b), with the kernels ``dev.recurrent_path``
    picks. w.WT [H, H] = Wᵀ, w.act the activation code."""
    k = build(dev.dtype)
    WT, act = w.WT, w.act
    n, B, H = xu.shape
    path = dev.recurrent_path(B, H)
    if path == "persistent":
        smem = H * H * dev.dtype.itemsize
        k.persistent_forward[1, config.PERSISTENT_THREADS, 0, smem](xu, hs, WT, act)
        return
    if path == "cooperative" and dev.launch_coop(k.coop_forward, H, (xu, hs, WT, act)):
        return
    grid = dev.blocks(B * H)
    for t in range(n):
        k.step_forward[grid, dev.NT](xu, hs, WT, t, act)


def backward(dev, dhe, inj0, hs, dh, da, w):
    """da [n, B, H] for every step; dh [B, H] enters as ∂L/∂h_n from later steps and leaves as
    ∂L/∂h_0. dhe [m, B, H] (or None) is the output layer's ∂L/∂h_t for t >= inj0. w.W [H, H],
    w.act the activation code."""
    k = build(dev.dtype)
    W, act = w.W, w.act
    n, B, H = da.shape
    if dhe is None:
        dhe, inj0 = dev.dummy3, n
    path = dev.recurrent_path(B, H)
    if path == "persistent":
        smem = H * H * dev.dtype.itemsize
        k.persistent_backward[1, config.PERSISTENT_THREADS, 0, smem](
            da, hs, W, dhe, int(inj0), dh, act)
        return da
    if path == "cooperative" and dev.launch_coop(
            k.coop_backward, H, (da, hs, W, dhe, int(inj0), dh, act)):
        return da
    grid = dev.blocks(B * H)
    for t in range(n - 1, -1, -1):
        k.step_backward[grid, dev.NT](da, hs, W, dhe, int(inj0), dh, t, act)
    dev.gemm(da[0], W, dh)                       # the delta leaving the first step
    return da


def ptx_specs(dtype):
    """(name, kernel, signature) of this module's kernels, for ``numba.cuda.compile_ptx``."""
    from numba import types as nt
    f = nbfloat(dtype)
    i8 = nt.int64
    c2, c3 = f[:, ::1], f[:, :, ::1]
    k = build(dtype)
    sigs = {
        "step_forward": (c3, c3, c2, i8, i8),
        "step_backward": (c3, c3, c2, c3, i8, c2, i8, i8),
        "persistent_forward": (c3, c3, c2, i8),
        "persistent_backward": (c3, c3, c2, c3, i8, c2, i8),
        "coop_forward": (c3, c3, c2, i8, i8),
        "coop_backward": (c3, c3, c2, c3, i8, c2, i8, i8),
    }
    return [(name, getattr(k, name).py_func, sig) for name, sig in sigs.items()]
