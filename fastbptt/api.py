"""The public API: validate, make contiguous, allocate, dispatch to a backend."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from . import _validate as V
from . import layer as _layer
from . import reference
from .layer import LayerCache

# a recurrent state: an array [B, H] (or [layers, B, H]), the LSTM's (h, c) tuple, or None
State = Union[ArrayLike, tuple, None]
from ._memcheck import check_fits


def _cpu_fused_eligible(p):
    from .cpu import fused_eligible
    return fused_eligible(p)


def _cpu_solve(p):
    """One CPU call: full BPTT without a mask in one compiled call, the rest on the engine."""
    if _cpu_fused_eligible(p):
        from .cpu import fused_loss_and_grad
        return fused_loss_and_grad(p)
    from . import engine
    return engine.run(p, _backend_ops("cpu", p))


def _backend_ops(backend, p):
    if backend == "cpu":
        from .cpu import CpuOps
        return CpuOps(p)
    if backend == "cuda":
        from .cuda import CudaOps     # raises a clear error when numba-cuda or a GPU is missing
        return CudaOps(p)
    raise AssertionError(backend)


def init_params(n_in: int, n_hidden: int, n_out: int, *, cell: str = "rnn",
                num_layers: int = 1, bidirectional: bool = False,
                vocab_size: int | None = None, dtype: DTypeLike = np.float32,
                seed: int | np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Randomly initialised parameters of a recurrent network with a linear output layer.

    Parameters
    ----------
    n_in, n_hidden, n_out : int
        Input features (or the one-hot vocabulary when ids feed ``U`` directly), hidden units
        and outputs. All must be positive.
    cell : {"rnn", "lstm", "gru"}
        The recurrent cell (see :func:`loss_and_grad` for the equations).
    num_layers : int
    bidirectional : bool
        A stacked or bidirectional model: keys ``U_l1``, ``U_reverse``, ... and
        ``V [n_out, D·H]`` (see :func:`loss_and_grad`).
    vocab_size : int, optional
        When given, an embedding table ``E [vocab_size, n_in]`` is added and integer inputs
        are looked up in it.
    dtype : float32 or float64
    seed : int or numpy.random.Generator, optional

    Returns
    -------
    dict of C-contiguous arrays
        ``U [G·H, n_in]``, ``W [G·H, H]``, ``b [G·H]`` (G = 1, 4, 3 gates for rnn, lstm, gru;
        rows in PyTorch's gate order), ``bn [H]`` for the GRU, ``V [n_out, H]``, ``c [n_out]``
        and ``E [vocab_size, n_in]``.

    Notes
    -----
    Weight matrices are drawn from N(0, 1/fan_in) (LeCun normal), each gate's block alike:
    ``U`` and ``W`` then keep every pre-activation's variance near one for unit-variance
    inputs and states, which suits tanh and sigmoid gates better than PyTorch's uniform
    ±1/√H (whose variance, 1/(3H), shrinks the input term when n_in is small). Biases are zero,
    except the LSTM's forget gate, whose bias is 1 (Jozefowicz et al., 2015; Gers et al.,
    2000): the cell starts by remembering, which helps gradients cross long spans. ``E`` is
    N(0, 1) so embedded inputs have unit variance like one-hot rows of ``U``.
    """
    from . import cells, layers
    cl = cells.get(cell)
    if layers.is_stacked(num_layers, bidirectional):
        return layers.init_params(n_in, n_hidden, n_out, cell=cell, num_layers=num_layers,
                                  bidirectional=bidirectional, vocab_size=vocab_size, dtype=dtype,
                                  seed=seed)
    for name, v in (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}")
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer))
                                   or vocab_size < 1):
        raise ValueError(f"vocab_size must be None or a positive int; got {vocab_size!r}")
    dt = np.dtype(dtype)
    if dt not in V.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64; got {dt}")
    if isinstance(seed, np.random.Generator):
        rng = seed
    else:
        try:
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"seed must be None, a non-negative int or a numpy.random.Generator; "
                             f"got {seed!r}") from exc

    def normal(shape, fan_in):
        return np.ascontiguousarray((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dt))

    H, G = n_hidden, cl.G
    params = {
        "U": normal((G * H, n_in), n_in),
        "W": normal((G * H, H), H),
        "b": np.zeros(G * H, dtype=dt),
        "V": normal((n_out, H), H),
        "c": np.zeros(n_out, dtype=dt),
    }
    if cl.name == "lstm":
        params["b"][H:2 * H] = 1                     # forget gate: remember by default
    for k in cl.extra:
        params[k] = np.zeros(H, dtype=dt)
    if vocab_size is not None:
        params["E"] = normal((vocab_size, n_in), 1)
    return params


def loss_and_grad(params: Mapping[str, ArrayLike], inputs: ArrayLike, targets: ArrayLike,
                  h0: State = None, *, cell: str = "rnn", activation: str = "tanh",
                  num_layers: int = 1, bidirectional: bool = False,
                  loss: str = "cross_entropy", reduction: str = "sum",
                  mask: ArrayLike | None = None, batch_first: bool = False, backend: str = "cpu",
                  truncate: int | tuple[int, int] | None = None,
                  checkpoint: int | str | None = None,
                  check_finite: bool = False) -> tuple[float, dict[str, np.ndarray], State]:
    """Loss, gradients and final state of a recurrent network over a batch of sequences.

    Model: a recurrent cell, then a linear output layer ``o_t = h_t Vᵀ + c``. The cells
    (PyTorch's equations and gate order, so weights port one to one):

    * ``"rnn"`` (Elman): ``h_t = f(x_t Uᵀ + h_{t-1} Wᵀ + b)``.
    * ``"lstm"``: ``z = x_t Uᵀ + h_{t-1} Wᵀ + b`` split into i, f, g, o; ``i, f, o = σ(·)``,
      ``g = tanh(·)``; ``c_t = f ⊙ c_{t-1} + i ⊙ g``; ``h_t = o ⊙ tanh(c_t)``.
    * ``"gru"``: ``r = σ(x U_rᵀ + h W_rᵀ + b_r)``, ``z = σ(x U_zᵀ + h W_zᵀ + b_z)``,
      ``n = tanh(x U_nᵀ + b_n + r ⊙ (h W_nᵀ + bn))``, ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``.

    Parameters
    ----------
    params : dict
        ``U [G·H, n_in]``, ``W [G·H, H]``, ``b [G·H]`` (G = 1, 4, 3 for rnn, lstm, gru),
        ``bn [H]`` (GRU only), ``V [n_out, H]``, ``c [n_out]`` and optionally
        ``E [vocab, n_in]``, all of one float dtype (float32 or float64).
    inputs : array
        Float ``[T, B, n_in]`` or integer ids ``[T, B]``. Ids are looked up in ``E`` when
        params has it, else they select columns of ``U`` (one-hot inputs, never materialised).
    targets : array
        ``loss="cross_entropy"``: class ids ``[T, B]`` or probability rows ``[T, B, n_out]``.
        ``loss="mse"``: floats ``[T, B, n_out]``. Without the time axis (``[B]`` or
        ``[B, n_out]``) the loss is on each sequence's last valid step only (many-to-one).
    h0 : array [B, H], or for the LSTM a tuple (h0, c0) of them, optional
        Initial state; zeros when None (an LSTM given one array starts with c0 = 0).
    cell : {"rnn", "lstm", "gru"}
    activation : {"tanh", "sigmoid", "relu"}
        The Elman cell's f. The gated cells have fixed activations: any value other than
        "tanh" with them is a ValueError.
    num_layers : int
    bidirectional : bool
        Stacked and bidirectional models (PyTorch's ``num_layers``/``bidirectional``): layer
        l ≥ 1 reads ``[h_fwd | h_bwd]`` of layer l−1 and ``V [n_out, D·H]`` (D = 2 when
        bidirectional) reads the top layer. Keys: ``U``, ``W``, ``b`` (``bn``) for layer 0,
        the suffix ``_l{l}`` for layer l ≥ 1 and ``_reverse`` for the reverse direction
        (``U_l1_reverse``). States ``h0``, ``h_last``, ``grads["h0"]`` (and ``c0``) are then
        ``[num_layers·D, B, H]``, index ``l·D + d``. The reverse direction of each sequence
        starts at its last valid step (packed sequences), so with ``bidirectional=True`` the
        mask must be right-padded, and its ``h_last`` is its state after step 0.
        ``truncate`` with ``bidirectional=True`` is a ValueError (the reverse direction needs
        the whole sequence); truncation of a stacked model cuts every layer at a window's
        start.
    loss : {"cross_entropy", "mse"}
        Softmax + negative log-likelihood, or ``½‖o_t − y_t‖²`` per step.
    reduction : {"sum", "mean"}
        Sum over the (t, b) that carry loss, or divided by their number (many-to-one: by the
        number of sequences that have a valid step).
    mask : array [T, B] of 0/1, optional
        Steps with 0 carry no loss; ``h_last`` is each sequence's state at its last valid step.
        The steps after a sequence's last valid step are padding and influence nothing (they
        may hold NaN, inf or any id, e.g. -100); a mask-0 step before it still feeds the
        recurrence, so its input matters.
    batch_first : bool
        Inputs, per-step targets and mask are ``[B, T, ...]``.
    backend : {"cpu", "numpy", "cuda"}
        Numba CPU kernels, the NumPy reference, or the CUDA kernels.
    truncate : None, int k or (k1, k2)
        Truncated BPTT(k2; k1): blocks of k1 steps, each block's losses flow back k2 − k1
        steps before the block's first step and no further. ``k`` means ``(k, k)``.
    checkpoint : None, "sqrt" or int s
        Keep one state every s steps (√T for "sqrt") and recompute the rest during the
        backward pass: the same gradient in far less memory.
    check_finite : bool
        Raise ``FloatingPointError`` (naming the loss and the gradients affected) when the
        loss or any gradient holds inf or NaN, e.g. after relu states overflow or when the
        data hold NaN. By default (False) such values are returned as they are: overflow
        never crashes, it yields inf/NaN in the loss and gradients of the steps it touches.

    Returns
    -------
    loss : float
    grads : dict
        The keys of params plus ``"h0"`` (∂L/∂h0) and, for the LSTM, ``"c0"``, in the
        params' dtype.
    h_last : array [B, H], or for the LSTM the tuple (h, c)
        The state at each sequence's last valid step.
    """
    from . import layers
    if layers.is_stacked(num_layers, bidirectional):
        if not isinstance(check_finite, (bool, np.bool_)):
            raise TypeError(f"check_finite must be a bool; got {check_finite!r}")
        out = layers.loss_and_grad(params, inputs, targets, h0, cell=cell, activation=activation,
                                   num_layers=num_layers, bidirectional=bidirectional, loss=loss,
                                   reduction=reduction, mask=mask, batch_first=batch_first,
                                   backend=backend, truncate=truncate, checkpoint=checkpoint)
        if check_finite:
            _check_finite(*out[:2])
        return out
    layers.reject_layer_keys(params)
    if isinstance(backend, str) and backend == "cuda":
        # device arrays are validated from their shapes and dtypes and never copied to the host
        from . import cuda
        if not isinstance(check_finite, (bool, np.bool_)):
            raise TypeError(f"check_finite must be a bool; got {check_finite!r}")
        out = cuda.loss_and_grad(params, inputs, targets, h0, activation=activation, loss=loss,
                                 reduction=reduction, mask=mask, batch_first=batch_first,
                                 truncate=truncate, checkpoint=checkpoint, cell=cell)
        if check_finite:
            _check_finite(*out[:2])
        return out
    p = V.validate_loss_and_grad(params, inputs, targets, h0, activation, loss, reduction, mask,
                                 batch_first, backend, truncate, checkpoint, cell=cell)
    if not isinstance(check_finite, (bool, np.bool_)):
        raise TypeError(f"check_finite must be a bool; got {check_finite!r}")
    if backend == "numpy":
        out = reference.loss_and_grad(p)
    elif backend == "cpu":
        # compiled code must not be where memory runs out
        fused = _cpu_fused_eligible(p)
        check_fits(p, fused=fused)
        from .cpu import parallel as parts
        n = parts.parts_of(p)
        # the engine reads float inputs a window at a time: its parts take views, no copies
        out = _cpu_solve(p) if n == 1 else parts.run_parts(
            p.B, n, lambda lo, hi: (parts.rows_of(p, lo, hi, view_x=not fused),), _cpu_solve)
    else:
        from . import engine
        out = engine.run(p, _backend_ops(backend, p))
    out = present(p.cell, p.H, *out)
    if check_finite:
        _check_finite(*out[:2])
    return out


def present(cell, H, loss, grads, h_last):
    """Backends return states as one [B, S·H] array; the API splits the LSTM's into (h, c)."""
    if cell.S == 2:
        g0 = grads["h0"]
        grads["h0"], grads["c0"] = g0[:, :H].copy(), g0[:, H:].copy()
        h_last = (h_last[:, :H].copy(), h_last[:, H:].copy())
    return loss, grads, h_last


def _check_finite(loss, grads):
    """Raise FloatingPointError naming the loss/gradients that hold inf or NaN."""
    bad = [] if np.isfinite(loss) else [f"loss ({loss})"]
    for k, g in grads.items():
        g = g.copy_to_host() if hasattr(g, "copy_to_host") else np.asarray(g)
        if not np.all(np.isfinite(g)):
            bad.append(f"grads[{k!r}] ({int(np.count_nonzero(~np.isfinite(g)))} of {g.size} "
                       "entries inf/NaN)")
    if bad:
        raise FloatingPointError(
            "check_finite=True: non-finite " + ", ".join(bad) + ". Likely causes: NaN/inf in "
            "the inputs, targets or params, or states overflowing (relu with large recurrent "
            "weights); lower the learning rate, clip gradients or use tanh/sigmoid.")


RNNCache = LayerCache      # the name the first release used


def rnn_forward(x: ArrayLike, h0: ArrayLike | None, U: ArrayLike, W: ArrayLike, b: ArrayLike, *,
                activation: str = "tanh", batch_first: bool = False,
                backend: str = "cpu") -> tuple[np.ndarray, LayerCache]:
    """Forward pass of an Elman layer alone, for composing with your own layers.

    Parameters
    ----------
    x : array [T, B, n_in]
        Inputs (``[B, T, n_in]`` with ``batch_first=True``).
    h0 : array [B, H] or None
        Initial state (zeros when None).
    U : [H, n_in], W : [H, H], b : [H]
    activation : {"tanh", "sigmoid", "relu"}
    batch_first : bool
    backend : {"cpu", "numpy", "cuda"}
        ``"cuda"``: device arrays in, device arrays out (see :mod:`fastbptt.cuda`).

    Returns
    -------
    hs : array [T, B, H]
        ``h_1 .. h_T`` (``[B, T, H]`` batch-first), a new array: changing it changes nothing
        the backward pass reads.
    cache : LayerCache
        Pass to :func:`rnn_backward`; ``cache.h_last`` is h_T. It references ``x``: do not
        modify ``x`` in between.
    """
    return _layer.forward("rnn", x, h0, None, U, W, b, activation=activation,
                          batch_first=batch_first, backend=backend)


def rnn_backward(dhs: ArrayLike, cache: LayerCache, dh_last: ArrayLike | None = None, *,
                 input_grad: bool = True) -> tuple[np.ndarray, ...]:
    """Backward pass of an Elman layer.

    Parameters
    ----------
    dhs : array [T, B, H]
        ∂L/∂h_t from the layers above, for every step (``[B, T, H]`` if the forward pass was
        batch-first). The recurrent path is added here, with one accumulating delta buffer.
    cache : LayerCache
        From :func:`rnn_forward`.
    dh_last : array [B, H], optional
        A gradient on the final state h_T beyond ``dhs[-1]`` (e.g. from a decoder that starts
        from it): added to the delta buffer before the last step.
    input_grad : bool
        False: ``dx`` is returned as None and not computed. For a layer whose input needs no
        gradient (data, as in a first layer) this skips a product as big as the forward
        pass's input projection.

    Returns
    -------
    dx : [T, B, n_in] (batch-first like x), dh0 : [B, H], dU : [H, n_in], dW : [H, H], db : [H]
    """
    dx, ds, dU, dW, db, _ = _layer.backward("rnn", dhs, cache, dh_last, input_grad=input_grad)
    return dx, ds, dU, dW, db


def lstm_forward(x: ArrayLike, h0: ArrayLike | None, c0: ArrayLike | None, U: ArrayLike,
                 W: ArrayLike, b: ArrayLike, *, batch_first: bool = False,
                 backend: str = "cpu") -> tuple[np.ndarray, LayerCache]:
    """Forward pass of an LSTM layer alone (gate rows i, f, g, o, as PyTorch).

    Parameters
    ----------
    x : array [T, B, n_in] (``[B, T, n_in]`` with ``batch_first=True``)
    h0, c0 : array [B, H] or None
        Initial hidden and cell states (zeros when None).
    U : [4H, n_in], W : [4H, H], b : [4H]
    batch_first : bool
    backend : {"cpu", "numpy", "cuda"}

    Returns
    -------
    hs : array [T, B, H] (``[B, T, H]`` batch-first), a new array
    cache : LayerCache
        Pass to :func:`lstm_backward`; ``cache.h_last`` and ``cache.c_last`` are the final
        states.
    """
    return _layer.forward("lstm", x, h0, c0, U, W, b, batch_first=batch_first, backend=backend)


def lstm_backward(dhs: ArrayLike, cache: LayerCache, dh_last: ArrayLike | None = None,
                  dc_last: ArrayLike | None = None, *,
                  input_grad: bool = True) -> tuple[np.ndarray, ...]:
    """Backward pass of an LSTM layer.

    Parameters
    ----------
    dhs : array [T, B, H]
        ∂L/∂h_t from above for every step (batch-first like the forward pass).
    cache : LayerCache
        From :func:`lstm_forward`.
    dh_last, dc_last : array [B, H], optional
        Gradients on the final h_T and c_T (e.g. from a decoder).
    input_grad : bool
        False: ``dx`` is None and not computed (see :func:`rnn_backward`).

    Returns
    -------
    dx : [T, B, n_in], dh0 : [B, H], dc0 : [B, H], dU : [4H, n_in], dW : [4H, H], db : [4H]
    """
    dx, ds, dU, dW, db, _ = _layer.backward("lstm", dhs, cache, dh_last, dc_last,
                                             input_grad=input_grad)
    H = ds.shape[1] // 2
    if hasattr(ds, "copy_to_host"):                  # a device array: no .copy()
        from . import cuda
        dh0, dc0 = cuda.split_state(ds, 2)
    else:
        dh0, dc0 = ds[:, :H].copy(), ds[:, H:].copy()
    return dx, dh0, dc0, dU, dW, db


def gru_forward(x: ArrayLike, h0: ArrayLike | None, U: ArrayLike, W: ArrayLike, b: ArrayLike,
                bn: ArrayLike, *, batch_first: bool = False,
                backend: str = "cpu") -> tuple[np.ndarray, LayerCache]:
    """Forward pass of a GRU layer alone (gate rows r, z, n, as PyTorch).

    Parameters
    ----------
    x : array [T, B, n_in] (``[B, T, n_in]`` with ``batch_first=True``)
    h0 : array [B, H] or None
    U : [3H, n_in], W : [3H, H], b : [3H], bn : [H]
        ``b`` holds PyTorch's ``b_ih + b_hh`` for r and z and ``b_in`` for n; ``bn`` is
        ``b_hn``.
    batch_first : bool
    backend : {"cpu", "numpy", "cuda"}

    Returns
    -------
    hs : array [T, B, H] (``[B, T, H]`` batch-first), a new array
    cache : LayerCache
        Pass to :func:`gru_backward`; ``cache.h_last`` is the final state.
    """
    return _layer.forward("gru", x, h0, None, U, W, b, bn, batch_first=batch_first,
                          backend=backend)


def gru_backward(dhs: ArrayLike, cache: LayerCache, dh_last: ArrayLike | None = None, *,
                 input_grad: bool = True) -> tuple[np.ndarray, ...]:
    """Backward pass of a GRU layer.

    Parameters as :func:`rnn_backward` (``input_grad=False``: ``dx`` is None, not computed).

    Returns
    -------
    dx : [T, B, n_in], dh0 : [B, H], dU : [3H, n_in], dW : [3H, H], db : [3H], dbn : [H]
    """
    dx, ds, dU, dW, db, dbn = _layer.backward("gru", dhs, cache, dh_last, input_grad=input_grad)
    return dx, ds, dU, dW, db, dbn
