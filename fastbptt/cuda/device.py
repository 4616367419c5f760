"""The CUDA runtime of fastbptt: finding numba-cuda and a GPU, device-array helpers, and
:class:`Device`, the launchers and buffers every CUDA entry point and :class:`CudaOps` share.

Importing this module never imports numba; :func:`cuda_module` does, and raises an
``ImportError`` (numba-cuda missing) or a ``RuntimeError`` (no usable GPU) that says what is
missing.
"""
from __future__ import annotations

import numpy as np

from . import config

_NO_NUMBA_CUDA = ("backend='cuda' needs numba-cuda, which is not installed: "
                  "pip install 'fastbptt[cuda]' (numba-cuda with the CUDA 13 toolkit wheels; "
                  "use pip install 'numba-cuda[cu12]' for a CUDA 12 driver)")
_NO_GPU = ("backend='cuda' found no usable CUDA GPU: numba.cuda.is_available() is False "
           "(no NVIDIA GPU, or no driver visible to this process). To run the CUDA kernels "
           "without a GPU, set NUMBA_ENABLE_CUDASIM=1 before numba is imported (Numba's CUDA "
           "simulator: exact but very slow, for testing only)")


def cuda_module():
    """``numba.cuda`` once it is known to be numba-cuda with a GPU (or the simulator)."""
    try:
        import numba_cuda  # noqa: F401  (numba's built-in CUDA target is deprecated: not used)
    except ImportError:
        raise ImportError(_NO_NUMBA_CUDA) from None
    from numba import cuda
    if not cuda.is_available():
        raise RuntimeError(_NO_GPU)
    return cuda


def available():
    """Whether ``backend="cuda"`` can run here, and why not.

    Returns
    -------
    ok : bool
    reason : str
        ``""`` when ok, else the message ``backend="cuda"`` would raise.
    """
    try:
        cuda_module()
    except (ImportError, RuntimeError) as exc:
        return False, str(exc)
    return True, ""


# --------------------------------------------------------------------------- device arrays
def is_device_array(a) -> bool:
    """True for CUDA device arrays: ``__cuda_array_interface__`` or a Numba (simulator) array."""
    return getattr(a, "__cuda_ndarray__", False) is True or hasattr(a, "__cuda_array_interface__")


def as_device(cuda, a):
    if getattr(a, "__cuda_ndarray__", False) is True:
        return a                                   # Numba device array (or the simulator's)
    return cuda.as_cuda_array(a)                   # CuPy, PyTorch, ...: a zero-copy view


def stand_in(a, swap):
    """A host array of a's shape and dtype kind for the validator, without its data.

    np.zeros is calloc'ed: untouched pages cost no memory. Integer ids become int64 so the
    validator's int64 conversion is a no-op. ``swap``: the validator will swap the first two
    axes (batch_first) and then make the array contiguous; building it already swapped makes
    that a no-op too.
    """
    shape = tuple(int(s) for s in a.shape)
    dt = np.dtype(a.dtype)
    if np.issubdtype(dt, np.integer):
        dt = np.dtype(np.int64)
    if swap and len(shape) >= 2:
        return np.zeros((shape[1], shape[0]) + shape[2:], dtype=dt).swapaxes(0, 1)
    return np.zeros(shape, dtype=dt)


def _addr(a):
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is not None:
        return cai["data"][0]
    return a.__array_interface__["data"][0]       # the simulator's arrays wrap NumPy arrays


def cell_module(cell):
    """The module with a cell's CUDA kernels and time-loop launchers: ``fastbptt.cuda.<name>``."""
    import importlib
    return importlib.import_module(f"{__package__}.{cell.name}")


def nblocks(n, per):
    return max(1, (int(n) + per - 1) // per)


class Device:
    """Kernel launchers and buffers on one device, for one float dtype.

    Parameters
    ----------
    dtype : float32 or float64
    act : int
        The Elman activation code (0 tanh, 1 sigmoid, 2 relu); unused by the gated cells.
    """

    def __init__(self, dtype, act=0):
        from . import arrays, heads, products
        self.cuda = cuda_module()
        self.dtype = np.dtype(dtype)
        self.act = int(act)
        self.NT = config.THREADS
        self.TL = config.TILE
        self.arr = arrays
        self.prod = products.build(self.dtype, self.TL)
        self.heads = heads.build(self.dtype, self.NT)
        cu = self.cuda
        self.dummy1 = cu.device_array(1, dtype=self.dtype)          # for unused arguments
        self.dummy2 = cu.device_array((1, 1), dtype=self.dtype)
        self.dummy3 = cu.device_array((1, 1, 1), dtype=self.dtype)
        self.dummy_ids = cu.device_array(1, dtype=np.int64)

    def blocks(self, n):
        """Blocks of THREADS for n elements."""
        return nblocks(n, self.NT)

    # allocation and copies
    def empty(self, shape):
        return self.cuda.device_array(shape, dtype=self.dtype)

    def zeros(self, shape):
        a = self.empty(shape)
        flat = a.reshape(-1)
        self.arr.fill[self.blocks(flat.shape[0]), self.NT](flat, 0)
        return a

    def upload(self, a, dtype=None):
        return self.cuda.to_device(np.ascontiguousarray(a, dtype=dtype))

    def copy_into(self, dst, src):
        """dst[...] = src for device arrays of one shape: C-contiguous ones may overlap; 2-D and
        3-D views with other strides (the state columns of state rows) may not."""
        nbytes = dst.size * dst.dtype.itemsize
        if nbytes == 0:
            return
        if not (dst.is_c_contiguous() and src.is_c_contiguous()):
            kern = self.arr.to_time_major2 if dst.ndim == 2 else self.arr.to_time_major3
            kern[self.blocks(dst.size), self.NT](src, dst, 0)
            return
        d0, s0 = _addr(dst), _addr(src)
        if d0 < s0 + nbytes and s0 < d0 + nbytes and d0 != s0:
            tmp = self.cuda.device_array(src.shape, dtype=src.dtype)
            tmp.copy_to_device(src)                  # overlapping ranges: through a buffer
            src = tmp
        elif d0 == s0:
            return
        dst.copy_to_device(src)

    def add_into(self, dst, src):
        d, s = dst.reshape(-1), src.reshape(-1)
        self.arr.add_into[self.blocks(d.shape[0]), self.NT](d, s)

    def contiguous(self, a, dtype=None, swap=0):
        """A C-contiguous copy of a device array (time-major when ``swap``), or a itself."""
        dtype = np.dtype(a.dtype if dtype is None else dtype)
        if not swap and a.dtype == dtype and a.is_c_contiguous():
            return a
        if a.ndim == 1:
            return self.upload(a.copy_to_host(), dtype)   # a strided vector: tiny, via host
        shape = tuple(a.shape)
        if swap:
            shape = (shape[1], shape[0]) + shape[2:]
        out = self.cuda.device_array(shape, dtype=dtype)
        n = int(np.prod(shape))
        kern = self.arr.to_time_major2 if a.ndim == 2 else self.arr.to_time_major3
        kern[self.blocks(n), self.NT](a, out, int(swap))
        return out

    def transpose(self, a):
        return self.contiguous(a, swap=1)

    # products
    def gemm(self, A, B, C, ta=0, tb=0, beta=0.0, bias=None):
        """C = op(A) @ op(B) (+ beta*C) (+ bias): the tiled shared-memory product."""
        M, N = C.shape
        TL = self.TL
        grid = (nblocks(M, TL), nblocks(N, TL))
        self.prod.gemm[grid, (TL, TL)](A, B, C, int(ta), int(tb), float(beta),
                                       self.dummy1 if bias is None else bias, int(bias is not None))

    def colsum(self, X, out):
        """out += X.sum(axis=0) (db, dc)."""
        R, N = X.shape
        TL = self.TL
        grid = (nblocks(N, TL), min(nblocks(R, TL), 1024))
        self.prod.colsum_add[grid, (TL, TL)](X, out)

    def rows(self, kern, dst, idx, src, n):
        kern[self.blocks(n), self.NT](dst, idx, src)

    # the time loop's kernel form
    def recurrent_path(self, B, H, smem_elems=None):
        """Which time-loop kernels run: "persistent", "cooperative" or "per-step".

        ``smem_elems``: the elements the persistent kernel keeps in shared memory (H·H for
        the Elman cell's W; G·H·H for a gated cell). The gated cells have no cooperative
        kernels: they run "per-step" where this says "cooperative"."""
        mode = config.RECURRENT
        if mode not in ("auto", "persistent", "cooperative", "per-step"):
            raise ValueError(f"fastbptt.cuda.config.RECURRENT must be 'auto', 'persistent', "
                             f"'cooperative' or 'per-step'; got {mode!r}")
        smem = (H * H if smem_elems is None else smem_elems) * self.dtype.itemsize
        fits = smem <= config.PERSISTENT_MAX_SMEM
        if mode == "auto":
            return "persistent" if fits and B * H <= config.PERSISTENT_MAX_BH else "per-step"
        if mode == "persistent" and not fits:
            return "per-step"                    # W does not fit in one block's shared memory
        return mode

    def launch_coop(self, kern, H, args):
        """Launch a cooperative time-loop kernel over W's columns; False when the grid does
        not fit on the device at once (the caller then runs the per-step kernels)."""
        cols = max(1, min(H, config.PERSISTENT_MAX_SMEM // (H * self.dtype.itemsize)))
        G = nblocks(H, cols)
        smem = H * cols * self.dtype.itemsize
        nt = config.PERSISTENT_THREADS
        try:                                     # every block must be resident at once
            spec = kern.specialize(*args, cols)
            most = next(iter(spec.overloads.values())).max_cooperative_grid_blocks(nt, smem)
        except Exception:                        # the simulator (one block): nothing to ask
            most = G
        if G > most:
            return False
        kern[G, nt, 0, smem](*args, cols)
        return True
