"""Stacked and bidirectional models on ``backend="cuda"`` under the simulator, against the
CPU backend (itself tested against the NumPy reference and PyTorch): every cell, two layers,
one-way and bidirectional, with and without a mask, and truncation."""
import numpy as np
import pytest

import fastbptt
from tolerances import CUDA64

CELLS = ["rnn", "lstm", "gru"]


def make_case(cell, D, *, masked, T=4, B=2, n_in=3, H=3, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    params = fastbptt.init_params(n_in, H, n_out, cell=cell, num_layers=2, bidirectional=D == 2,
                                  dtype=np.float64, seed=seed)
    for k in params:                                  # non-zero biases, larger weights
        params[k] = params[k] + 0.3 * rng.standard_normal(params[k].shape)
    x = rng.standard_normal((T, B, n_in))
    y = rng.integers(0, n_out, size=(T, B))
    m = None
    if masked:                                        # right-padded: sequence 1 is shorter
        m = np.ones((T, B))
        m[T - 1:, 1] = 0
    h0 = rng.standard_normal((2 * D, B, H))
    state = (h0, rng.standard_normal((2 * D, B, H))) if cell == "lstm" else h0
    return params, x, y, m, state


def assert_same(got, want):
    np.testing.assert_allclose(got[0], want[0], **CUDA64)
    assert set(got[1]) == set(want[1])
    for k in want[1]:
        np.testing.assert_allclose(got[1][k], want[1][k], err_msg=k, **CUDA64)
    for g, w in zip(*(s if isinstance(s, tuple) else (s,) for s in (got[2], want[2]))):
        np.testing.assert_allclose(g, w, **CUDA64)


@pytest.fixture
def layer_calls(monkeypatch):
    """Count the CUDA layer calls, so a silent fallback to the CPU cannot pass."""
    import fastbptt.cuda as fc
    calls = []
    real = fc.layer_forward

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(fc, "layer_forward", counted)   # the name fastbptt.layer calls
    return calls


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_stacked_cuda_equals_cpu(cell, bidirectional, masked, layer_calls):
    params, x, y, m, state = make_case(cell, 2 if bidirectional else 1, masked=masked)
    kw = dict(cell=cell, num_layers=2, bidirectional=bidirectional, mask=m)
    want = fastbptt.loss_and_grad(params, x, y, state, backend="cpu", **kw)
    got = fastbptt.loss_and_grad(params, x, y, state, backend="cuda", **kw)
    assert_same(got, want)
    assert len(layer_calls) >= 2 * (2 if bidirectional else 1)   # every layer and direction


@pytest.mark.parametrize("cell", CELLS)
def test_stacked_cuda_truncation_equals_cpu(cell):
    params, x, y, m, state = make_case(cell, 1, masked=True, seed=1)
    kw = dict(cell=cell, num_layers=2, mask=m, truncate=(2, 3))
    want = fastbptt.loss_and_grad(params, x, y, state, backend="cpu", **kw)
    got = fastbptt.loss_and_grad(params, x, y, state, backend="cuda", **kw)
    assert_same(got, want)
