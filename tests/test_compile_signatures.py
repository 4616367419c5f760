"""A call compiles only what it runs: one fused-kernel signature per (cell, input kind, loss).

Every signature is one more compilation on a cold first call, so the fused kernel
specialises on what decides which code runs: the cell (its tag's element type), the input
kind (float rows, one-hot ids, ids into an embedding table) and the loss (class ids,
probability rows, MSE), the last two by which arguments are None. Another call of the same
kind adds nothing; the prepared call reuses the same entry. Counted on float32 only, so what
other tests compiled in this process (float64) does not matter. (The helpers the fused
kernel calls are compiled into it and, loaded from the on-disk cache, show no signatures of
their own: the kernel's signatures, and which helper code each kind selects, are what is
checked.)
"""
import numba
import numpy as np
import pytest
from numba import types

import fastbptt
from fastbptt.cells import get as get_cell
from fastbptt.cpu import fused
from fastbptt.cpu.steps import cell_tag

CELLS = ("rnn", "lstm", "gru")
# (input kind, loss kind) -> which of (x, ids, E, tgt, yprob, ymse) the kernel gets as arrays
KINDS = {("float", "ids"): "x tgt", ("onehot", "ids"): "ids tgt", ("embed", "ids"): "ids E tgt",
         ("float", "probs"): "x yprob", ("float", "mse"): "x ymse"}
ARGS = ("x", "ids", "E", "tgt", "yprob", "ymse")
# their positions in fused_full_bptt's signature
POS = {"x": 6, "ids": 7, "E": 8, "tgt": 16, "yprob": 17, "ymse": 18}


def _f32(dispatcher):
    """The dispatcher's signatures that take float32 arrays."""
    return {s for s in dispatcher.signatures
            if any(getattr(a, "dtype", None) == numba.float32 for a in s)}


def _problem(cell, kind, loss):
    T, B, n, H, vocab = 4, 3, 5, 6, 7
    rng = np.random.default_rng(0)
    p = fastbptt.init_params(n, H, n, cell=cell, dtype=np.float32, seed=0,
                             vocab_size=vocab if kind == "embed" else None)
    if kind == "float":
        x = rng.standard_normal((T, B, n)).astype(np.float32)
    else:
        x = rng.integers(0, vocab if kind == "embed" else n, (T, B))
    if loss == "ids":
        y = rng.integers(0, n, (T, B))
    elif loss == "probs":
        y = rng.dirichlet(np.ones(n), (T, B)).astype(np.float32)
    else:
        y = rng.standard_normal((T, B, n)).astype(np.float32)
    opts = dict(cell=cell, loss="mse", reduction="mean") if loss == "mse" else dict(cell=cell)
    return p, x, y, opts


def _call(cell, kind, loss):
    p, x, y, opts = _problem(cell, kind, loss)
    fastbptt.loss_and_grad(p, x, y, **opts)


def _new_sigs(fn):
    """The float32 signatures of the fused kernel that ``fn()`` adds."""
    before = _f32(fused.fused_full_bptt)
    fn()
    return _f32(fused.fused_full_bptt) - before


@pytest.fixture(scope="module")
def compiled():
    """Per (cell, input kind, loss): the signatures its first call added (once per process:
    a combination another test module called first has added its signature already)."""
    out = {}
    for cell in CELLS:
        for kind, loss in KINDS:
            out[cell, kind, loss] = _new_sigs(lambda: _call(cell, kind, loss))
    return out


def test_one_signature_per_cell_input_and_loss(compiled):
    sigs = _f32(fused.fused_full_bptt)
    for cell in CELLS:
        tag = numba.typeof(cell_tag(get_cell(cell)))
        for (kind, loss), given in KINDS.items():
            # exactly one float32 signature has this cell's tag and this None pattern: every
            # call took the fused kernel, and nothing else (values, the other kinds) added one
            match = [s for s in sigs if s[0] == tag and all(
                isinstance(s[POS[a]], types.NoneType) == (a not in given.split()) for a in ARGS)]
            assert len(match) == 1, (cell, kind, loss, match)
            # a first call adds at most its own signature
            assert compiled[cell, kind, loss] <= set(match)
    # every signature of these cells takes exactly one input kind and one loss (counting all
    # signatures would depend on what other tests compiled first in this process: other id
    # dtypes and array layouts are signatures too)
    tags = {numba.typeof(cell_tag(get_cell(c))) for c in CELLS}
    patterns = {frozenset(i.split() + [lo]) for i in ("x", "ids", "ids E") for lo in ("tgt", "yprob", "ymse")}
    for s in sigs:
        if s[0] in tags:
            used = frozenset(a for a in ARGS if not isinstance(s[POS[a]], types.NoneType))
            assert used in patterns, s


def test_repeat_and_prepared_calls_add_no_signature(compiled):
    before = _f32(fused.fused_full_bptt)
    for cell in CELLS:
        for kind, loss in KINDS:
            _call(cell, kind, loss)
            p, x, y, opts = _problem(cell, kind, loss)
            fn = fastbptt.make_loss_and_grad(p, x, y, **opts)
            fn(p, x, y)
    assert _f32(fused.fused_full_bptt) == before


def _names(impl):
    """The global names an overload's implementation calls."""
    return set(impl.__code__.co_names)


@pytest.mark.parametrize("kind", ["float", "onehot", "embed"])
def test_input_kind_selects_only_its_code(kind):
    f2, i1, f1, none = types.float32[:, ::1], types.int64[::1], types.float32[::1], types.none
    x, ids, E = {"float": (f2, none, none), "onehot": (none, i1, none),
                 "embed": (none, i1, f2)}[kind]
    proj = _names(fused._project(x, ids, E, f2, f1, f2, f2, f1, f1))
    grads = _names(fused._input_side_grads(types.int64[:, ::1], f2, x, ids, E, f2, f2, f2, f1,
                                           none if E is none else f2, f1, f1))
    want = {"float": ("_project_rows", "input_grads"), "onehot": ("_project_onehot", "onehot_grads"),
            "embed": ("_project_embed", "_embed_grads")}
    every = {n for pair in want.values() for n in pair}
    assert proj & every == {want[kind][0]}
    assert grads & every == {want[kind][1]}


@pytest.mark.parametrize("loss", ["ids", "probs", "mse"])
def test_loss_selects_only_its_head(loss):
    f2, f1, none = types.float32[:, ::1], types.float32[::1], types.none
    tgt, yprob, ymse = {"ids": (types.int64[::1], none, none), "probs": (none, f2, none),
                        "mse": (none, none, f2)}[loss]
    heads = {"ids": "softmax_xent_ids", "probs": "softmax_xent_probs", "mse": "mse_rows"}
    names = _names(fused._head_loss(f2, tgt, yprob, ymse, f1))
    assert names & set(heads.values()) == {heads[loss]}
