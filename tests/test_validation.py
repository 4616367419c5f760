"""Bad input: a ValueError/TypeError naming the argument, raised before compiled code runs."""
from __future__ import annotations

import numpy as np
import pytest

import fastbptt
from cases import make_case


def _case(**kw):
    return make_case(T=4, B=3, n_in=4, H=6, n_out=5, **kw)


def _with(case, **changes):
    c = dict(case)
    c.update(changes)
    return c


def _params(case, **changes):
    return dict(case["params"], **changes)


BASE = _case()
IDS = _case(input_kind="onehot")
EMB = _case(input_kind="embed")

BAD = [
    # (case, exception, words the message must contain)
    (_with(BASE, activation="softplus"), ValueError, ["activation", "softplus"]),
    (_with(BASE, loss="hinge"), ValueError, ["loss", "hinge"]),
    (_with(BASE, reduction="max"), ValueError, ["reduction", "max"]),
    (_with(BASE, backend="tpu"), ValueError, ["backend", "tpu"]),
    (_with(BASE, batch_first="yes"), TypeError, ["batch_first"]),
    (_with(BASE, params=[1, 2]), TypeError, ["params", "dict"]),
    (_with(BASE, params={k: v for k, v in BASE["params"].items() if k != "W"}), ValueError, ["params", "'W'"]),
    (_with(BASE, params=_params(BASE, W=np.zeros((6, 5)))), ValueError, ["params['W']", "(6, 5)"]),
    (_with(BASE, params=_params(BASE, U=np.zeros((5, 4)))), ValueError, ["params['U']", "(5, 4)"]),
    (_with(BASE, params=_params(BASE, b=np.zeros(5))), ValueError, ["params['b']", "(5,)"]),
    (_with(BASE, params=_params(BASE, V=np.zeros((5, 7)))), ValueError, ["params['V']", "(5, 7)"]),
    (_with(BASE, params=_params(BASE, c=np.zeros(4))), ValueError, ["params['c']", "(4,)"]),
    (_with(BASE, params=_params(BASE, W=np.zeros((6, 6), dtype=np.int64))), TypeError, ["params['W']", "int64"]),
    (_with(BASE, params=_params(BASE, W=np.zeros((6, 6), dtype=np.float32))), TypeError, ["float32", "float64"]),
    (_with(EMB, params=_params(EMB, E=np.zeros((7, 3)))), ValueError, ["params['E']", "(7, 3)"]),
    (_with(BASE, inputs=BASE["inputs"][0]), ValueError, ["inputs", "3-D", "(3, 4)"]),
    (_with(BASE, inputs=BASE["inputs"][..., :3]), ValueError, ["inputs", "n_in = 4", "(4, 3, 3)"]),
    (_with(BASE, inputs=BASE["inputs"].astype(np.float32)), TypeError, ["inputs", "float32"]),
    (_with(BASE, inputs=BASE["inputs"].astype(np.complex128)), TypeError, ["inputs", "complex128"]),
    (_with(BASE, inputs=np.zeros((0, 3, 4))), ValueError, ["T > 0", "T=0"]),
    (_with(BASE, inputs=np.zeros((4, 0, 4)), targets=np.zeros((4, 0), dtype=int), h0=None),
     ValueError, ["B > 0", "B=0"]),
    (_with(IDS, inputs=IDS["inputs"] + 4), ValueError, ["inputs", "outside [0, 4)"]),
    (_with(IDS, inputs=IDS["inputs"] - 5), ValueError, ["inputs", "outside [0, 4)"]),
    (_with(EMB, inputs=EMB["inputs"] + 7), ValueError, ["inputs", "outside [0, 7)"]),
    (_with(IDS, inputs=IDS["inputs"][..., None]), ValueError, ["inputs", "2-D"]),
    (_with(IDS, inputs=IDS["inputs"].astype(bool)), TypeError, ["inputs", "bool"]),
    (_with(BASE, targets=BASE["targets"] + 5), ValueError, ["targets", "outside [0, 5)"]),
    (_with(BASE, targets=BASE["targets"][:3]), ValueError, ["targets", "[4, 3]", "(3, 3)"]),
    (_with(BASE, targets=BASE["targets"][None]), ValueError, ["targets", "(1, 4, 3)"]),
    (_with(BASE, targets=np.zeros((4, 3, 4))), ValueError, ["targets", "[4, 3, 5]"]),
    (_with(BASE, targets=np.zeros((4, 3, 5), dtype=np.float32)), TypeError, ["targets", "float32"]),
    (_with(BASE, targets=np.zeros(2, dtype=int)), ValueError, ["many-to-one", "[3]", "(2,)"]),
    (_with(BASE, loss="mse"), TypeError, ["targets", "mse"]),
    (_with(BASE, targets=BASE["targets"].astype(bool)), TypeError, ["targets", "bool"]),
    (_with(BASE, h0=np.zeros((3, 5))), ValueError, ["h0", "[3, 6]", "(3, 5)"]),
    (_with(BASE, h0=np.zeros((3, 6), dtype=np.float32)), TypeError, ["h0", "float32"]),
    (_with(BASE, mask=np.ones((3, 4))), ValueError, ["mask", "[4, 3]", "(3, 4)"]),
    (_with(BASE, mask=np.full((4, 3), 0.5)), ValueError, ["mask", "0 and 1"]),
    (_with(BASE, mask=np.ones(4)), ValueError, ["mask", "2-D"]),
    (_with(BASE, truncate=0), ValueError, ["truncate"]),
    (_with(BASE, truncate=(3, 2)), ValueError, ["truncate", "k1 <= k2"]),
    (_with(BASE, truncate=(1, 2, 3)), ValueError, ["truncate"]),
    (_with(BASE, truncate=2.5), ValueError, ["truncate"]),
    (_with(BASE, truncate=True), ValueError, ["truncate"]),
    (_with(BASE, checkpoint=0), ValueError, ["checkpoint"]),
    (_with(BASE, checkpoint="log"), ValueError, ["checkpoint", "log"]),
    (_with(BASE, checkpoint=1.5), ValueError, ["checkpoint"]),
]


@pytest.mark.parametrize("case,exc,words", BAD, ids=[f"{i}-{w[0]}" for i, (_, _, w) in enumerate(BAD)])
@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_bad_input_raises_a_clear_error(case, exc, words, backend):
    with pytest.raises(exc) as info:
        fastbptt.loss_and_grad(**{"backend": backend, **case})
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_validation_happens_before_any_compiled_code(monkeypatch):
    """A bad call never reaches the engine (so never reaches a kernel)."""
    from fastbptt import engine

    def boom(*a, **k):  # pragma: no cover - must not run
        raise AssertionError("engine reached")
    monkeypatch.setattr(engine, "run", boom)
    for case, exc, _ in BAD:
        with pytest.raises(exc):
            fastbptt.loss_and_grad(**case)


@pytest.mark.parametrize("bad,exc,words", [
    (dict(n_in=0), ValueError, ["n_in"]),
    (dict(n_hidden=2.5), ValueError, ["n_hidden"]),
    (dict(n_out=True), ValueError, ["n_out"]),
    (dict(vocab_size=0), ValueError, ["vocab_size"]),
    (dict(dtype=np.int32), TypeError, ["dtype", "int32"]),
])
def test_init_params_rejects_bad_sizes(bad, exc, words):
    kw = dict(n_in=3, n_hidden=4, n_out=2)
    kw.update(bad)
    with pytest.raises(exc) as info:
        fastbptt.init_params(kw.pop("n_in"), kw.pop("n_hidden"), kw.pop("n_out"), **kw)
    assert all(w in str(info.value) for w in words)


def test_layer_api_rejects_bad_input():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3))
    U, W, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 5)), np.zeros(5)
    with pytest.raises(ValueError, match="x must have n_in = 3"):
        fastbptt.rnn_forward(x[..., :2], None, U, W, b)
    with pytest.raises(ValueError, match="W must be square"):
        fastbptt.rnn_forward(x, None, U, W[:, :4], b)
    with pytest.raises(TypeError, match="x has dtype float32"):
        fastbptt.rnn_forward(x.astype(np.float32), None, U, W, b)
    with pytest.raises(ValueError, match=r"h0 must be \[B, H\] = \[2, 5\]"):
        fastbptt.rnn_forward(x, np.zeros((2, 4)), U, W, b)
    with pytest.raises(ValueError, match="activation"):
        fastbptt.rnn_forward(x, None, U, W, b, activation="gelu")
    hs, cache = fastbptt.rnn_forward(x, None, U, W, b)
    with pytest.raises(ValueError, match=r"dhs must be \[4, 2, 5\]"):
        fastbptt.rnn_backward(np.zeros((4, 2, 4)), cache)
    with pytest.raises(TypeError, match="cache"):
        fastbptt.rnn_backward(np.zeros((4, 2, 5)), {"hs": hs})
    g = fastbptt.rnn_backward(np.ones((4, 2, 5)), cache)
    hs[...] = 7.0                  # hs is the caller's copy: the cache does not see this
    for a, e in zip(fastbptt.rnn_backward(np.ones((4, 2, 5)), cache), g):
        np.testing.assert_array_equal(a, e)
