"""A call whose buffers cannot fit is refused before compiled code, saying what fits instead."""
from __future__ import annotations

import re

import numpy as np
import pytest

import fastbptt
from fastbptt import _memcheck
from robust_util import explain, run_python


def test_full_bptt_beyond_the_limit_is_refused_without_leaking():
    """The one-call CPU path used to fail inside compiled code ("Allocation failed") and leak
    ~160 MiB per call. Under RLIMIT_AS: four refused calls, RSS flat, the message names the
    bytes needed and available and a truncate= that fits, and the next call works."""
    proc = run_python("""
        import resource, numpy as np, fastbptt
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * resource.getpagesize()
        p = fastbptt.init_params(8, 64, 2 ** 15, dtype=np.float64, seed=0)
        small = np.zeros((3, 2), np.int64)
        ref = fastbptt.loss_and_grad(p, small, small)          # compile / load before the limit
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + 512 * 2 ** 20, resource.RLIM_INFINITY))
        ids = np.zeros((20000, 16), np.int64)
        before = rss()
        for i in range(4):
            try:
                fastbptt.loss_and_grad(p, ids, ids)
            except MemoryError as e:
                print("MemoryError:", e)
        print("RSS growth MiB:", (rss() - before) / 2 ** 20)
        assert fastbptt.loss_and_grad(p, small, small)[0] == ref[0]
        print("OK")
    """, timeout=300)
    assert proc.returncode == 0, explain(proc)
    errors = [l for l in proc.stdout.splitlines() if l.startswith("MemoryError:")]
    assert len(errors) == 4, proc.stdout
    m = re.search(r"needs about [\d.]+ GiB \((\d+) bytes\), but only [\d.]+ MiB \((\d+) bytes\) "
                  r"is available \(the address-space limit RLIMIT_AS\)", errors[0])
    assert m, errors[0]
    assert int(m.group(1)) > 80e9 and int(m.group(2)) <= 512 * 2 ** 20
    assert re.search(r"fits in memory with truncate=\d+", errors[0]), errors[0]
    growth = float(proc.stdout.split("RSS growth MiB:")[1].split()[0])
    assert growth < 16, proc.stdout
    assert "OK" in proc.stdout


@pytest.mark.slow
def test_a_million_steps_under_a_limit_say_what_fits_and_it_does():
    """T = 1,000,000 full BPTT under a 512 MiB address-space margin: refused with the bytes
    needed; checkpoint='sqrt' and the suggested truncate= then run within the same limit."""
    proc = run_python("""
        import re, resource, numpy as np, fastbptt
        p = fastbptt.init_params(65, 64, 65, seed=0)
        small = np.zeros((3, 2), np.int64)
        fastbptt.loss_and_grad(p, small, small)
        fastbptt.loss_and_grad(p, small, small, checkpoint=1)
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + 512 * 2 ** 20, resource.RLIM_INFINITY))
        ids = np.random.default_rng(0).integers(0, 65, (1000000, 1))
        try:
            fastbptt.loss_and_grad(p, ids, ids)
        except MemoryError as e:
            msg = str(e)
            print("MemoryError:", msg)
        k = int(re.search(r"truncate=(\\d+)", msg).group(1))
        l_ck = fastbptt.loss_and_grad(p, ids, ids, checkpoint="sqrt")[0]
        l_tr = fastbptt.loss_and_grad(p, ids, ids, truncate=k)[0]
        assert abs(l_ck - l_tr) <= 1e-6 * abs(l_ck), (l_ck, l_tr)
        print("OK")
    """, timeout=600)
    assert proc.returncode == 0, explain(proc)
    assert "full BPTT at T=1000000" in proc.stdout and "checkpoint='sqrt'" in proc.stdout, proc.stdout
    assert "OK" in proc.stdout


def test_refusal_happens_before_any_allocation(monkeypatch):
    """With little memory reported, a call whose estimate exceeds it raises at once, names
    what fits, and the fused kernel never runs."""
    monkeypatch.setattr(_memcheck, "available_bytes", lambda: (100 * 2 ** 20, "a test limit"))
    import fastbptt.cpu as cpu
    monkeypatch.setattr(cpu, "fused_loss_and_grad", lambda p: pytest.fail("compiled code ran"))
    p = fastbptt.init_params(32, 256, 32, seed=0)
    ids = np.zeros((100000, 8), np.int64)                   # full BPTT: ~2 GiB of buffers
    with pytest.raises(MemoryError, match=r"100.0 MiB \(104857600 bytes\) is available \(a test limit\)"
                       r".*checkpoint='sqrt'.*truncate=\d+"):
        fastbptt.loss_and_grad(p, ids, ids)
    mask = np.ones((100000, 8))                             # the engine path is checked too
    with pytest.raises(MemoryError, match="full BPTT"):
        fastbptt.loss_and_grad(p, ids, ids, mask=mask)


def test_small_calls_never_look_at_available_memory(monkeypatch):
    """The check costs nothing measurable at min-char-rnn's size: it reads no file there."""
    monkeypatch.setattr(_memcheck, "available_bytes", lambda: pytest.fail("checked a small call"))
    p = fastbptt.init_params(65, 100, 65, seed=0)
    ids = np.zeros((25, 1), np.int64)
    fastbptt.loss_and_grad(p, ids, ids)
    fastbptt.loss_and_grad(p, ids, ids, truncate=5)


def test_available_bytes_is_positive_here():
    avail, what = _memcheck.available_bytes()
    assert avail is None or (avail > 0 and isinstance(what, str))
