"""make_loss_and_grad: bit for bit equal to loss_and_grad, and the same errors for bad input."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastbptt
from fastbptt import loss_and_grad, make_loss_and_grad
from fastbptt.prepared import _Plain, _Prepared

T, B, N_IN, H, N_OUT, VOCAB = 5, 3, 4, 6, 5, 7


def problem(cell="rnn", input_kind="float", target_kind="ids", dtype=np.float64, seed=0):
    """params, inputs, targets of one small problem; input_kind float, onehot or embed."""
    rng = np.random.default_rng(seed)
    n_in = VOCAB if input_kind == "onehot" else N_IN
    params = fastbptt.init_params(n_in, H, N_OUT, cell=cell, dtype=dtype, seed=seed,
                                  vocab_size=VOCAB if input_kind == "embed" else None)
    for k in params:                    # non-zero biases, so a swapped bias shows
        params[k] = params[k] + (0.1 * rng.standard_normal(params[k].shape)).astype(dtype)
    if input_kind == "float":
        x = rng.standard_normal((T, B, N_IN)).astype(dtype)
    else:
        x = rng.integers(0, VOCAB if input_kind == "embed" else n_in, (T, B))
    if target_kind == "ids":
        y = rng.integers(0, N_OUT, (T, B))
    elif target_kind == "probs":
        y = rng.random((T, B, N_OUT)).astype(dtype)
        y /= y.sum(-1, keepdims=True)
    else:
        y = rng.standard_normal((T, B, N_OUT)).astype(dtype)
    return params, x, y


def state(cell, dtype, seed, kind="array"):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((B, H)).astype(dtype)
    if cell == "lstm" and kind == "tuple":
        return h, rng.standard_normal((B, H)).astype(dtype)
    return h


def assert_same(a, b):
    """Bit for bit: loss, every gradient (same keys, dtypes) and h_last."""
    assert a[0] == b[0] and type(a[0]) is type(b[0])
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert a[1][k].dtype == b[1][k].dtype and a[1][k].shape == b[1][k].shape, k
        np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)
        assert a[1][k].flags.c_contiguous, k
    ha = a[2] if isinstance(a[2], tuple) else (a[2],)
    hb = b[2] if isinstance(b[2], tuple) else (b[2],)
    assert len(ha) == len(hb)
    for u, v in zip(ha, hb):
        np.testing.assert_array_equal(u, v)


CELLS = ("rnn", "lstm", "gru")
COMBOS = [c for c in itertools.product(CELLS, ("float", "onehot", "embed"),
                                       ("ids", "probs", "mse"), (np.float32, np.float64))]


@pytest.mark.parametrize("cell,input_kind,target_kind,dtype", COMBOS,
                         ids=[f"{c}-{i}-{t}-{np.dtype(d).name}" for c, i, t, d in COMBOS])
def test_equal_to_loss_and_grad_bit_for_bit(cell, input_kind, target_kind, dtype):
    params, x, y = problem(cell, input_kind, target_kind, dtype)
    opts = dict(cell=cell, loss="mse" if target_kind == "mse" else "cross_entropy",
                reduction="mean" if target_kind == "probs" else "sum")
    fn = make_loss_and_grad(params, x, y, **opts)
    assert isinstance(fn, _Prepared)
    # several calls with new values in the template's shapes: nothing stale carries over
    for seed in range(3):
        p2, x2, y2 = problem(cell, input_kind, target_kind, dtype, seed=seed + 1)
        h0 = None if seed == 0 else state(cell, dtype, seed, "tuple" if seed == 2 else "array")
        assert_same(fn(p2, x2, y2, h0), loss_and_grad(p2, x2, y2, h0, **opts))


@pytest.mark.parametrize("cell", CELLS)
def test_grads_fresh_by_default_and_reused_on_request(cell):
    params, x, y = problem(cell, "onehot")
    fn = make_loss_and_grad(params, x, y, cell=cell)
    a, b = fn(params, x, y), fn(params, x, y)
    for k in a[1]:
        assert not np.shares_memory(a[1][k], b[1][k]), k
    fr = make_loss_and_grad(params, x, y, cell=cell, reuse_grads=True)
    a = fr(params, x, y)
    keep = {k: v.copy() for k, v in a[1].items()}
    p2, x2, y2 = problem(cell, "onehot", seed=5)
    b = fr(p2, x2, y2, a[2])              # h_last of one call as the next call's h0
    assert_same(b, loss_and_grad(p2, x2, y2, a[2], cell=cell))
    assert a[1]["W"] is b[1]["W"]         # overwritten, as documented
    assert not np.array_equal(keep["W"], b[1]["W"])
    ha = a[2] if isinstance(a[2], tuple) else (a[2],)
    hb = b[2] if isinstance(b[2], tuple) else (b[2],)
    for u, v in zip(ha, hb):
        assert not np.shares_memory(u, v)    # h_last is never reused


@pytest.mark.parametrize("cell", CELLS)
def test_concurrent_calls_from_threads(cell):
    from concurrent.futures import ThreadPoolExecutor
    problems = [problem(cell, "float", seed=s) for s in range(8)]
    fn = make_loss_and_grad(*problems[0], cell=cell)
    hs = [state(cell, np.float64, s, "tuple") for s in range(8)]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda i: fn(*problems[i], hs[i]), list(range(8)) * 4))
    for i, out in enumerate(got):
        assert_same(out, loss_and_grad(*problems[i % 8], hs[i % 8], cell=cell))


def test_other_integer_id_dtypes_and_readonly_arrays():
    params, x, y = problem("gru", "onehot")
    x32, y16 = x.astype(np.int32), y.astype(np.int16)
    fn = make_loss_and_grad(params, x32, y16, cell="gru")
    assert_same(fn(params, x32, y16), loss_and_grad(params, x32, y16, cell="gru"))
    ro = {k: v.copy() for k, v in params.items()}
    for v in ro.values():
        v.flags.writeable = False
    assert_same(fn(ro, x32, y16), loss_and_grad(ro, x32, y16, cell="gru"))


@pytest.mark.parametrize("opts", [dict(mask=np.ones((T, B))), dict(truncate=2),
                                  dict(checkpoint=2), dict(backend="numpy"),
                                  dict(batch_first=True), dict(num_layers=2)],
                         ids=["mask", "truncate", "checkpoint", "numpy", "batch_first", "stacked"])
def test_other_options_run_through_loss_and_grad(opts):
    params, x, y = problem("lstm", "float")
    if opts.get("num_layers"):
        params = fastbptt.init_params(N_IN, H, N_OUT, cell="lstm", num_layers=2, dtype=np.float64,
                                      seed=0)
    if opts.get("batch_first"):
        x, y = x.transpose(1, 0, 2).copy(), y.T.copy()
    fn = make_loss_and_grad(params, x, y, cell="lstm", **opts)
    assert isinstance(fn, _Plain)
    assert_same(fn(params, x, y), loss_and_grad(params, x, y, cell="lstm", **opts))


def test_noncontiguous_and_list_arguments_take_the_plain_path():
    params, x, y = problem("rnn", "float")
    fn = make_loss_and_grad(params, x, y)
    xf = np.asfortranarray(x)
    pl = dict(params, W=np.asfortranarray(params["W"]))
    h0 = np.asfortranarray(state("rnn", np.float64, 1))
    for args in ((params, xf, y, None), (pl, x, y, None), (params, x, y, h0),
                 (params, x.tolist(), y.tolist(), None)):
        assert_same(fn(*args), loss_and_grad(*args))


def _bad_cases():
    """(name, template cell, input kind, a function making bad call arguments from good ones)."""
    def ids_bad(v):
        def f(p, x, y):
            x = x.copy()
            x[2, 1] = v
            return p, x, y, None
        return f

    def tgt_bad(v):
        def f(p, x, y):
            y = y.copy()
            y[-1, 0] = v
            return p, x, y, None
        return f

    def param(key, fn):
        return lambda p, x, y: (dict(p, **{key: fn(p[key])}), x, y, None)

    def drop(key):
        return lambda p, x, y: ({k: v for k, v in p.items() if k != key}, x, y, None)

    return [
        ("input id too big", "rnn", "onehot", ids_bad(VOCAB)),
        ("input id negative", "gru", "onehot", ids_bad(-1)),
        ("embedded id too big", "lstm", "embed", ids_bad(VOCAB)),
        ("target id too big", "rnn", "onehot", tgt_bad(N_OUT)),
        ("target id negative", "lstm", "float", tgt_bad(-3)),
        ("float targets for ids", "rnn", "float", lambda p, x, y: (p, x, y.astype(np.float64), None)),
        ("bool inputs", "rnn", "onehot", lambda p, x, y: (p, x.astype(bool), y, None)),
        ("inputs too short", "gru", "float", lambda p, x, y: (p, x[:, :, :-1], y, None)),
        ("inputs float32", "rnn", "float", lambda p, x, y: (p, x.astype(np.float32), y, None)),
        ("inputs 2-D floats", "rnn", "float", lambda p, x, y: (p, x[0], y, None)),
        ("targets wrong T", "lstm", "onehot", lambda p, x, y: (p, x, y[:-1], None)),
        ("W float32", "rnn", "float", param("W", lambda a: a.astype(np.float32))),
        ("W wrong shape", "gru", "float", param("W", lambda a: a[:, :-1])),
        ("b int", "rnn", "float", param("b", lambda a: a.astype(np.int64))),
        ("V missing", "rnn", "float", drop("V")),
        ("bn missing", "gru", "float", drop("bn")),
        ("stacked key", "rnn", "float", lambda p, x, y: (dict(p, U_l1=p["U"]), x, y, None)),
        ("params a list", "rnn", "float", lambda p, x, y: (list(p.values()), x, y, None)),
        ("inputs None", "rnn", "float", lambda p, x, y: (p, None, y, None)),
        ("h0 wrong shape", "rnn", "float", lambda p, x, y: (p, x, y, np.zeros((B, H + 1)))),
        ("h0 float32", "gru", "float", lambda p, x, y: (p, x, y, np.zeros((B, H), np.float32))),
        ("h0 tuple for rnn", "rnn", "float", lambda p, x, y: (p, x, y, (np.zeros((B, H)),) * 2)),
        ("lstm h0 3-tuple", "lstm", "float", lambda p, x, y: (p, x, y, (np.zeros((B, H)),) * 3)),
        ("lstm c0 wrong shape", "lstm", "float",
         lambda p, x, y: (p, x, y, (np.zeros((B, H)), np.zeros((B + 1, H))))),
        ("nan params, check_finite", "lstm", "float", param("W", lambda a: a * np.nan)),
    ]


BAD = _bad_cases()


@pytest.mark.parametrize("name,cell,input_kind,make_bad", BAD, ids=[c[0] for c in BAD])
def test_bad_input_gets_the_same_error(name, cell, input_kind, make_bad):
    params, x, y = problem(cell, input_kind)
    opts = dict(cell=cell, check_finite=True)
    fn = make_loss_and_grad(params, x, y, **opts)
    args = make_bad(params, x, y)
    with pytest.raises(Exception) as plain:
        loss_and_grad(*args, **opts)
    with pytest.raises(Exception) as prepared:
        fn(*args)
    assert type(prepared.value) is type(plain.value)
    assert str(prepared.value) == str(plain.value)
    # the prepared function still works after a bad call
    assert_same(fn(params, x, y), loss_and_grad(params, x, y, **opts))


def test_bad_template_or_options_fail_at_preparation_like_loss_and_grad():
    params, x, y = problem("rnn", "onehot")
    with pytest.raises(TypeError, match="unexpected keyword argument 'cel'"):
        make_loss_and_grad(params, x, y, cel="lstm")
    for opts, bad in ((dict(loss="l2"), (params, x, y)), (dict(check_finite=1), (params, x, y)),
                      (dict(), (params, x + VOCAB, y)), (dict(cell="lstm"), (params, x, y))):
        with pytest.raises(Exception) as plain:
            loss_and_grad(*bad, **opts)
        with pytest.raises(type(plain.value)) as prepared:
            make_loss_and_grad(*bad, **opts)
        assert str(prepared.value) == str(plain.value)
    with pytest.raises(TypeError, match="reuse_grads must be a bool"):
        make_loss_and_grad(params, x, y, reuse_grads="yes")
