"""The busy-machine thread policy of the fused kernel's big products (fastbptt.cpu.blas)."""
import pytest

from fastbptt.cpu import blas


@pytest.fixture
def policy(monkeypatch):
    """A 2-core, unpinned policy with a fresh history; seen[0] is the next run-queue reading."""
    seen = [0]
    monkeypatch.setattr(blas, "NTHREADS", 2)
    monkeypatch.setattr(blas, "_PINNED", False)
    monkeypatch.setattr(blas, "_busy", [-1.0, 2, -1e9])
    monkeypatch.setattr(blas, "_others_running", lambda: seen[0])
    return seen


def test_free_cores_all_threads(policy):
    assert blas.threads_now(clock=lambda: 100.0) == 2


def test_neighbour_takes_a_core(policy):
    policy[0] = 1
    assert blas.threads_now(clock=lambda: 100.0) == 1
    policy[0] = 5                                   # never below one thread
    assert blas.threads_now(clock=lambda: 100.5) == 1


def test_cores_free_again_only_after_a_quiet_spell(policy):
    policy[0] = 1
    assert blas.threads_now(clock=lambda: 100.0) == 1
    policy[0] = 0                                   # the neighbour between two bursts
    assert blas.threads_now(clock=lambda: 100.5) == 1
    assert blas.threads_now(clock=lambda: 101.5) == 1
    assert blas.threads_now(clock=lambda: 100.0 + blas._QUIET_FOR + 0.1) == 2


def test_reads_at_most_every_look_interval(policy):
    assert blas.threads_now(clock=lambda: 100.0) == 2
    policy[0] = 1                                   # not read again within _LOOK_EVERY
    assert blas.threads_now(clock=lambda: 100.0 + blas._LOOK_EVERY / 2) == 2
    assert blas.threads_now(clock=lambda: 100.0 + 2 * blas._LOOK_EVERY) == 1


def test_pinned_count_is_followed(policy, monkeypatch):
    monkeypatch.setattr(blas, "_PINNED", True)
    policy[0] = 1
    assert blas.threads_now(clock=lambda: 100.0) == 2


def test_others_running_reads_the_run_queue():
    assert blas._others_running() >= 0
