"""``numba.njit`` whose on-disk cache can never stop fastbptt from running.

Numba's ``cache=True`` has two failure modes that would otherwise break the package:

* no writable cache directory (a read-only install with ``NUMBA_CACHE_DIR`` unset or
  unwritable and no writable user cache): Numba raises ``RuntimeError("cannot cache
  function ...")`` while *decorating*, i.e. when ``fastbptt.cpu`` is imported;
* a stale or corrupt index (``.nbi``) or data (``.nbc``) file: unpickling it raises on the
  first call of the kernel.

:func:`njit` takes exactly ``numba.njit``'s arguments. Without a usable cache directory it
compiles without caching (one :class:`CacheWarning` per process naming ``NUMBA_CACHE_DIR``);
a cache file that cannot be read is treated as a miss, deleted, and rewritten after the
kernel compiles.

A third, silent one: Numba checks a cached kernel against its *own* source file only, while
a kernel's machine code includes every kernel it calls from other files. After an edit to
``cpu/blas.py``, the fused kernel in ``cpu/fused.py`` would load from the cache with the old
``gemm`` inside. So every fastbptt kernel is stamped with :func:`package_stamp`, the
modification times and sizes of all the package's source files: any change to any of them
recompiles every kernel on its next use.
"""
from __future__ import annotations

import os
import warnings

import numba


class CacheWarning(RuntimeWarning):
    """Compiled kernels cannot be cached on disk; they compile on every run."""


_warned = False


def _warn_uncached(exc):
    global _warned
    if not _warned:
        _warned = True
        warnings.warn("fastbptt: no writable directory for Numba's compilation cache "
                      f"({exc}); kernels will compile on each run. Set NUMBA_CACHE_DIR to a "
                      "writable directory to cache them.", CacheWarning, stacklevel=4)


class _TolerantCache:
    """Wraps a Numba ``FunctionCache``: an unreadable cache file is a cache miss, not an error."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _discard_index(self):
        # the index maps signatures to data files; without it the next save starts afresh
        path = getattr(getattr(self._inner, "_cache_file", None), "_index_path", None)
        if path:
            try:
                os.remove(path)
            except OSError:
                pass

    def load_overload(self, sig, target_context):
        try:
            return self._inner.load_overload(sig, target_context)
        except Exception:       # corrupt/stale pickle, truncated file, I/O error: recompile
            self._discard_index()
            return None

    def save_overload(self, sig, data):
        try:
            self._inner.save_overload(sig, data)
        except Exception:       # a corrupt index read back while saving, or a full disk
            self._discard_index()
            try:
                self._inner.save_overload(sig, data)
            except Exception:
                pass            # the kernel works uncached


_stamp = None


def package_stamp(root=None):
    """A hash of the name, modification time and size of every ``.py`` file of the package
    (``root``: its folder; default this package's, computed once, about 1 ms)."""
    global _stamp
    if root is None and _stamp is not None:
        return _stamp
    import hashlib
    base = root or os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha1()
    for d, dirs, files in os.walk(base):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                st = os.stat(os.path.join(d, f))
                h.update(f"{os.path.relpath(os.path.join(d, f), base)}:{st.st_mtime_ns}:{st.st_size};".encode())
    stamp = h.hexdigest()
    if root is None:
        _stamp = stamp
    return stamp


def njit(*args, **options):
    """``numba.njit`` with a cache that degrades to no caching instead of raising."""
    if args and callable(args[0]) and len(args) == 1:
        return njit(**options)(args[0])
    if args:
        raise TypeError("fastbptt._jit.njit takes options only, like numba.njit(**options)")

    def decorate(fn):
        if not options.get("cache"):
            return numba.njit(**options)(fn)
        try:
            disp = numba.njit(**options)(fn)
        except RuntimeError as exc:          # "cannot cache function ...: no locator available"
            if "cache" not in str(exc):
                raise
            _warn_uncached(exc)
            return numba.njit(**dict(options, cache=False))(fn)
        if getattr(disp, "_cache", None) is not None:
            cache_file = getattr(disp._cache, "_cache_file", None)
            if cache_file is not None and hasattr(cache_file, "_source_stamp"):
                cache_file._source_stamp = package_stamp()
            disp._cache = _TolerantCache(disp._cache)
        return disp

    return decorate
