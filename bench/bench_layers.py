"""Stacked and bidirectional models at the medium size: fastbptt against PyTorch's modules.

``python -m pytest bench/bench_layers.py --benchmark-only --benchmark-group-by=param:cell``:
a 2-layer bidirectional model of each cell (T = 100, B = 64, n_in = 256, H = 512, n_out =
256, float32, cross-entropy over a linear head), loss and every gradient per call, fastbptt's
``backend="cpu"`` beside ``nn.RNN``/``nn.LSTM``/``nn.GRU(num_layers=2, bidirectional=True)``
with the same weights (``fastbptt.to_torch``).
"""
import numpy as np
import pytest

import fastbptt

from conftest import have

T, B, N_IN, H, N_OUT, LAYERS = 100, 64, 256, 512, 256, 2


def _problem(cell):
    rng = np.random.default_rng(0)
    params = fastbptt.init_params(N_IN, H, N_OUT, cell=cell, num_layers=LAYERS, bidirectional=True,
                                  seed=0)
    x = rng.standard_normal((T, B, N_IN)).astype(np.float32)
    y = rng.integers(0, N_OUT, (T, B))
    return params, x, y


def _fastbptt(cell):
    params, x, y = _problem(cell)
    return lambda: fastbptt.loss_and_grad(params, x, y, cell=cell, num_layers=LAYERS,
                                          bidirectional=True)[0]


def _torch(cell):
    import torch
    from fastbptt.bench import n_cores
    torch.set_num_threads(n_cores())
    params, x, y = _problem(cell)
    rnn, head, _ = fastbptt.to_torch(params, cell=cell, num_layers=LAYERS, bidirectional=True)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).reshape(-1)

    def fn():
        for m in (rnn, head):
            for q in m.parameters():
                q.grad = None
        out, _ = rnn(xt)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, N_OUT), yt, reduction="sum")
        loss.backward()
        return loss.item()
    return fn


@pytest.mark.parametrize("impl", ["fastbptt", "torch"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_two_layer_bidirectional(benchmark, cell, impl):
    if impl == "torch" and not have("torch"):
        pytest.skip("torch is not installed")
    fn = (_fastbptt if impl == "fastbptt" else _torch)(cell)
    fn()
    fn()
    benchmark.group = f"2-layer bidirectional {cell}, medium"
    benchmark.extra_info.update(T=T, B=B, n_in=N_IN, H=H, n_out=N_OUT, num_layers=LAYERS)
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=0)
