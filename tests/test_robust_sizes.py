"""Sizes: no 32-bit index overflow, and MemoryError instead of crashes.

What the kernels index with: every loop bound comes from ``range(a.shape[i])`` and every
element address from Numba's array model, both ``intp`` (64-bit here); ids reach the kernels
as int64 (``_validate._ids``). So the only way to overflow would be an explicit 32-bit
integer, which the signature test below rules out. The gather/scatter kernels (one-hot
inputs, embedding gradients) are also run at row indexes above 2^31 on an array of more than
2^31 elements that the OS allocates lazily (``np.zeros`` maps zero pages on demand, so only
the pages touched become resident: a few kB, not 8 GiB).
"""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest

import fastbptt
from fastbptt import _validate, cpu, engine
from robust_util import explain, run_python

BIG = 2 ** 31 + 16          # rows: > 2^31 elements in a [BIG, 1] array


def _huge_zeros(shape, dtype):
    try:
        return np.zeros(shape, dtype)                 # virtual memory only, until touched
    except MemoryError:
        pytest.skip("this machine does not overcommit an 8 GiB lazy allocation")


def test_kernels_index_with_64_bit_integers():
    """Ids and class ids reach every compiled kernel as int64, whatever dtype the user gave."""
    import inspect
    assert numba.types.intp.bitwidth == 64
    rng = np.random.default_rng(0)
    for dt in (np.float32, np.float64):
        for vocab in (None, 4):
            p = fastbptt.init_params(3, 4, 5, vocab_size=vocab, dtype=dt, seed=0)
            ids = rng.integers(0, 3, (6, 2)).astype(np.int8)             # any id dtype in
            fastbptt.loss_and_grad(p, ids, ids.astype(np.uint16) % 5)
            fastbptt.loss_and_grad(p, ids, ids.astype(np.uint16) % 5, checkpoint=2)
    checked = 0
    for name, disp in vars(cpu).items():
        if not isinstance(disp, numba.core.registry.CPUDispatcher):
            continue
        params = list(inspect.signature(disp.py_func).parameters)
        for sig in disp.signatures:
            for pname, arg in zip(params, sig):
                if pname in ("ids", "y", "tgt") and isinstance(getattr(arg, "dtype", None), numba.types.Integer):
                    assert arg.dtype.bitwidth == 64, f"{name}({pname}: {arg}): ids must arrive as int64"
                    checked += 1
    assert checked >= 2


def test_gather_and_scatter_rows_beyond_2_31():
    table = _huge_zeros((BIG, 1), np.float32)          # [BIG, 1], like Uᵀ with n_in = BIG
    hi = [2 ** 31 + 5, 2 ** 31 + 15]
    table[hi[0], 0], table[hi[1], 0], table[7, 0] = 1.5, 2.5, 3.5
    ids = np.array([hi[0], 7, hi[1]], dtype=np.int64)
    out = np.empty((3, 1), np.float32)
    cpu.gather_rows_bias(table, ids, np.full(1, 0.25, np.float32), out)
    # an int32 index would wrap 2^31 + 5 to a negative row (row 21 after wrap-around): 0.25
    np.testing.assert_array_equal(out[:, 0], [1.75, 3.75, 2.75])

    table[hi[0], 0] = table[hi[1], 0] = table[7, 0] = 0
    cpu.scatter_add_rows(table, np.array([hi[0], hi[0], hi[1]], np.int64),
                         np.array([[1.0], [2.0], [4.0]], np.float32))
    assert table[hi[0], 0] == 3.0 and table[hi[1], 0] == 4.0
    for wrapped in (hi[0] - 2 ** 32 + BIG, hi[1] - 2 ** 32 + BIG, 5, 15):
        assert table[wrapped, 0] == 0, wrapped


@pytest.mark.parametrize("dtype, value", [(np.int64, 2 ** 31), (np.int64, 2 ** 40),
                                          (np.uint32, 2 ** 32 - 1), (np.uint64, 2 ** 64 - 1),
                                          (np.int64, -2 ** 63)])
def test_huge_ids_are_rejected_with_their_true_value(dtype, value):
    p = fastbptt.init_params(3, 4, 5, dtype=np.float64, seed=0)
    ids = np.zeros((2, 2), dtype)
    ids[1, 1] = value
    with pytest.raises(ValueError, match=rf"inputs holds id {value}\b"):
        fastbptt.loss_and_grad(p, ids, np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match=rf"targets holds id {value}\b"):
        fastbptt.loss_and_grad(p, np.zeros((2, 2), np.int64), ids)


def test_ids_beyond_int64_are_a_type_error():
    p = fastbptt.init_params(3, 4, 5, dtype=np.float64, seed=0)
    with pytest.raises(TypeError, match="inputs"):
        fastbptt.loss_and_grad(p, [[2 ** 70, 0]], np.zeros((1, 2), np.int64))


def test_schedule_arithmetic_beyond_2_31():
    """The scheduler and the option parsing use Python ints: exact at any size."""
    T = 2 ** 33 + 5
    segs = engine._segments(0, T, 2 ** 31)
    assert segs[0] == (2 ** 33, T) and segs[-1] == (0, 2 ** 31) and len(segs) == 5
    assert all(a < b for a, b in segs)
    assert _validate.parse_checkpoint("sqrt", T) == math.ceil(math.sqrt(T))
    assert _validate.parse_checkpoint(np.int64(2 ** 40), T) == 2 ** 40
    assert _validate.parse_truncate((np.int64(2 ** 32), np.uint64(2 ** 33)), T) == (2 ** 32, 2 ** 33)


def test_impossible_input_copy_is_a_memory_error():
    """A zero-stride view of 2^46 floats: making it contiguous cannot succeed anywhere."""
    p = fastbptt.init_params(64, 4, 3, dtype=np.float64, seed=0)
    x = np.broadcast_to(np.zeros(64), (2 ** 20, 2 ** 20, 64))
    with pytest.raises(MemoryError):
        fastbptt.loss_and_grad(p, x, np.zeros((2 ** 20, 2 ** 20), np.int8))
    W = np.broadcast_to(np.zeros(1), (2 ** 24, 2 ** 24))
    with pytest.raises(MemoryError):
        fastbptt.rnn_forward(np.zeros((2, 1, 1)), None, np.zeros((2 ** 24, 1)), W, np.zeros(2 ** 24))


def test_init_params_too_large_is_a_memory_error():
    with pytest.raises(MemoryError):
        fastbptt.init_params(2 ** 22, 2 ** 22, 2, dtype=np.float64)


def test_engine_buffers_beyond_the_memory_limit_raise_memory_error():
    """Inputs that fit, state buffers that do not (RLIMIT_AS in a child): MemoryError from
    the allocation before compiled code runs, and the next call works normally."""
    proc = run_python("""
        import resource, numpy as np, fastbptt
        p = fastbptt.init_params(8, 256, 8, dtype=np.float64, seed=0)
        small = np.zeros((3, 2), np.int64)
        ref = fastbptt.loss_and_grad(p, small, small)          # compile / load before the limit
        hs, cache = fastbptt.rnn_forward(np.zeros((3, 2, 8)), None, p["U"], p["W"], p["b"])
        fastbptt.rnn_backward(np.zeros((3, 2, 256)), cache)
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + 512 * 2 ** 20, resource.RLIM_INFINITY))
        ids = np.zeros((20000, 64), np.int64)                  # 10 MB in; [T+1, B, H] is 2.6 GB
        for name, fn in [("loss_and_grad", lambda: fastbptt.loss_and_grad(p, ids, ids)),
                         ("rnn_forward", lambda: fastbptt.rnn_forward(
                             np.broadcast_to(np.zeros(8), (20000, 64, 8)), None, p["U"], p["W"], p["b"]))]:
            try:
                fn()
            except MemoryError:
                print(name, "MemoryError")
        again = fastbptt.loss_and_grad(p, small, small)
        assert again[0] == ref[0]
        print("OK")
    """, timeout=180)
    assert proc.returncode == 0, explain(proc)
    assert "loss_and_grad MemoryError" in proc.stdout and "rnn_forward MemoryError" in proc.stdout, proc.stdout
    assert "OK" in proc.stdout


def test_products_too_large_for_32bit_blas_sizes_fall_back(monkeypatch):
    """gemm hands sizes to BLAS as int32: larger products go through NumPy instead."""
    from types import SimpleNamespace

    import tolerances as tol
    from cases import make_case
    from fastbptt.cells import CELLS
    huge = SimpleNamespace(truncate=None, checkpoint=None, dense=True, masked=False, y_map=None,
                           T=2 ** 20, B=2 ** 11, n_in=1, H=1, n_out=1, cell=CELLS["rnn"])
    assert not cpu.fused_eligible(huge)
    case = make_case(T=6, B=3, input_kind="float")
    expected = fastbptt.loss_and_grad(**case, backend="numpy")
    monkeypatch.setattr(cpu.ops, "LP64_MAX", 4)   # every product now takes the fallback
    got = fastbptt.loss_and_grad(**case, checkpoint=2)
    np.testing.assert_allclose(got[0], expected[0], **tol.EXACT64)
    for k in expected[1]:
        np.testing.assert_allclose(got[1][k], expected[1][k], err_msg=k, **tol.EXACT64)
