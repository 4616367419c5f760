"""The compat adapters against the original scripts' algorithms, on each script's default sizes.

Run (each pair side by side, medians in the table, group = one adapter)::

    python -m pytest bench/bench_compat.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name

"original" is the plain re-implementation in tests/originals/ (the original's algorithm and
per-step NumPy loop); "fastbptt" is the drop-in from :mod:`fastbptt.compat`. Both compute the
same float64 results (tests/test_compat.py checks it). Sizes:

* min-char-rnn: the gist's defaults, hidden 100, seq_length 25, vocabulary 65 (tiny
  Shakespeare's character set), one ``lossFun`` call;
* CS231n: the RNN captioning assignment's overfitting run, N = 25 captions of T = 16 words,
  wordvec D = 256, hidden H = 512, ``rnn_forward`` + ``rnn_backward``;
* WildML: the tutorial's vocabulary 8000, hidden 100, bptt_truncate 4, a 15-word sentence,
  one ``bptt`` call.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))

from originals import cs231n as orig_cs231n          # noqa: E402
from originals import min_char_rnn as orig_mcr       # noqa: E402
from originals import wildml as orig_wildml          # noqa: E402

from fastbptt import compat                          # noqa: E402

IMPLS = ("original", "fastbptt")


@pytest.mark.parametrize("impl", IMPLS)
def test_min_char_rnn(benchmark, impl):
    benchmark.group = "min-char-rnn lossFun (H=100, seq 25, vocab 65)"
    rng = np.random.default_rng(0)
    H, V, T = 100, 65, 25
    Wxh, Whh, Why = (rng.standard_normal(s) * 0.01 for s in ((H, V), (H, H), (V, H)))
    bh, by = np.zeros((H, 1)), np.zeros((V, 1))
    make = orig_mcr.make_lossfun if impl == "original" else compat.min_char_rnn
    lossFun = make(Wxh, Whh, Why, bh, by)
    inputs, targets = list(rng.integers(0, V, T)), list(rng.integers(0, V, T))
    hprev = np.zeros((H, 1))
    lossFun(inputs, targets, hprev)                   # compile / warm up outside the timing
    benchmark(lossFun, inputs, targets, hprev)


@pytest.mark.parametrize("impl", IMPLS)
def test_cs231n(benchmark, impl):
    benchmark.group = "CS231n rnn_forward + rnn_backward (N=25, T=16, D=256, H=512)"
    rng = np.random.default_rng(0)
    N, T, D, H = 25, 16, 256, 512
    x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    Wx, Wh = rng.standard_normal((D, H)) / np.sqrt(D), rng.standard_normal((H, H)) / np.sqrt(H)
    b, dh = np.zeros(H), rng.standard_normal((N, T, H))
    mod = orig_cs231n if impl == "original" else compat.cs231n

    def step():
        _, cache = mod.rnn_forward(x, h0, Wx, Wh, b)
        return mod.rnn_backward(dh, cache)

    step()
    benchmark(step)


@pytest.mark.parametrize("impl", IMPLS)
def test_wildml(benchmark, impl):
    benchmark.group = "WildML bptt (vocab 8000, H=100, bptt_truncate 4, 15 words)"
    rng = np.random.default_rng(0)
    H, vocab, T = 100, 8000, 15
    U = rng.uniform(-1, 1, (H, vocab)) / np.sqrt(vocab)
    V = rng.uniform(-1, 1, (vocab, H)) / np.sqrt(H)
    W = rng.uniform(-1, 1, (H, H)) / np.sqrt(H)
    x, y = list(rng.integers(0, vocab, T)), list(rng.integers(0, vocab, T))
    f = orig_wildml.bptt if impl == "original" else compat.wildml.bptt
    f(x, y, U, V, W, 4)
    benchmark(f, x, y, U, V, W, 4)
