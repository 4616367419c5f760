"""`fastbptt train`: argument errors, a tiny run whose loss falls, checkpoints, Ctrl-C, SIGTERM."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from fastbptt import cli, train

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40
TINY = ["--hidden", "16", "--batch", "4", "--bptt", "8", "--sample-every", "0", "--no-progress",
        "--sample-len", "20"]


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "text.txt"
    p.write_text(TEXT)
    return str(p)


def run(argv, capsys):
    code = cli.main(["train"] + argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.parametrize("argv,word", [
    (["--steps", "0"], "--steps"),
    (["--steps", "ten"], "--steps"),
    (["--lr", "-0.1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--temperature", "0"], "--temperature"),
    (["--batch", "0"], "--batch"),
    (["--clip", "-1"], "--clip"),
    (["--optimizer", "sgd"], "--optimizer"),
    (["--dtype", "float16"], "--dtype"),
    (["--bogus"], "--bogus"),
])
def test_bad_option_values(argv, word, capsys):
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, word)


def test_bad_text_files(tmp_path, capsys):
    code, _, err = run(["--text", str(tmp_path / "nope.txt")] + TINY, capsys)
    assert_one_line_error(code, err, "--text", "no such file")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = run(["--text", str(empty)] + TINY, capsys)
    assert_one_line_error(code, err, "empty")
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij" * 3)                       # 30 chars < 4 x 8 + 1
    code, _, err = run(["--text", str(short)] + TINY, capsys)
    assert_one_line_error(code, err, "shorter than one interval", "36")
    code, _, err = run(["--text", str(tmp_path)] + TINY, capsys)
    assert_one_line_error(code, err, "directory")
    code, _, err = run(["--text", str(short), "--plot", str(tmp_path / "no" / "dir.png")] + TINY, capsys)
    assert_one_line_error(code, err, "--plot")


def test_tiny_run_loss_falls_and_plots(text_file, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (the plot extra)")
    ck, png = str(tmp_path / "ck.npz"), str(tmp_path / "loss.png")
    code, out, err = run(["--text", text_file, "--steps", "80", "--lr", "0.01", "--save", ck,
                          "--plot", png] + TINY, capsys)
    assert code == 0, err
    losses = np.load(ck)["losses"]
    assert losses.shape == (80,)
    assert losses[:5].mean() > 2.5                          # ~ln(vocab 28) = 3.3 at the start
    assert losses[-10:].mean() < 0.6 * losses[:5].mean()    # and clearly lower at the end
    assert "done: 80 steps" in out and "chars/s" in out and "--- sample" in out
    assert os.path.getsize(png) > 1000


def test_resume_continues_exactly(text_file, tmp_path, capsys):
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    common = ["--text", text_file, "--lr", "0.01"] + TINY
    assert run(common + ["--steps", "12", "--save", a], capsys)[0] == 0
    assert run(common + ["--steps", "7", "--save", b], capsys)[0] == 0
    code, out, _ = run(common + ["--steps", "5", "--resume", b, "--save", b], capsys)
    assert code == 0 and "resuming at step 7" in out
    za, zb = np.load(a), np.load(b)
    assert int(zb["step"]) == 12
    for k in ("U", "W", "b", "V", "c", "h", "opt_m_W", "opt_v_V", "losses"):
        np.testing.assert_array_equal(za[k], zb[k], err_msg=k)


def test_resume_adagrad_and_mismatches(text_file, tmp_path, capsys):
    ck = str(tmp_path / "ck.npz")
    common = ["--text", text_file] + TINY
    assert run(common + ["--steps", "3", "--optimizer", "adagrad", "--save", ck], capsys)[0] == 0
    assert run(common + ["--steps", "2", "--resume", ck, "--save", ck], capsys)[0] == 0
    assert int(np.load(ck)["step"]) == 5 and "opt_g2_U" in np.load(ck).files
    code, _, err = run(common + ["--steps", "1", "--resume", ck, "--hidden", "8"], capsys)
    assert_one_line_error(code, err, "--hidden")
    other = tmp_path / "other.txt"
    other.write_text("ZZZ qqq " * 100)
    code, _, err = run(["--text", str(other), "--steps", "1", "--resume", ck] + TINY, capsys)
    assert_one_line_error(code, err, "vocabulary")


def test_corrupt_checkpoints(text_file, tmp_path, capsys):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00not a zip file at all" * 10)
    good = str(tmp_path / "good.npz")
    assert run(["--text", text_file, "--steps", "2", "--save", good] + TINY, capsys)[0] == 0
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(good, "rb").read()[:400])
    partial = tmp_path / "partial.npz"
    z = dict(np.load(good))
    del z["W"]
    np.savez(partial, **z)
    wrong = tmp_path / "wrong.npz"
    z = dict(np.load(good))
    z["V"] = z["V"][:, :3]
    np.savez(wrong, **z)
    for path in (garbage, truncated, partial, wrong, tmp_path / "missing.npz"):
        code, _, err = run(["--text", text_file, "--steps", "1", "--resume", str(path)] + TINY, capsys)
        assert_one_line_error(code, err, "--resume")


def _on_fourth_engine_call(monkeypatch, action):
    """Run ``action()`` at the start of the 4th loss_and_grad call train's stream makes."""
    calls = {"n": 0}
    from fastbptt import stream
    real = stream.loss_and_grad

    def patched(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            action()
        return real(*a, **k)

    monkeypatch.setattr(stream, "loss_and_grad", patched)


def _raise_keyboard_interrupt():
    raise KeyboardInterrupt


@pytest.mark.parametrize("action, code, said", [
    (_raise_keyboard_interrupt, 130, "interrupted at step 3"),
    # what a cluster scheduler sends before killing a job
    (lambda: os.kill(os.getpid(), signal.SIGTERM), 143, "terminated (SIGTERM) at step 3"),
], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_cleanly_and_saves(text_file, tmp_path, capsys, monkeypatch, action, code, said):
    _on_fourth_engine_call(monkeypatch, action)
    before = signal.getsignal(signal.SIGTERM)
    ck = str(tmp_path / "ck.npz")
    rc, out, err = run(["--text", text_file, "--steps", "50", "--save", ck] + TINY, capsys)
    assert rc == code
    assert "Traceback" not in err and said in err
    assert int(np.load(ck)["step"]) == 3 and "done: 3 steps" in out
    assert signal.getsignal(signal.SIGTERM) is before     # the handler is put back


def test_python_dash_m_works(text_file, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "fastbptt", "train", "--text", text_file, "--steps", "3",
                        "--no-save"] + TINY, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "done: 3 steps" in r.stdout
    r = subprocess.run([sys.executable, "-m", "fastbptt", "train", "--steps", "-3"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_default_corpus_is_deterministic():
    from fastbptt import corpus
    a, b = corpus.stdlib_docstrings(max_chars=20000), corpus.stdlib_docstrings(max_chars=20000)
    assert a == b and len(a) == 20000
    assert set(a) <= set(corpus._KEEP)


def test_version(capsys):
    import fastbptt
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastbptt {fastbptt.__version__}"


def test_resume_without_save_writes_back_to_the_resumed_file(text_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)                            # where a default charlm.npz would go
    ck = str(tmp_path / "run.npz")
    assert run(["--text", text_file, "--steps", "3", "--save", ck] + TINY, capsys)[0] == 0
    code, out, _ = run(["--text", text_file, "--steps", "2", "--resume", ck] + TINY, capsys)
    assert code == 0 and f"checkpoint {ck}" in out
    assert int(np.load(ck)["step"]) == 5
    assert not (tmp_path / "charlm.npz").exists()
    code, _, _ = run(["--text", text_file, "--steps", "1", "--resume", ck, "--no-save"] + TINY, capsys)
    assert code == 0 and int(np.load(ck)["step"]) == 5     # --no-save: the file is left alone


def test_conflicting_and_unwritable_outputs(text_file, tmp_path, capsys):
    code, _, err = run(["--text", text_file, "--no-save", "--save", "x.npz"] + TINY, capsys)
    assert_one_line_error(code, err, "--no-save", "--save x.npz")
    code, _, err = run(["--text", text_file, "--save", str(tmp_path)] + TINY, capsys)
    assert_one_line_error(code, err, "--save", "directory")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):                          # root ignores the mode bits
            pytest.skip("running as a user who can write anywhere")
        code, _, err = run(["--text", text_file, "--save", str(ro / "x.npz")] + TINY, capsys)
        assert_one_line_error(code, err, "--save", "not writable")
    finally:
        ro.chmod(0o700)


def test_sigterm_in_a_real_process_exits_143_after_saving(text_file, tmp_path):
    ck = tmp_path / "ck.npz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-m", "fastbptt", "train", "--text", text_file, "--steps",
                          "100000", "--save", str(ck), "--save-every", "1"] + TINY,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(1200):                               # until the first checkpoint exists
            if ck.exists() or p.poll() is not None:
                break
            import time
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143, err
    step = int(np.load(ck)["step"])
    assert f"terminated (SIGTERM) at step {step}" in err and f"done: {step} step" in out


def test_text_that_is_not_utf8(tmp_path, capsys):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(("ab\n" + "caf\u00e9 na\u00efve " * 30).encode("latin-1"))
    code, _, err = run(["--text", str(latin)] + TINY, capsys)
    assert_one_line_error(code, err, "--text", "utf-8", "0xe9", "offset 6", "--encoding")
    ck = str(tmp_path / "ck.npz")
    code, out, _ = run(["--text", str(latin), "--encoding", "latin-1", "--steps", "1", "--save", ck] + TINY,
                       capsys)
    assert code == 0
    vocab = "".join(chr(i) for i in np.load(ck)["vocab"])
    assert "\u00e9" in vocab and "\ufffd" not in vocab
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + TEXT.encode() + b"\xff")
    code, _, err = run(["--text", str(bom)] + TINY, capsys)
    assert_one_line_error(code, err, "0xff", f"offset {3 + len(TEXT)}")  # offsets count the BOM
    code, _, err = run(["--text", str(bom), "--encoding", "klingon"] + TINY, capsys)
    assert_one_line_error(code, err, "--encoding", "klingon")


def test_messages_count_in_words(tmp_path, capsys):
    one = tmp_path / "one.txt"
    one.write_text("a" * 500)
    code, _, err = run(["--text", str(one)] + TINY, capsys)
    assert_one_line_error(code, err, "1 distinct character;")
    two = tmp_path / "two.txt"
    two.write_text("ab" * 300)
    ck = str(tmp_path / "ck.npz")
    assert run(["--text", str(two), "--steps", "1", "--save", ck] + TINY, capsys)[0] == 0
    other = tmp_path / "other.txt"
    other.write_text("abc" * 300)
    code, _, err = run(["--text", str(other), "--resume", ck] + TINY, capsys)
    assert_one_line_error(code, err, "1 character the checkpoint")


def _corrupted(good, tmp_path, name, **fields):
    z = dict(np.load(good))
    z.update(fields)
    path = tmp_path / f"{name}.npz"
    np.savez(path, **z)
    return str(path)


@pytest.mark.parametrize("field,value,word", [
    ("batch", np.int64(0), "batch"), ("batch", np.array("two"), "batch"), ("bptt", np.int64(0), "bptt"),
    ("bptt", np.float64(3.5), "bptt"), ("pos", np.int64(-5), "pos"), ("pos", np.int64(10**9), "pos"),
    ("step", np.int64(-1), "step"), ("lr", np.float64(np.nan), "lr"), ("lr", np.float64(0), "lr"),
    ("clip", np.float64(-1), "clip"), ("vocab", np.array([[97]]), "vocab"), ("h", np.zeros((3, 16)), "shapes"),
    ("W", np.zeros(16), "W"),
])
def test_corrupt_checkpoint_fields(text_file, tmp_path, capsys, field, value, word):
    good = str(tmp_path / "good.npz")
    assert run(["--text", text_file, "--steps", "2", "--save", good] + TINY, capsys)[0] == 0
    bad = _corrupted(good, tmp_path, "bad", **{field: value})
    code, _, err = run(["--text", text_file, "--steps", "1", "--resume", bad] + TINY, capsys)
    assert_one_line_error(code, err, "--resume", "corrupt", word)


def test_resume_on_another_text_restarts_the_streams(text_file, tmp_path, capsys):
    ck = str(tmp_path / "ck.npz")
    assert run(["--text", text_file, "--steps", "40", "--save", ck] + TINY, capsys)[0] == 0
    assert int(np.load(ck)["pos"]) > 60                    # past the end of the shorter text
    short = tmp_path / "short.txt"
    short.write_text(TEXT[:400])
    code, out, err = run(["--text", str(short), "--steps", "2", "--resume", ck] + TINY, capsys)
    assert code == 0, err
    assert "streams restarted on this text" in out and int(np.load(ck)["step"]) == 42
    code, out, _ = run(["--text", text_file, "--steps", "1", "--resume", ck] + TINY, capsys)
    assert code == 0 and "restarted" in out                 # the checkpoint now belongs to short.txt


def test_negative_seed_is_a_one_line_error(capsys):
    code, _, err = run(["--seed", "-1"] + TINY, capsys)
    assert_one_line_error(code, err, "--seed", ">= 0")


def test_plot_labels_the_uniform_guess_line(tmp_path, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot", reason="the plot needs matplotlib")
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    train.plot_losses(str(tmp_path / "l.png"), [3.3, 3.0, 2.5, 2.0], "t", vocab_size=28)
    labels = [t.get_text() for t in figs[0].axes[0].get_legend().get_texts()]
    assert any(lb.startswith("ln 28 = 3.33") for lb in labels), labels


def test_runs_are_deterministic(text_file, tmp_path, capsys):
    """The README says a run gives the same losses and samples every time."""
    outs = []
    for name in ("a", "b"):
        ck = str(tmp_path / f"{name}.npz")
        code, out, _ = run(["--text", text_file, "--steps", "6", "--save", ck] + TINY, capsys)
        assert code == 0
        outs.append((np.load(ck), out.split("--- sample")[1].split("\ndone:")[0]))
    (a, sa), (b, sb) = outs
    for k in ("U", "W", "V", "h", "losses"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert sa == sb


@pytest.mark.parametrize("cell,state", [("lstm", ("h", "c_state")), ("gru", ("h", "bn"))])
def test_cells_train_resume_exactly_and_refuse_another_cell(cell, state, text_file, tmp_path, capsys):
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    common = ["--text", text_file, "--lr", "0.01", "--cell", cell] + TINY
    code, out, _ = run(common + ["--steps", "8", "--save", a], capsys)
    assert code == 0 and f"{cell} cell" in out
    assert run(common + ["--steps", "5", "--save", b], capsys)[0] == 0
    code, out, _ = run(common + ["--steps", "3", "--resume", b, "--save", b], capsys)
    assert code == 0 and "resuming at step 5" in out
    za, zb = np.load(a), np.load(b)
    assert str(zb["cell"]) == cell
    for k in ("U", "W", "b", "V", "c", "losses") + state:
        np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
    losses = za["losses"]
    assert losses[-1] < losses[0]
    other = "gru" if cell == "lstm" else "lstm"
    code, _, err = run(["--text", text_file, "--steps", "1", "--resume", b, "--cell", other] + TINY, capsys)
    assert_one_line_error(code, err, "--cell", cell)


def test_stacked_layers_train_resume_exactly_and_refuse_other_layers(text_file, tmp_path, capsys):
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    common = ["--text", text_file, "--lr", "0.01", "--cell", "gru", "--layers", "2"] + TINY
    code, out, _ = run(common + ["--steps", "8", "--save", a], capsys)
    assert code == 0 and "x 2 layers" in out
    assert run(common + ["--steps", "5", "--save", b], capsys)[0] == 0
    # --layers may be left out on resume: the checkpoint keeps its own
    no_layers = [x for x in common if x not in ("--layers", "2")]
    code, out, _ = run(no_layers + ["--steps", "3", "--resume", b, "--save", b], capsys)
    assert code == 0 and "resuming at step 5" in out
    za, zb = np.load(a), np.load(b)
    assert int(zb["num_layers"]) == 2 and zb["h"].shape == (2, 4, 16)
    for k in ("U", "W", "b", "bn", "U_l1", "W_l1", "b_l1", "bn_l1", "V", "c", "h", "losses"):
        np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
    assert za["U_l1"].shape == (48, 16)
    losses = za["losses"]
    assert losses[-1] < losses[0]
    for other in ("1", "3"):
        code, _, err = run(no_layers + ["--steps", "1", "--resume", b, "--layers", other], capsys)
        assert_one_line_error(code, err, f"--layers {other}", "2 layers")


def test_checkpoint_without_num_layers_is_one_layer(text_file, tmp_path, capsys):
    a = str(tmp_path / "a.npz")
    common = ["--text", text_file] + TINY
    assert run(common + ["--steps", "2", "--save", a], capsys)[0] == 0
    old = dict(np.load(a))
    assert int(old.pop("num_layers")) == 1
    with open(a, "wb") as f:                         # as written before --layers existed
        np.savez(f, **old)
    code, out, _ = run(common + ["--steps", "1", "--resume", a], capsys)
    assert code == 0 and "resuming at step 2" in out
    code, _, err = run(common + ["--steps", "1", "--resume", a, "--layers", "2"], capsys)
    assert_one_line_error(code, err, "--layers 2", "1 layer")


def test_layers_on_dask_is_one_line_error(text_file, capsys):
    code, _, err = run(["--text", text_file, "--steps", "1", "--layers", "2", "--workers", "2",
                        "--no-save"] + TINY, capsys)
    assert_one_line_error(code, err, "--layers 2", "Dask")


def test_there_is_no_bidirectional_language_model(capsys):
    code, _, err = run(["--bidirectional"], capsys)
    assert_one_line_error(code, err, "--bidirectional")


@pytest.mark.parametrize("value", ["0", "65", "two"])
def test_bad_layers_is_one_line_error(value, capsys):
    code, _, err = run(["--layers", value], capsys)
    assert_one_line_error(code, err, "--layers")


def _adam_numpy(p, g, m, v, lr, t):
    """The Adam step as NumPy writes it (train.apply_update's fallback), for comparison."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    m2 = b1 * m + (1 - b1) * g
    v2 = b2 * v + (1 - b2) * (g * g)
    mhat = m2 / (1 - b1 ** t)
    vhat = v2 / (1 - b2 ** t)
    return (p - lr * mhat / (np.sqrt(vhat) + eps)).astype(p.dtype, copy=False), m2, v2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_adam_is_numpys_step_bit_for_bit(dtype):
    """apply_update's compiled Adam gives NumPy's bits for every parameter shape, leaves its
    inputs untouched, and a layout it does not take (a strided parameter) goes to NumPy."""
    rng = np.random.default_rng(0)
    shapes = {"U": (128, 96), "W": (128, 128), "b": (128,), "V": (96, 128), "c": (96,)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    params["S"] = rng.standard_normal((64, 40)).astype(dtype)[:, ::2]        # strided
    grads = {k: (rng.standard_normal(p.shape) * 10.0 ** rng.integers(-6, 2)).astype(dtype)
             for k, p in params.items()}
    opt = train.new_opt_state("adam", params)
    for k in params:                                  # a state that is not all zeros
        opt[f"m_{k}"] = rng.standard_normal(params[k].shape).astype(dtype) * 1e-2
        opt[f"v_{k}"] = rng.random(params[k].shape).astype(dtype) * 1e-3
    inputs = {("param", k): v for k, v in params.items()}
    inputs.update({("grad", k): v for k, v in grads.items()})
    inputs.update({("opt", k): v for k, v in opt.items()})
    before = {k: v.copy() for k, v in inputs.items()}
    for t, lr in ((1, 2e-3), (7, 0.1), (1000, 3e-4)):
        newp, newo = train.apply_update("adam", params, opt, grads, lr, t)
        for k in params:
            want = _adam_numpy(params[k], grads[k], opt[f"m_{k}"], opt[f"v_{k}"], lr, t)
            got = (newp[k], newo[f"m_{k}"], newo[f"v_{k}"])
            for w, g_, name in zip(want, got, ("p", "m", "v")):
                assert g_.dtype == dtype and g_.shape == params[k].shape
                np.testing.assert_array_equal(g_, w, err_msg=f"{k} {name} t={t}")
    for k, v in inputs.items():
        np.testing.assert_array_equal(v, before[k], err_msg=str(k))
