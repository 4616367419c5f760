"""Activation functions and their derivatives in NumPy, written once for every cell.

Derivatives are written in terms of the saved output y = f(a), as the backward passes use
them: no pre-activation is kept.
"""
import numpy as np


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def tanh(a):
    return np.tanh(a)


def relu(a):
    return np.maximum(a, 0)


def dsigmoid(y):
    return y * (1 - y)


def dtanh(y):
    return 1 - y * y


def drelu(y):
    return (y > 0).astype(y.dtype)


ACTIVATE = {"tanh": tanh, "sigmoid": sigmoid, "relu": relu}
DERIVATIVE = {"tanh": dtanh, "sigmoid": dsigmoid, "relu": drelu}
