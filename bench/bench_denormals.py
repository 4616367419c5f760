"""Do subnormal (denormal) numbers slow the compiled time loops down?

    python bench/bench_denormals.py [--T 2000] [--B 16] [--H 64] [--repeats 5]

Times ``cpu.forward_steps`` and ``cpu.backward_steps`` (float32 and float64, tanh) on states
that stay subnormal for the whole sequence (h0 = tiny/4, W = I, no input: h_t = tanh(h_{t-1})
is subnormal at every step) and on the same problem with normal numbers (h0 = 0.5), and
prints slow-down = subnormal time / normal time. x86 cores without flush-to-zero take a
microcode assist on subnormal operands; the target is that this costs less than an order of
magnitude. fastbptt does not enable flush-to-zero (results stay IEEE-exact; see
tests/test_robust_numerics.py::test_subnormal_states_are_kept_not_flushed).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from fastbptt import cpu


def _best(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=2000)
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--H", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    T, B, H = a.T, a.B, a.H
    print(f"T={T} B={B} H={H}, tanh, best of {a.repeats}")
    print(f"{'':28s} {'normal':>10s} {'subnormal':>10s} {'slow-down':>10s}")
    for dt in (np.float32, np.float64):
        tiny = np.finfo(dt).tiny
        W = np.eye(H, dtype=dt)
        xu = np.zeros((T, B, H), dt)
        hs = np.empty((T + 1, B, H), dt)
        da = np.empty((T, B, H), dt)
        dhe = np.empty((T, B, H), dt)
        pre = np.empty_like(xu)
        cpu.register_blas()
        sc, fs = cpu.gemm_scratch(1, W)
        e0, e1 = np.empty(0, dt), np.empty((0, H), dt)
        eW = np.empty((0, 0), dt)          # no transposed W: the step reads W itself
        times = {}
        for name, h0, g in (("normal", 0.5, 0.5), ("subnormal", tiny / 4, tiny / 4)):
            def fwd():
                hs[0] = h0
                pre[...] = xu                # the kernel consumes its input projections
                cpu.forward_steps(cpu.cell_tag(0), False, pre, hs, W, eW, e0, e1, 0, sc, fs)

            fwd()
            dhe[...] = 0
            dhe[-1] = g                  # one delta, carried back through every step
            dh = np.zeros((B, H), dt)

            def bwd():
                dh[...] = 0
                cpu.backward_steps(cpu.cell_tag(0), dhe, 0, hs, W, dh, da, 0, sc, fs)

            bwd()
            if name == "subnormal":      # the whole run really is subnormal
                assert 0 < np.abs(hs[-1]).max() < tiny and 0 < np.abs(da[0]).max() < tiny
            times[name] = (_best(fwd, a.repeats), _best(bwd, a.repeats))
        for i, kernel in enumerate(("forward_steps", "backward_steps")):
            n, s = times["normal"][i], times["subnormal"][i]
            print(f"{kernel + ' ' + np.dtype(dt).name:28s} {n * 1e3:8.2f}ms {s * 1e3:8.2f}ms {s / n:9.2f}x")


if __name__ == "__main__":
    main()
