"""The matrix products of one call, each at this machine's one-core BLAS speed: a call's floor.

    python bench/bench_products.py [--cell lstm] [--size small|medium|large]
                                   [--layout fused|stacked] [--seconds 0.3]

A call's time cannot go below the time of its products at the speed the BLAS runs them, so
this is what a speed target is weighed against. Each product of one core's share of the call
is timed through fastbptt's own ``gemm`` (its routing: OpenBLAS's small-matrix kernel in
blocks, MKL for the steps, ...) on one thread, *with the other cores running the same
product* (a call keeps every core busy, and they share the caches and memory), best of 3:

* ``fused``: one full-BPTT call of one layer, its batch split in one row block per core
  (``fastbptt.cpu.parallel``): the input projection, the T forward and T backward step
  products, the output layer's three, the two weight gradients.
* ``stacked``: one direction of the 2-layer bidirectional model of ``fastbptt bench
  --layers 2 --bidirectional`` (each core runs one direction): both layers' projections,
  steps and weight gradients, and the upper layer's input gradient ``δ U``; the output
  layer (two row blocks side by side) is listed on its own.

Nothing else of a call is counted (gates, softmax, copies, Python), so the sum is a lower
bound of the call's time on this machine, not an estimate of it.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np

CELLS = {"rnn": 1, "lstm": 4, "gru": 3}
LAYOUTS = ("fused", "stacked")


def products(cell, size, layout, cores=2):
    """[(name, (m, k, n, ta, tb), count, part)] of one core's share; part is "call" or "head"."""
    from fastbptt.bench import SIZES
    G = CELLS[cell]
    T, B, I, H, O = SIZES[size][:5]
    if layout == "fused":
        b = B // cores                   # one row block per core
        R = T * b
        return [("input projection x Uᵀ", (R, I, G * H, 0, 1), 1, "call"),
                ("forward step h Wᵀ", (b, H, G * H, 0, 0), T, "call"),
                ("output logits h Vᵀ", (R, H, O, 0, 1), 1, "call"),
                ("output ∂h = ∂o V", (R, O, H, 0, 0), 1, "call"),
                ("output dV = ∂oᵀ h", (O, R, H, 1, 0), 1, "call"),
                ("backward step δ W", (b, G * H, H, 0, 0), T, "call"),
                ("dW = δᵀ h", (G * H, R, H, 1, 0), 1, "call"),
                ("dU = δᵀ x", (G * H, R, I, 1, 0), 1, "call")]
    R = T * B
    out = []
    for layer, n in enumerate((I, 2 * H)):
        out += [(f"layer {layer}: x Uᵀ", (R, n, G * H, 0, 1), 1, "call"),
                (f"layer {layer}: forward step h Wᵀ", (B, H, G * H, 0, 0), T, "call"),
                (f"layer {layer}: backward step δ W", (B, G * H, H, 0, 0), T, "call"),
                (f"layer {layer}: dW = δᵀ h", (G * H, R, H, 1, 0), 1, "call"),
                (f"layer {layer}: dU = δᵀ x", (G * H, R, n, 1, 0), 1, "call")]
        if layer:
            out.append((f"layer {layer}: dx = δ U", (R, G * H, n, 0, 0), 1, "call"))
    rh = R // cores                      # the output layer: one row block per core
    out += [("output logits h Vᵀ", (rh, 2 * H, O, 0, 1), 1, "head"),
            ("output ∂h = ∂o V", (rh, O, 2 * H, 0, 0), 1, "head"),
            ("output dV = ∂oᵀ h", (O, rh, 2 * H, 1, 0), 1, "head")]
    return out


def _loop():
    from numba import njit

    from fastbptt.cpu.blas import gemm, gemm_scratch, restore_threads

    @njit(nogil=True)
    def loop(A, ta, B, tb, C, reps):
        sc, fs = gemm_scratch(1, C)
        for _ in range(reps):
            gemm(A, ta, B, tb, C, 0.0, sc, fs)
        restore_threads(sc)
    return loop


def time_product(loop, shape, cores, seconds):
    """Seconds of one product on one thread while ``cores`` threads run it, best of 3."""
    from fastbptt.cpu import blas
    m, k, n, ta, tb = shape
    rng = np.random.default_rng(0)

    def mk(*s):
        return rng.standard_normal(s).astype(np.float32)
    ops = [(mk(k, m) if ta else mk(m, k), ta, mk(n, k) if tb else mk(k, n), tb,
            np.empty((m, n), np.float32)) for _ in range(cores)]
    with blas.single_threaded():
        loop(*ops[0], 1)
        t0 = time.perf_counter()
        loop(*ops[0], 1)
        one = time.perf_counter() - t0
    reps = max(1, int(seconds / max(one, 1e-7)))

    def run(o):
        with blas.single_threaded():
            loop(*o, reps)
    best = float("inf")
    for _ in range(3):
        threads = [threading.Thread(target=run, args=(o,)) for o in ops]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="lstm", choices=tuple(CELLS))
    ap.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    ap.add_argument("--layout", default="stacked", choices=LAYOUTS)
    ap.add_argument("--seconds", type=float, default=0.3, help="timed seconds per product and try")
    args = ap.parse_args(argv)
    if not args.seconds > 0:
        ap.error(f"--seconds must be > 0; got {args.seconds}")
    from fastbptt.bench import cpu_model, n_cores
    from fastbptt.cpu import blas
    name = blas.register_blas()
    cores = n_cores()
    loop = _loop()
    print(f"{cpu_model()}, {cores} cores, BLAS {name}; {args.cell} {args.size}, {args.layout}: "
          f"one core's products, float32, one thread each with the other cores running the same")
    total = {"call": 0.0, "head": 0.0}
    for what, shape, count, part in products(args.cell, args.size, args.layout, cores):
        t = time_product(loop, shape, cores, args.seconds) * count
        total[part] += t
        mm, k, n = shape[:3]
        print(f"  {what:34s} {mm}x{k}x{n}{f' x{count}' if count > 1 else '':>6s}: "
              f"{1e3 * t:9.2f} ms  {2 * mm * n * k * count / t / 1e9:6.1f} GFLOP/s", flush=True)
    line = f"products at one-core BLAS speed: {1e3 * total['call']:.2f} ms"
    if total["head"]:
        line += f" + the output layer's {1e3 * total['head']:.2f} ms = {1e3 * sum(total.values()):.2f} ms"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
