"""The pointwise math of every CUDA kernel, written once: device functions per float dtype.

Each function is a ``@cuda.jit(device=True)`` closure over typed constants, so a float32 kernel
stays in float32 (a bare ``1.0`` would promote it to float64). Derivatives are taken from the
saved output (``1 - h²`` for tanh), never by recomputing the activation.

The Elman cell's activation is an integer code, as on the CPU: 0 tanh, 1 sigmoid, 2 relu.
"""
from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import cuda, float32, float64


def nbfloat(dtype):
    """The numba float type of ``dtype`` (float32 or float64): typed shared arrays, casts."""
    return float32 if np.dtype(dtype) == np.float32 else float64


@functools.lru_cache(maxsize=None)
def build(dtype):
    """The device functions for float ``dtype`` (np.float32 or np.float64)."""
    dtype = np.dtype(dtype)
    one = dtype.type(1)
    zero = dtype.type(0)

    @cuda.jit(device=True)
    def sigmoid(a):
        return one / (one + math.exp(-a))

    @cuda.jit(device=True)
    def tanh(a):
        return math.tanh(a)

    @cuda.jit(device=True)
    def dsigmoid(s):
        """σ' from s = σ(a)."""
        return s * (one - s)

    @cuda.jit(device=True)
    def dtanh(t):
        """tanh' from t = tanh(a)."""
        return one - t * t

    @cuda.jit(device=True)
    def activate(a, act):
        """f(a) for activation code ``act``: tanh, sigmoid or relu."""
        if act == 0:
            return math.tanh(a)
        if act == 1:
            return one / (one + math.exp(-a))
        return a if a > zero else zero

    @cuda.jit(device=True)
    def derivative(h, act):
        """f'(a) from h = f(a): 1 - h², h(1 - h), [h > 0]."""
        if act == 0:
            return one - h * h
        if act == 1:
            return h * (one - h)
        return one if h > zero else zero

    return SimpleNamespace(sigmoid=sigmoid, tanh=tanh, dsigmoid=dsigmoid, dtanh=dtanh,
                           activate=activate, derivative=derivative)
