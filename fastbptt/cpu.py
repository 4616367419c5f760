"""Numba CPU backend: compiled time loops and the operations the engine schedules.

Kernels are module-level ``@njit(cache=True, nogil=True)`` functions over caller-owned,
C-contiguous arrays: nothing is compiled at import, compiled code is cached on disk, and the
activation is chosen by an integer code (0 tanh, 1 sigmoid, 2 relu) so one compiled kernel
serves all three without passing functions around.

Only the recurrent product and the pointwise work run inside the time loops; the input
projection and the weight gradients are large matrix products over all rows of a segment,
done by NumPy's BLAS in :class:`CpuOps`.

Full BPTT without a mask (the common case) skips the engine: :func:`fused_loss_and_grad`
runs everything in one compiled call, :func:`fused_full_bptt`, whose products call BLAS
directly through :func:`gemm` (issue 5; see the section "fused full BPTT" below).
"""
from __future__ import annotations

import numpy as np
from ._jit import njit   # numba.njit, but a broken or read-only cache never stops the import

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
                out[i, j] = 0.0 if a <= 0 else a      # NaN stays NaN, as np.maximum(a, 0)


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
                out[i, j] = dh[i, j] * (1.0 if h[i, j] > 0 else 0.0)   # 0·inf is NaN, as in the reference


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
def _exp_shift_f32(row, m, nb):
    """row[k] = exp(row[k] - m) in place for a float32 row whose max is m (so row - m <= 0).

    A vectorisable Cephes-style ``expf`` (2^n · e^r, |r| <= ln2/2, degree-6 polynomial, under
    2 ulp; tests/test_cpu_kernels.py pins it): Numba's np.exp is a scalar libm call per element
    and was the largest cost of the head. nb is int32 scratch [K] for the exponents. Returns
    the row's sum in float64. NaN stays NaN; arguments below -87 give 2^-126·e^r, not 0.
    """
    K = row.shape[0]
    for k in range(K):
        t = row[k] - m
        t = np.float32(-87.0) if t < np.float32(-87.0) else t   # NaN passes through
        n = np.floor(t * np.float32(1.44269504088896341) + np.float32(0.5))
        r = t - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
        p = r * np.float32(1.9875691500e-4) + np.float32(1.3981999507e-3)
        p = r * p + np.float32(8.3334519073e-3)
        p = r * p + np.float32(4.1665795894e-2)
        p = r * p + np.float32(1.6666665459e-1)
        p = r * p + np.float32(5.0000001201e-1)
        row[k] = (r * r) * p + r + np.float32(1)
        nb[k] = np.int32(n) if n == n else 0
    for k in range(K):
        nb[k] = (nb[k] + 127) << 23                                 # the bits of 2^n
    scale = nb.view(np.float32)
    s = 0.0
    for k in range(K):
        row[k] *= scale[k]
        s += row[k]
    return s


@njit(**_JIT)
def softmax_xent_ids(o, y, w):
    """Fused, stable softmax + NLL over rows; o [R, K] is overwritten with w·(p − onehot(y)).

    Returns Σ_r w_r · (logsumexp(o_r) − o_r[y_r]), accumulated in float64. One exponential
    per logit (p = e/Σe); float32 rows use :func:`_exp_shift_f32`, float64 rows np.exp.
    """
    R, K = o.shape
    total = 0.0
    nb = np.empty(K, np.int32)
    for r in range(R):
        row = o[r]
        m = row[0]
        for k in range(1, K):
            if row[k] > m:
                m = row[k]
        oy = row[y[r]]
        if o.itemsize == 4:
            s = _exp_shift_f32(row, m, nb)
        else:
            s = 0.0
            for k in range(K):
                e = np.exp(row[k] - m)
                row[k] = e
                s += e
        total += w[r] * (m + np.log(s) - oy)
        f = row.dtype.type(w[r] / s)
        for k in range(K):
            row[k] = row[k] * f
        row[y[r]] -= w[r]
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
            # −log p = lse − o is finite for finite logits (log domain), so y = 0 adds 0;
            # with NaN/inf logits it adds NaN, as the reference does (never hide a NaN)
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
        self.UT = np.ascontiguousarray(p.U.T) if (p.ids is not None and p.E is None) else None
        # every product goes through gemm, the BLAS of the fused kernel (issue 3): see
        # forward_steps_gemm for why
        register_blas()
        self._fast = p.dtype == np.float32
        self._sc, self._fs = gemm_scratch(_NTHREADS, p.W)      # W: only its dtype is used

    def _mm(self, A, ta, B, tb, C, beta=0.0):
        """C = op(A) op(B) + beta·C through :func:`gemm` (C-contiguous 2-D arrays)."""
        if max(A.shape + B.shape) >= _LP64_MAX:
            # the BLAS takes 32-bit sizes: NumPy's matmul splits what gemm cannot take
            a = A.T if ta else A
            b = B.T if tb else B
            if beta == 0.0:
                np.matmul(a, b, out=C)
            else:
                C *= beta
                C += a @ b
            return
        gemm(A, ta, B, tb, C, beta, self._sc, self._fs)

    # allocation
    def zeros(self, shape):
        return np.zeros(shape, dtype=self.dtype)

    def empty(self, shape):
        return np.empty(shape, dtype=self.dtype)

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
            xu2 = xu.reshape(-1, p.H)
            xu2[...] = p.b
            self._mm(np.ascontiguousarray(x2), 0, p.U, 1, xu2, 1.0)   # x Uᵀ + b, as the fused kernel
        return xu

    def forward(self, xu, hs):
        forward_steps_gemm(xu, self.p.W, hs, self.p.act, self._fast, self._sc, self._fs)

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
        o = np.empty((h2.shape[0], p.n_out), dtype=self.dtype)   # logits, then their deltas
        o[...] = p.c
        self._mm(h2, 0, p.V, 1, o, 1.0)
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
        self._mm(o, 1, h2, 0, g["V"], 1.0)
        g["c"] += o.sum(axis=0)
        if rows is None:
            dhe = np.empty((n, B, H), dtype=self.dtype)
            self._mm(o, 0, p.V, 0, dhe.reshape(-1, H))
        else:
            dhe = np.zeros((n, B, H), dtype=self.dtype)
            dr = np.empty((rows.size, H), dtype=self.dtype)
            self._mm(o, 0, p.V, 0, dr)
            dhe.reshape(-1, H)[rows] = dr
        return float(loss), dhe

    def backward(self, dhe, inj0, hs, dh, out=None):
        n = hs.shape[0] - 1
        da = out if out is not None else np.empty((n,) + dh.shape, dtype=self.dtype)
        if dhe is None:
            dhe = np.empty((0,) + dh.shape, dtype=self.dtype)
            inj0 = n
        backward_steps_gemm(dhe, inj0, hs, self.p.W, dh, da, self.p.act, self._sc, self._fs)
        return da

    def weight_grads(self, t0, t1, da, hs_prev, g):
        """dW, db, dU (and dE) from the deltas of steps [t0, t1) as matrix products over rows.

        da [n, B, H] and hs_prev [n, B, H] = h_{t-1} of those steps.
        """
        p = self.p
        H = p.H
        da2 = da.reshape(-1, H)
        self._mm(da2, 1, hs_prev.reshape(-1, H), 0, g["W"], 1.0)
        g["b"] += da2.sum(axis=0)
        x2 = self._x_rows(t0, t1)
        if x2 is None:
            scatter_add_rows(g["UT"], p.ids[t0:t1].reshape(-1), da2)
        else:
            self._mm(da2, 1, np.ascontiguousarray(x2), 0, g["U"], 1.0)
        if p.E is not None:
            dx = np.empty((da2.shape[0], p.n_in), dtype=self.dtype)
            self._mm(da2, 0, p.U, 0, dx)
            scatter_add_rows(g["E"], p.ids[t0:t1].reshape(-1), dx)

    def zero_states(self, hs, pad):
        """hs[i, b] = 0 where pad[i, b]; hs [n+1, B, H], pad [n+1, B] bool (host)."""
        hs[pad] = 0

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
        restore_threads(self._sc)                     # the caller's BLAS thread setting
        if "UT" in g:
            g["U"] = np.ascontiguousarray(g.pop("UT").T)
        return g


# --------------------------------------------------------------------------- BLAS from compiled code
# The fused kernel calls the Fortran-ABI ?gemm through symbols registered with LLVM
# (``fastbptt_sgemm``, ``fastbptt_dgemm``, ...): by default the OpenBLAS that SciPy ships (the
# one Numba's np.dot uses); Intel MKL's with FASTBPTT_BLAS=mkl and the optional ``mkl`` package
# installed. MKL is not the default: on the 2-vCPU AMD EPYC this was tuned on, MKL 2026.2 ran
# every product on one thread (it counts physical cores) at about 93 GFLOP/s, where OpenBLAS
# used both and reached about 200 on the large size's 8192x1024x1024 products.
# Symbols, unlike function-pointer constants, keep the kernel cacheable on disk: they are
# resolved when the cached code is linked, so registration must precede the first call.
import ctypes as _ct
import os as _os
import sys as _sys

from numba import types as _nbt

BLAS_NAME = None         # "mkl" or "scipy-openblas" once registered


def _mkl_gemm_addresses():
    """(sgemm, dgemm, set-threads) addresses in MKL's single dynamic library, or None."""
    if _os.environ.get("FASTBPTT_BLAS", "").lower() != "mkl":
        return None
    names = ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"]
    dirs = [_os.path.join(_sys.prefix, "lib"), ""]
    for d in dirs:
        for n in names:
            try:
                lib = _ct.CDLL(_os.path.join(d, n) if d else n)
            except OSError:
                continue
            try:
                return tuple(_ct.cast(getattr(lib, f), _ct.c_void_p).value
                             for f in ("sgemm_", "dgemm_", "MKL_Set_Num_Threads_Local"))
            except AttributeError:
                continue
    return None


def _scipy_gemm_addresses():
    from scipy.linalg import cython_blas
    get = _ct.pythonapi.PyCapsule_GetPointer
    get.restype = _ct.c_void_p
    get.argtypes = [_ct.py_object, _ct.c_char_p]
    caps = cython_blas.__pyx_capi__
    return tuple(get(caps[n], get_capsule_name(caps[n])) for n in ("sgemm", "dgemm")) + \
        (_openblas_threads_local(),)


def _openblas_threads_local():
    """Address of SciPy's OpenBLAS ``openblas_set_num_threads_local`` (int -> int).

    Falls back to libc's ``abs`` (same signature, no effect) when that OpenBLAS is not found.
    """
    import glob
    import scipy
    libdir = _os.path.join(_os.path.dirname(_os.path.dirname(scipy.__file__)), "scipy.libs")
    for path in sorted(glob.glob(_os.path.join(libdir, "libscipy_openblas*.so*"))):
        try:
            return _ct.cast(_ct.CDLL(path).openblas_set_num_threads_local, _ct.c_void_p).value
        except (OSError, AttributeError):
            continue
    return _ct.cast(_ct.CDLL(None).abs, _ct.c_void_p).value


def get_capsule_name(cap):
    f = _ct.pythonapi.PyCapsule_GetName
    f.restype = _ct.c_char_p
    f.argtypes = [_ct.py_object]
    return f(cap)


def register_blas():
    """Register ``fastbptt_sgemm``/``fastbptt_dgemm`` (once); returns the BLAS's name."""
    global BLAS_NAME
    if BLAS_NAME is None:
        from llvmlite import binding
        addrs = _mkl_gemm_addresses()
        name = "mkl"
        if addrs is None:
            addrs, name = _scipy_gemm_addresses(), "scipy-openblas"
        small = _scipy_gemm_addresses() if name == "mkl" else addrs
        binding.add_symbol("fastbptt_sgemm", addrs[0])
        binding.add_symbol("fastbptt_dgemm", addrs[1])
        binding.add_symbol("fastbptt_sgemm_small", small[0])
        binding.add_symbol("fastbptt_dgemm_small", small[1])
        binding.add_symbol("fastbptt_threads_local", addrs[2])
        BLAS_NAME = name
    return BLAS_NAME


_P = _nbt.intp   # pointers travel as integers (x86-64 and aarch64 pass both the same way)
_sgemm = _nbt.ExternalFunction("fastbptt_sgemm", _nbt.void(*([_P] * 13)))
_dgemm = _nbt.ExternalFunction("fastbptt_dgemm", _nbt.void(*([_P] * 13)))
# tiny products (min-char-rnn's 1x100x100 step) go to OpenBLAS even when MKL is there: its
# per-call overhead is lower (0.52 against 0.69 us measured for that step)
_sgemm_small = _nbt.ExternalFunction("fastbptt_sgemm_small", _nbt.void(*([_P] * 13)))
_dgemm_small = _nbt.ExternalFunction("fastbptt_dgemm_small", _nbt.void(*([_P] * 13)))
_SMALL_GEMM = 1 << 16      # m·n·k below which a product counts as tiny
# Threads: a product below _THREAD_MIN multiply-adds (about 3 ms on one core) runs on one
# thread; only the big all-rows products of the medium and large sizes use every core. Why:
# a threaded product synchronises its threads, and when another process holds one of the two
# cores that wait lasts a scheduler slice. Measured on this shared 2-vCPU machine with the
# per-step products of medium threaded (threshold 2^22): 5.2 s per call instead of 0.17 s;
# the time loops make 2·T such products, the big ones are 7 per call. On an idle machine a
# second thread would save about a third of the per-step time at large.
# The setting is the BLAS's thread-local one (OpenBLAS's openblas_set_num_threads_local or
# MKL_Set_Num_Threads_Local), restored before the kernel returns.
_THREAD_MIN = 1 << 24
_threads_local = _nbt.ExternalFunction("fastbptt_threads_local", _nbt.int32(_nbt.int32))


def _max_threads():
    """Threads the big products may use: the cores available, capped by the usual env vars."""
    try:
        n = len(_os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = _os.cpu_count() or 1
    for var in ("FASTBPTT_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        v = _os.environ.get(var, "").split(",")[0].strip()
        if v.isdigit() and int(v) > 0:
            n = min(n, int(v))
    return max(1, n)


@njit(**_JIT)
def gemm_scratch(nthreads, dtype_like):
    """The scratch arrays :func:`gemm` takes, for big products on up to nthreads threads."""
    sc = np.empty(11, np.int32)
    sc[8] = nthreads
    sc[9] = -1
    sc[10] = 0
    return sc, np.empty(2, dtype_like.dtype)


@njit(**_JIT)
def restore_threads(scratch):
    """Put back the BLAS thread setting :func:`gemm` found, if it changed it."""
    if scratch[9] != -1:
        _threads_local(scratch[10])
        scratch[9] = -1


@njit(**_JIT)
def gemm(A, ta, B, tb, C, beta, scratch, fscratch):
    """C = op(A) @ op(B) + beta·C for C-contiguous 2-D arrays (row-major), op = transpose if t.

    scratch int32[11] and fscratch (C's dtype)[2] hold the by-reference Fortran arguments;
    scratch[8] is the most threads a big product may use, scratch[9] the thread count last
    set (-1: none yet) and scratch[10] the caller's setting, for :func:`restore_threads`.
    """
    m, n = C.shape
    k = A.shape[0] if ta else A.shape[1]
    if m == 0 or n == 0:
        return
    # row-major C = op(A) op(B)  <=>  column-major Cᵀ = op(B)ᵀ op(A)ᵀ
    scratch[0] = 84 if tb else 78        # 'T' / 'N'
    scratch[1] = 84 if ta else 78
    scratch[2] = n
    scratch[3] = m
    scratch[4] = k
    scratch[5] = B.shape[1]
    scratch[6] = A.shape[1]
    scratch[7] = n
    fscratch[0] = 1
    fscratch[1] = beta
    s = scratch.ctypes.data
    f = fscratch.ctypes.data
    fsz = fscratch.itemsize
    if k == 0:
        for i in range(m):
            for j in range(n):
                C[i, j] = C[i, j] * beta if beta != 0 else 0
        return
    args = (s, s + 4, s + 8, s + 12, s + 16, f, B.ctypes.data, s + 20, A.ctypes.data, s + 24,
            f + fsz, C.ctypes.data, s + 28)
    mnk = m * n * k
    if mnk >= _SMALL_GEMM:                      # tiny ones go to OpenBLAS, one thread anyway
        want = 1 if mnk < _THREAD_MIN else scratch[8]
        if want != scratch[9]:
            prev = _threads_local(want)
            if scratch[9] == -1:
                scratch[10] = prev
            scratch[9] = want
    if mnk < _SMALL_GEMM:
        if C.itemsize == 4:
            _sgemm_small(*args)
        else:
            _dgemm_small(*args)
    elif C.itemsize == 4:
        _sgemm(*args)
    else:
        _dgemm(*args)


# --------------------------------------------------------------------------- fused full BPTT
# Full BPTT without a mask (the common case, and the one the benchmarks time) runs in ONE
# compiled call: input projection, recurrence, head, backward loop and weight gradients.
# Why: at min-char-rnn's size (T=25, B=1, H=100) the arithmetic takes tens of microseconds,
# less than the Python overhead of scheduling a dozen NumPy calls; and every matrix product
# then goes through one BLAS (SciPy's, which Numba's np.dot calls), so two BLAS thread pools
# never spin against each other on a small machine.

@njit(**_JIT)
def tanh_f32(v):
    """tanh of a float32 scalar: a vectorisable [13/6] rational (Eigen's ``ptanh_float``).

    Numba's ``np.tanh`` is a scalar libm call per element (no SVML here) and dominated the
    float32 time loops; this compiles to straight-line SIMD code. Max error about 4e-7
    absolute (a few float32 ulps; tests/test_cpu_kernels.py pins it), subnormals
    included. float64 keeps np.tanh.
    """
    lim = np.float32(7.90531110763549805)          # tanh(lim) rounds to 1 in float32
    v = lim if v > lim else (-lim if v < -lim else v)    # NaN passes through
    x2 = v * v
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = x2 * p + np.float32(-8.60467152213735e-11)
    p = x2 * p + np.float32(5.12229709037114e-08)
    p = x2 * p + np.float32(1.48572235717979e-05)
    p = x2 * p + np.float32(6.37261928875436e-04)
    p = x2 * p + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = x2 * q + np.float32(2.26843463243900e-03)
    q = x2 * q + np.float32(4.89352518554385e-03)
    return v * (p / q)      # not (v·p)/q: v·p underflows for tiny v, flushing subnormals


@njit(**_JIT)
def tanh_f32_array(x, out):
    """out = tanh_f32(x) elementwise over 1-D float32 arrays (for tests)."""
    for i in range(x.shape[0]):
        out[i] = tanh_f32(x[i])


@njit(**_JIT)
def _act_inplace(cur, act, fast):
    """cur = f(cur) in place, [B, H]; fast: float32 tanh via :func:`tanh_f32`."""
    B, H = cur.shape
    one = cur.dtype.type(1)
    zero = cur.dtype.type(0)
    if act == 0:
        if fast:
            for i in range(B):
                for j in range(H):
                    cur[i, j] = tanh_f32(cur[i, j])
        else:
            for i in range(B):
                for j in range(H):
                    cur[i, j] = np.tanh(cur[i, j])
    elif act == 1:
        for i in range(B):
            for j in range(H):
                cur[i, j] = one / (one + np.exp(-cur[i, j]))
    else:
        for i in range(B):
            for j in range(H):
                a = cur[i, j]
                cur[i, j] = zero if a <= 0 else a      # NaN stays NaN, as np.maximum(a, 0)


@njit(**_JIT)
def _dact_inplace(da, h, act):
    """da = da * f'(a) in place, [B, H], f' from the saved h = f(a)."""
    B, H = da.shape
    one = da.dtype.type(1)
    zero = da.dtype.type(0)
    if act == 0:
        for i in range(B):
            for j in range(H):
                da[i, j] = da[i, j] * (one - h[i, j] * h[i, j])
    elif act == 1:
        for i in range(B):
            for j in range(H):
                da[i, j] = da[i, j] * (h[i, j] * (one - h[i, j]))
    else:
        for i in range(B):
            for j in range(H):
                da[i, j] = da[i, j] * (one if h[i, j] > 0 else zero)   # 0·inf is NaN, as the reference


@njit(**_JIT)
def _copy_rows(src, dst, r0):
    """dst[r0:r0+n] = src for 2-D arrays, as a loop: Numba's slice assignment from an array
    compiles its broadcasting error messages and added ~7 s to the cold compile."""
    for r in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[r0 + r, j] = src[r, j]


@njit(**_JIT)
def fused_full_bptt(in_kind, x, ids, E, U, W, b, V, c, h0, loss_kind, tgt, yrows, w, act, fast,
                    nthreads, gU, gW, gb, gV, gc, gE, gh0, h_last):
    """Loss and every gradient of full BPTT in one call (no mask, every step carries loss).

    in_kind 0: float inputs x [T, B, I];  1: one-hot ids [T, B] (gU is written transposed,
    [I, H]);  2: ids looked up in E [vocab, I].
    loss_kind 0: cross-entropy with class ids tgt [T, B];  1: cross-entropy with probability
    rows yrows [T*B, O];  2: mse against yrows.   w [T*B]: each step's loss weight.
    Arrays an input kind does not use are passed empty. Gradients are written (not added) into
    gU/gUT, gW, gb, gV, gc, gE, gh0; h_last [B, H] gets h_T. Returns the loss (float64 sum).
    Every product goes through :func:`gemm` (MKL when installed), accumulating with beta = 1
    where a sum follows, so no pass over memory is spent on additions.
    """
    T, B = ids.shape if in_kind != 0 else (x.shape[0], x.shape[1])
    H = W.shape[0]
    I = U.shape[1]
    O = V.shape[0]
    R = T * B
    dt = W.dtype
    sc, fs = gemm_scratch(nthreads, W)
    # hs [(T+1)*B, H]: h_t in rows t*B .. t*B+B-1, h0 in the first B rows
    hs = np.empty(((T + 1) * B, H), dt)
    _copy_rows(h0, hs, 0)
    xe = np.empty((0, I), dt)
    if in_kind == 1:
        idf = ids.reshape(R)
        for r in range(R):                                      # one-hot x_t Uᵀ = column of U
            i = idf[r]
            for j in range(H):
                hs[B + r, j] = U[j, i] + b[j]
    else:
        for r in range(B, (T + 1) * B):
            for j in range(H):
                hs[r, j] = b[j]
        if in_kind == 0:
            gemm(x.reshape(R, I), 0, U, 1, hs[B:], 1.0, sc, fs)    # all input projections
        else:
            idf = ids.reshape(R)
            xe = np.empty((R, I), dt)
            for r in range(R):
                src = E[idf[r]]
                for j in range(I):
                    xe[r, j] = src[j]
            gemm(xe, 0, U, 1, hs[B:], 1.0, sc, fs)
    # forward recurrence: h_{t+1} = f(xu_t + h_t Wᵀ), the product accumulated onto xu_t
    for t in range(T):
        cur = hs[(t + 1) * B:(t + 2) * B]
        gemm(hs[t * B:(t + 1) * B], 0, W, 1, cur, 1.0, sc, fs)
        _act_inplace(cur, act, fast)
    _copy_rows(hs[T * B:], h_last, 0)
    # head: one product for all logits (bias preloaded), fused stable softmax/NLL in place
    h2 = hs[B:]
    o = np.empty((R, O), dt)
    for r in range(R):
        for k in range(O):
            o[r, k] = c[k]
    gemm(h2, 0, V, 1, o, 1.0, sc, fs)                           # [R, O]
    if loss_kind == 0:
        loss = softmax_xent_ids(o, tgt.reshape(R), w)
    elif loss_kind == 1:
        loss = softmax_xent_probs(o, yrows, w)
    else:
        loss = mse_rows(o, yrows, w)
    gemm(o, 1, h2, 0, gV, 0.0, sc, fs)
    gc[:] = 0
    for r in range(R):
        for k in range(O):
            gc[k] += o[r, k]
    da = np.empty((R, H), dt)
    gemm(o, 0, V, 0, da, 0.0, sc, fs)                           # ∂L/∂h_t from the head
    # backward recurrence: da_t = (dhe_t + da_{t+1} W) ⊙ f'; the product is accumulated
    # straight into step t-1's row block, which is the one hidden-delta buffer in effect
    for t in range(T - 1, -1, -1):
        dat = da[t * B:(t + 1) * B]
        _dact_inplace(dat, hs[(t + 1) * B:(t + 2) * B], act)
        if t > 0:
            gemm(dat, 0, W, 0, da[(t - 1) * B:t * B], 1.0, sc, fs)
        else:
            gemm(dat, 0, W, 0, gh0, 0.0, sc, fs)
    # weight gradients: products over all T·B rows
    gemm(da, 1, hs[:R], 0, gW, 0.0, sc, fs)
    gb[:] = 0
    for r in range(R):
        for j in range(H):
            gb[j] += da[r, j]
    if in_kind == 0:
        gemm(da, 1, x.reshape(R, I), 0, gU, 0.0, sc, fs)
    elif in_kind == 1:
        gU[:] = 0                                               # gUT [I, H]
        for r in range(R):
            row = gU[idf[r]]
            for j in range(H):
                row[j] += da[r, j]
    else:
        gemm(da, 1, xe, 0, gU, 0.0, sc, fs)
        dx = np.empty((R, I), dt)
        gemm(da, 0, U, 0, dx, 0.0, sc, fs)                      # [R, I]
        gE[:] = 0
        for r in range(R):
            row = gE[idf[r]]
            for j in range(I):
                row[j] += dx[r, j]
    restore_threads(sc)
    return loss


_LP64_MAX = 2 ** 31          # gemm passes sizes to BLAS as 32-bit ints


def fused_eligible(p) -> bool:
    """Whether :func:`fused_loss_and_grad` handles the validated problem ``p``."""
    return (p.truncate is None and p.checkpoint is None and p.dense and not p.masked
            and p.y_map is None and p.T * p.B < _LP64_MAX)


_NTHREADS = _max_threads()


def fused_loss_and_grad(p):
    """``loss_and_grad`` for an eligible problem in one compiled call."""
    register_blas()
    dt = p.dtype
    H = p.H
    e2 = np.empty((0, 0), dt)
    ei = np.empty((0, 0), np.int64)
    if p.x is not None:
        in_kind, x, ids, E = 0, p.x, ei, e2
    elif p.E is None:
        in_kind, x, ids, E = 1, np.empty((0, 0, 0), dt), p.ids, e2
    else:
        in_kind, x, ids, E = 2, np.empty((0, 0, 0), dt), p.ids, p.E
    if p.tgt_ids is not None:
        loss_kind, tgt, yrows = 0, p.tgt_ids, e2
    else:
        loss_kind, tgt, yrows = (2 if p.loss == "mse" else 1), ei, p.y_rows
    g = {"U": np.empty((p.n_in, H) if in_kind == 1 else (H, p.n_in), dt),
         "W": np.empty((H, H), dt), "b": np.empty(H, dt),
         "V": np.empty((p.n_out, H), dt), "c": np.empty(p.n_out, dt)}
    gE = np.empty(p.E.shape, dt) if in_kind == 2 else e2
    gh0 = np.empty((p.B, H), dt)
    h_last = np.empty((p.B, H), dt)
    loss = fused_full_bptt(in_kind, x, ids, E, p.U, p.W, p.b, p.V, p.c, p.h0, loss_kind, tgt,
                           yrows, p.weights.reshape(-1), p.act, dt == np.float32, _NTHREADS,
                           g["U"], g["W"], g["b"], g["V"], g["c"], gE, gh0, h_last)
    if in_kind == 1:
        g["U"] = np.ascontiguousarray(g["U"].T)
    if in_kind == 2:
        g["E"] = gE
    g["h0"] = gh0
    return float(loss), g, h_last


# --------------------------------------------------------------------------- engine time loops (issue 3)
# CpuOps (truncated, checkpointed and masked calls) sends every product, the per-step ones
# included, through gemm: the one BLAS the fused kernel uses. With NumPy's OpenBLAS, SciPy's
# OpenBLAS (Numba's np.dot) and MKL each keeping its own spinning thread pool, alternating
# between them made a checkpointed call 10-40x slower than full BPTT on a busy 2-core machine.

@njit(**_JIT)
def forward_steps_gemm(xu, W, hs, act, fast, sc, fs):
    """As :func:`forward_steps`, the product through :func:`gemm` (float32 tanh: tanh_f32).

    xu [n, B, H], W [H, H], hs [n+1, B, H] (hs[0] read, hs[1:] written).
    """
    for t in range(xu.shape[0]):
        cur = hs[t + 1]
        cur[:] = xu[t]
        gemm(hs[t], 0, W, 1, cur, 1.0, sc, fs)         # xu_t + h_{t-1} Wᵀ
        _act_inplace(cur, act, fast)


@njit(**_JIT)
def backward_steps_gemm(dhe, inj0, hs, W, dh, da, act, sc, fs):
    """As :func:`backward_steps`, the product through :func:`gemm`.

    dhe [n - inj0, B, H], hs [n+1, B, H], W [H, H], dh [B, H] (in: ∂L/∂h_n, out: ∂L/∂h_0),
    da [n, B, H] (out).
    """
    n = hs.shape[0] - 1
    for t in range(n - 1, -1, -1):
        if t >= inj0:
            dh += dhe[t - inj0]
        dat = da[t]
        dat[:] = dh
        _dact_inplace(dat, hs[t + 1], act)
        gemm(dat, 0, W, 0, dh, 0.0, sc, fs)             # dh = da_t W
