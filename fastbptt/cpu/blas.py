"""BLAS ``?gemm`` called straight from compiled code, and its thread policy.

Every product of the CPU backend, inside the time loops and outside, goes through
:func:`gemm`: one BLAS, so two libraries' thread pools never spin against each other on a
small machine. Products take row-major 2-D arrays whose rows may be strided (a state row
``[B, K·H]`` is read as h ``[B, H]`` with leading dimension K·H); columns are contiguous.
"""
from __future__ import annotations

import numpy as np

from .._jit import njit
from ._static import static_dispatch

_JIT = dict(cache=True, nogil=True, error_model="numpy")

# The fused kernel calls the Fortran-ABI ?gemm through symbols registered with LLVM
# (``fastbptt_sgemm``, ``fastbptt_dgemm``, ...). Which library serves which product is the
# choice of FASTBPTT_BLAS (:func:`blas_mode`):
#
# * ``auto`` (the default): SciPy's OpenBLAS (the one Numba's np.dot uses) for the big
#   products that use every core, and Intel MKL for the one-thread products of up to
#   ONE_ROWS rows (a time step's) when the optional ``mkl`` package is installed
#   (``pip install "fastbptt[mkl]"``), else OpenBLAS for those too. Why the split: on the
#   2-vCPU AMD EPYC this was tuned on, a one-thread MKL product of a time step's size was
#   about twice OpenBLAS's speed (16 x 128 x 128: 9.7 against 18.0 us; 16 x 128 x 512: 31
#   against 60 us; OpenBLAS re-packs all of W on every call, 20% of ``fastbptt train``'s time
#   in ``perf``), while MKL 2026.2 ran a big product on one thread only (it counts physical
#   cores) at about 93 GFLOP/s, where OpenBLAS used both and reached about 200 on the large
#   size's 8192 x 1024 x 1024 products, and lost to one-thread OpenBLAS on long products.
# * ``openblas``: every product on SciPy's OpenBLAS.
# * ``mkl``: every product on MKL (the optional ``mkl`` package).
#
# Symbols, unlike function-pointer constants, keep the kernel cacheable on disk: they are
# resolved when the cached code is linked, so registration must precede the first call, and
# one compiled kernel serves every mode.
import contextlib
import ctypes as _ct
import os as _os
import sys as _sys
import threading

from numba import types as _nbt

BLAS_NAME = None         # "scipy-openblas", "scipy-openblas+mkl" or "mkl" once registered
_NN_OPENBLAS = False     # whether fastbptt_sgemm_one_nn is OpenBLAS's (set on registration)


BLAS_MODES = ("auto", "openblas", "mkl")


def blas_mode():
    """FASTBPTT_BLAS, checked: ``auto`` (unset or empty), ``openblas`` or ``mkl``."""
    v = _os.environ.get("FASTBPTT_BLAS", "").strip().lower() or "auto"
    if v not in BLAS_MODES:
        raise ValueError(f"FASTBPTT_BLAS={_os.environ['FASTBPTT_BLAS']!r}: expected one of "
                         f"{', '.join(BLAS_MODES)} (unset means auto)")
    return v


def _mkl_gemm_addresses():
    """(sgemm, dgemm, MKL_Set_Num_Threads_Local) addresses in MKL's single dynamic library
    (the ``mkl`` package's, or one on the library path), or None."""
    import site
    names = ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"]
    # the environment's lib folder (pip's mkl), a user install's, then the library path
    dirs = [_os.path.join(_sys.prefix, "lib"), _os.path.join(site.getuserbase(), "lib"), ""]
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
        (_openblas_threads_local(),) + \
        tuple(get(caps[n], get_capsule_name(caps[n])) for n in ("sgemv", "dgemv"))


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
    return _noop_threads()


def get_capsule_name(cap):
    f = _ct.pythonapi.PyCapsule_GetName
    f.restype = _ct.c_char_p
    f.argtypes = [_ct.py_object]
    return f(cap)


def _noop_threads():
    """Address of libc's ``abs``: the signature of a thread setter (int -> int), no effect."""
    return _ct.cast(_ct.CDLL(None).abs, _ct.c_void_p).value


def register_blas():
    """Register the ``fastbptt_*`` BLAS symbols (once, as FASTBPTT_BLAS says); returns the
    BLAS's name: ``scipy-openblas``, ``mkl`` or ``scipy-openblas+mkl`` (auto with MKL: the
    one-thread products on MKL)."""
    global BLAS_NAME, _NN_OPENBLAS
    if BLAS_NAME is None:
        from llvmlite import binding
        mode = blas_mode()
        ob = _scipy_gemm_addresses()
        mkl = _mkl_gemm_addresses() if mode != "openblas" else None
        if mode == "mkl" and mkl is None:
            import warnings
            warnings.warn("FASTBPTT_BLAS=mkl, but MKL's libmkl_rt was not found (pip install "
                          "mkl); using SciPy's OpenBLAS", RuntimeWarning, stacklevel=3)
        big = mkl if mode == "mkl" and mkl is not None else ob
        one = mkl if mkl is not None else big
        binding.add_symbol("fastbptt_sgemm", big[0])
        binding.add_symbol("fastbptt_dgemm", big[1])
        binding.add_symbol("fastbptt_threads_local", big[2])
        # one-thread products; in auto mode MKL's thread-local setting is 1 around each
        binding.add_symbol("fastbptt_sgemm_one", one[0])
        binding.add_symbol("fastbptt_dgemm_one", one[1])
        # small one-thread float32 products with B as stored: OpenBLAS where its AVX-512
        # kernel beats MKL's generic one (see ONE_NN_MNK)
        nn = ob if mode == "auto" and one is mkl and OPENBLAS_WINS_SMALL_NN else one
        binding.add_symbol("fastbptt_sgemm_one_nn", nn[0])
        _NN_OPENBLAS = nn is ob
        binding.add_symbol("fastbptt_one_threads_local", one[2] if one is not big else _noop_threads())
        # tiny and one-row products stay on OpenBLAS in every mode (see _sgemm_small)
        binding.add_symbol("fastbptt_sgemm_small", ob[0])
        binding.add_symbol("fastbptt_dgemm_small", ob[1])
        binding.add_symbol("fastbptt_sgemv", ob[3])
        binding.add_symbol("fastbptt_dgemv", ob[4])
        BLAS_NAME = ("mkl" if big is mkl else "scipy-openblas+mkl" if one is mkl
                     else "scipy-openblas")
    return BLAS_NAME


def _amd_with_avx512() -> bool:
    """Whether this CPU is an AMD one with AVX-512: OpenBLAS runs its AVX-512 (SkylakeX)
    kernels there and MKL its generic ones (read from ``/proc/cpuinfo``; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return "AuthenticAMD" in head and " avx512f" in head


OPENBLAS_WINS_SMALL_NN = _amd_with_avx512()    # read once, when this module is imported


def forward_transposed(B, dtype) -> bool:
    """Whether a time loop over B rows reads its forward products ``h Wᵀ`` from a transposed
    copy of W (``[H, G·H]``, B as stored), made once per call.

    Yes where OpenBLAS's small-matrix kernel serves those products in blocks (float32, an
    AMD CPU with AVX-512 and OpenBLAS on the B-as-stored one-thread products: see
    ONE_NN_MNK) and a step's product is a ``?gemm`` of 9 to FORWARD_T_ROWS rows. One core,
    MKL with W transposed over OpenBLAS in blocks, H 128 / 512: 16 rows 1.36 / 1.49 times
    the time, 64 rows 1.14 / 1.18, 128 rows 1.08 / 0.95, 192 rows 1.01 / 0.91 (the LSTM's
    16x128x512: 25.4 against 18.5 µs; 128x1024x4096: 11.8 against 12.7 ms). The copy costs
    G·H·H elements.
    """
    if np.dtype(dtype) != np.float32 or not _GEMV_ROWS < B <= FORWARD_T_ROWS:
        return False
    register_blas()                      # sets _NN_OPENBLAS
    return ONE_NN_CHUNKS > 1 and _NN_OPENBLAS


FORWARD_T_ROWS = 64


def one_thread_mkl() -> bool:
    """Whether MKL serves the one-thread products (registers the BLAS symbols first)."""
    return register_blas() in ("mkl", "scipy-openblas+mkl")


_P = _nbt.intp   # pointers travel as integers (x86-64 and aarch64 pass both the same way)
_sgemm = _nbt.ExternalFunction("fastbptt_sgemm", _nbt.void(*([_P] * 13)))
_dgemm = _nbt.ExternalFunction("fastbptt_dgemm", _nbt.void(*([_P] * 13)))
# tiny products (min-char-rnn's 1x100x100 step) go to OpenBLAS even when MKL is there: its
# per-call overhead is lower (0.52 against 0.69 us measured for that step)
_sgemm_small = _nbt.ExternalFunction("fastbptt_sgemm_small", _nbt.void(*([_P] * 13)))
_dgemm_small = _nbt.ExternalFunction("fastbptt_dgemm_small", _nbt.void(*([_P] * 13)))
_sgemm_one = _nbt.ExternalFunction("fastbptt_sgemm_one", _nbt.void(*([_P] * 13)))
_sgemm_one_nn = _nbt.ExternalFunction("fastbptt_sgemm_one_nn", _nbt.void(*([_P] * 13)))
_dgemm_one = _nbt.ExternalFunction("fastbptt_dgemm_one", _nbt.void(*([_P] * 13)))
_SMALL_GEMM = 1 << 16      # m·n·k below which a product counts as tiny
# One-row products (every step's h Wᵀ and δ W at batch size 1, min-char-rnn's case) go to
# ?gemv: ?gemm packs the whole of W into its panel layout on every call, and for one row that
# copy costs more than the product (perf at min-char-rnn's size: 50% of the call's time in
# sgemm_itcopy/incopy; 16 us a step with ?gemm, 1.5 us with ?gemv).
_sgemv = _nbt.ExternalFunction("fastbptt_sgemv", _nbt.void(*([_P] * 11)))
_dgemv = _nbt.ExternalFunction("fastbptt_dgemv", _nbt.void(*([_P] * 11)))
# Up to this many rows, one ?gemv per row beats ?gemm's repacking of W (measured per call
# at T 25: LSTM B 8, H 512: 29 against 63 ms; B 8, H 100: 1.7 against 2.5 ms; B 16-32 even
# or worse, so they keep ?gemm).
_GEMV_ROWS = 8
# Threads: a product below THREAD_MIN multiply-adds (about 3 ms on one core) runs on one
# thread; only the big all-rows products of the medium and large sizes use every core. Why:
# a threaded product synchronises its threads, and when another process holds one of the two
# cores that wait lasts a scheduler slice. Measured on this shared 2-vCPU machine with the
# per-step products of medium threaded (threshold 2^22): 5.2 s per call instead of 0.17 s;
# the time loops make 2·T such products, the big ones are 7 per call. On an idle machine a
# second thread would save about a third of the per-step time at large.
# The setting is the BLAS's thread-local one (OpenBLAS's openblas_set_num_threads_local or
# MKL_Set_Num_Threads_Local), restored before the kernel returns.
THREAD_MIN = 1 << 24
# One-thread products of up to ONE_ROWS rows (a time step's, of a row block or not) go to the
# one-thread library (MKL in auto mode); longer ones (the all-rows products of a row block or
# of a bidirectional direction: T·B rows) stay on OpenBLAS, set to one thread. Measured on one
# core, medians of 5, GFLOP/s MKL against OpenBLAS: rows 64 x 512 x 2048: 77 against 50,
# 256 x 1024 x 2048: 83 against 70; but 512 x 128 x 96 (fastbptt train's head): 69 against
# 81, 1600 x 64 x 512: 63 against 82, 3200 x 256 x 2048: 62 against 89, and Aᵀ B with
# 2048 x 3200 x 256: 71 against 80 (MKL 2026.2's generic kernel blocks long products worse).
ONE_ROWS = 256
# On an AMD CPU with AVX-512 (OPENBLAS_WINS_SMALL_NN), OpenBLAS runs small float32 products
# whose B is used as stored (tb = 0) in its SkylakeX small-matrix kernel, which does not pack
# B: up to ONE_NN_MNK = 10^6 multiply-adds (OpenBLAS's own limit,
# sgemm_small_kernel_permit_skylakex); with B transposed it packs, and MKL runs its generic
# kernel. Measured on one core, µs per product, MKL against OpenBLAS (m x k x n): 16x128x128
# tb0 6.47 against 4.59, tb1 6.46 against 9.82; 16x384x128 tb0 20.6 against 13.6; past the
# limit 16x512x128 tb0 27.4 against 38.6. So a bigger product runs in blocks: columns of C
# (and B) at most ONE_NN_COLS wide, each block's k in chunks (the first with the caller's
# beta, the rest adding) within the limit and at least 32 deep, up to ONE_NN_CHUNKS chunks.
# One-thread products on one core, µs, MKL (tb1 / tb0 whole) against OpenBLAS in blocks:
# 16x128x512 25.4 against 18.5; 32x512x512 189 against 149; 32x512x2048 785 / 1120 against
# 621; 32x2048x512 856 against 598 (k chunks alone, whole width: 611); 64x1024x1024 1552
# against 1268; 64x1024x4096 7010 against 5926. That is why the forward step reads a
# transposed copy of W (:func:`forward_transposed`). Elsewhere nothing is chunked: MKL's
# product whole, as before. Decided from the CPU when this module is imported, so the
# compiled code keeps it (Numba's cache is keyed on the CPU's name and features).
ONE_NN_MNK = 1_000_000
ONE_NN_COLS = 128
ONE_NN_CHUNKS = 64 if OPENBLAS_WINS_SMALL_NN else 1

@njit(inline="always", **_JIT)
def _nn_blocks(m, n, k):
    """(column blocks, chunks of k per block) for a one-thread B-as-stored float32 product
    on the ``_one_nn`` library, each call at most ONE_NN_MNK multiply-adds; (0, 0): too big,
    ``_one`` takes it whole."""
    if m * n * k <= ONE_NN_MNK:
        return 1, 1
    if ONE_NN_CHUNKS == 1:
        return 0, 0
    nb = (n + ONE_NN_COLS - 1) // ONE_NN_COLS
    w = (n + nb - 1) // nb               # the widest block
    deep = ONE_NN_MNK // (m * w)         # the deepest chunk within the limit
    if deep < 32:
        return 0, 0
    nk = (k + deep - 1) // deep
    return (nb, nk) if nk <= ONE_NN_CHUNKS else (0, 0)


_threads_local = _nbt.ExternalFunction("fastbptt_threads_local", _nbt.int32(_nbt.int32))
_one_threads_local = _nbt.ExternalFunction("fastbptt_one_threads_local", _nbt.int32(_nbt.int32))


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


@njit(inline="always", **_JIT)
def gemm_scratch(nthreads, dtype_like):
    """The scratch arrays :func:`gemm` takes, for big products on up to nthreads threads."""
    sc = np.empty(11, np.int32)
    sc[8] = nthreads
    sc[9] = -1
    sc[10] = 0
    return sc, np.empty(2, dtype_like.dtype)


@njit(inline="always", **_JIT)
def restore_threads(scratch):
    """Put back the BLAS thread setting :func:`gemm` found, if it changed it."""
    if scratch[9] != -1:
        _threads_local(scratch[10])
        scratch[9] = -1


def gemm(A, ta, B, tb, C, beta, scratch, fscratch):
    """C = op(A) @ op(B) + beta·C for row-major 2-D arrays, op = transpose if t.

    Columns must be contiguous; rows may be strided (the row stride is the leading dimension).

    scratch int32[11] and fscratch (C's dtype)[2] hold the by-reference Fortran arguments;
    scratch[8] is the most threads a big product may use, scratch[9] the thread count last
    set (-1: none yet) and scratch[10] the caller's setting, for :func:`restore_threads`.
    Callable from Python and from compiled code.
    """
    _gemm(A, int(ta), B, int(tb), C, float(beta), scratch, fscratch)


# Compiled callers pass C-contiguous and strided operands and literal transpose flags, so a
# plain @njit gemm compiled once per combination (five for the first min-char call), each
# re-optimising and re-emitting the BLAS call's code. A compiled call of gemm instead views
# the arrays as layout 'A' and the flags as integers and calls _gemm: one per dtype.
def _choose_gemm(A, ta, B, tb, C, beta, scratch, fscratch):
    if not all(isinstance(t, _nbt.Array) and t.ndim == 2 for t in (A, B, C)):
        return None
    if not all(isinstance(t, (_nbt.Integer, _nbt.Boolean)) for t in (ta, tb)):
        return None
    if not isinstance(beta, (_nbt.Float, _nbt.Integer)):
        return None
    return _gemm, range(8), (A.copy(layout="A"), _nbt.intp, B.copy(layout="A"), _nbt.intp,
                             C.copy(layout="A"), _nbt.float64, scratch, fscratch)


static_dispatch(gemm, _choose_gemm)


@njit(**_JIT)
def _gemm(A, ta, B, tb, C, beta, scratch, fscratch):
    """:func:`gemm` on layout-'A' arrays and integer flags: compiled once per dtype."""
    m, n = C.shape
    k = A.shape[0] if ta else A.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        for i in range(m):
            for j in range(n):
                C[i, j] = C[i, j] * beta if beta != 0 else 0
        return
    fsz = C.itemsize
    # leading dimensions: the row strides; a single row's stride is whatever NumPy left there
    # (any value is valid for a length-1 axis), so it is the row length then, as BLAS wants
    # ld >= max(1, columns)
    lda = A.strides[0] // fsz if A.shape[0] > 1 else max(1, A.shape[1])
    ldb = B.strides[0] // fsz if B.shape[0] > 1 else max(1, B.shape[1])
    ldc = C.strides[0] // fsz if C.shape[0] > 1 else max(1, C.shape[1])
    a = A.ctypes.data
    b = B.ctypes.data
    c = C.ctypes.data
    # row-major C = op(A) op(B)  <=>  column-major Cᵀ = op(B)ᵀ op(A)ᵀ
    scratch[0] = 84 if tb else 78        # 'T' / 'N'
    scratch[1] = 84 if ta else 78
    scratch[2] = n
    scratch[3] = m
    scratch[4] = k
    scratch[5] = ldb                     # leading dimensions: the row strides
    scratch[6] = lda
    scratch[7] = ldc
    fscratch[0] = 1
    fscratch[1] = beta
    s = scratch.ctypes.data
    f = fscratch.ctypes.data
    args = (s, s + 4, s + 8, s + 12, s + 16, f, b, s + 20, a, s + 24, f + fsz, c, s + 28)
    mnk = m * n * k
    if m <= _GEMV_ROWS and mnk < THREAD_MIN:
        # row i of C: y [n] = x op(B), x = row i of op(A) (a column of A, stride lda, when
        # transposed). Row-major B [k, n] is column-major [n, k]: y = B_cm x ('N', n x k);
        # row-major B [n, k] (tb) is column-major [k, n]: y = B_cmᵀ x ('T', k x n).
        scratch[0] = 84 if tb else 78
        scratch[2] = k if tb else n
        scratch[3] = n if tb else k
        scratch[5] = ldb
        scratch[6] = lda if ta else 1     # incx
        scratch[7] = 1                    # incy
        for i in range(m):
            x = a + (i * fsz if ta else i * lda * fsz)
            gargs = (s, s + 8, s + 12, f, b, s + 20, x, s + 24, f + fsz, c + i * ldc * fsz, s + 28)
            if fsz == 4:
                _sgemv(*gargs)
            else:
                _dgemv(*gargs)
        return
    if mnk < _SMALL_GEMM:                       # tiny: OpenBLAS, one thread anyway
        if fsz == 4:
            _sgemm_small(*args)
        else:
            _dgemm_small(*args)
        return
    want = 1 if mnk < THREAD_MIN else scratch[8]
    if want != scratch[9]:
        prev = _threads_local(want)
        if scratch[9] == -1:
            scratch[10] = prev
        scratch[9] = want
    if want == 1 and m <= ONE_ROWS:     # a time step's one-thread product (MKL in auto mode)
        prev1 = _one_threads_local(1)
        nb, nk = _nn_blocks(m, n, k) if fsz == 4 and tb == 0 else (0, 0)
        if nb > 0:
            # C's columns in nb blocks (B's columns), each block's k in nk chunks (usually
            # one of each): C = beta·C + A₁B₁, then C += A_iB_i (B's rows and A's columns,
            # or rows when ta)
            j0 = 0
            for jb in range(nb):
                j1 = n * (jb + 1) // nb
                scratch[2] = j1 - j0
                fscratch[1] = beta
                k0 = 0
                for i in range(nk):
                    k1 = k * (i + 1) // nk
                    scratch[4] = k1 - k0
                    if i > 0:
                        fscratch[1] = 1
                    ai = a + (k0 * lda * fsz if ta else k0 * fsz)
                    _sgemm_one_nn(s, s + 4, s + 8, s + 12, s + 16, f,
                                  b + (k0 * ldb + j0) * fsz, s + 20, ai, s + 24, f + fsz,
                                  c + j0 * fsz, s + 28)
                    k0 = k1
                j0 = j1
        elif fsz == 4:
            _sgemm_one(*args)
        else:
            _dgemm_one(*args)
        _one_threads_local(prev1)
    elif fsz == 4:
        _sgemm(*args)
    else:
        _dgemm(*args)


@njit(**_JIT)
def transpose_into(src, dst):
    """dst [n, m] = srcᵀ for src [m, n], in 32 x 32 tiles (both sides stay in cache)."""
    m, n = src.shape
    for i0 in range(0, m, 32):
        i1 = min(m, i0 + 32)
        for j0 in range(0, n, 32):
            j1 = min(n, j0 + 32)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    dst[j, i] = src[i, j]


LP64_MAX = 2 ** 31          # gemm passes sizes to BLAS as 32-bit ints
NTHREADS = _max_threads()
_PINNED = any(_os.environ.get(v, "").split(",")[0].strip().isdigit()
              for v in ("FASTBPTT_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                        "OMP_NUM_THREADS"))
# [when last looked, threads the big products may use, when a neighbour was last seen,
#  CPU seconds all processes had used then, CPU seconds this process had used then]
_busy = [-1.0, NTHREADS, -1e9, 0.0, 0.0]
_LOOK_EVERY = 0.25        # seconds between two readings
_QUIET_FOR = 2.0          # seconds without a neighbour seen before the cores count as free
_WINDOW_MAX = 1.0         # a CPU-time window longer than this is stale: read the run queue


def _own_running():
    """Threads of this process that are running or runnable now (at least 1: the caller)."""
    n = 0
    for tid in _os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                n += f.read().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue
    return max(1, n)


def _cpu_seconds():
    """(CPU seconds every process has used, CPU seconds this process has used) since boot.

    ``/proc/stat``'s busy time (user, nice, system, irq, softirq, steal: a hypervisor that
    takes a core is a neighbour too) and ``os.times()`` of this process, all its threads.
    (0, 0) where ``/proc/stat`` cannot be read: no neighbour is ever seen then.
    """
    try:
        with open("/proc/stat") as f:
            v = f.readline().split()[1:9]
        busy = (int(v[0]) + int(v[1]) + int(v[2]) + int(v[5]) + int(v[6]) + int(v[7])) / _HZ
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    t = _os.times()
    return busy, t.user + t.system


try:
    _HZ = float(_os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    _HZ = 100.0


def _others_running():
    """Runnable tasks of other processes now (``/proc/loadavg``'s running field less ours)."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        return max(0, running - _own_running())
    except (OSError, ValueError, IndexError):
        return 0


_local = threading.local()


@contextlib.contextmanager
def single_threaded():
    """Within this block, in this thread, every product runs on one thread.

    A row block of :mod:`fastbptt.cpu.parallel` runs in it: the parts already use the cores.
    """
    prev = getattr(_local, "single", False)
    _local.single = True
    try:
        yield
    finally:
        _local.single = prev


def in_single_threaded() -> bool:
    """Whether this thread is inside :func:`single_threaded`."""
    return getattr(_local, "single", False)


def threads_now(clock=None):
    """Threads for this call's big products: the cores no other process is using.

    A threaded product waits for all of its threads at its end; when another process holds
    one of the cores, that wait lasts a scheduler slice and the call collapses (measured
    10x slower at the small size with one core busy, 20x with two threads forced next to
    other work). So the cores other processes use are measured, and the big products get
    only the cores left free:

    * From CPU time, over the window since the last reading (at most every 0.25 s): the
      busy time of every core less this process's own CPU time, per second. That integrates
      over the window, so it sees a neighbour that runs in bursts, and it never counts this
      process's own threads (the BLAS's workers spin for a while after a threaded product).
    * With no reading in the last second (the first call, calls far apart, calls that
      take longer than that) a snapshot of the run queue (``/proc/loadavg``'s running tasks
      less this process's running threads) stands in, the smaller of two taken one after
      the other. One snapshot alone was wrong: on an idle machine it saw a phantom
      neighbour in about 2% of readings, and back-to-back medium calls then ran on one
      thread a third of the time, 1.7x slower.

    The costs are lopsided (a collapse is 10-20x, one thread too few at most 1.7x), so once
    a neighbour is seen the cores count as free again only after 2 s in which none was
    seen. An explicit thread count in the environment (``FASTBPTT_NUM_THREADS``,
    ``OMP_NUM_THREADS``, ...) is followed as it is, and a row block of
    :mod:`fastbptt.cpu.parallel` (:func:`single_threaded`) always gets one thread.
    """
    if in_single_threaded():
        return 1
    if NTHREADS == 1 or _PINNED:
        return NTHREADS
    if clock is None:
        import time
        clock = time.monotonic
    now = clock()
    if now - _busy[0] > _LOOK_EVERY:
        busy, own = _cpu_seconds()
        if now - _busy[0] <= _WINDOW_MAX:
            others = int(((busy - _busy[3]) - (own - _busy[4])) / (now - _busy[0]) + 0.5)
        else:                   # two snapshots: a phantom rarely shows in both
            others = min(_others_running(), _others_running())
        if others > 0:
            _busy[2] = now
            _busy[1] = max(1, NTHREADS - others)
        elif now - _busy[2] >= _QUIET_FOR:
            _busy[1] = NTHREADS
        _busy[0], _busy[3], _busy[4] = now, busy, own
    return _busy[1]
