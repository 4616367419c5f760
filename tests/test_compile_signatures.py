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
import inspect
import os

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


@pytest.mark.parametrize("kind", ["float", "onehot", "embed"])
def test_input_kind_selects_only_its_code(kind):
    f2, i1, f1, none = types.float32[:, ::1], types.int64[::1], types.float32[::1], types.none
    x, ids, E = {"float": (f2, none, none), "onehot": (none, i1, none),
                 "embed": (none, i1, f2)}[kind]
    proj, ppick, _ = fused._choose_project(x, ids, E, f2, f1, f2, f2, f1, f1)
    grads, gpick, _ = fused._choose_input_side_grads(types.int64[:, ::1], f2, x, ids, E, f2, f2,
                                                     f2, f1, none if E is none else f2, types.float64,
                                                     f1, f1)
    want = {"float": (fused._project_rows, fused.input_grads),
            "onehot": (fused._project_onehot, fused.onehot_grads),
            "embed": (fused._project_embed, fused._embed_grads)}
    assert (proj, grads) == want[kind]
    # the kernel gets the arguments its parameters name: stub parameter names by position
    for stub, kernel, pick in ((fused.project, proj, ppick), (fused.input_side_grads, grads, gpick)):
        stub_names = list(inspect.signature(stub).parameters)
        got = [stub_names[i] for i in pick]
        names = list(inspect.signature(kernel.py_func).parameters)
        assert [_ALIAS.get(n, n) for n in names] == got, (kernel, names, got)


# kernel parameter names that differ from the stub's for the same argument
_ALIAS = {"gUT": "gU"}


@pytest.mark.parametrize("loss", ["ids", "probs", "mse"])
def test_loss_selects_only_its_head(loss):
    f2, f1, none = types.float32[:, ::1], types.float32[::1], types.none
    tgt, yprob, ymse = {"ids": (types.int64[::1], none, none), "probs": (none, f2, none),
                        "mse": (none, none, f2)}[loss]
    heads = {"ids": fused.softmax_xent_ids, "probs": fused.softmax_xent_probs,
             "mse": fused.mse_rows}
    kernel, pick, _ = fused._choose_head_loss(f2, tgt, yprob, ymse, f1)
    assert kernel is heads[loss]
    # the head's (o, y, w) are the stub's o, this loss's target and w
    stub_names = list(inspect.signature(fused.head_loss).parameters)
    target = {"ids": "tgt", "probs": "yprob", "mse": "ymse"}[loss]
    assert list(inspect.signature(kernel.py_func).parameters) == ["o", "y", "w"]
    assert [stub_names[i] for i in pick] == ["o", target, "w"]


@pytest.mark.parametrize("cell", CELLS)
def test_cell_tag_selects_its_pointwise_kernels(cell):
    """cell_forward / cell_backward call the tag's cell's kernels with the stub's arguments
    after the tag, by position: the kernels' parameters must be those, in that order."""
    from fastbptt.cpu import steps
    tag = numba.typeof(cell_tag(get_cell(cell)))
    mod = {"rnn": steps.rnn, "lstm": steps.lstm, "gru": steps.gru}[cell]
    for stub, want in ((steps.cell_forward, mod.forward_pointwise),
                       (steps.cell_backward, mod.backward_pointwise)):
        kernel, pick, cast = steps._choose_cell(stub)(tag)
        assert kernel is want and cast is None
        stub_names = list(inspect.signature(stub).parameters)
        assert [stub_names[i] for i in pick] == list(inspect.signature(kernel.py_func).parameters)


# --------------------------------------------------------------------------- compile once
def test_gemm_compiles_once_per_dtype():
    """gemm's compiled calls reach _gemm with layout-'A' arrays and integer flags, whatever
    the operands' layouts and however the flags are written: one _gemm per dtype."""
    from fastbptt.cpu import blas

    @numba.njit
    def calls(A, B, C, sc, fs):
        blas.gemm(A, 0, B, 1, C, 0.0, sc, fs)                    # C-contiguous, literal flags
        blas.gemm(A[:, :3], 0, B[:, :3], 1, C, 1.0, sc, fs)      # strided rows
        blas.gemm(A.T.copy(), True, B[:4], 1, C[:, :4], 1, sc, fs)   # bool flag, int beta, strided C

    blas.register_blas()
    rng = np.random.default_rng(0)
    A, B, C = (rng.standard_normal(s).astype(np.float32) for s in ((5, 6), (7, 6), (5, 7)))
    sc, fs = fastbptt.cpu.gemm_scratch(1, C)
    want = A @ B.T + A[:, :3] @ B[:, :3].T
    want[:, :4] += A @ B[:4].T
    before = set(blas._gemm.signatures)     # Python calls of gemm (other tests) add their own
    calls(A, B, C, sc, fs)
    fastbptt.cpu.restore_threads(sc)
    np.testing.assert_allclose(C, want, rtol=1e-5, atol=1e-5)
    for sig in set(blas._gemm.signatures) - before:
        assert [a.layout for a in (sig[0], sig[2], sig[4])] == ["A", "A", "A"], sig
        assert sig[1] == sig[3] == types.intp and sig[5] == types.float64, sig
    # the compiled calls' one float32 signature: layout 'A', integer flags
    f32 = [s for s in blas._gemm.signatures if s[4].dtype == types.float32
           and [a.layout for a in (s[0], s[2], s[4])] == ["A", "A", "A"]
           and s[0].mutable and s[2].mutable]
    assert len(f32) == 1, f32


def test_a_choice_that_fits_no_kernel_is_a_typing_error():
    """A stub call whose argument types choose no kernel fails to compile, naming the stub;
    it never falls through to the stub's Python body."""
    from fastbptt.cpu.activations import tanh_s

    @numba.njit
    def f(v):
        return tanh_s(v)

    assert f(np.float32(0.5)) == pytest.approx(np.tanh(0.5), abs=1e-6)
    with pytest.raises(numba.core.errors.TypingError, match="tanh_s"):
        f(3)


_COUNT = r"""
import collections, sys
from numba.core import event
n = collections.Counter()
class L(event.Listener):
    def on_start(self, ev):
        d = ev.data.get("dispatcher")
        if d is not None and d.py_func.__module__.startswith("fastbptt"):
            n[d.py_func.__module__ + "." + d.py_func.__qualname__] += 1
    def on_end(self, ev):
        pass
event.register("numba:compile", L())
import numpy as np, fastbptt
cell = sys.argv[1]
p = fastbptt.init_params(65, 100, 65, cell=cell, seed=0)
rng = np.random.default_rng(0)
fastbptt.loss_and_grad(p, rng.integers(0, 65, (25, 1)), rng.integers(0, 65, (25, 1)), cell=cell)
for k, v in sorted(n.items()):
    print(v, k)
"""


@pytest.mark.parametrize("cell", CELLS)
def test_a_cold_first_call_compiles_each_function_once(cell, tmp_path):
    """On an empty Numba cache the min-char call compiles every fastbptt function it uses
    once, and no wrapper of a compile-time choice (overload implementations compiled per
    signature and gemm compiled per operand layout had doubled the cold call's time)."""
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", _COUNT, cell], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    counts = {line.split()[1]: int(line.split()[0]) for line in out.stdout.splitlines()}
    assert "fastbptt.cpu.fused.fused_full_bptt" in counts and "fastbptt.cpu.blas._gemm" in counts
    assert all(v == 1 for v in counts.values()), counts
    # inlined helpers and the dispatch stubs compile nothing of their own
    for name in ("fastbptt.cpu.blas.gemm", "fastbptt.cpu.steps.forward_step",
                 "fastbptt.cpu.steps.backward_step", "fastbptt.cpu.fused.head_rows"):
        assert name not in counts, counts
    assert not [k for k in counts if "<locals>" in k], counts
