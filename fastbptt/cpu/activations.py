"""Activation functions on the CPU, each written once: scalar, vectorisable, for every cell.

float32 uses :func:`tanh_f32` (a rational approximation that compiles to SIMD code; Numba's
``np.tanh``/``np.exp`` are scalar libm calls) and ``σ(v) = ½ + ½·tanh(v/2)``; float64 uses
libm. The choice is made by the element size of an array argument (``like``), a compile-time
constant, so each compiled kernel contains one branch only. Derivatives are written in terms
of the saved output y = f(a), as the backward passes use them.
"""
from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from .._jit import njit

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


def tanh_s(v):
    """tanh of a float scalar: :func:`tanh_f32` for float32, libm for float64."""
    return np.tanh(v)


def sigmoid_s(v):
    """σ(v) = 1 / (1 + e^-v) of a float scalar (float32: ½ + ½·tanh_f32(v/2))."""
    return 1.0 / (1.0 + np.exp(-v))


# The scalar functions are chosen by the argument's type when a kernel compiles and inlined
# there: no runtime branch, no call per element, so the loops around them vectorise.
@overload(tanh_s, inline="always")
def _tanh_s(v):
    if v == types.float32:
        return lambda v: tanh_f32(v)
    return lambda v: np.tanh(v)


@overload(sigmoid_s, inline="always")
def _sigmoid_s(v):
    if v == types.float32:
        def f32(v):
            h = np.float32(0.5)
            return h * tanh_f32(h * v) + h
        return f32
    return lambda v: 1.0 / (1.0 + np.exp(-v))
