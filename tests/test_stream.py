"""fastbptt.stream: batching a corpus and walking it in intervals with the state carried."""
from __future__ import annotations

import numpy as np
import pytest

import fastbptt
from fastbptt import stream as S
from tolerances import EXACT64


def _corpus(n=203, vocab=11, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=n)


def test_batch_stream_layout():
    ids = np.arange(23)
    d = S.batch_stream(ids, 4)                                 # L = 5, ids 20..22 dropped
    assert d.shape == (5, 4) and d.dtype == np.int64 and d.flags.c_contiguous
    np.testing.assert_array_equal(d[:, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(d[:, 3], [15, 16, 17, 18, 19])
    np.testing.assert_array_equal(S.batch_stream(ids.astype(np.uint8), 4), d)


@pytest.mark.parametrize("ids,B,err", [(np.arange(10), 0, ValueError), (np.arange(10), 2.0, ValueError),
                                       (np.zeros((3, 4), int), 2, ValueError),
                                       (np.arange(10.0), 2, TypeError), (np.arange(5), 3, ValueError)])
def test_batch_stream_rejects(ids, B, err):
    with pytest.raises(err, match="ids|B"):
        S.batch_stream(ids, B)


@pytest.mark.parametrize("k", [1, 3, 7, 50, 60])
@pytest.mark.parametrize("embed", [False, True])
def test_accumulated_intervals_equal_truncate_k(k, embed):
    data = S.batch_stream(_corpus(), 4)                        # [50, 4]
    params = fastbptt.init_params(11, 6, 11, vocab_size=11 if embed else None, dtype=np.float64, seed=1)
    h0 = np.random.default_rng(2).standard_normal((4, 6))
    loss, grads, h = S.accumulate(params, data, k, h0=h0)
    want_loss, want, want_h = fastbptt.loss_and_grad(params, data[:-1], data[1:], h0, truncate=k)
    np.testing.assert_allclose(loss, want_loss, **EXACT64)
    for n in want:
        np.testing.assert_allclose(grads[n], want[n], err_msg=n, **EXACT64)
    np.testing.assert_allclose(h, want_h, **EXACT64)


def test_intervals_carry_state_and_see_updates():
    data = S.batch_stream(_corpus(), 4)                        # 49 predicting steps
    params = fastbptt.init_params(11, 6, 11, dtype=np.float64, seed=3)
    st = S.TBPTTStream(data, 10, reduction="mean")
    assert len(st) == 5 and st.n_intervals == 5
    # the same loop written out by hand, min-char-rnn style
    p2 = {n: v.copy() for n, v in params.items()}
    h = None
    got = []
    for i, (loss, grads, hl) in enumerate(st.intervals(params)):
        a, e = 10 * i, min(49, 10 * i + 10)
        wl, wg, wh = fastbptt.loss_and_grad(p2, data[a:e], data[a + 1:e + 1], h, reduction="mean")
        np.testing.assert_allclose(loss, wl, **EXACT64)
        np.testing.assert_allclose(hl, wh, **EXACT64)
        for n in params:                                       # in-place SGD on both copies
            params[n] -= 0.5 * grads[n]
            p2[n] -= 0.5 * wg[n]
        h = wh
        got.append(loss)
    assert len(got) == 5 and st.done() and st.pos == 49
    with pytest.raises(StopIteration):
        st.step(params)
    st.reset()
    assert st.pos == 0 and st.h is None and not st.done()


def test_callable_params_drop_last_resume_and_kwargs():
    data = S.batch_stream(_corpus(), 4)
    params = fastbptt.init_params(11, 6, 11, dtype=np.float64, seed=4)
    box = {"p": params}
    st = S.TBPTTStream(data, 10, drop_last=True, checkpoint=2)
    n = sum(1 for _ in st.intervals(lambda: box["p"]))
    assert n == 4 and st.pos == 40 and st.done()
    # resuming at pos with a carried state continues exactly where a pass left off
    full = S.TBPTTStream(data, 10)
    outs = [full.step(params) for _ in range(3)]
    resumed = S.TBPTTStream(data, 10, pos=20, h0=outs[1][2])
    l3, g3, h3 = resumed.step(params)
    np.testing.assert_allclose(l3, outs[2][0], **EXACT64)
    np.testing.assert_allclose(h3, outs[2][2], **EXACT64)
    # iter_intervals is the functional form
    losses = [l for l, _, _ in S.iter_intervals(params, data, 25)]
    assert len(losses) == 2


@pytest.mark.parametrize("kw,err", [(dict(k=0), ValueError), (dict(k=2.5), ValueError),
                                    (dict(pos=-1), ValueError), (dict(pos=100), ValueError),
                                    (dict(mask=None), TypeError)])
def test_stream_rejects(kw, err):
    data = S.batch_stream(_corpus(), 4)
    kw = dict(dict(k=5), **kw)
    with pytest.raises(err):
        S.TBPTTStream(data, **kw)
    with pytest.raises(ValueError, match="data"):
        S.TBPTTStream(np.zeros((1, 3), int), 2)
    with pytest.raises(TypeError, match="data"):
        S.TBPTTStream(np.zeros((5, 3)), 2)


def test_lazy_submodule():
    assert fastbptt.stream is S
    assert fastbptt.memory.estimate is not None
