"""The busy-machine thread policy of the big products (fastbptt.cpu.blas.threads_now)."""
import threading

import pytest

from fastbptt.cpu import blas


class FakeMachine:
    """A 2-core machine: a run-queue snapshot and CPU-time counters that tests drive.

    ``at(t)`` moves the clock to t, adding ``others`` (cores other processes use) and
    ``own`` (cores this process uses) times the elapsed time to the counters.
    """

    def __init__(self):
        self.t = 100.0
        self.snapshot = 0            # other processes' runnable tasks in a run-queue reading
        self.others = 0.0
        self.own = 0.0
        self.busy_s = 0.0
        self.own_s = 0.0

    def at(self, t):
        dt = t - self.t
        assert dt >= 0
        self.busy_s += (self.others + self.own) * dt
        self.own_s += self.own * dt
        self.t = t
        return lambda: t


@pytest.fixture
def machine(monkeypatch):
    m = FakeMachine()
    monkeypatch.setattr(blas, "NTHREADS", 2)
    monkeypatch.setattr(blas, "_PINNED", False)
    monkeypatch.setattr(blas, "_busy", [-1.0, 2, -1e9, 0.0, 0.0])
    # a list: one reading each (a phantom in one of them); a number: every reading
    monkeypatch.setattr(blas, "_others_running",
                        lambda: m.snapshot.pop(0) if isinstance(m.snapshot, list) else m.snapshot)
    monkeypatch.setattr(blas, "_cpu_seconds", lambda: (m.busy_s, m.own_s))
    return m


def test_free_cores_all_threads(machine):
    assert blas.threads_now(clock=machine.at(100.0)) == 2
    assert blas.threads_now(clock=machine.at(100.3)) == 2


def test_first_reading_is_a_run_queue_snapshot(machine):
    machine.snapshot = 1
    assert blas.threads_now(clock=machine.at(100.0)) == 1
    machine.snapshot = 5                            # never below one thread
    assert blas.threads_now(clock=machine.at(100.0 + blas._WINDOW_MAX + 5)) == 1


@pytest.mark.parametrize("others,own,snapshot,threads", [
    (0.9, 0.0, 0, 1),      # a core mostly busy over the window, not at the instant of reading
    (2.0, 0.0, 0, 1),      # a 2-thread neighbour: never below one thread
    (0.0, 2.0, 1, 2),      # our own threads (spinning BLAS workers too) are never a neighbour
    (0.0, 0.0, 1, 2),      # a phantom in the run queue is not read while the window is fresh
], ids=["bursty", "two-threads", "own-threads", "phantom-snapshot"])
def test_a_fresh_window_is_read_from_cpu_time(machine, others, own, snapshot, threads):
    assert blas.threads_now(clock=machine.at(100.0)) == 2
    machine.others, machine.own, machine.snapshot = others, own, snapshot
    assert blas.threads_now(clock=machine.at(100.3)) == threads
    assert blas.threads_now(clock=machine.at(100.6)) == threads


def test_a_stale_window_falls_back_to_the_snapshot(machine):
    assert blas.threads_now(clock=machine.at(100.0)) == 2
    machine.snapshot = 1                            # long gap: the average would dilute
    assert blas.threads_now(clock=machine.at(100.0 + blas._WINDOW_MAX + 1)) == 1


def test_a_phantom_in_one_of_two_snapshots_is_no_neighbour(machine):
    machine.snapshot = [1, 0]
    assert blas.threads_now(clock=machine.at(100.0)) == 2
    machine.snapshot = [0, 1]
    assert blas.threads_now(clock=machine.at(100.0 + blas._WINDOW_MAX + 1)) == 2


def test_cores_free_again_only_after_a_quiet_spell(machine):
    assert blas.threads_now(clock=machine.at(100.0)) == 2
    machine.others = 1.0
    assert blas.threads_now(clock=machine.at(100.3)) == 1
    machine.others = 0.0
    assert blas.threads_now(clock=machine.at(100.6)) == 1
    assert blas.threads_now(clock=machine.at(101.4)) == 1
    assert blas.threads_now(clock=machine.at(102.2)) == 1
    assert blas.threads_now(clock=machine.at(102.2 + blas._LOOK_EVERY + 0.05)) == 2


def test_reads_at_most_every_look_interval(machine):
    assert blas.threads_now(clock=machine.at(100.0)) == 2
    machine.others = 1.0                            # not read again within _LOOK_EVERY
    assert blas.threads_now(clock=machine.at(100.0 + blas._LOOK_EVERY / 2)) == 2
    assert blas.threads_now(clock=machine.at(100.0 + 2 * blas._LOOK_EVERY)) == 1


def test_pinned_count_is_followed(machine, monkeypatch):
    monkeypatch.setattr(blas, "_PINNED", True)
    machine.snapshot = 1
    assert blas.threads_now(clock=machine.at(100.0)) == 2


def test_single_threaded_block_gets_one_thread_in_its_thread_only(machine):
    seen = []
    with blas.single_threaded():
        assert blas.threads_now(clock=machine.at(100.0)) == 1
        with blas.single_threaded():
            pass
        assert blas.threads_now(clock=machine.at(100.0)) == 1    # nesting restores, not clears
        t = threading.Thread(target=lambda: seen.append(blas.threads_now(clock=lambda: 100.0)))
        t.start()
        t.join()
    assert seen == [2]
    assert blas.threads_now(clock=machine.at(100.0)) == 2


def test_real_readings():
    assert blas._others_running() >= 0
    busy0, own0 = blas._cpu_seconds()
    x = 0
    for i in range(2_000_000):                      # some CPU time of our own
        x += i
    busy1, own1 = blas._cpu_seconds()
    assert busy1 >= busy0 >= 0 and own1 > own0 >= 0
