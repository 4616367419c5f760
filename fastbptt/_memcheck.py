"""Refuse a call whose buffers cannot fit, before compiled code allocates them.

An allocation that fails inside compiled code raises ``MemoryError("Allocation failed")``
with no sizes, and Numba does not free what the call had allocated so far (every failed call
leaked ~160 MiB). So the CPU backend compares :func:`fastbptt.memory.estimate` with the
memory the process can still get, and raises a ``MemoryError`` that says how much the call
needs and what fits instead. Calls whose time-scaling buffers are small are never checked:
the check costs a few multiplications there.
"""
from __future__ import annotations

import resource

import numpy as np

# Below this many bytes of time-scaling buffers a call is not checked (no file is read).
QUICK_BYTES = 64 * 2 ** 20


def _read_int(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes():
    """(bytes the process can still allocate, what limits it), or (None, None) when unknown.

    The smallest of: free RAM plus swap (``MemAvailable + SwapFree``), the address-space limit
    (``RLIMIT_AS``) minus the process's virtual size, and the cgroup's memory limit minus its
    usage (v2 ``memory.max``, v1 ``memory.limit_in_bytes``). Linux only.
    """
    found = []
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.count(" ")}
        if "MemAvailable" in info:
            found.append((info["MemAvailable"] + info.get("SwapFree", 0), "free memory and swap"))
    except (OSError, ValueError, IndexError):
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as f:
                vm = int(f.read().split()[0]) * resource.getpagesize()
            found.append((soft - vm, "the address-space limit RLIMIT_AS"))
        except (OSError, ValueError):
            pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        lim, use = _read_int(limit), _read_int(usage)
        if lim is not None and use is not None and lim < 2 ** 60:
            found.append((lim - use, "the cgroup memory limit"))
            break
    if not found:
        return None, None
    return min(found)


def _gib(n):
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"


def check_fits(p, fused):
    """Raise MemoryError before compiled code when the validated problem ``p`` cannot fit."""
    it = p.dtype.itemsize
    n_x = 2 * p.n_in if p.E is not None else 0                  # embedded inputs and their deltas
    width = (p.cell.K + p.cell.G + p.cell.D) * p.H             # state rows, projections, deltas
    if p.T * p.B * (width + p.n_out + n_x) * it < QUICK_BYTES:
        return
    from .memory import estimate, problem_args

    def need(truncate, checkpoint, fused):
        return estimate(**dict(problem_args(p), truncate=truncate, checkpoint=checkpoint),
                        fused=fused).total

    total = need(p.truncate, p.checkpoint, fused)
    avail, what = available_bytes()
    if avail is None or total <= avail:
        return
    mode = "this call"
    if p.truncate is None and p.checkpoint is None:
        mode = "full BPTT"
    msg = (f"loss_and_grad: {mode} at T={p.T}, B={p.B}, H={p.H}, n_out={p.n_out} ({p.dtype}) "
           f"needs about {_gib(total)} ({total} bytes), but only {_gib(max(avail, 0))} "
           f"({max(avail, 0)} bytes) is available ({what}). ")
    ck = need(p.truncate, "sqrt", False)
    fits = []
    if ck <= avail:
        fits.append(f"checkpoint='sqrt' (the same gradient; about {_gib(ck)})")
    k = 1 << int(np.log2(p.T))
    while k >= 1 and need((k, k), None, False) > avail:
        k //= 2
    if k >= 1 and (p.truncate is None or k < p.truncate[1]):
        fits.append(f"truncate={k} (about {_gib(need((k, k), None, False))})")
    if fits:
        msg += "It fits in memory with " + ", or with ".join(fits) + "."
    else:
        msg += "Neither truncate= nor checkpoint= fits it: use fewer sequences per call (B)."
    raise MemoryError(msg)
