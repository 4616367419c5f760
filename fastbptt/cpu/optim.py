"""``fastbptt train``'s optimizer step, compiled: one pass over each parameter.

NumPy's Adam update (:func:`fastbptt.train.apply_update`) makes about ten temporary arrays
per parameter; at ``fastbptt train``'s size it took 10% of the training step. The kernel
does the same arithmetic in the same order, one element at a time, in the parameters'
dtype: the results are NumPy's bit for bit (``tests/test_cli_train.py`` compares them),
so training runs are the same with either.
"""
from __future__ import annotations

import numpy as np

from .._jit import njit


@njit(cache=True, nogil=True, error_model="numpy")
def adam_step(p, g, m, v, k, newp, newm, newv):
    """One Adam step of a parameter, all 1-D arrays of one dtype; the inputs are read only.

    k: ``[b1, 1 - b1, b2, 1 - b2, 1 - b1**t, 1 - b2**t, lr, eps]`` in that dtype (NumPy
    casts a Python float to the array's dtype before it operates, so these are its operands).
    """
    for i in range(p.size):
        gi = g[i]
        mi = k[0] * m[i] + k[1] * gi
        vi = k[2] * v[i] + k[3] * (gi * gi)
        mh = mi / k[4]
        vh = vi / k[5]
        newp[i] = p[i] - k[6] * mh / (np.sqrt(vh) + k[7])
        newm[i] = mi
        newv[i] = vi
