"""fastbptt.distributed on a LocalCluster of two worker processes: equality with the
single-process call, lost workers, and the errors a user sees.

One cluster serves the whole module (starting one takes seconds on a busy machine).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("dask.distributed")
from dask.distributed import Client, LocalCluster  # noqa: E402

import fastbptt  # noqa: E402
from fastbptt import distributed as fd  # noqa: E402
from cases import make_case  # noqa: E402
from tolerances import DISTRIBUTED64, EXACT32  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc:
        yield lc


@pytest.fixture
def client(cluster):
    with Client(cluster) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


def assert_same(got, want, tol=DISTRIBUTED64):
    loss, grads, h_last = got
    loss0, grads0, h_last0 = want
    np.testing.assert_allclose(loss, loss0, **tol)
    assert set(grads) == set(grads0)
    for k in grads0:
        assert grads[k].dtype == grads0[k].dtype, k
        np.testing.assert_allclose(grads[k], grads0[k], err_msg=k, **tol)
    assert type(h_last) is type(h_last0)
    for h, h0 in zip(*((h_last, h_last0) if isinstance(h_last0, tuple) else ((h_last,), (h_last0,)))):
        assert h.dtype == h0.dtype
        np.testing.assert_allclose(h, h0, **tol)          # products over fewer rows round differently


def single_and_distributed(client, case, n_shards=None, **kwargs):
    want = fastbptt.loss_and_grad(**case, **kwargs)       # first: compiles into the disk cache
    data = {k: case[k] for k in ("inputs", "targets", "mask", "h0", "batch_first")}
    call = {k: v for k, v in case.items() if k not in data and k != "params"}
    shards = fd.shard(client, **data, n_shards=n_shards)
    got = fd.loss_and_grad(client, case["params"], shards, **call, **kwargs)
    return got, want


# --------------------------------------------------------------------------- equality
@pytest.mark.parametrize("input_kind", ["float", "onehot", "embed"])
@pytest.mark.parametrize("target_kind", ["ids", "probs", "mse"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_equals_single_process(client, input_kind, target_kind, reduction):
    case = make_case(input_kind=input_kind, target_kind=target_kind, reduction=reduction,
                     T=6, B=5, seed=1)
    assert_same(*single_and_distributed(client, case))


@pytest.mark.parametrize("opts", [
    dict(masked=True, reduction="mean"),
    dict(many_to_one=True, reduction="mean"),
    dict(many_to_one=True, masked=True, reduction="mean", target_kind="probs"),
    dict(batch_first=True, masked=True, reduction="mean"),
    dict(batch_first=True, many_to_one=True, target_kind="mse"),
    dict(activation="relu", h0=False),
    dict(activation="sigmoid", input_kind="embed", masked=True),
])
def test_masks_many_to_one_layouts(client, opts):
    case = make_case(T=7, B=5, seed=2, **opts)
    assert_same(*single_and_distributed(client, case))


@pytest.mark.parametrize("kwargs", [
    dict(truncate=3), dict(truncate=(2, 5)), dict(checkpoint="sqrt"),
    dict(truncate=(2, 4), checkpoint=3), dict(backend="numpy"),
])
def test_truncation_checkpointing_backends(client, kwargs):
    case = make_case(T=9, B=4, seed=3, masked=True, reduction="mean")
    assert_same(*single_and_distributed(client, case, **kwargs))


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("opts", [dict(), dict(truncate=(2, 4), checkpoint=3), dict(many_to_one=True)])
def test_gated_cells(client, cell, opts, backend):
    rng = np.random.default_rng(16)
    T, B, n_in, H, n_out = 6, 5, 4, 3, 5
    params = fastbptt.init_params(n_in, H, n_out, cell=cell, dtype=np.float64, seed=16)
    h0 = rng.standard_normal((B, H))
    case = dict(params=params, inputs=rng.standard_normal((T, B, n_in)),
                targets=rng.integers(0, n_out, (B,) if opts.get("many_to_one") else (T, B)),
                h0=(h0, rng.standard_normal((B, H))) if cell == "lstm" else h0,
                mask=(rng.random((T, B)) < 0.8).astype(np.int64), batch_first=False,
                cell=cell, reduction="mean", backend=backend)
    kwargs = {k: v for k, v in opts.items() if k != "many_to_one"}
    assert_same(*single_and_distributed(client, case, n_shards=3, **kwargs))


def test_mean_weighs_by_global_counts(client):
    # shards with very different numbers of valid steps, one sequence with none at all: an
    # average of per-shard means would be wrong; the global count is what divides
    case = make_case(T=8, B=6, seed=4, many_to_one=True, reduction="mean")
    mask = np.zeros((8, 6))
    mask[:, 0] = 1
    mask[:2, 1] = 1
    mask[:5, 3:] = 1                                      # sequence 2 has no valid step
    case["mask"] = mask
    assert_same(*single_and_distributed(client, case, n_shards=3))
    case = make_case(T=8, B=6, seed=4, reduction="mean")
    case["mask"] = mask
    assert_same(*single_and_distributed(client, case, n_shards=3))


@pytest.mark.parametrize("n_shards", [1, 3, 50])
def test_shard_counts_keep_batch_order(client, n_shards):
    case = make_case(T=5, B=7, seed=5, masked=True)
    got, want = single_and_distributed(client, case, n_shards=n_shards)
    assert_same(got, want)


@pytest.mark.parametrize("inline_bytes", [0, 1 << 30])
def test_params_scattered_or_inline(client, monkeypatch, inline_bytes):
    monkeypatch.setattr(fd, "INLINE_PARAMS_BYTES", inline_bytes)
    case = make_case(T=6, B=5, seed=15, masked=True, reduction="mean")
    assert_same(*single_and_distributed(client, case))


def test_float32(client):
    case = make_case(T=6, B=6, seed=6, dtype=np.float32, reduction="mean")
    assert_same(*single_and_distributed(client, case), tol=EXACT32)


def test_shards_are_reused_with_new_params(client):
    case = make_case(T=6, B=4, seed=7)
    shards = fd.shard(client, case["inputs"], case["targets"], h0=case["h0"])
    assert len(shards) == 2 and shards.sizes == [2, 2]
    for scale in (1.0, 0.5):
        p = {k: v * scale for k, v in case["params"].items()}
        want = fastbptt.loss_and_grad(p, case["inputs"], case["targets"], case["h0"])
        assert_same(fd.loss_and_grad(client, p, shards), want)


def test_check_finite(client):
    case = make_case(T=4, B=4, seed=8)
    case["inputs"] = case["inputs"].copy()
    case["inputs"][1, 3, 0] = np.nan
    shards = fd.shard(client, case["inputs"], case["targets"])
    loss, _, _ = fd.loss_and_grad(client, case["params"], shards)
    assert np.isnan(loss)
    with pytest.raises(FloatingPointError, match="non-finite"):
        fd.loss_and_grad(client, case["params"], shards, check_finite=True)


# --------------------------------------------------------------------------- errors
def test_params_that_do_not_fit_raise_and_leave_the_cluster_usable(client):
    case = make_case(T=5, B=4, seed=9)
    shards = fd.shard(client, case["inputs"], case["targets"])
    wrong = fastbptt.init_params(case["params"]["U"].shape[1] + 1, 6, 5, dtype=np.float64)
    with pytest.raises(ValueError, match="n_in"):
        fd.loss_and_grad(client, wrong, shards)
    small_vocab = {k: v[:2] if k == "V" else v for k, v in case["params"].items()}
    small_vocab["c"] = small_vocab["c"][:2]
    with pytest.raises(ValueError, match="targets holds id"):
        fd.loss_and_grad(client, small_vocab, shards)
    with pytest.raises(ValueError, match="reduction"):
        fd.loss_and_grad(client, case["params"], shards, reduction="avg")
    with pytest.raises(TypeError, match="bogus"):
        fd.loss_and_grad(client, case["params"], shards, bogus=1)
    with pytest.raises(TypeError, match="shard"):
        fd.loss_and_grad(client, case["params"], shards, mask=np.ones((5, 4)))
    want = fastbptt.loss_and_grad(case["params"], case["inputs"], case["targets"])
    assert_same(fd.loss_and_grad(client, case["params"], shards), want)


def test_bad_shard_arguments(client):
    case = make_case(T=5, B=4, seed=10)
    with pytest.raises(ValueError, match="mask"):
        fd.shard(client, case["inputs"], case["targets"], mask=np.ones((5, 3)))
    with pytest.raises(ValueError, match="n_shards"):
        fd.shard(client, case["inputs"], case["targets"], n_shards=0)
    with pytest.raises(TypeError, match="Client"):
        fd.shard("tcp://localhost:8786", case["inputs"], case["targets"])
    with pytest.raises(TypeError, match="Shards"):
        fd.loss_and_grad(client, case["params"], (case["inputs"], case["targets"]))


def test_closed_client(cluster):
    case = make_case(T=5, B=4, seed=11)
    c = Client(cluster)
    shards = fd.shard(c, case["inputs"], case["targets"])
    c.close()
    t0 = time.monotonic()
    with pytest.raises(fd.ClusterError, match="closed"):
        fd.loss_and_grad(c, case["params"], shards)
    assert time.monotonic() - t0 < 60


def test_lost_scheduler():
    case = make_case(T=5, B=4, seed=12)
    lc = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    c = Client(lc)
    try:
        shards = fd.shard(c, case["inputs"], case["targets"])
        lc.close()                                          # the scheduler goes away
        t0 = time.monotonic()
        with pytest.raises(fd.ClusterError, match="scheduler|closed"):
            fd.loss_and_grad(c, case["params"], shards)
        assert time.monotonic() - t0 < 60
    finally:
        c.close()


def _set_worker_fastbptt(state):
    # a local function: sent by value, runs on the worker
    def change():
        import sys
        mod = sys.modules.get("_fastbptt_real")
        if mod is None:
            import fastbptt as mod
            sys.modules["_fastbptt_real"] = mod
        mod.__dict__.setdefault("_real_version", mod.__version__)
        sys.modules["fastbptt"] = None if state == "missing" else mod   # None: import fails
        mod.__version__ = mod._real_version if state in ("restore", "missing") else state
    return change


@pytest.mark.parametrize("state,words", [("0.0.1-other", ["0.0.1-other", fastbptt.__version__]),
                                         ("missing", ["not importable", fastbptt.__version__])])
def test_worker_without_fastbptt_or_another_version(client, state, words):
    case = make_case(T=5, B=4, seed=13)
    worker = sorted(client.nthreads())[0]
    client.run(_set_worker_fastbptt(state), workers=[worker])
    try:
        with pytest.raises(fd.ClusterError) as err:
            fd.shard(client, case["inputs"], case["targets"])
    finally:
        client.run(_set_worker_fastbptt("restore"), workers=[worker])
    for w in [worker] + words:
        assert w in str(err.value)
    other = sorted(client.nthreads())[1]
    assert other not in str(err.value)
    fd.shard(client, case["inputs"], case["targets"])          # usable again


# --------------------------------------------------------------------------- training
def _stream(B=4, L=120, vocab=11, seed=14):
    return np.random.default_rng(seed).integers(0, vocab, size=(L, B))


def _train(data, steps, step_fn, dtype=np.float64):
    from fastbptt import train
    vocab = int(data.max()) + 1
    params = fastbptt.init_params(vocab, 8, vocab, dtype=dtype, seed=0)
    cfg = dict(bptt=7, clip=5.0, optimizer="adam", lr=1e-2)
    state = train.State(params, train.new_opt_state("adam", params),
                        np.zeros((data.shape[1], 8), dtype), 0, 0, [])
    for _ in range(steps):
        state = step_fn(state, data, cfg)
    return state


def test_worker_killed_mid_training(client):
    from fastbptt import train
    data = _stream()
    want = _train(data, 40, train.train_step)
    trainer = fd.Trainer(data, client=client)
    holder = client.who_has(trainer.placed.futures[0])[trainer.placed.futures[0].key][0]
    victim = client.run(os.getpid)[holder]                # a worker holding a shard of the data
    calls = []

    def step(state, data, cfg):
        calls.append(1)
        if len(calls) == 15:           # end a worker's process while this step's tasks run
            threading.Timer(0.005, os.kill, (victim, signal.SIGKILL)).start()
        return trainer.step(state, data, cfg)

    got = _train(data, 40, step)
    assert victim not in client.run(os.getpid).values()      # it really died
    np.testing.assert_allclose(got.losses, want.losses, **DISTRIBUTED64)
    for k in want.params:
        np.testing.assert_allclose(got.params[k], want.params[k], **DISTRIBUTED64)
    client.wait_for_workers(2, timeout=120)


def test_import_fastbptt_does_not_import_dask():
    code = "import sys, fastbptt; fastbptt.loss_and_grad; assert 'dask' not in sys.modules, 'dask'"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(fastbptt.__file__))})


# --------------------------------------------------------------------------- fastbptt train
TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\n" * 30
TINY = ["--hidden", "12", "--batch", "6", "--bptt", "8", "--dtype", "float64", "--sample-every", "0",
        "--no-progress", "--sample-len", "5", "--lr", "0.01"]


def _cli(argv, capsys):
    from fastbptt import cli
    code = cli.main(["train"] + argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text(TEXT)
    return str(p)


def _losses_and_params(path):
    with np.load(path) as z:
        return z["losses"], {k: z[k] for k in ("U", "W", "b", "V", "c")}


def test_train_on_a_cluster_equals_single_process_and_resumes(cluster, text_file, tmp_path, capsys):
    from tolerances import DISTRIBUTED_TRAIN64
    one, dist = str(tmp_path / "one.npz"), str(tmp_path / "dist.npz")
    code, _, err = _cli(["--text", text_file, "--steps", "30", "--save", one] + TINY, capsys)
    assert code == 0, err
    join = ["--scheduler", cluster.scheduler_address]
    code, out, err = _cli(["--text", text_file, "--steps", "18", "--save", dist] + join + TINY, capsys)
    assert code == 0, err
    assert "2 Dask workers" in out and "waiting on the cluster" in out
    code, out, err = _cli(["--resume", dist, "--text", text_file, "--steps", "12", "--save", dist]
                          + join + TINY, capsys)
    assert code == 0, err
    (l1, p1), (l2, p2) = _losses_and_params(one), _losses_and_params(dist)
    assert l1.shape == l2.shape == (30,)
    np.testing.assert_allclose(l2, l1, **DISTRIBUTED_TRAIN64)
    for k in p1:
        np.testing.assert_allclose(p2[k], p1[k], **DISTRIBUTED_TRAIN64)


def _train_workers_vs_single(argv, tmp_path, capsys, steps, cluster_args=("--workers", "2")):
    from tolerances import DISTRIBUTED_TRAIN64
    one, dist = str(tmp_path / "one.npz"), str(tmp_path / "dist.npz")
    code, _, err = _cli(argv + ["--steps", str(steps), "--save", one], capsys)
    assert code == 0, err
    code, out, err = _cli(argv + ["--steps", str(steps), "--save", dist, *cluster_args], capsys)
    assert code == 0, err
    assert "2 Dask workers" in out
    (l1, _), (l2, _) = _losses_and_params(one), _losses_and_params(dist)
    assert l1.shape == (steps,)
    np.testing.assert_allclose(l2, l1, **DISTRIBUTED_TRAIN64)


def test_train_workers_starts_a_local_cluster(text_file, tmp_path, capsys):
    _train_workers_vs_single(["--text", text_file] + TINY, tmp_path, capsys, steps=12)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_train_gated_cells_on_a_cluster(cluster, cell, text_file, tmp_path, capsys):
    _train_workers_vs_single(["--text", text_file, "--cell", cell] + TINY, tmp_path, capsys, steps=12,
                             cluster_args=("--scheduler", cluster.scheduler_address))


@pytest.mark.slow
def test_train_workers_200_default_steps(tmp_path, capsys):
    # the default model and streams (hidden 128, 32 x 32) on the built-in corpus, in float64
    _train_workers_vs_single(["--dtype", "float64", "--sample-every", "0", "--no-progress",
                              "--sample-len", "5"], tmp_path, capsys, steps=200)


def test_train_cluster_option_errors(text_file, capsys, monkeypatch):
    code, _, err = _cli(["--text", text_file, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1",
                         "--no-save"] + TINY, capsys)
    assert code == 2 and "--scheduler" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(["--text", text_file, "--workers", "0", "--no-save"] + TINY, capsys)
    assert code == 2 and "--workers" in err
    monkeypatch.setattr(fd, "CONNECT_TIMEOUT_S", 2)
    t0 = time.monotonic()
    code, _, err = _cli(["--text", text_file, "--scheduler", "tcp://127.0.0.1:1", "--no-save"] + TINY, capsys)
    assert code == 2 and "cannot connect" in err and "tcp://127.0.0.1:1" in err, err
    assert len(err.strip().splitlines()) == 1 and time.monotonic() - t0 < 60
