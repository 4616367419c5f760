"""Wrong answers and misleading or escaping errors found by the second robustness round."""
from __future__ import annotations

import numpy as np
import pytest

import fastbptt
from cases import make_case
from fastbptt.memory import estimate
from fastbptt.stream import accumulate, batch_stream
from tolerances import EXACT64, TANH32_ULP


# --------------------------------------------------------------------------- params with E
@pytest.mark.parametrize("extra", [{}, dict(truncate=2), dict(checkpoint=1), dict(mask="m")],
                         ids=["full", "truncate", "checkpoint", "mask"])
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_embedding_table_with_float_inputs_is_one_clear_error_everywhere(backend, extra):
    case = make_case(input_kind="float", T=4, B=2, n_in=3)
    case["params"]["E"] = np.ones((5, 3))
    if "mask" in extra:
        extra = dict(mask=np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"params has 'E'.*inputs are floats of shape \(4, 2, 3\)"):
        fastbptt.loss_and_grad(**dict(case, **extra), backend=backend)


# --------------------------------------------------------------------------- memory.estimate
def test_estimate_takes_numpy_integer_sizes_without_overflow():
    sizes = [100000, 64, 256, 1024, 256]
    want = estimate(*sizes).total
    assert want > 2 ** 31
    for dt in (np.int32, np.int64, np.uint32):
        assert estimate(*(dt(v) for v in sizes)).total == want
    assert estimate(np.uint8(200), 1, 1, 1, 1).total == estimate(200, 1, 1, 1, 1).total


@pytest.mark.parametrize("kw, exc, word", [
    (dict(dtype=np.int8), TypeError, "dtype"), (dict(dtype=None), TypeError, "dtype"),
    (dict(dtype="float16"), TypeError, "dtype"), (dict(vocab_size=-5), ValueError, "vocab_size"),
    (dict(vocab_size=2.5), ValueError, "vocab_size"), (dict(inputs=["float"]), ValueError, "inputs")])
def test_estimate_bad_arguments_name_themselves(kw, exc, word):
    with pytest.raises(exc, match=word):
        estimate(10, 2, 3, 4, 5, **kw)


# --------------------------------------------------------------------------- float32 extremes
def test_fast_tanh_is_exact_for_tiny_and_subnormal_inputs():
    from fastbptt.cpu import tanh_f32_array
    x = np.geomspace(1.4e-45, 1e-3, 200001).astype(np.float32)
    x = np.concatenate([x, -x, np.float32([0.0, -0.0])])
    out = np.empty_like(x)
    tanh_f32_array(x, out)
    want = np.tanh(x.astype(np.float64)).astype(np.float32)
    ulp = np.abs(out.view(np.int32).astype(np.int64) - want.view(np.int32))
    assert ulp.max() <= TANH32_ULP, (ulp.max(), x[ulp.argmax()])
    assert np.array_equal(np.signbit(out), np.signbit(x))
    tiny = np.abs(x) < 1e-40                     # subnormals kept: exact this far below 1e-38
    assert tiny.sum() > 1000
    np.testing.assert_array_equal(out[tiny], x[tiny])


@pytest.mark.parametrize("extra", [{}, dict(truncate=2), dict(checkpoint=2)])
def test_float32_subnormal_states_are_kept_through_the_api(extra):
    H = 3
    p = {"U": np.zeros((H, 1), np.float32), "W": np.eye(H, dtype=np.float32),
         "b": np.zeros(H, np.float32), "V": np.ones((2, H), np.float32), "c": np.zeros(2, np.float32)}
    h0 = np.float32([[1e-45, -3e-42, 1e-40]])
    x, y = np.zeros((5, 1, 1), np.float32), np.zeros((5, 1), np.int64)
    ref = fastbptt.loss_and_grad(p, x, y, h0, backend="numpy", **extra)
    got = fastbptt.loss_and_grad(p, x, y, h0, backend="cpu", **extra)
    np.testing.assert_array_equal(got[2], ref[2])
    np.testing.assert_array_equal(got[2], h0)                    # tanh(h) = h this small


def _near_overflow_cases(n):
    """float32 problems with one parameter (or the targets, or h0) near float32's maximum."""
    rng = np.random.default_rng(0)
    for i in range(n):
        T, B, I, H, O = (int(v) for v in rng.integers(1, 5, 5))
        p = fastbptt.init_params(I, H, O, seed=i)

        def big(shape):
            return (rng.choice([-1, 1], shape) * 10 ** rng.uniform(30, 38.5, shape)).astype(np.float32)
        which = rng.choice(["c", "V", "y", "h0", "b"])
        kind = rng.choice(["ids", "probs", "mse"])
        y = rng.integers(0, O, (T, B)) if kind == "ids" else rng.random((T, B, O)).astype(np.float32)
        h0 = None
        if which in ("c", "V", "b"):
            p[which] = big(p[which].shape)
        elif which == "y" and kind != "ids":
            y = big(y.shape)
        elif which == "h0":
            h0 = big((B, H))
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        yield p, x, y, h0, dict(loss="mse" if kind == "mse" else "cross_entropy",
                                activation=str(rng.choice(["tanh", "relu", "sigmoid"])))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_float32_losses_near_overflow_have_the_reference_inf_pattern():
    """Losses are summed in float64 on every backend, so whether the loss overflows agrees
    with the reference even for logits and targets near 3.4e38 (before: 10 of these 400
    cases differed, e.g. reference inf where the CPU gave 2.06e39). Gradients there may
    still differ in which entries overflow: BLAS chooses the summation order (README)."""
    n_inf = 0
    for p, x, y, h0, kw in _near_overflow_cases(400):
        ref = fastbptt.loss_and_grad(p, x, y, h0, backend="numpy", **kw)[0]
        got = fastbptt.loss_and_grad(p, x, y, h0, backend="cpu", **kw)[0]
        assert np.isfinite(got) == np.isfinite(ref), (kw, ref, got)
        n_inf += not np.isfinite(ref)
    assert n_inf > 0                               # the cases do reach float32's overflow
    p = fastbptt.init_params(2, 3, 4, seed=0)
    p["c"][:] = [3e38, -3e38, 0, 0]                # log p of the second class is -6e38
    y = np.full((2, 1, 4), 0.25, np.float32)
    x = np.ones((2, 1, 2), np.float32)
    ref = fastbptt.loss_and_grad(p, x, y, backend="numpy")[0]
    got = fastbptt.loss_and_grad(p, x, y, backend="cpu")[0]
    assert np.isfinite(ref)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


# --------------------------------------------------------------------------- the layer API
def test_rnn_forward_validates_batch_first():
    x = np.zeros((3, 2, 4))
    U, W, b = np.zeros((5, 4)), np.zeros((5, 5)), np.zeros(5)
    for bad in ("False", 1, None):
        with pytest.raises(TypeError, match="batch_first must be a bool"):
            fastbptt.rnn_forward(x, None, U, W, b, batch_first=bad)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_writing_into_returned_states_does_not_change_the_backward_pass(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3))
    U, W, b = rng.standard_normal((5, 3)), 0.5 * rng.standard_normal((5, 5)), np.zeros(5)
    dhs = rng.standard_normal((4, 2, 5))
    hs, cache = fastbptt.rnn_forward(x, None, U, W, b, backend=backend)
    want = fastbptt.rnn_backward(dhs, cache)
    hs2, cache2 = fastbptt.rnn_forward(x, None, U, W, b, backend=backend)
    hs2.flags.writeable = True                    # possible for a view of a writeable cache
    hs2[...] = 7.0
    got = fastbptt.rnn_backward(dhs, cache2)
    for a, w in zip(got, want):
        np.testing.assert_allclose(a, w, **EXACT64)


# --------------------------------------------------------------------------- gradcheck
def _fun():
    case = make_case(T=3, B=2)
    args = {k: v for k, v in case.items() if k != "params"}
    return (lambda q: fastbptt.loss_and_grad(q, **args)[:2]), case["params"]


@pytest.mark.parametrize("kw, exc, word", [
    (dict(eps=0), ValueError, "eps"), (dict(eps=float("nan")), ValueError, "eps"),
    (dict(eps=-1e-3), ValueError, "eps"), (dict(keys=[]), ValueError, "keys"),
    (dict(keys=["nope"]), ValueError, "nope"), (dict(keys="W"), TypeError, "keys"),
    (dict(directions=0, elements=0), ValueError, "directions and elements"),
    (dict(elements=-1), ValueError, "elements"), (dict(directions=1.5), ValueError, "directions"),
    (dict(tol=0), ValueError, "tol")])
def test_gradcheck_bad_arguments_name_themselves(kw, exc, word):
    fun, params = _fun()
    with pytest.raises(exc, match=word):
        fastbptt.gradcheck(fun, params, **kw)


@pytest.mark.parametrize("params, exc", [(None, TypeError), ({}, ValueError)])
def test_gradcheck_without_params(params, exc):
    fun, _ = _fun()
    with pytest.raises(exc, match="params"):
        fastbptt.gradcheck(fun, params)


def test_gradcheck_truthiness_means_passed():
    fun, params = _fun()
    good = fastbptt.gradcheck(fun, params, directions=1, elements=2, seed=0)
    assert good.passed and bool(good)

    def half_wrong(q):
        loss, g = fun(q)
        return loss, dict(g, W=0.5 * g["W"])
    bad = fastbptt.gradcheck(half_wrong, params, directions=1, elements=2, seed=0)
    assert not bad.passed and not bool(bad) and bad.worst.startswith("W")

    def nan_grad(q):
        loss, g = fun(q)
        return loss, dict(g, b=np.full_like(g["b"], np.nan))
    res = fastbptt.gradcheck(nan_grad, params, directions=1, elements=2, seed=0)
    assert np.isnan(res.max_rel_error) and res.worst.startswith("b") and not res


# --------------------------------------------------------------------------- init_params
@pytest.mark.parametrize("seed", [-1, 1.5, "x"])
def test_init_params_bad_seed_names_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        fastbptt.init_params(2, 3, 4, seed=seed)


# --------------------------------------------------------------------------- messages
def test_batch_first_shape_errors_speak_batch_first():
    case = make_case(T=5, B=3, batch_first=True)
    with pytest.raises(ValueError, match=r"mask must be \[B, T\] = \[3, 5\] \(batch_first=True\); "
                                         r"got shape \(5, 3\)"):
        fastbptt.loss_and_grad(**dict(case, mask=np.ones((5, 3))))
    with pytest.raises(ValueError, match=r"targets must be class ids of shape \[3, 5\] "
                                         r"\(batch_first=True\); got shape \(5, 3\)"):
        fastbptt.loss_and_grad(**dict(case, targets=np.zeros((5, 3), np.int64)))


def test_float_class_ids_are_told_to_be_integers():
    case = make_case(T=5, B=3)
    for y in (np.zeros((5, 3)), np.zeros(3)):
        with pytest.raises(TypeError, match=r"class ids must be an integer array"):
            fastbptt.loss_and_grad(**dict(case, targets=y))


def test_big_endian_float64_is_float64():
    case = make_case(T=4, B=2, input_kind="float", target_kind="mse")
    want = fastbptt.loss_and_grad(**case)
    be = dict(case, params={k: v.astype(">f8") for k, v in case["params"].items()},
              inputs=case["inputs"].astype(">f8"), targets=case["targets"].astype(">f8"),
              h0=case["h0"].astype(">f8"))
    for backend in ("numpy", "cpu"):
        got = fastbptt.loss_and_grad(**be, backend=backend)
        np.testing.assert_allclose(got[0], want[0], **EXACT64)
        for k in want[1]:
            np.testing.assert_allclose(got[1][k], want[1][k], err_msg=k, **EXACT64)
    ids = make_case(T=4, B=2, input_kind="onehot")
    got = fastbptt.loss_and_grad(**dict(ids, inputs=ids["inputs"].astype(">i8")))
    np.testing.assert_allclose(got[0], fastbptt.loss_and_grad(**ids)[0], **EXACT64)


def test_batch_stream_refuses_uint64_ids_beyond_int64():
    ids = np.array([1, 2, 2 ** 63, 3], dtype=np.uint64)
    with pytest.raises(ValueError, match="ids holds 9223372036854775808"):
        batch_stream(ids, 2)


def test_accumulate_at_the_end_blames_pos():
    p = fastbptt.init_params(5, 4, 5, seed=0)
    data = batch_stream(np.arange(20) % 5, 2)                     # [10, 2]: 9 steps
    with pytest.raises(ValueError, match=r"pos=9 is the end of data"):
        accumulate(p, data, 3, pos=9)
    with pytest.raises(ValueError, match=r"drop_last=True and only 2 steps from pos=7"):
        accumulate(p, data, 3, pos=7, drop_last=True)


def test_many_to_one_mean_divides_by_sequences_with_a_valid_step():
    case = make_case(T=4, B=3, many_to_one=True, masked=True)
    mask = np.ones((4, 3))
    mask[:, 2] = 0                                                # sequence 2: no valid step
    s = fastbptt.loss_and_grad(**dict(case, mask=mask, reduction="sum"))[0]
    m = fastbptt.loss_and_grad(**dict(case, mask=mask, reduction="mean"))[0]
    np.testing.assert_allclose(m, s / 2, **EXACT64)
    assert "number of sequences that have a valid step" in fastbptt.loss_and_grad.__doc__
