"""``fastbptt bench``: one forward + backward of ``loss_and_grad`` against its peers.

Every measurement runs in its own Python process (so thread pools of different BLAS
libraries, OpenMP runtimes and JIT compilers never share a process) and reports the median
wall time of repeated calls after a warm-up that sits outside the timed region:

* ``fastbptt``   -- fastbptt's compiled backend (``--backend cpu``, or ``cuda``)
* ``fastbptt-openblas`` -- the same with every product on SciPy's OpenBLAS
  (``FASTBPTT_BLAS=openblas``): what ``fastbptt`` does without the optional ``mkl`` package
* ``fastbptt-mkl`` -- the same with every product on Intel MKL (``FASTBPTT_BLAS=mkl``), only
  when the optional ``mkl`` package is installed
* ``reference``  -- fastbptt's NumPy reference (``backend="numpy"``), the oracle
* ``torch``      -- PyTorch CPU: ``nn.RNN(nonlinearity="tanh")`` + ``nn.Linear`` +
  ``cross_entropy(reduction="sum")``, forward + ``backward()``, threads = cores available
* ``jax``        -- ``jit(value_and_grad)`` over ``lax.scan`` (only when JAX is installed)

``--layers N`` and ``--bidirectional`` measure a stacked model instead: fastbptt's
``num_layers``/``bidirectional``, the PyTorch peer built from the same params by
:func:`fastbptt.to_torch` (``nn.LSTM(num_layers=N, bidirectional=True)`` ...), JAX one
``lax.scan`` per layer and direction; flops are counted per layer and direction (layer l ≥ 1
reads ``n_in = D·H``, the head ``D·H``).

Throughput counts ``2·T·B·H·(2·n_in + 3·H + 3·n_out)`` flops per forward + backward (one-hot
inputs are counted as dense, so every size is on one scale). The roofline is the best single-precision
matrix-product rate measured in the same run: an 8192×1024×1024 product through NumPy's BLAS
and through PyTorch's, the better of the two.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

SIZES = {  # name: (T, B, n_in, H, n_out, one-hot ids)
    "minchar": (25, 1, 65, 100, 65, True),
    "small": (100, 32, 64, 128, 64, False),
    "medium": (100, 64, 256, 512, 256, False),
    "large": (64, 128, 1024, 1024, 1024, False),
}
IMPLS = ("fastbptt", "fastbptt-openblas", "fastbptt-mkl", "reference", "torch", "jax")
# measured only when named in --impls: make_loss_and_grad's prepared call
EXTRA_IMPLS = ("fastbptt-prepared",)
ROOF = (8192, 1024, 1024)                 # sgemm [M, K] @ [K, N]


GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def flops(T: int, B: int, n_in: int, H: int, n_out: int, cell: str = "rnn", layers: int = 1,
          bidirectional: bool = False) -> int:
    """Flops of one forward + backward, one-hot inputs counted as dense.

    Per step and sequence: the input projection and dU (2·G·H·n_in), the recurrent product,
    its gradient and dW (3·G·H·H), the head, dV and ∂L/∂h (3·H·n_out), times two flops per
    multiply-add; G is the cell's gate count (1, 4, 3). Pointwise work is not counted. A
    stacked model counts each layer and direction (D of them per layer), layer l ≥ 1 with
    n_in = D·H, and a head over D·H features. (Layer 0's input gradient, never needed, is
    counted as if it were: the single-layer formula does the same.)
    """
    G, D = GATES[cell], 2 if bidirectional else 1
    rec = sum(D * G * (2 * (n_in if layer == 0 else D * H) + 3 * H) for layer in range(layers))
    return 2 * T * B * H * (rec + 3 * D * n_out)


def n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- workers
def _problem(size, dtype, cell="rnn", layers=1, bidirectional=False):
    import numpy as np
    T, B, n_in, H, n_out, ids = SIZES[size]
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    from . import api
    params = api.init_params(n_in, H, n_out, dtype=dt, seed=0, cell=cell, num_layers=layers,
                             bidirectional=bidirectional)
    x = rng.integers(0, n_in, (T, B)) if ids else rng.standard_normal((T, B, n_in)).astype(dt)
    y = rng.integers(0, n_out, (T, B))
    return params, x, y


def _timeit(fn, min_time, min_reps, max_reps):
    """First-call time, then the median of repeated calls after one more warm-up call."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    fn()                                    # warm-up, untimed
    return first, timed_calls(fn, min_time, min_reps, max_reps)


def timed_calls(fn, min_time, min_reps, max_reps):
    """Seconds of each call of ``fn()``: at least min_reps calls and min_time seconds, at most
    max_reps calls."""
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _fn_fastbptt(size, dtype, backend, cell="rnn", layers=1, bidirectional=False):
    from . import api
    params, x, y = _problem(size, dtype, cell, layers, bidirectional)
    if backend == "cuda":
        from . import cuda  # noqa: F401  (raises ImportError when unavailable)
    return lambda: api.loss_and_grad(params, x, y, backend=backend, cell=cell, num_layers=layers,
                                     bidirectional=bidirectional)


def _fn_prepared(size, dtype, backend, cell="rnn", layers=1, bidirectional=False):
    from . import prepared
    params, x, y = _problem(size, dtype, cell, layers, bidirectional)
    fn = prepared.make_loss_and_grad(params, x, y, backend=backend, cell=cell, num_layers=layers,
                                     bidirectional=bidirectional)
    return lambda: fn(params, x, y)


def _fn_reference(size, dtype, backend, cell="rnn", layers=1, bidirectional=False):
    from . import api
    params, x, y = _problem(size, dtype, cell, layers, bidirectional)
    return lambda: api.loss_and_grad(params, x, y, backend="numpy", cell=cell, num_layers=layers,
                                     bidirectional=bidirectional)


def _fn_torch(size, dtype, backend, cell="rnn", layers=1, bidirectional=False):
    import numpy as np
    import torch
    torch.set_num_threads(n_cores())
    T, B, n_in, H, n_out, ids = SIZES[size]
    params, x, y = _problem(size, dtype, cell, layers, bidirectional)
    tdt = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    D = 2 if bidirectional else 1
    if layers > 1 or bidirectional:
        # the same model through the converter: nn.LSTM(num_layers=N, bidirectional=...)
        from .torch_io import to_torch
        rnn, lin, _ = to_torch(params, cell=cell, num_layers=layers, bidirectional=bidirectional)
    else:
        rnn = (torch.nn.RNN(n_in, H, nonlinearity="tanh") if cell == "rnn" else
               {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](n_in, H)).to(tdt)
        lin = torch.nn.Linear(H, n_out).to(tdt)
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(torch.from_numpy(params["U"]))
            rnn.weight_hh_l0.copy_(torch.from_numpy(params["W"]))
            rnn.bias_ih_l0.zero_()
            rnn.bias_hh_l0.zero_()
            lin.weight.copy_(torch.from_numpy(params["V"]))
            lin.bias.zero_()
    if ids:                                 # one-hot rows, built outside the timed region
        xt = torch.nn.functional.one_hot(torch.from_numpy(x), n_in).to(tdt)
    else:
        xt = torch.from_numpy(x)
    yt = torch.from_numpy(y).reshape(-1)
    h0 = torch.zeros(layers * D, B, H, dtype=tdt)
    if backend == "cuda" and torch.cuda.is_available():
        # the GPU peer: cuDNN's RNN; loss.item() below synchronises each call
        torch.backends.cudnn.enabled = True
        rnn, lin = rnn.cuda(), lin.cuda()
        xt, yt, h0 = xt.cuda(), yt.cuda(), h0.cuda()
    if cell == "lstm":
        h0 = (h0, h0.clone())

    def fn():
        for m in (rnn, lin):
            for q in m.parameters():
                q.grad = None
        out, hn = rnn(xt, h0)
        loss = torch.nn.functional.cross_entropy(lin(out).reshape(-1, n_out), yt, reduction="sum")
        loss.backward()
        return loss.item()
    return fn


def _fn_jax(size, dtype, backend, cell="rnn", layers=1, bidirectional=False):
    import numpy as np
    if np.dtype(dtype) == np.float64:
        os.environ.setdefault("JAX_ENABLE_X64", "1")
    import jax
    import jax.numpy as jnp
    T, B, n_in, H, n_out, ids = SIZES[size]
    params, x, y = _problem(size, dtype, cell, layers, bidirectional)
    from .layers import param_key
    P = {k: jnp.asarray(v) for k, v in params.items()}
    D = 2 if bidirectional else 1
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    sig = jax.nn.sigmoid

    def step(P, s, xu_t):                  # the cell's equations (fastbptt/cells/)
        h = s[0]
        r = h @ P["W"].T
        if cell == "rnn":
            return (jnp.tanh(xu_t + r),)
        if cell == "lstm":
            z = xu_t + r
            i, f, g, o = sig(z[:, :H]), sig(z[:, H:2 * H]), jnp.tanh(z[:, 2 * H:3 * H]), sig(z[:, 3 * H:])
            c = f * s[1] + i * g
            return (o * jnp.tanh(c), c)
        rg, zg = sig(xu_t[:, :H] + r[:, :H]), sig(xu_t[:, H:2 * H] + r[:, H:2 * H])
        n = jnp.tanh(xu_t[:, 2 * H:] + rg * (r[:, 2 * H:] + P["bn"]))
        return ((1 - zg) * n + zg * h,)

    def loss_fn(P, x, y):
        inp = x
        for layer in range(layers):
            outs = []
            for d in range(D):
                w = {k: P[param_key(k, layer, d == 1)] for k in ("U", "W", "b", "bn")
                     if param_key(k, layer, d == 1) in P}
                # input projection for all steps at once, then the recurrence in lax.scan
                if layer == 0 and ids:
                    xu = w["U"].T[inp] + w["b"]                        # [T, B, G·H]
                else:
                    xu = inp @ w["U"].T + w["b"]

                def scan_step(s, xu_t, w=w):
                    s = step(w, s, xu_t)
                    return s, s[0]
                s0 = tuple(jnp.zeros((B, H), xu.dtype) for _ in range(2 if cell == "lstm" else 1))
                _, hs = jax.lax.scan(scan_step, s0, xu, reverse=d == 1)   # [T, B, H]
                outs.append(hs)
            inp = outs[0] if D == 1 else jnp.concatenate(outs, axis=-1)   # [T, B, D·H]
        hs = inp
        o = hs @ P["V"].T + P["c"]
        lse = jax.nn.logsumexp(o, axis=-1)
        return jnp.sum(lse - jnp.take_along_axis(o, y[..., None], axis=-1)[..., 0])

    f = jax.jit(jax.value_and_grad(loss_fn))

    def fn():
        v, g = f(P, xj, yj)
        jax.block_until_ready(g)
        return float(v)
    return fn


def _fn_sgemm(lib, dtype):
    import numpy as np
    M, K, N = ROOF
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    if lib == "numpy":
        out = np.empty((M, N), np.float32)
        return lambda: np.dot(a, b, out=out)
    import torch
    torch.set_num_threads(n_cores())
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out = torch.empty(M, N)
    return lambda: torch.mm(ta, tb, out=out)


def _worker(argv):
    """Child process: ``impl size dtype backend min_time [cell [layers bidirectional]]``;
    prints one JSON line."""
    impl, size, dtype, backend, min_time = argv[0], argv[1], argv[2], argv[3], float(argv[4])
    cell = argv[5] if len(argv) > 5 else "rnn"
    layers = int(argv[6]) if len(argv) > 6 else 1
    bidirectional = len(argv) > 7 and argv[7] == "1"
    stacked = layers > 1 or bidirectional
    t0 = time.perf_counter()
    if impl == "fastbptt" and backend == "cuda" and not stacked:
        _worker_cuda(size, dtype, min_time, cell)
        return
    if impl.startswith("sgemm-"):
        fn = _fn_sgemm(impl[6:], dtype)
        fl = 2 * ROOF[0] * ROOF[1] * ROOF[2]
    else:
        fn = {"fastbptt": _fn_fastbptt, "fastbptt-mkl": _fn_fastbptt,
              "fastbptt-openblas": _fn_fastbptt,
              "fastbptt-prepared": _fn_prepared,
              "reference": _fn_reference, "torch": _fn_torch,
              "jax": _fn_jax}[impl](size, dtype, backend, cell,
                                    *((layers, bidirectional) if stacked else ()))
        fl = flops(*SIZES[size][:5], cell=cell, layers=layers, bidirectional=bidirectional)
    setup = time.perf_counter() - t0
    first, times = _timeit(fn, min_time, 5, 2000)
    med = statistics.median(times)
    blas = sys.modules["fastbptt.cpu.blas"].BLAS_NAME if "fastbptt.cpu.blas" in sys.modules else None
    print(json.dumps(dict(ok=True, impl=impl, size=size, dtype=dtype, setup_s=setup, blas=blas,
                          first_s=first, median_s=med, min_s=min(times), reps=len(times),
                          gflops=fl / med / 1e9)))


def _worker_cuda(size, dtype, min_time, cell="rnn"):
    """The CUDA backend's own timing hook: arrays already on the device, synchronised calls."""
    from . import cuda
    T, B, n_in, H, n_out, _ = SIZES[size]
    t0 = time.perf_counter()
    r = cuda.benchmark(T, B, H, n_in=n_in, n_out=n_out, dtype=dtype, repeats=1, warmup=1, cell=cell)
    first = time.perf_counter() - t0
    reps = int(max(5, min(1000, min_time / max(r["seconds"], 1e-6))))
    r = cuda.benchmark(T, B, H, n_in=n_in, n_out=n_out, dtype=dtype, repeats=reps, warmup=1,
                       cell=cell)
    med = r["seconds"]
    print(json.dumps(dict(ok=True, impl="fastbptt", size=size, dtype=dtype, setup_s=0.0,
                          blas=f"cuda ({r['device']}, {r['path']}; one-hot ids)", first_s=first,
                          median_s=med, min_s=min(r["all"]), reps=len(r["all"]),
                          gflops=flops(T, B, n_in, H, n_out, cell=cell) / med / 1e9)))


def _run_child(impl, size, dtype, backend, min_time, timeout, cell="rnn", layers=1,
               bidirectional=False):
    cmd = [sys.executable, "-c", "import sys; from fastbptt.bench import _worker; _worker(sys.argv[1:])",
           impl, size, dtype, backend, str(min_time), cell, str(layers), "1" if bidirectional else "0"]
    env = dict(os.environ)
    if impl in ("fastbptt-mkl", "fastbptt-openblas"):
        env["FASTBPTT_BLAS"] = impl.split("-")[1]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(ok=False, impl=impl, size=size, note=f"timed out after {timeout} s")
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = (r.stderr.strip().splitlines() or ["no output"])[-1]
    if "ModuleNotFoundError" in err or "ImportError" in err:
        err = "not installed: " + err.split(":", 1)[-1].strip()
    return dict(ok=False, impl=impl, size=size, note=err[:200])


def _available(mod):
    import importlib.util
    if mod == "mkl":                        # the mkl wheel ships libraries, no Python module
        import importlib.metadata as md
        try:
            md.version("mkl")
            return True
        except md.PackageNotFoundError:
            return False
    return importlib.util.find_spec(mod) is not None


# --------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``fastbptt bench``'s options to ``parser``."""
    from .cli import int_at_least as _int_at_least
    parser.add_argument("--sizes", default="minchar,small,medium,large",
                        help="comma-separated subset of " + ", ".join(SIZES) + " (default: all)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--cell", default="rnn", choices=("rnn", "lstm", "gru"),
                        help="recurrent cell; the PyTorch peer is nn.RNN, nn.LSTM or nn.GRU")
    parser.add_argument("--layers", type=_int_at_least(1), default=1,
                        help="stacked recurrent layers (default 1); the PyTorch peer gets "
                             "num_layers=N through fastbptt.to_torch")
    parser.add_argument("--bidirectional", action="store_true",
                        help="bidirectional layers (the PyTorch peer: bidirectional=True)")
    parser.add_argument("--backend", default="cpu", choices=("cpu", "cuda"),
                        help="fastbptt backend to measure (default cpu)")
    parser.add_argument("--impls", default=",".join(IMPLS),
                        help="comma-separated subset of " + ", ".join(IMPLS + EXTRA_IMPLS)
                             + " (default: all but " + ", ".join(EXTRA_IMPLS) + ")")
    parser.add_argument("--min-time", type=float, default=2.0,
                        help="seconds of timed calls per measurement, at least 5 calls (default 2)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every measurement this many times, interleaved, and report "
                             "the median of the medians (default 1)")
    parser.add_argument("--no-roofline", action="store_true", help="skip the sgemm measurements")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw GFLOP/s per size and implementation")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per child process")


def _parse_list(name, text, allowed):
    """Comma-separated names, each once, in the order given."""
    from .cli import CLIError
    items = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise CLIError(f"--{name}: unknown {', '.join(bad) or '(empty)'}; choose from {', '.join(allowed)}")
    return items


def run_bench(sizes: list[str], dtype: str = "float32", backend: str = "cpu", impls=IMPLS,
              min_time: float = 2.0, rounds: int = 1, roofline: bool = True, timeout: float = 600,
              log: Callable[[str], Any] = print, cell: str = "rnn", layers: int = 1,
              bidirectional: bool = False) -> dict:
    """Run the measurements; return the results dict that ``--json`` writes."""
    notes = []
    skip = {}
    if "torch" in impls and not _available("torch"):
        skip["torch"] = "PyTorch not installed (pip install torch)"
    if "jax" in impls and not _available("jax"):
        skip["jax"] = "JAX not installed (pip install jax jaxlib)"
    if "fastbptt-mkl" in impls and (backend != "cpu" or not _available("mkl")):
        skip["fastbptt-mkl"] = "the optional mkl package is not installed (pip install mkl)"
    if "fastbptt-openblas" in impls and (backend != "cpu" or not _available("mkl")):
        skip["fastbptt-openblas"] = ("FASTBPTT_BLAS is the CPU backend's" if backend != "cpu" else
                                     "the same as fastbptt without the optional mkl package")
    if "fastbptt-prepared" in impls and backend != "cpu":
        skip["fastbptt-prepared"] = "make_loss_and_grad's fast path is the CPU backend's"
    if backend == "cuda":
        try:
            from . import cuda
            ok, why = cuda.available()
        except Exception as exc:  # ImportError or no GPU
            ok, why = False, str(exc)
        if not ok:
            skip["fastbptt"] = f"CUDA backend unavailable: {why}"
        elif layers > 1 or bidirectional:
            notes.append("fastbptt on cuda: the stacked model's layer calls on the GPU, host "
                         "arrays in and out of every call; peers run on the CPU")
        else:
            notes.append("fastbptt on cuda: timed by fastbptt.cuda.benchmark (device arrays, "
                         "one-hot id inputs at every size); peers run on the CPU")
    for k, v in skip.items():
        notes.append(f"{k}: skipped, {v}")

    runs = {}                               # (impl, size) -> list of child results
    roof = {}
    for r in range(rounds):
        if roofline:
            for lib in ("numpy", "torch"):
                if lib == "torch" and not _available("torch"):
                    continue
                res = _run_child(f"sgemm-{lib}", "-", "float32", "cpu", min_time, timeout)
                if res.get("ok"):
                    roof.setdefault(lib, []).append(res["gflops"])
                    log(f"  round {r + 1}: sgemm {lib}: {res['gflops']:.1f} GFLOP/s")
        for size in sizes:
            for impl in impls:
                if impl in skip:
                    continue
                res = _run_child(impl, size, dtype, backend, min_time, timeout, cell, layers,
                                 bidirectional)
                runs.setdefault((impl, size), []).append(res)
                if res.get("ok"):
                    log(f"  round {r + 1}: {size:8s} {impl:10s} {res['median_s'] * 1e3:10.3f} ms "
                        f"(first call {res['first_s']:.2f} s, {res['reps']} reps)")
                else:
                    log(f"  round {r + 1}: {size:8s} {impl:10s} failed: {res.get('note')}")

    roof_gflops = max((statistics.median(v) for v in roof.values()), default=None)
    rows = []
    for size in sizes:
        T, B, n_in, H, n_out, _ = SIZES[size]
        fl = flops(T, B, n_in, H, n_out, cell, layers, bidirectional)
        med = {}
        for impl in impls:
            ok = [x for x in runs.get((impl, size), []) if x.get("ok")]
            if ok:
                med[impl] = statistics.median(x["median_s"] for x in ok)
            elif (impl, size) in runs:
                notes.append(f"{impl} at {size}: failed ({runs[(impl, size)][-1].get('note')})")
        for impl in impls:
            if impl not in med:
                continue
            ok = [x for x in runs[(impl, size)] if x.get("ok")]
            row = dict(size=size, impl=impl, T=T, B=B, n_in=n_in, H=H, n_out=n_out,
                       num_layers=layers, bidirectional=bidirectional,
                       ms=med[impl] * 1e3, gflops=fl / med[impl] / 1e9, blas=ok[0].get("blas"),
                       first_s=statistics.median(x["first_s"] for x in ok),
                       ms_rounds=[x["median_s"] * 1e3 for x in ok])
            row["pct_roofline"] = 100 * row["gflops"] / roof_gflops if roof_gflops else None
            for peer in ("torch", "jax", "reference"):
                row[f"speedup_vs_{peer}"] = med[peer] / med[impl] if peer in med else None
            rows.append(row)
    return dict(
        machine=dict(cpu=cpu_model(), cores=n_cores(), python=platform.python_version(),
                     platform=platform.platform()),
        command="fastbptt bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "",
        dtype=dtype, backend=backend, rounds=rounds, min_time=min_time, cell=cell,
        num_layers=layers, bidirectional=bidirectional,
        flops_formula=("2*T*B*H*(G*(2*n_in + 3*H) + 3*n_out), G = gates (rnn 1, lstm 4, gru 3)"
                       if layers == 1 and not bidirectional else
                       "2*T*B*H*(sum over layers l of D*G*(2*n_l + 3*H) + 3*D*n_out), n_0 = n_in, "
                       "n_l = D*H, D = directions, G = gates (rnn 1, lstm 4, gru 3)"),
        roofline=dict(gflops=roof_gflops, sgemm=f"{ROOF[0]}x{ROOF[1]}x{ROOF[2]}",
                      per_lib={k: statistics.median(v) for k, v in roof.items()}),
        versions=_versions(), rows=rows, notes=notes,
        time=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    )


def _versions():
    import importlib.metadata as md
    out = {}
    for pkg in ("fastbptt", "numpy", "numba", "scipy", "torch", "jax", "mkl", "intel-cmplr-lib-rt"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def format_table(res: dict) -> str:
    """The results as a Markdown table."""
    def f(v, fmt):
        return "–" if v is None else format(v, fmt)
    roof = res["roofline"]
    layers, bidi = res.get("num_layers", 1), res.get("bidirectional", False)
    layout = (f"; {layers} layers" if layers > 1 else "") + ("; bidirectional" if bidi else "")
    lines = [f"{res['machine']['cpu']}, {res['machine']['cores']} cores; dtype {res['dtype']}{layout}; "
             f"roofline {f(roof['gflops'], '.0f')} GFLOP/s (best sgemm {roof['sgemm']}: "
             + ", ".join(f"{k} {v:.0f}" for k, v in roof["per_lib"].items()) + ")",
             "",
             "| size | impl | ms (median) | GFLOP/s | % roofline | × vs torch | × vs jax | × vs reference |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in res["rows"]:
        lines.append(f"| {r['size']} | {r['impl']} | {r['ms']:.3f} | {r['gflops']:.2f} | "
                     f"{f(r['pct_roofline'], '.1f')} | {f(r['speedup_vs_torch'], '.2f')} | "
                     f"{f(r['speedup_vs_jax'], '.2f')} | {f(r['speedup_vs_reference'], '.2f')} |")
    for n in res["notes"]:
        lines.append(f"\nnote: {n}")
    return "\n".join(lines)


def _size_label(size):
    T, B, n_in, H, n_out, ids = SIZES[size]
    return f"{size}\n({T}, {B}, {n_in}{' ids' if ids else ''}, {H}, {n_out})"


def plot(res: dict, path: str) -> None:
    """Grouped bars of GFLOP/s per size and implementation, with the roofline."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = list(dict.fromkeys(r["size"] for r in res["rows"]))
    impls = list(dict.fromkeys(r["impl"] for r in res["rows"]))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(impls))
    for i, impl in enumerate(impls):
        xs, ys = [], []
        for j, s in enumerate(sizes):
            for r in res["rows"]:
                if r["size"] == s and r["impl"] == impl:
                    xs.append(j + (i - (len(impls) - 1) / 2) * width)
                    ys.append(r["gflops"])
        ax.bar(xs, ys, width, label=impl)
    if res["roofline"]["gflops"]:
        ax.axhline(res["roofline"]["gflops"], color="k", ls="--", lw=1, label="roofline (best sgemm)")
    ax.set_xticks(range(len(sizes)), [_size_label(s) for s in sizes], fontsize=8)
    ax.set_xlabel("problem size (T, B, n_in, H, n_out)")
    ax.set_yscale("log")
    ax.set_ylabel("GFLOP/s (forward + backward)")
    ax.set_title(f"fastbptt bench, {res['dtype']}, {res['machine']['cores']} cores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    """Run ``fastbptt bench`` with parsed ``args``; the exit status."""
    from .cli import CLIError
    sizes = _parse_list("sizes", args.sizes, tuple(SIZES))
    impls = _parse_list("impls", args.impls, IMPLS + EXTRA_IMPLS)
    from .cli import check_output_path
    for name in ("min_time", "timeout"):
        v = getattr(args, name)
        if not (math.isfinite(v) and v > 0):
            raise CLIError(f"--{name.replace('_', '-')} must be a finite number of seconds > 0; got {v}")
    if args.rounds < 1:
        raise CLIError(f"--rounds must be >= 1; got {args.rounds}")
    for opt, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_output_path(opt, path)          # before the run, not after it
    if args.plot and not _available("matplotlib"):
        raise CLIError("--plot needs matplotlib, which is not installed: pip install 'fastbptt[plot]'")
    from .cli import measurement_metadata
    meta = measurement_metadata(getattr(args, "command_line", "fastbptt bench"))
    layout = (f" x {args.layers} layers" if args.layers > 1 else "") + (", bidirectional" if args.bidirectional else "")
    print(f"fastbptt bench: {args.cell} cell{layout}; sizes {', '.join(sizes)}; {args.dtype}; backend {args.backend}; "
          f"{n_cores()} cores; each measurement in its own process", flush=True)
    res = run_bench(sizes, args.dtype, args.backend, impls, args.min_time, args.rounds,
                    not args.no_roofline, args.timeout,
                    log=lambda s: print(s, file=sys.stderr, flush=True), cell=args.cell,
                    layers=args.layers, bidirectional=args.bidirectional)
    res["meta"] = measurement_metadata(meta["command"], meta)
    print(format_table(res))
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
        except OSError as exc:
            raise CLIError(f"--json {args.json}: cannot write: {exc.strerror or exc}") from None
        print(f"wrote {args.json}")
    if args.plot:
        plot(res, args.plot)
        print(f"wrote {args.plot}")
    return 0
