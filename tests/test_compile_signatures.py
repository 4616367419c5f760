"""The compiled kernels specialise per cell and dtype only: calls never add signatures.

Every signature is one more compilation on a cold first call (several seconds each), so the
fused kernel's branches that depend on values (one-hot ids or float inputs, the loss kind)
must stay runtime branches, not new specialisations. Counted on float32 only, so what
other tests compiled in this process (float64) does not matter. (The helpers the fused
kernel calls are compiled into it and, loaded from the on-disk cache, show no signatures of
their own: only the kernel's count is meaningful.)
"""
import numba
import numpy as np
import pytest

import fastbptt
from fastbptt.cpu import fused

CELLS = ("rnn", "lstm", "gru")


def _f32(dispatcher):
    """The dispatcher's signatures that take float32 arrays."""
    return {s for s in dispatcher.signatures
            if any(getattr(a, "dtype", None) == numba.float32 for a in s)}


def _calls(cell):
    """One call per input kind and loss: one-hot ids, float rows, probability targets, MSE."""
    T, B, n, H = 4, 3, 5, 6
    rng = np.random.default_rng(0)
    p = fastbptt.init_params(n, H, n, cell=cell, dtype=np.float32, seed=0)
    ids = rng.integers(0, n, (T, B))
    xf = rng.standard_normal((T, B, n)).astype(np.float32)
    probs = rng.dirichlet(np.ones(n), (T, B)).astype(np.float32)
    fastbptt.loss_and_grad(p, ids, ids, cell=cell)
    fastbptt.loss_and_grad(p, xf, ids, cell=cell)
    fastbptt.loss_and_grad(p, xf, probs, cell=cell)
    fastbptt.loss_and_grad(p, xf, xf, cell=cell, loss="mse", reduction="mean")


@pytest.fixture(scope="module")
def compiled():
    for cell in CELLS:
        _calls(cell)


def test_fused_kernel_one_signature_per_cell(compiled):
    # the cell picks the pointwise code at compile time (its tag's dtype): one each, and
    # every call above took the fused kernel (none of them fell back to another path)
    assert len(_f32(fused.fused_full_bptt)) == len(CELLS)


def test_repeat_calls_add_no_signature(compiled):
    counts = {d: len(_f32(d)) for d in (fused.fused_full_bptt,)}
    for cell in CELLS:
        _calls(cell)
    assert {d: len(_f32(d)) for d in counts} == counts
