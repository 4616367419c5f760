"""The Numba CPU fast paths against the NumPy reference and against float64 math.

* the fused full-BPTT kernel (``cpu.fused_full_bptt``), which ``loss_and_grad`` takes for full
  BPTT without a mask, for every input kind × loss × activation × dtype;
* the float32 approximations it uses (``tanh_f32``, ``_exp_shift_f32``), with their accuracy
  pinned in ulps;
* the BLAS wrapper ``gemm`` (SciPy's OpenBLAS, with MKL for one-thread products when the
  ``mkl`` package is installed; FASTBPTT_BLAS=openblas or mkl for one library).

No timings are asserted here; speed is measured by ``fastbptt bench`` and ``bench/``.
"""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbptt
from fastbptt import _validate, cpu
from tolerances import EXACT32, EXACT64

TOL = {np.float64: EXACT64, np.float32: EXACT32}


def _case(rng, dtype, in_kind, loss, tkind, T=7, B=3, I=5, H=6, O=4, vocab=9):
    p = fastbptt.init_params(I, H, O, dtype=dtype, seed=int(rng.integers(1 << 30)),
                             vocab_size=vocab if in_kind == "E" else None)
    p["b"] += (0.1 * rng.standard_normal(H)).astype(dtype)
    p["c"] += (0.1 * rng.standard_normal(O)).astype(dtype)
    if in_kind == "float":
        x = rng.standard_normal((T, B, I)).astype(dtype)
    else:
        x = rng.integers(0, vocab if in_kind == "E" else I, (T, B))
    y = rng.integers(0, O, (T, B)) if tkind == "ids" else rng.random((T, B, O)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    return p, x, y, h0


def _assert_same(out, ref, dtype):
    (l1, g1, h1), (l2, g2, h2) = out, ref
    tol = TOL[dtype]
    np.testing.assert_allclose(l1, l2, **tol)
    assert set(g1) == set(g2)
    for k in g2:
        assert g1[k].dtype == dtype and g1[k].shape == g2[k].shape, k
        assert g1[k].flags.c_contiguous, k
        np.testing.assert_allclose(g1[k], g2[k], err_msg=k, **tol)
    np.testing.assert_allclose(h1, h2, **tol)


COMBOS = [(ik, loss, tk) for ik in ("float", "onehot", "E")
          for loss, tk in (("cross_entropy", "ids"), ("cross_entropy", "probs"), ("mse", "probs"))]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("in_kind,loss,tkind", COMBOS)
def test_fused_matches_reference(dtype, activation, in_kind, loss, tkind):
    rng = np.random.default_rng(hash((in_kind, loss, tkind, activation)) % (1 << 32))
    p, x, y, h0 = _case(rng, dtype, in_kind, loss, tkind)
    for reduction in ("sum", "mean"):
        kw = dict(activation=activation, loss=loss, reduction=reduction)
        prob = _validate.validate_loss_and_grad(p, x, y, h0, activation, loss, reduction, None,
                                                False, "cpu")
        assert cpu.fused_eligible(prob)
        ref = fastbptt.loss_and_grad(p, x, y, h0, backend="numpy", **kw)
        _assert_same(cpu.fused_loss_and_grad(prob), ref, dtype)
        _assert_same(fastbptt.loss_and_grad(p, x, y, h0, **kw), ref, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_edge_shapes_and_layouts(dtype):
    """T = 1, B = 1, H = 1, H not a multiple of 8, batch_first, strided inputs, h0=None."""
    rng = np.random.default_rng(5)
    for T, B, I, H, O in ((1, 1, 1, 1, 2), (3, 1, 2, 13, 3), (4, 5, 3, 1, 1), (9, 2, 7, 17, 5)):
        p, x, y, h0 = _case(rng, dtype, "float", "cross_entropy", "ids", T, B, I, H, O)
        ref = fastbptt.loss_and_grad(p, x, y, backend="numpy")
        _assert_same(fastbptt.loss_and_grad(p, x, y), ref, dtype)
        xf = np.asfortranarray(x)
        _assert_same(fastbptt.loss_and_grad(p, xf.transpose(1, 0, 2), y.T, batch_first=True),
                     ref, dtype)
    big = rng.standard_normal((6, 4, 10)).astype(dtype)[::2, ::2, ::2]   # strided view
    p = fastbptt.init_params(5, 4, 3, dtype=dtype, seed=1)
    y = rng.integers(0, 3, (3, 2))
    _assert_same(fastbptt.loss_and_grad(p, big, y), fastbptt.loss_and_grad(p, big, y, backend="numpy"),
                 dtype)


def test_fused_does_not_mutate_inputs_and_is_not_taken_with_mask_or_truncation():
    rng = np.random.default_rng(3)
    p, x, y, h0 = _case(rng, np.float64, "float", "cross_entropy", "ids")
    before = {k: v.copy() for k, v in p.items()}, x.copy(), y.copy(), h0.copy()
    fastbptt.loss_and_grad(p, x, y, h0)
    for k in p:
        np.testing.assert_array_equal(p[k], before[0][k])
    np.testing.assert_array_equal(x, before[1])
    np.testing.assert_array_equal(y, before[2])
    np.testing.assert_array_equal(h0, before[3])
    mask = np.ones(y.shape)
    mask[-2:, 0] = 0
    for extra in (dict(mask=mask), dict(truncate=3), dict(checkpoint=2)):
        prob = _validate.validate_loss_and_grad(p, x, y, h0, "tanh", "cross_entropy", "sum",
                                                extra.get("mask"), False, "cpu",
                                                extra.get("truncate"), extra.get("checkpoint"))
        assert not cpu.fused_eligible(prob), extra
    prob = _validate.validate_loss_and_grad(p, x, y[-1], h0, "tanh", "cross_entropy", "sum", None,
                                            False, "cpu")
    assert not cpu.fused_eligible(prob)               # many-to-one: loss on one step only


def test_fused_nan_propagates_without_crashing():
    rng = np.random.default_rng(4)
    for dtype in (np.float64, np.float32):
        p, x, y, h0 = _case(rng, dtype, "float", "cross_entropy", "ids")
        x[3, 1, 0] = np.nan
        loss, g, _ = fastbptt.loss_and_grad(p, x, y, h0)
        assert np.isnan(loss)
        assert np.isnan(g["W"]).any()


# --------------------------------------------------------------------------- float32 math
def _ulps(got, exact):
    """|got - exact| in units of float32 spacing at the exact value."""
    exact32 = exact.astype(np.float32)
    return np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(exact32)).astype(np.float64)


def test_tanh_f32_accuracy():
    x = np.concatenate([np.linspace(-12, 12, 400_001), np.geomspace(1e-30, 12, 20_001),
                        -np.geomspace(1e-30, 12, 20_001), [0.0, -0.0]]).astype(np.float32)
    out = np.empty_like(x)
    cpu.tanh_f32_array(x, out)
    exact = np.tanh(x.astype(np.float64))
    assert np.max(np.abs(out - exact)) < 5e-7          # absolute, everywhere
    assert np.max(_ulps(out, exact)) <= 8              # a few float32 ulps, everywhere
    np.testing.assert_array_equal(out[np.abs(x) >= 9], np.sign(x[np.abs(x) >= 9]))
    np.testing.assert_array_equal(out, -cpu_tanh(-x))  # odd
    assert np.all(np.abs(out) <= 1)
    nan = np.array([np.nan], np.float32)
    cpu.tanh_f32_array(nan, out[:1])
    assert np.isnan(out[0])


def cpu_tanh(x):
    out = np.empty_like(x)
    cpu.tanh_f32_array(x, out)
    return out


def test_exp_shift_f32_accuracy():
    t = np.concatenate([np.linspace(-87, 0, 200_001), -np.geomspace(1e-20, 87, 10_001)]).astype(np.float32)
    row = t.copy()
    nb = np.empty(t.size, np.int32)
    s = cpu.heads._exp_shift_f32(row, np.float32(0), nb)
    exact = np.exp(t.astype(np.float64))
    assert np.max(_ulps(row, exact)) <= 2
    assert abs(s - exact.sum()) <= 1e-6 * exact.sum()
    row = np.array([0.0, np.nan, -1.0], np.float32)
    cpu.heads._exp_shift_f32(row, np.float32(0), np.empty(3, np.int32))
    assert row[0] == 1 and np.isnan(row[1]) and abs(row[2] - np.exp(-1.0)) < 1e-7


def test_softmax_stable_for_huge_logits():
    for dtype in (np.float32, np.float64):
        o = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype)
        loss = cpu.softmax_xent_ids(o, np.array([1, 0]), np.ones(2, dtype))
        assert np.isfinite(loss) and np.all(np.isfinite(o))
        np.testing.assert_allclose(loss, 2e4 + np.log(3), rtol=1e-6)


# --------------------------------------------------------------------------- gemm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_all_transposes(dtype):
    cpu.register_blas()
    rng = np.random.default_rng(0)
    sc, fs = cpu.gemm_scratch(2, np.empty(0, dtype))
    for (m, n, k), ta, tb, beta in itertools.product([(5, 7, 3), (1, 9, 4), (6, 1, 1), (4, 3, 0)],
                                                    (0, 1), (0, 1), (0.0, 1.0, 0.5)):
        A = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
        Bm = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
        C = rng.standard_normal((m, n)).astype(dtype)
        want = (A.T if ta else A) @ (Bm.T if tb else Bm) + beta * C
        cpu.gemm(A, ta, Bm, tb, C, beta, sc, fs)
        cpu.restore_threads(sc)
        np.testing.assert_allclose(C, want, rtol=1e-5 if dtype == np.float32 else 1e-13,
                                   atol=1e-5 if dtype == np.float32 else 1e-13)


def _gemm_strided(rng, dtype, m, n, k, ta, tb, beta, tol):
    """cpu.gemm on operands that are column slices of wider arrays (rows strided, as a state
    row [B, K·H] is read as h [B, H]) against NumPy; nothing is written past a row."""
    def strided(shape):
        wide = rng.standard_normal((shape[0], shape[1] + 5)).astype(dtype)
        return wide[:, :shape[1]]

    sc, fs = cpu.gemm_scratch(2, np.empty(0, dtype))
    A = strided((k, m) if ta else (m, k))
    Bm = strided((n, k) if tb else (k, n))
    C = strided((m, n))
    pad = C.base[:, n:].copy()
    want = (A.T if ta else A) @ (Bm.T if tb else Bm) + beta * C
    cpu.gemm(A, ta, Bm, tb, C, beta, sc, fs)
    cpu.restore_threads(sc)
    np.testing.assert_allclose(C, want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(C.base[:, n:], pad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_every_size_class_strided(dtype):
    """Each size class goes to its own library call: tiny (OpenBLAS), one-thread of up to
    ONE_ROWS rows (MKL in auto mode when installed; float32 with B as stored: OpenBLAS on AMD
    CPUs with AVX-512, in blocks of columns and chunks of k), longer one-thread (OpenBLAS)
    and threaded; every transpose and beta, strided rows."""
    cpu.register_blas()
    rng = np.random.default_rng(2)
    small, thread_min, one_rows = cpu.blas._SMALL_GEMM, cpu.blas.THREAD_MIN, cpu.blas.ONE_ROWS
    shapes = [(16, 20, 24), (24, 48, 144), (16, 128, 512), (32, 128, 512), (64, 128, 1024),
              (16, 300, 256), (32, 200, 512),
              (one_rows + 1, 40, 24), (256, 256, 256)]                              # (m, n, k)
    assert [m * n * k < small for m, n, k in shapes] == [True] + [False] * 8
    assert [m * n * k < thread_min for m, n, k in shapes] == [True] * 8 + [False]
    assert [m <= one_rows for m, n, k in shapes] == [True] * 7 + [False, True]
    # (column blocks, chunks of k): one of each, then two, three and nine chunks, three
    # blocks, two of each where OpenBLAS's small kernel wins (AMD with AVX-512), else the
    # whole product on MKL (where installed)
    blocks = [cpu.blas._nn_blocks.py_func(m, n, k) for m, n, k in shapes[1:7]]
    assert blocks == ([(1, 1), (1, 2), (1, 3), (1, 9), (3, 1), (2, 2)]
                      if cpu.blas.ONE_NN_CHUNKS > 1 else [(1, 1)] + [(0, 0)] * 5)
    assert cpu.blas._nn_blocks.py_func(300, 4096, 64) == (0, 0)     # no chunk 32 deep fits
    for (m, n, k), ta, tb, beta in itertools.product(shapes, (0, 1), (0, 1), (0.0, 1.0)):
        _gemm_strided(rng, dtype, m, n, k, ta, tb, beta, 2e-4 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_few_rows_strided(dtype):
    """Up to blas._GEMV_ROWS rows run as one ?gemv per row: every transpose, beta and row
    stride, and the first row count past the threshold, which takes ?gemm."""
    cpu.register_blas()
    rng = np.random.default_rng(1)
    rows = (1, 2, cpu.blas._GEMV_ROWS, cpu.blas._GEMV_ROWS + 1)
    for m, ta, tb, beta in itertools.product(rows, (0, 1), (0, 1), (0.0, 1.0, -0.5)):
        _gemm_strided(rng, dtype, m, 13, 11, ta, tb, beta, 1e-5 if dtype == np.float32 else 1e-13)


def _mkl_installed():
    from fastbptt.bench import _available
    return _available("mkl")


_MODE_CHECK = (
    "import numpy as np, fastbptt\n"
    "from fastbptt import cpu\n"
    "rng = np.random.default_rng(0)\n"
    # B 24, H 48: the time steps' products (24 x 48 x 144 for the GRU) are one-thread ones,
    # which auto mode sends to MKL; B 2 takes ?gemv; B 40 makes the all-rows products one-
    # thread ones of T·B = 280 > ONE_ROWS rows, which stay on OpenBLAS
    "for cell in ('rnn', 'lstm', 'gru'):\n"
    "    for B in (2, 24, 40):\n"
    "        p = fastbptt.init_params(40, 48, 30, cell=cell, dtype=np.float64, seed=0)\n"
    "        x = rng.standard_normal((7, B, 40)); y = rng.integers(0, 30, (7, B))\n"
    "        for dt, tol in ((np.float64, {t64}), (np.float32, {t32})):\n"
    "            q = {{k: v.astype(dt) for k, v in p.items()}}\n"
    "            a = fastbptt.loss_and_grad(q, x.astype(dt), y, cell=cell)\n"
    "            b = fastbptt.loss_and_grad(q, x.astype(dt), y, cell=cell, backend='numpy')\n"
    "            np.testing.assert_allclose(a[0], b[0], **tol)\n"
    "            for k in b[1]: np.testing.assert_allclose(a[1][k], b[1][k], **tol)\n"
    "print(cpu.blas.BLAS_NAME)\n").format(t64=EXACT64, t32=EXACT32)


def _run_mode(mode):
    env = dict(os.environ, FASTBPTT_BLAS=mode)
    r = subprocess.run([sys.executable, "-c", _MODE_CHECK], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.split()[-1]


@pytest.mark.skipif(not _mkl_installed(), reason="the optional mkl package is not installed")
@pytest.mark.parametrize("mode, name", [("mkl", "mkl"), ("auto", "scipy-openblas+mkl"),
                                        ("openblas", "scipy-openblas")])
def test_blas_modes_match_reference(mode, name):
    """Every FASTBPTT_BLAS mode gives the reference's answers, every cell, float64 and
    float32, and names its libraries: auto puts the one-thread products on MKL."""
    assert _run_mode(mode) == name


def test_default_blas():
    fastbptt.loss_and_grad(*_case(np.random.default_rng(0), np.float64, "float", "cross_entropy", "ids")[:3])
    want = {"openblas": "scipy-openblas", "mkl": "mkl",
            "auto": "scipy-openblas+mkl" if _mkl_installed() else "scipy-openblas"}[cpu.blas.blas_mode()]
    assert cpu.blas.BLAS_NAME == want


def test_blas_mode_is_checked(monkeypatch):
    """A misspelt FASTBPTT_BLAS is an error that names the variable and the choices."""
    monkeypatch.setenv("FASTBPTT_BLAS", "openblass")
    with pytest.raises(ValueError, match=r"FASTBPTT_BLAS='openblass'.*auto, openblas, mkl"):
        cpu.blas.blas_mode()
    monkeypatch.setenv("FASTBPTT_BLAS", " MKL ")
    assert cpu.blas.blas_mode() == "mkl"
    monkeypatch.delenv("FASTBPTT_BLAS")
    assert cpu.blas.blas_mode() == "auto"


# --------------------------------------------------------------------------- fastbptt bench
def test_bench_cli_smoke(tmp_path):
    """`fastbptt bench` runs children, tabulates, writes JSON; a missing peer is a note."""
    from fastbptt import bench, cli
    res = bench.run_bench(["minchar"], impls=("fastbptt", "reference"), min_time=0.05,
                          roofline=False, log=lambda s: None)
    rows = {r["impl"]: r for r in res["rows"]}
    assert set(rows) == {"fastbptt", "reference"}
    assert rows["reference"]["speedup_vs_reference"] == 1.0
    assert rows["fastbptt"]["gflops"] > 0 and rows["fastbptt"]["speedup_vs_torch"] is None
    assert "| minchar | fastbptt |" in bench.format_table(res)
    assert bench.flops(64, 128, 1024, 1024, 1024) == 2 * 64 * 128 * 1024 * (2048 + 3072 + 3072)
    assert bench.flops(64, 128, 1024, 1024, 1024, cell="lstm") == \
        2 * 64 * 128 * 1024 * (4 * (2048 + 3072) + 3072)        # four gates' products
    lstm = bench.run_bench(["minchar"], impls=("fastbptt",), min_time=0.05, roofline=False,
                           log=lambda s: None, cell="lstm")
    row = lstm["rows"][0]
    assert lstm["cell"] == "lstm" and row["gflops"] > 0
    # the table counts the LSTM's flops, not the Elman cell's
    assert row["gflops"] == pytest.approx(bench.flops(*bench.SIZES["minchar"][:5], cell="lstm")
                                          / (row["ms"] * 1e-3) / 1e9, rel=1e-6)
    with pytest.raises(cli.CLIError):
        bench.main(cli.build_parser()[0].parse_args(["bench", "--sizes", "huge"]))


# --------------------------------------------------------------------------- gated cells, workspace
def _cell_case(rng, cell, dtype, in_kind, T, B, I, H, O, vocab=9):
    p = fastbptt.init_params(I, H, O, dtype=dtype, seed=int(rng.integers(1 << 30)), cell=cell,
                             vocab_size=vocab if in_kind == "E" else None)
    p["b"] += (0.1 * rng.standard_normal(p["b"].shape)).astype(dtype)
    if in_kind == "float":
        x = rng.standard_normal((T, B, I)).astype(dtype)
    else:
        x = rng.integers(0, vocab if in_kind == "E" else I, (T, B))
    h0 = rng.standard_normal((B, H)).astype(dtype)
    return p, x, h0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_fused_cells_at_edge_shapes_match_reference(cell, dtype):
    """Every cell through the fused kernel at T, B, H = 1, H not a multiple of 8, and every
    input kind (embedded ids reuse their workspace region for δU) and target kind."""
    rng = np.random.default_rng(11)
    for (T, B, I, H, O), in_kind, tk in itertools.product(
            ((1, 1, 1, 1, 2), (3, 1, 2, 13, 3), (4, 5, 3, 1, 1), (9, 2, 7, 17, 5)),
            ("float", "onehot", "E"), ("ids", "probs")):
        p, x, h0 = _cell_case(rng, cell, dtype, in_kind, T, B, I, H, O)
        y = rng.integers(0, O, (T, B)) if tk == "ids" else rng.random((T, B, O)).astype(dtype)
        ref = fastbptt.loss_and_grad(p, x, y, h0, cell=cell, backend="numpy")
        out = fastbptt.loss_and_grad(p, x, y, h0, cell=cell)
        l1, g1, s1 = out
        l2, g2, s2 = ref
        tol = TOL[dtype]
        np.testing.assert_allclose(l1, l2, **tol)
        assert set(g1) == set(g2)
        for k in g2:
            np.testing.assert_allclose(g1[k], g2[k], err_msg=f"{cell} {in_kind} {k}", **tol)
        for a, b in zip(s1 if isinstance(s1, tuple) else (s1,), s2 if isinstance(s2, tuple) else (s2,)):
            np.testing.assert_allclose(a, b, **tol)


def test_forward_transposed_rule():
    """The forward steps read a copy of Wᵀ only for float32 batches of 9 to FORWARD_T_ROWS
    rows, where OpenBLAS's small-matrix kernel serves the B-as-stored products in blocks."""
    from fastbptt.cpu.blas import FORWARD_T_ROWS, _GEMV_ROWS, forward_transposed
    from fastbptt.cpu.steps import recurrent_operand
    cpu.register_blas()
    on = cpu.blas.ONE_NN_CHUNKS > 1 and cpu.blas._NN_OPENBLAS
    assert forward_transposed(16, np.float32) == on
    assert forward_transposed(FORWARD_T_ROWS, np.float32) == on
    for B, dt in ((_GEMV_ROWS, np.float32), (FORWARD_T_ROWS + 1, np.float32), (16, np.float64)):
        assert not forward_transposed(B, dt)
    W = np.arange(4 * 37 * 37, dtype=np.float32).reshape(4 * 37, 37) * 0.5       # [4H, H]
    WT = recurrent_operand(W, 16)
    if on:
        np.testing.assert_array_equal(WT, W.T)
    else:
        assert WT.shape == (0, 0)
    assert recurrent_operand(W.astype(np.float64), 16).shape == (0, 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_forward_steps_with_transposed_w_match_reference(cell, dtype, monkeypatch):
    """With the forward steps made to read Wᵀ (the rule answering yes whatever this CPU, dtype
    and batch), the fused call, the engine (a mask) and the layer API equal the NumPy
    reference; the rule itself is :func:`test_forward_transposed_rule`'s."""
    from fastbptt.cpu import steps
    monkeypatch.setattr(steps, "forward_transposed", lambda B, dtype: True)
    rng = np.random.default_rng(5)
    T, B, I, H, O = 6, 12, 7, 19, 5
    p, x, h0 = _cell_case(rng, cell, dtype, "float", T, B, I, H, O)
    y = rng.integers(0, O, (T, B))
    tol = TOL[dtype]
    mask = np.ones((T, B), bool)
    mask[4:, 3] = False
    for kw in ({}, {"mask": mask}):
        ref = fastbptt.loss_and_grad(p, x, y, h0, cell=cell, backend="numpy", **kw)
        out = fastbptt.loss_and_grad(p, x, y, h0, cell=cell, **kw)
        np.testing.assert_allclose(out[0], ref[0], **tol)
        for k in ref[1]:
            np.testing.assert_allclose(out[1][k], ref[1][k], err_msg=f"{cell} {kw} {k}", **tol)
    fwd = getattr(fastbptt, f"{cell}_forward")
    args = (x, h0, None) if cell == "lstm" else (x, h0)
    extra = (p["bn"],) if cell == "gru" else ()
    hs, _ = fwd(*args, p["U"], p["W"], p["b"], *extra)
    hs_ref, _ = fwd(*args, p["U"], p["W"], p["b"], *extra, backend="numpy")
    np.testing.assert_allclose(hs, hs_ref, **tol)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_workspace_layout_regions_are_aligned_and_disjoint(cell):
    from fastbptt.cells import get
    from fastbptt.cpu.fused import workspace_layout
    from fastbptt.cpu.workspace import workspace
    c = get(cell)
    for T, B, H, O, I, embed in ((1, 1, 1, 1, 1, False), (3, 2, 5, 7, 3, True), (100, 32, 128, 64, 64, True)):
        lay = workspace_layout(T, B, c.G, c.D, c.K, H, O, I, c.split, embed)
        R = T * B
        sizes = [R * max(c.G, c.D) * H, (T + 1) * B * c.K * H, R * O,
                 B * c.G * H if c.split else 0, R * I if embed else 0]
        for k in range(5):
            assert lay[k + 1] % 16 == 0
            end = lay[k + 2] if k < 4 else lay[0]
            assert lay[k + 1] + sizes[k] <= end          # each region fits before the next
        for dt in (np.float32, np.float64):
            ws = workspace(int(lay[0]), dt)
            assert ws.shape == (lay[0],) and ws.dtype == dt and ws.ctypes.data % 64 == 0


def test_huge_page_workspace_leaves_results_unchanged(monkeypatch):
    """With every workspace 2 MiB aligned and advised (the large sizes' path), the results are
    bit for bit those of the small-workspace path."""
    from fastbptt.cpu import workspace as W
    rng = np.random.default_rng(2)
    for cell in ("rnn", "lstm", "gru"):
        p, x, h0 = _cell_case(rng, cell, np.float64, "float", 6, 3, 4, 9, 5)
        y = rng.integers(0, 5, (6, 3))
        W.release()
        base = fastbptt.loss_and_grad(p, x, y, h0, cell=cell)
        monkeypatch.setattr(W, "ADVISE_MIN", 0)
        ws = W.workspace(1000, np.float64)
        assert ws.ctypes.data % W.HUGE == 0
        W.madvise_hugepage(ws)                           # advice only: never raises
        W.release()
        big = fastbptt.loss_and_grad(p, x, y, h0, cell=cell)
        monkeypatch.setattr(W, "ADVISE_MIN", 32 << 20)
        assert big[0] == base[0]
        for k in base[1]:
            np.testing.assert_array_equal(big[1][k], base[1][k], err_msg=k)
