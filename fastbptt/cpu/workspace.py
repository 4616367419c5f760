"""The fused call's one workspace: aligned, huge pages when big, and kept between calls.

Why keep it: a training loop calls ``loss_and_grad`` with the same shapes every step, and a
fresh workspace costs the kernel's page faults on every call. At the large size
(T 64, B 128, H 1024) that workspace is 0.2-0.4 GB, and faulting it in took as long as a
quarter of the call: the GRU's call 2330 ms with a fresh workspace against 1794 ms with a
kept one, the LSTM's 3049 against 2380 ms (one process, medians of 5 alternated calls; on a
virtual machine the first touch of memory its host has not backed yet is dearer still, and
varies from run to run). So each thread keeps the largest workspace its calls have needed
and hands it to its next call; a thread's workspace is freed when the thread ends, by
:func:`release`, or never kept when ``FASTBPTT_KEEP_WORKSPACE=0``.

What it costs: the memory of one call's workspace stays allocated between calls (the peak of
a call does not change: a call needs it anyway). :func:`fastbptt.memory.estimate` counts it
in every call's peak, as the first call allocates it; :func:`fastbptt.memory.measure_peak`
releases the kept workspaces first, so that it measures that peak. Results never depend on
whether a workspace was kept: the kernels write every element they read.
"""
from __future__ import annotations

import os
import threading
import weakref

import numpy as np

HUGE = 2 << 20              # a transparent huge page (x86-64, aarch64 with 4 KiB pages)
ADVISE_MIN = 32 << 20       # workspaces from this size get huge pages
_MADV_HUGEPAGE = 14         # Linux


def keep_default() -> bool:
    """Whether workspaces are kept between calls: ``FASTBPTT_KEEP_WORKSPACE`` (default 1)."""
    v = os.environ.get("FASTBPTT_KEEP_WORKSPACE", "1").strip().lower()
    if v in ("1", "true", "yes", "on", ""):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"FASTBPTT_KEEP_WORKSPACE={os.environ['FASTBPTT_KEEP_WORKSPACE']!r}: "
                     "expected 1 (keep each thread's workspace between calls) or 0")


KEEP = keep_default()


def madvise_hugepage(a) -> bool:
    """Ask Linux to back the 1-D array ``a``'s whole 2 MiB pages with huge pages.

    Fewer TLB misses on the medium and large sizes' sweeps over the workspace. Advice only:
    any failure (another OS, no libc, THP disabled) is ignored and the call runs unchanged.
    """
    global _libc
    if _libc is False:
        return False
    try:
        if _libc is None:
            import ctypes
            import sys
            if not sys.platform.startswith("linux"):
                raise OSError("not Linux")
            lib = ctypes.CDLL(None, use_errno=True)
            lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            lib.madvise.restype = ctypes.c_int
            _libc = lib
        start = -(-a.ctypes.data // HUGE) * HUGE
        end = (a.ctypes.data + a.nbytes) // HUGE * HUGE
        return end > start and _libc.madvise(start, end - start, _MADV_HUGEPAGE) == 0
    except (OSError, AttributeError):
        _libc = False
        return False


_libc = None


def workspace(n, dtype):
    """A new 1-D array of n elements: 64-byte aligned, and from :data:`ADVISE_MIN` bytes on
    2 MiB aligned and advised to use huge pages."""
    item = np.dtype(dtype).itemsize
    big = n * item >= ADVISE_MIN
    align = HUGE if big else 64
    raw = np.empty(n + align // item, dtype)
    skip = (-raw.ctypes.data % align) // item
    ws = raw[skip:skip + n]
    if big:
        madvise_hugepage(ws)
    return ws


class _Slot:
    """One thread's kept workspace and arena (bytes); dropped with its ``threading.local``."""
    __slots__ = ("buf", "arena", "arena_want", "__weakref__")

    def __init__(self):
        self.buf = None
        self.arena = None
        self.arena_want = 0


_local = threading.local()
_slots: "weakref.WeakSet[_Slot]" = weakref.WeakSet()
_lock = threading.Lock()


def _slot():
    slot = getattr(_local, "slot", None)
    if slot is None:
        slot = _local.slot = _Slot()
        with _lock:
            _slots.add(slot)
    return slot


def held(n, dtype):
    """A workspace of n elements of ``dtype`` for the calling thread's call.

    The thread's kept workspace when it is big enough (any dtype: it is kept as bytes), else
    a new one that replaces it (the old one is freed first, so the peak holds one). The caller
    must not return it or any view of it: the thread's next call writes it.
    """
    dt = np.dtype(dtype)
    if not KEEP:
        return workspace(n, dt)
    slot = _slot()
    need = n * dt.itemsize
    buf = slot.buf
    if buf is None or buf.nbytes < need:
        slot.buf = buf = None
        buf = slot.buf = workspace(need, np.uint8)
    return buf[:need].view(dt)


class Arena:
    """Arrays that live for one call, carved from the calling thread's kept arena buffer.

    A stacked model's call holds each layer's and direction's state rows and each layer's
    outputs from its forward pass to its backward pass: at the medium size the LSTM's rows
    are 79 MB a layer and direction, past glibc's largest mmap threshold (32 MiB), so every
    call mapped them fresh and faulted them in (about 5% of the 2-layer bidirectional LSTM's
    call). An Arena hands out such arrays from one buffer the thread keeps between calls, as
    :func:`held` does for a single call's workspace. What does not fit comes from NumPy; a
    closed arena records what its call asked for, and the thread's next arena allocates that
    much at its start (not at the close, when the call's arrays still live: that would
    double the call's peak). Only arrays that would live for the whole call go here, so the
    peak of a call does not change; nothing handed out may be returned to the caller.
    Thread-safe: a call's directions allocate from their threads at once.
    """

    ALIGN = 64

    def __init__(self):
        self._slot = slot = _slot() if KEEP else None
        if slot is not None and slot.arena_want > (0 if slot.arena is None else slot.arena.nbytes):
            slot.arena = None
            slot.arena = workspace(slot.arena_want, np.uint8)
        self._buf = None if slot is None else slot.arena
        self._off = 0
        self._lock = threading.Lock()

    def empty(self, shape, dtype):
        """An uninitialised array of ``shape`` and ``dtype`` for the rest of the call."""
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        with self._lock:
            off = self._off
            self._off = off + -(-n // self.ALIGN) * self.ALIGN
        buf = self._buf
        if buf is None or off + n > buf.nbytes:
            return np.empty(shape, dt)
        return buf[off:off + n].view(dt).reshape(shape)

    def close(self):
        """End of the call: the thread's next arena is to hold what this call asked for."""
        if self._slot is not None:
            self._slot.arena_want = max(self._slot.arena_want, self._off)
        self._buf = None


def kept_bytes() -> int:
    """Bytes of the workspaces and arenas the threads keep now."""
    with _lock:
        return sum(a.nbytes for s in _slots for a in (s.buf, s.arena) if a is not None)


def release() -> int:
    """Free the workspaces and arenas every thread keeps; returns their bytes. A call running
    now keeps its own until it returns."""
    with _lock:
        freed = 0
        for s in list(_slots):
            for name in ("buf", "arena"):
                a = getattr(s, name)
                if a is not None:
                    freed += a.nbytes
                    setattr(s, name, None)
            s.arena_want = 0
    return freed
