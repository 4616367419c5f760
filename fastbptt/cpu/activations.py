"""Activation functions on the CPU, each written once: scalar, vectorisable, for every cell.

float32 uses :func:`tanh_f32` (a rational approximation that compiles to SIMD code; Numba's
``np.tanh``/``np.exp`` are scalar libm calls) and ``σ(v) = ½ + ½·tanh(v/2)``; float64 uses
:func:`tanh_f64` and :func:`sigmoid_f64` (Cephes' rational forms and an :func:`exp_f64` whose
power of two is built from bits, so it vectorises too). The choice is made by the element size of an array argument (``like``), a compile-time
constant, so each compiled kernel contains one branch only. Derivatives are written in terms
of the saved output y = f(a), as the backward passes use them.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .._jit import njit
from ._static import static_dispatch

_JIT = dict(cache=True, nogil=True, error_model="numpy")

TANH, SIGMOID, RELU = 0, 1, 2     # the Elman cell's activation codes (fastbptt._validate.ACTIVATIONS)


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


# exp_f64, tanh_f64 and sigmoid_f64 are left to LLVM to inline: Numba's IR inlining
# (inline="always") made no faster code, compiled longer and raised NumbaIRAssumptionWarning.
@intrinsic
def _f64_bits(typingctx, x):
    """The IEEE-754 bits of a float64 as an int64 (a register move, vectorisable)."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx, n):
    """The float64 whose IEEE-754 bits are the int64 n."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


_ROUND = 6755399441055744.0        # 1.5·2^52: adding it rounds |t| < 2^51 to an integer


@njit(**_JIT)
def exp_f64(x):
    """e^x of a float64 scalar, within about 1 ulp (Cephes' ``exp``), in straight-line code.

    x = n·ln2 + r with |r| ≤ ½ln2 (Cody-Waite), e^r from Cephes' [2/3] Padé form, and 2^n
    built from its bits in two factors 2^(n//2)·2^(n - n//2), so subnormal results round
    once and overflow gives inf. NaN passes through. libm's ``exp`` is a call per element.
    """
    xc = 710.0 if x > 710.0 else (-746.0 if x < -746.0 else x)
    t = (xc if xc == xc else 0.0) * 1.4426950408889634 + _ROUND
    nf = t - _ROUND                                    # round(x / ln2), exact
    n = _f64_bits(t) - _f64_bits(_ROUND)
    r = xc - nf * 6.93145751953125e-1 - nf * 1.42860682030941723212e-6
    rr = r * r
    p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
             + 9.99999999999999999910e-1)
    q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
         + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0
    e = 1.0 + 2.0 * (p / (q - p))
    n1 = n >> 1
    return e * _bits_f64((n1 + 1023) << 52) * _bits_f64((n - n1 + 1023) << 52)


@njit(**_JIT)
def tanh_f64(v):
    """tanh of a float64 scalar, within a few ulp, in straight-line code (Cephes' ``tanh``).

    |v| < 0.625: v + v·v²·P(v²)/Q(v²) (subnormals pass unchanged); else
    1 − 2/(e^{2|v|} + 1) with :func:`exp_f64`, |v| clamped at 22 where tanh rounds to 1.
    """
    a = -v if v < 0 else v
    z = v * v
    p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z - 1.61468768441708447952e3
    q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z + 4.84406305325125486048e3
    small = v + v * (z * (p / q)) if z != 0 else v     # ±0 and subnormals keep their sign
    ac = 22.0 if a > 22.0 else a                       # NaN passes through
    big = 1.0 - 2.0 / (exp_f64(ac + ac) + 1.0)
    big = -big if v < 0 else big
    return small if a < 0.625 else big


@njit(**_JIT)
def sigmoid_f64(v):
    """σ(v) = 1 / (1 + e^-v) of a float64 scalar with :func:`exp_f64` (a few ulp)."""
    return 1.0 / (1.0 + exp_f64(-v))


@njit(**_JIT)
def f64_array(kind, x, out):
    """out = exp_f64 (kind 0), tanh_f64 (1) or sigmoid_f64 (2) of 1-D float64 x (for tests)."""
    for i in range(x.shape[0]):
        if kind == 0:
            out[i] = exp_f64(x[i])
        elif kind == 1:
            out[i] = tanh_f64(x[i])
        else:
            out[i] = sigmoid_f64(x[i])


def tanh_s(v):
    """tanh of a float scalar: :func:`tanh_f32` for float32, :func:`tanh_f64` for float64."""
    return np.tanh(v)


def sigmoid_s(v):
    """σ(v) = 1 / (1 + e^-v) of a float scalar (float32: ½ + ½·tanh_f32(v/2))."""
    return 1.0 / (1.0 + np.exp(-v))


@njit(**_JIT)
def sigmoid_f32(v):
    """σ(v) of a float32 scalar as ½ + ½·tanh_f32(v/2): vectorisable like :func:`tanh_f32`."""
    h = np.float32(0.5)
    return h * tanh_f32(h * v) + h


# The scalar functions are chosen by the argument's type when a kernel compiles: the call
# goes straight to that dtype's function, which LLVM inlines (no runtime branch, no call
# per element), so the loops around them vectorise.
_SCALAR = {"tanh": {types.float32: tanh_f32, types.float64: tanh_f64},
           "sigmoid": {types.float32: sigmoid_f32, types.float64: sigmoid_f64}}
static_dispatch(tanh_s, lambda v: (_SCALAR["tanh"][v], (0,), None) if v in _SCALAR["tanh"] else None)
static_dispatch(sigmoid_s, lambda v: (_SCALAR["sigmoid"][v], (0,), None)
                if v in _SCALAR["sigmoid"] else None)
