"""The fuzz properties, run by tests/test_robust_fuzz.py in a child pytest.

Not named test_*.py on purpose: the default run does not collect it in-process, where a
crash in compiled code would kill pytest; ``test_fuzz_in_a_child_process`` runs
``pytest tests/robust_fuzz_props.py`` in a child and fails if that child fails or dies.
Run it directly while debugging: ``python -m pytest -q tests/robust_fuzz_props.py``.

Any shape, dtype, layout and value either gives the NumPy reference's answer or raises
``ValueError``/``TypeError`` whose message names the argument; no call modifies its inputs.
Example counts come from a Hypothesis profile: ``fastbptt-ci`` (default; small and
derandomised) or ``fastbptt-full`` (``HYPOTHESIS_PROFILE=fastbptt-full``).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastbptt
import tolerances as tol
from robust_util import assert_unchanged, snapshot

settings.register_profile("fastbptt-ci", max_examples=50, deadline=None, derandomize=True,
                          database=None, suppress_health_check=list(HealthCheck))
settings.register_profile("fastbptt-full", max_examples=600, deadline=None,
                          suppress_health_check=list(HealthCheck))
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fastbptt-ci")
if not PROFILE.startswith("fastbptt-"):
    PROFILE = "fastbptt-ci"
FUZZ = settings.get_profile(PROFILE)

ID_DTYPES = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
             np.intp)
FLOATS = (np.float32, np.float64)


# --------------------------------------------------------------------------- strategies
@st.composite
def layouts(draw, a):
    """The same values in another memory layout: C, Fortran, strided, reversed, read-only."""
    kind = draw(st.sampled_from(["C", "F", "strided", "reversed", "readonly"]))
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "strided" and a.ndim:
        big = np.zeros((a.shape[0] * 2,) + a.shape[1:], dtype=a.dtype)
        big[::2] = a
        return big[::2]                                   # non-contiguous view
    if kind == "reversed" and a.ndim:
        return a[::-1].copy()[::-1]                       # negative stride
    if kind == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    return np.ascontiguousarray(a)


NONFINITE = False       # set by the non-finite property: arrays may then hold NaN and ±inf


def float_arrays(dtype, shape, lim=2.0):
    width = np.dtype(dtype).itemsize * 8
    el = st.floats(-lim, lim, width=width, allow_subnormal=True)
    if NONFINITE:
        el = el | st.sampled_from([np.nan, np.inf, -np.inf])
    return hnp.arrays(dtype, shape, elements=el)


@st.composite
def problems(draw):
    """A valid loss_and_grad call: (kwargs for loss_and_grad, description)."""
    dt = np.dtype(draw(st.sampled_from(FLOATS)))
    T, B = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    n_in, H, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    input_kind = draw(st.sampled_from(["float", "onehot", "embed"]))
    target_kind = draw(st.sampled_from(["ids", "probs", "mse"]))
    many_to_one = draw(st.booleans())
    batch_first = draw(st.booleans())
    params = {"U": draw(float_arrays(dt, (H, n_in))), "W": draw(float_arrays(dt, (H, H))),
              "b": draw(float_arrays(dt, (H,))), "V": draw(float_arrays(dt, (n_out, H))),
              "c": draw(float_arrays(dt, (n_out,)))}
    if input_kind == "embed":
        vocab = draw(st.integers(1, 5))
        params["E"] = draw(float_arrays(dt, (vocab, n_in)))
    params = {k: draw(layouts(v)) for k, v in params.items()}

    if input_kind == "float":
        inputs = draw(float_arrays(dt, (T, B, n_in), lim=3.0))
    else:
        vocab = params["E"].shape[0] if input_kind == "embed" else n_in
        inputs = draw(hnp.arrays(draw(st.sampled_from(ID_DTYPES)), (T, B),
                                 elements=st.integers(0, vocab - 1)))
    lead = (B,) if many_to_one else (T, B)
    if target_kind == "ids":
        targets = draw(hnp.arrays(draw(st.sampled_from(ID_DTYPES)), lead, elements=st.integers(0, n_out - 1)))
    elif target_kind == "probs":
        targets = draw(hnp.arrays(dt, lead + (n_out,), elements=st.floats(0, 1, width=dt.itemsize * 8)))
    else:
        targets = draw(float_arrays(dt, lead + (n_out,), lim=3.0))
    mask = None
    if draw(st.booleans()):
        mask = draw(hnp.arrays(draw(st.sampled_from([np.bool_, np.int8, np.int64, np.float32, np.float64])),
                               (T, B), elements=st.sampled_from([0, 1])))
    h0 = draw(st.none() | float_arrays(dt, (B, H)))

    def bf(a, per_step):
        return np.swapaxes(a, 0, 1) if (batch_first and per_step and a is not None) else a

    kw = dict(params=params,
              inputs=draw(layouts(bf(inputs, True))),
              targets=draw(layouts(bf(targets, not many_to_one))),
              h0=None if h0 is None else draw(layouts(h0)),
              activation=draw(st.sampled_from(["tanh", "sigmoid", "relu"])),
              loss="mse" if target_kind == "mse" else "cross_entropy",
              reduction=draw(st.sampled_from(["sum", "mean"])),
              mask=None if mask is None else draw(layouts(bf(mask, True))),
              batch_first=batch_first,
              truncate=draw(st.none() | st.integers(1, 7) | st.tuples(st.integers(1, 3), st.integers(3, 8))),
              checkpoint=draw(st.none() | st.just("sqrt") | st.integers(1, 7)))
    return kw


def _agree(got, want, dtype, what):
    """|got − want| <= rtol·|want| + atol·max(1, max|want|), NaN-aware."""
    t = tol.EXACT64 if np.dtype(dtype) == np.float64 else tol.EXACT32
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0, where=np.isfinite(want))))
    np.testing.assert_allclose(got, want, rtol=t["rtol"], atol=t["atol"] * scale,
                               equal_nan=True, err_msg=what)


def check_contract(out, kw):
    loss, grads, h_last = out
    params = kw["params"]
    dt = params["U"].dtype
    assert type(loss) is float
    assert set(grads) == set(params) | {"h0"}
    for k, g in grads.items():
        ref = kw["h0"] if k == "h0" else params[k]
        if ref is not None:
            assert g.shape == ref.shape, k
        assert g.dtype == dt, k
    B = kw["inputs"].shape[0 if kw["batch_first"] else 1]
    assert h_last.shape == (B, params["W"].shape[0]) and h_last.dtype == dt


def call_checked(kw, **extra):
    """loss_and_grad(**kw, **extra), asserting that no argument was modified."""
    before = snapshot(kw)
    try:
        return fastbptt.loss_and_grad(**kw, **extra)
    finally:
        assert_unchanged(before, kw, "arguments")


# --------------------------------------------------------------------------- properties
@FUZZ
@given(problems())
def test_loss_and_grad_matches_reference(kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # sigmoid's exp may overflow to 0
        ref = call_checked(kw, backend="numpy")
        got = call_checked(kw, backend="cpu")
    check_contract(ref, kw)
    check_contract(got, kw)
    dt = kw["params"]["U"].dtype
    _agree(got[0], ref[0], dt, "loss")
    for k in ref[1]:
        _agree(got[1][k], ref[1][k], dt, f"grads[{k!r}]")
    _agree(got[2], ref[2], dt, "h_last")


@st.composite
def nonfinite_problems(draw):
    global NONFINITE
    NONFINITE = True
    try:
        return draw(problems())
    finally:
        NONFINITE = False


@FUZZ
@given(nonfinite_problems())
def test_nan_and_inf_anywhere_never_crash_and_match_reference(kw):
    """NaN/inf in inputs, params, h0 or targets: no crash; the same inf/NaN pattern as the
    reference in the loss, every gradient and h_last; check_finite raises iff one appears."""
    kw = dict(kw, truncate=None) if np.issubdtype(kw["targets"].dtype, np.floating) else kw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = call_checked(kw, backend="numpy")
        got = call_checked(kw, backend="cpu")
        check_contract(got, kw)
        for what, a, b in [("loss", got[0], ref[0]), ("h_last", got[2], ref[2])] + \
                [(f"grads[{k!r}]", got[1][k], ref[1][k]) for k in ref[1]]:
            a, b = np.asarray(a), np.asarray(b)
            np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=what)
        finite = np.isfinite(got[0]) and all(np.all(np.isfinite(g)) for g in got[1].values())
        if finite:
            call_checked(kw, check_finite=True)
        else:
            with pytest.raises(FloatingPointError):
                call_checked(kw, check_finite=True)


@st.composite
def padded_problems(draw):
    """(clean, poisoned): a valid call with right-padded sequences, and the same call whose
    padding (the steps after each sequence's last valid step) holds NaN, ±inf, a huge value or
    ids outside the vocabulary (-100, PyTorch's ignore index); many-to-one targets of
    sequences without a valid step are poisoned too. Every input kind, target kind, layout,
    truncation and checkpointing that :func:`problems` draws."""
    kw = draw(problems())
    bf = kw["batch_first"]
    T, B = (kw["inputs"].shape[1], kw["inputs"].shape[0]) if bf else kw["inputs"].shape[:2]
    lengths = draw(hnp.arrays(np.int64, B, elements=st.integers(0, T)))
    pad = np.arange(T)[:, None] >= lengths[None, :]                   # [T, B]
    assume(pad.any())
    value = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e30]))
    bad_id = draw(st.sampled_from([-100, 10 ** 6]))
    tm = (lambda a: np.swapaxes(a, 0, 1)) if bf else (lambda a: a)     # a view, time-major
    mask = (~pad).astype(np.float64)
    clean = dict(kw, mask=np.ascontiguousarray(tm(mask)))
    bad = dict(clean)
    x = np.array(kw["inputs"], dtype=np.int64 if kw["inputs"].dtype.kind in "iu" else None)
    tm(x)[pad] = value if x.dtype.kind == "f" else bad_id
    bad["inputs"] = x
    y = np.array(kw["targets"], dtype=np.int64 if kw["targets"].dtype.kind in "iu" else None)
    many_to_one = y.ndim == (1 if y.dtype.kind in "iu" else 2)
    if many_to_one:
        y[lengths == 0] = bad_id if y.dtype.kind in "iu" else value
    else:
        tm(y)[pad] = bad_id if y.dtype.kind in "iu" else value
    bad["targets"] = y
    return clean, bad


@FUZZ
@given(padded_problems())
def test_poisoned_padding_changes_nothing(case):
    """Padding influences nothing: the loss, every gradient and h_last with poisoned padding
    equal the reference's with clean padding, on the reference and the CPU backend."""
    clean, bad = case
    dt = clean["params"]["U"].dtype
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = call_checked(clean, backend="numpy")
        for backend in ("numpy", "cpu"):
            got = call_checked(bad, backend=backend)
            check_contract(got, bad)
            _agree(got[0], want[0], dt, f"{backend} loss")
            for k in want[1]:
                _agree(got[1][k], want[1][k], dt, f"{backend} grads[{k!r}]")
            _agree(got[2], want[2], dt, f"{backend} h_last")


# One corruption of a valid call, and a word the error message must contain.
def _corruptions(kw):
    p = kw["params"]
    dt = p["U"].dtype
    other = np.float32 if dt == np.float64 else np.float64
    T = kw["inputs"].shape[1 if kw["batch_first"] else 0]
    H, n_out = p["W"].shape[0], p["V"].shape[0]
    P = lambda **ch: dict(kw, params={**p, **ch})                          # noqa: E731
    drop = lambda k: dict(kw, params={q: v for q, v in p.items() if q != k})  # noqa: E731
    ids_in = np.issubdtype(kw["inputs"].dtype, np.integer)
    vocab = p["E"].shape[0] if "E" in p else p["U"].shape[1]
    out = [
        ("params", dict(kw, params=[1, 2])),
        ("params", drop("W")), ("params", drop("c")),
        ("params['W']", P(W=p["W"][:, :1] if H > 1 else np.zeros((1, 2), dt))),
        ("params['W']", P(W=p["W"][None])),
        ("params['U']", P(U=p["U"].astype(np.int64))),
        ("params", P(V=p["V"].astype(other))),
        ("params['b']", P(b=np.zeros(H + 1, dt))),
        ("params['V']", P(V=np.zeros((n_out, H + 1), dt))),
        ("params['c']", P(c=np.zeros(n_out + 2, dt))),
        ("params['U']", P(U=np.zeros((H, 0), dt))),
        ("inputs", dict(kw, inputs=kw["inputs"][..., None, None])),
        ("inputs", dict(kw, inputs=kw["inputs"].astype(np.complex128))),
        ("inputs", dict(kw, inputs=kw["inputs"].astype(bool))),
        ("inputs", dict(kw, inputs=np.full(kw["inputs"].shape, "a"))),
        ("inputs", dict(kw, inputs=kw["inputs"][:0])),
        ("inputs", dict(kw, inputs=kw["inputs"][:, :0])),
        ("targets", dict(kw, targets=kw["targets"][..., None, None])),
        ("targets", dict(kw, targets=kw["targets"].astype(bool))),
        ("targets", dict(kw, targets=None)),
        ("h0", dict(kw, h0=np.zeros((3, H + 1), dt))),
        ("h0", dict(kw, h0=np.zeros((1, H), other))),
        ("activation", dict(kw, activation="gelu")), ("activation", dict(kw, activation=None)),
        ("loss", dict(kw, loss="nll")), ("reduction", dict(kw, reduction="max")),
        ("backend", dict(kw, backend="gpu")), ("backend", dict(kw, backend=0)),
        ("batch_first", dict(kw, batch_first="yes")),
        ("truncate", dict(kw, truncate=0)), ("truncate", dict(kw, truncate=(3, 2))),
        ("truncate", dict(kw, truncate=1.5)), ("truncate", dict(kw, truncate=True)),
        ("truncate", dict(kw, truncate=(1, 2, 3))), ("truncate", dict(kw, truncate=-4)),
        ("checkpoint", dict(kw, checkpoint=0)), ("checkpoint", dict(kw, checkpoint="cbrt")),
        ("checkpoint", dict(kw, checkpoint=2.0)), ("checkpoint", dict(kw, checkpoint=True)),
        ("check_finite", dict(kw, check_finite="no")),
        ("mask", dict(kw, mask=np.ones((T + 1, 7)))),
        ("mask", dict(kw, mask=np.full(kw["inputs"].shape[:2], 2))),
        ("mask", dict(kw, mask=np.full(kw["inputs"].shape[:2], 0.5))),
        ("mask", dict(kw, mask=np.full(kw["inputs"].shape[:2], np.nan))),
        ("mask", dict(kw, mask=np.full(kw["inputs"].shape[:2], "1"))),
    ]
    if ids_in:
        bad = np.array(kw["inputs"], dtype=np.int64)
        bad.flat[-1] = vocab
        out += [("inputs", dict(kw, inputs=bad)),
                ("inputs", dict(kw, inputs=np.full(bad.shape, -1, np.int8))),
                ("inputs", dict(kw, inputs=np.full(bad.shape, 2 ** 64 - 1, np.uint64))),
                ("inputs", dict(kw, inputs=np.full(bad.shape, 2 ** 40, np.int64)))]
    else:
        out += [("inputs", dict(kw, inputs=kw["inputs"].astype(other))),
                ("inputs", dict(kw, inputs=kw["inputs"][..., :0] if kw["inputs"].shape[-1] > 1
                                else np.concatenate([kw["inputs"]] * 2, axis=-1)))]
    tg = kw["targets"]
    if np.issubdtype(tg.dtype, np.integer):
        bad = np.array(tg, dtype=np.int64)
        bad.flat[0] = n_out
        out += [("targets", dict(kw, targets=bad)),
                ("targets", dict(kw, targets=np.full(tg.shape, -3, np.int16))),
                ("targets", dict(kw, targets=np.zeros(tg.shape + (n_out + 1,), dt), loss="mse"))]
    else:
        out += [("targets", dict(kw, targets=tg.astype(other))),
                ("targets", dict(kw, targets=tg[..., :1] if n_out > 1 else np.concatenate([tg] * 2, -1)))]
        if kw["loss"] == "mse":
            out.append(("targets", dict(kw, targets=np.zeros(tg.shape, np.int64))))
    return out


@FUZZ
@given(problems(), st.data())
def test_bad_arguments_raise_naming_the_argument(kw, data):
    name, bad = data.draw(st.sampled_from(_corruptions(kw)), label="corruption")
    before = snapshot(bad)
    with pytest.raises((ValueError, TypeError)) as info:
        fastbptt.loss_and_grad(**bad)
    assert_unchanged(before, bad, "arguments")
    msg = str(info.value)
    assert name in msg, f"{name}: {msg}"


@st.composite
def layer_cases(draw):
    dt = np.dtype(draw(st.sampled_from(FLOATS)))
    T, B, n_in, H = (draw(st.integers(1, n)) for n in (6, 4, 4, 6))
    bf = draw(st.booleans())
    x = draw(float_arrays(dt, (B, T, n_in) if bf else (T, B, n_in), lim=3.0))
    h0 = draw(st.none() | float_arrays(dt, (B, H)))
    U, W, b = (draw(float_arrays(dt, s)) for s in ((H, n_in), (H, H), (H,)))
    dhs = draw(float_arrays(dt, (B, T, H) if bf else (T, B, H)))
    lay = lambda a: None if a is None else draw(layouts(a))   # noqa: E731
    return dict(x=lay(x), h0=lay(h0), U=lay(U), W=lay(W), b=lay(b), batch_first=bf,
                activation=draw(st.sampled_from(["tanh", "sigmoid", "relu"]))), lay(dhs)


@FUZZ
@given(layer_cases())
def test_layer_api_matches_reference(case):
    kw, dhs = case
    before = snapshot((kw, dhs))
    res = {}
    for backend in ("numpy", "cpu"):
        hs, cache = fastbptt.rnn_forward(**kw, backend=backend)
        res[backend] = (hs.copy(),) + tuple(fastbptt.rnn_backward(dhs, cache))
        hs[...] = np.nan                     # hs is the caller's: the cache never sees it
        for a, e in zip(fastbptt.rnn_backward(dhs, cache), res[backend][1:]):
            np.testing.assert_array_equal(a, e)
        assert_unchanged(before, (kw, dhs), "arguments")
    dt = kw["U"].dtype
    names = ("hs", "dx", "dh0", "dU", "dW", "db")
    for n, a, b in zip(names, res["cpu"], res["numpy"]):
        assert a.dtype == dt and a.shape == b.shape, n
        _agree(a, b, dt, n)


@FUZZ
@given(layer_cases(), st.data())
def test_layer_api_bad_arguments(case, data):
    kw, dhs = case
    dt = kw["U"].dtype
    other = np.float32 if dt == np.float64 else np.float64
    H = kw["W"].shape[0]
    name, bad_kw, bad_dhs = data.draw(st.sampled_from([
        ("x", dict(kw, x=kw["x"][0]), dhs), ("x", dict(kw, x=kw["x"].astype(other)), dhs),
        ("x", dict(kw, x=kw["x"][..., :0]), dhs), ("x", dict(kw, x=kw["x"][:0]), dhs),
        ("h0", dict(kw, h0=np.zeros((9, H), dt)), dhs), ("h0", dict(kw, h0=np.zeros((1, H), other)), dhs),
        ("U", dict(kw, U=kw["U"].astype(np.int32)), dhs), ("W", dict(kw, W=kw["W"][:1, :]) if H > 1
                                                           else dict(kw, W=np.zeros((1, 2), dt)), dhs),
        ("b", dict(kw, b=np.zeros(H + 2, dt)), dhs), ("W", dict(kw, W=kw["W"].astype(other)), dhs),
        ("activation", dict(kw, activation="swish"), dhs), ("backend", dict(kw, backend="numba"), dhs),
        ("dhs", kw, dhs[..., :0]), ("dhs", kw, dhs.astype(other)), ("dhs", kw, dhs[0]),
        ("cache", kw, "cache"),
    ]), label="corruption")
    before = snapshot((bad_kw, bad_dhs))
    with pytest.raises((ValueError, TypeError)) as info:
        hs, cache = fastbptt.rnn_forward(**bad_kw)
        fastbptt.rnn_backward(bad_dhs, "not a cache" if name == "cache" else cache)
    assert_unchanged(before, (bad_kw, bad_dhs), "arguments")
    assert name in str(info.value), f"{name}: {info.value}"


@FUZZ
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.none() | st.integers(1, 9),
       st.sampled_from([np.float32, np.float64, "float32", "float64"]), st.none() | st.integers(0, 2 ** 32))
def test_init_params(n_in, H, n_out, vocab, dtype, seed):
    p = fastbptt.init_params(n_in, H, n_out, vocab_size=vocab, dtype=dtype, seed=seed)
    shapes = {"U": (H, n_in), "W": (H, H), "b": (H,), "V": (n_out, H), "c": (n_out,)}
    if vocab:
        shapes["E"] = (vocab, n_in)
    assert {k: v.shape for k, v in p.items()} == shapes
    assert all(v.dtype == np.dtype(dtype) and v.flags.c_contiguous and np.all(np.isfinite(v))
               for v in p.values())
    if seed is not None:
        q = fastbptt.init_params(n_in, H, n_out, vocab_size=vocab, dtype=dtype, seed=seed)
        assert all(np.array_equal(p[k], q[k]) for k in p)


@FUZZ
@given(st.sampled_from([
    ("n_in", dict(n_in=0)), ("n_in", dict(n_in=-1)), ("n_in", dict(n_in=2.0)), ("n_in", dict(n_in=True)),
    ("n_hidden", dict(n_hidden=None)), ("n_hidden", dict(n_hidden="8")), ("n_out", dict(n_out=0)),
    ("vocab_size", dict(vocab_size=0)), ("vocab_size", dict(vocab_size=3.5)),
    ("dtype", dict(dtype=np.int32)), ("dtype", dict(dtype=np.float16)), ("dtype", dict(dtype="complex128")),
]))
def test_init_params_bad_arguments(case):
    name, ch = case
    args = dict(n_in=2, n_hidden=3, n_out=4)
    args.update(ch)
    with pytest.raises((ValueError, TypeError), match=name):
        fastbptt.init_params(args.pop("n_in"), args.pop("n_hidden"), args.pop("n_out"), **args)


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 10))
@given(problems())
def test_gradcheck_agrees_and_modifies_nothing(kw):
    """gradcheck of fastbptt itself on smooth float64 problems finds a small error."""
    assume(kw["activation"] != "relu")                 # kinks make finite differences unreliable
    p64 = {k: np.array(v, dtype=np.float64) for k, v in kw["params"].items()}
    cast = lambda a: a if a is None or not np.issubdtype(np.asarray(a).dtype, np.floating) \
        else np.asarray(a, dtype=np.float64)           # noqa: E731
    kw64 = {k: cast(v) if k in ("inputs", "targets", "h0") else v for k, v in kw.items() if k != "params"}
    kw64["truncate"] = None                            # truncated BPTT is not the loss's gradient
    before = snapshot(p64)
    # random directions only: an element-wise check of an entry just above gradcheck's
    # absolute threshold (1e-7) is dominated by the rounding error of the loss itself
    res = fastbptt.gradcheck(lambda q: fastbptt.loss_and_grad(q, **kw64)[:2], p64, seed=0,
                             directions=3, elements=0)
    assert_unchanged(before, p64, "params")
    assert np.isfinite(res.max_rel_error)
    # a gradient that is exactly 0 (e.g. identical rows of V) leaves only round-off of the
    # loss in the difference quotient, which gradcheck's 1e-12 floor reports as ~1e-4
    g = fastbptt.loss_and_grad(p64, **kw64)[1]
    bad = {lab: e for lab, e in res.errors.items()
           if e >= 1e-4 and np.linalg.norm(g[lab.split(":")[0].split("[")[0]]) > 1e-9}
    assert not bad, bad


# --------------------------------------------------------------------------- adapters
def _orig(name):
    import importlib
    return importlib.import_module(f"originals.{name}")


@st.composite
def cs231n_cases(draw):
    N, T, D, H = (draw(st.integers(1, n)) for n in (3, 5, 4, 5))
    f = lambda s: draw(layouts(draw(float_arrays(np.float64, s, lim=1.0))))   # noqa: E731
    return dict(x=f((N, T, D)), h0=f((N, H)), Wx=f((D, H)), Wh=f((H, H)), b=f((H,))), f((N, T, H))


@FUZZ
@given(cs231n_cases(), st.data())
def test_cs231n_adapter(case, data):
    from fastbptt.compat import cs231n
    kw, dh = case
    before = snapshot((kw, dh))
    h, cache = cs231n.rnn_forward(**kw)
    grads = cs231n.rnn_backward(dh, cache)
    oh, ocache = _orig("cs231n").rnn_forward(**{k: np.array(v) for k, v in kw.items()})
    ograds = _orig("cs231n").rnn_backward(np.array(dh), ocache)
    assert_unchanged(before, (kw, dh), "arguments")
    for n, a, b in zip(("h", "dx", "dh0", "dWx", "dWh", "db"), (h,) + tuple(grads), (oh,) + tuple(ograds)):
        assert a.shape == b.shape, n
        np.testing.assert_allclose(a, b, err_msg=n, **tol.ADAPTER64)
    N, T, D = kw["x"].shape
    H = kw["Wh"].shape[0]
    name, bad, bad_dh = data.draw(st.sampled_from([
        ("x", dict(kw, x=kw["x"][0]), dh), ("x", dict(kw, x=kw["x"].astype(np.complex128)), dh),
        ("h0", dict(kw, h0=np.zeros((N + 1, H))), dh),
        ("Wx", dict(kw, Wx=np.zeros((D + 1, H))), dh), ("Wh", dict(kw, Wh=np.zeros((H, H + 1))), dh),
        ("b", dict(kw, b=np.zeros((H, 1))), dh), ("dh", kw, dh[..., :0]), ("dh", kw, dh[0]),
        ("dh", kw, dh.astype(np.complex128)), ("cache", kw, None)]), label="corruption")
    before = snapshot((bad, bad_dh))
    with pytest.raises((ValueError, TypeError)) as info:
        hb, cb = cs231n.rnn_forward(**bad)
        cs231n.rnn_backward(bad_dh, "cache" if name == "cache" else cb)
    assert_unchanged(before, (bad, bad_dh), "arguments")
    assert name in str(info.value), f"{name}: {info.value}"


@st.composite
def char_cases(draw):
    H, V = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    f = lambda s: draw(layouts(draw(float_arrays(np.float64, s, lim=1.0))))   # noqa: E731
    T = draw(st.integers(0, 6))
    ids = st.lists(st.integers(0, V - 1), min_size=T, max_size=T)
    return dict(Wxh=f((H, V)), Whh=f((H, H)), Why=f((V, H)), bh=f((H, 1)), by=f((V, 1))), \
        draw(ids), draw(ids), f((H, 1))


@FUZZ
@given(char_cases(), st.data())
def test_min_char_rnn_adapter(case, data):
    from fastbptt.compat import min_char_rnn
    params, xs, ys, hprev = case
    before = snapshot((params, xs, ys, hprev))
    if not xs:                               # the gist fails on hs[0] with KeyError; so does the adapter
        with pytest.raises(KeyError):
            min_char_rnn(**params)(xs, ys, hprev)
        return
    got = min_char_rnn(**params)(xs, ys, hprev)
    want = _orig("min_char_rnn").make_lossfun(*(np.array(params[k]) for k in
                                                ("Wxh", "Whh", "Why", "bh", "by")))(xs, ys, np.array(hprev))
    assert_unchanged(before, (params, xs, ys, hprev), "arguments")
    np.testing.assert_allclose(got[0], want[0], **tol.ADAPTER64)
    for i, (a, b) in enumerate(zip(got[1:], want[1:])):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, err_msg=str(i), **tol.ADAPTER64)
    H, V = params["Wxh"].shape
    fn = min_char_rnn(**params)
    name, call = data.draw(st.sampled_from([
        ("inputs", lambda: fn([V] + xs, [0] + ys, hprev)), ("inputs", lambda: fn([-V - 1], [0], hprev)),
        ("inputs", lambda: fn([0.5], [0], hprev)), ("targets", lambda: fn([0], [V], hprev)),
        ("targets", lambda: fn(xs + [0], ys, hprev)), ("hprev", lambda: fn(xs, ys, np.zeros((H + 1, 1)))),
        ("hprev", lambda: fn(xs, ys, np.zeros((H, 1), np.complex128))),
        ("Whh", lambda: min_char_rnn(**dict(params, Whh=np.zeros((H, H + 1))))),
        ("Why", lambda: min_char_rnn(**dict(params, Why=np.zeros((V + 1, H))))),
        ("bh", lambda: min_char_rnn(**dict(params, bh=np.zeros(H)))),
        ("Wxh", lambda: min_char_rnn(**dict(params, Wxh=params["Wxh"].astype(np.int32))))]),
        label="corruption")
    with pytest.raises((ValueError, TypeError, IndexError)) as info:
        call()
    assert_unchanged(before, (params, xs, ys, hprev), "arguments")
    assert name in str(info.value), f"{name}: {info.value}"


@FUZZ
@given(char_cases(), st.integers(0, 7), st.data())
def test_wildml_adapter(case, k, data):
    from fastbptt.compat import wildml
    params, xs, ys, _ = case
    U, V, W = params["Wxh"], params["Why"], params["Whh"]
    before = snapshot((U, V, W, xs, ys))
    got = wildml.bptt(xs, ys, U, V, W, k)
    if xs:                                   # the tutorial's own code needs a non-empty sentence
        want = _orig("wildml").bptt(np.array(xs), np.array(ys), np.array(U), np.array(V), np.array(W), k)
        for n, a, b in zip(("dLdU", "dLdV", "dLdW"), got, want):
            np.testing.assert_allclose(a, b, err_msg=n, **tol.ADAPTER64)
    assert_unchanged(before, (U, V, W, xs, ys), "arguments")
    Hn, Vn = U.shape
    name, args = data.draw(st.sampled_from([
        ("bptt_truncate", (xs, ys, U, V, W, 1.5)),
        ("bptt_truncate", (xs, ys, U, V, W, True)), ("x", ([Vn], [0], U, V, W, k)),
        ("y", ([0], [-Vn - 1], U, V, W, k)), ("y", (xs, ys + [0], U, V, W, k)),
        ("V", (xs, ys, U, np.zeros((Vn, Hn + 1)), W, k)), ("W", (xs, ys, U, V, np.zeros((Hn, Hn + 1)), k)),
        ("U", (xs, ys, U.astype(np.complex128), V, W, k))]), label="corruption")
    with pytest.raises((ValueError, TypeError, IndexError)) as info:
        wildml.bptt(*args)
    assert name in str(info.value), f"{name}: {info.value}"
