"""Stacked and bidirectional models: the flat parameter layout.

A model of ``num_layers`` layers, each with ``D`` directions (D = 2 when bidirectional), keeps
its weights in one flat dict, so ``params[k] -= lr * grads[k]`` works for every key. Names
follow PyTorch's ``weight_ih_l1_reverse`` pattern::

    U, W, b (bn)                     layer 0, forward direction
    U_l1, W_l1, b_l1 (bn_l1)         layer 1, forward direction
    U_reverse, ..., U_l1_reverse     the reverse direction of layer 0, 1, ...
    E, V, c                          single: embedding, output head

Layer 0 reads ``n_in`` features; layer l ≥ 1 reads the D·H outputs of layer l−1
(``[h_fwd | h_bwd]``); the head ``V [n_out, D·H]`` reads the top layer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

# gate rows per cell: U [G·H, n_in], W [G·H, H], b [G·H]
CELL_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def param_key(name: str, layer: int = 0, reverse: bool = False) -> str:
    """The params key of weight ``name`` ("U", "W", "b", "bn") of one layer and direction."""
    return name + (f"_l{layer}" if layer else "") + ("_reverse" if reverse else "")


def param_shapes(cell: str, n_in: int, n_hidden: int, *, num_layers: int = 1,
                 bidirectional: bool = False, n_out=None, vocab_size=None) -> dict:
    """Every params key of a model and its shape, in a fixed order.

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}
    n_in, n_hidden : int
        Features read by layer 0 (the embedding width when ``vocab_size`` is given) and
        hidden units per direction.
    num_layers : int
    bidirectional : bool
    n_out : int, optional
        Outputs of the head; ``None`` for a model without ``V``/``c``.
    vocab_size : int, optional
        Rows of the embedding ``E``; ``None`` for a model without one.

    Returns
    -------
    dict
        ``{key: shape tuple}``: ``E`` first, then ``U``, ``W``, ``b`` (``bn`` for GRU) per
        layer and direction, then ``V``, ``c``.
    """
    G, H = CELL_GATES[cell], n_hidden
    D = 2 if bidirectional else 1
    shapes = {}
    if vocab_size is not None:
        shapes["E"] = (vocab_size, n_in)
    for layer in range(num_layers):
        width = n_in if layer == 0 else D * H
        for d in range(D):
            shapes[param_key("U", layer, d == 1)] = (G * H, width)
            shapes[param_key("W", layer, d == 1)] = (G * H, H)
            shapes[param_key("b", layer, d == 1)] = (G * H,)
            if cell == "gru":
                shapes[param_key("bn", layer, d == 1)] = (H,)
    if n_out is not None:
        shapes["V"] = (n_out, D * H)
        shapes["c"] = (n_out,)
    return shapes


# --------------------------------------------------------------------------- the model

@dataclass
class Stack:
    """The weights and initial states of a validated stacked call.

    ``weights[l][d]`` is ``{"U", "W", "b"(, "bn")}`` of layer l, direction d (0 forward,
    1 reverse); ``state0[l][d]`` the initial state ``(h0,)`` or ``(h0, c0)``, each [B, H].
    """

    L: int
    D: int
    H: int
    weights: list
    state0: list
    V: np.ndarray                 # [n_out, D·H]
    c: np.ndarray                 # [n_out]


def check_layout(num_layers, bidirectional):
    """Validate ``num_layers`` and ``bidirectional``; return (L, D)."""
    if isinstance(num_layers, (bool, np.bool_)) or not isinstance(num_layers, (int, np.integer)) \
            or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int; got {num_layers!r}")
    if not isinstance(bidirectional, (bool, np.bool_)):
        raise TypeError(f"bidirectional must be a bool; got {bidirectional!r}")
    return int(num_layers), 2 if bidirectional else 1


def is_stacked(num_layers, bidirectional) -> bool:
    return check_layout(num_layers, bidirectional) != (1, 1)


def reject_layer_keys(params):
    """A single-layer call given the keys of a stacked model: say which argument is missing."""
    if hasattr(params, "keys"):
        extra = [k for k in params if _LAYER_KEY.fullmatch(str(k))]
        if extra:
            raise ValueError(f"params hold the keys of a stacked or bidirectional model "
                             f"({', '.join(map(repr, extra[:4]))}{', ...' if len(extra) > 4 else ''}); "
                             "pass num_layers= and bidirectional= to match them")


_LAYER_KEY = re.compile(r"(U|W|b|bn)(_l[1-9]\d*(_reverse)?|_reverse)")


def validate(params, inputs, targets, h0, *, cell, activation, num_layers, bidirectional, loss,
             reduction, mask, batch_first, backend, truncate, checkpoint):
    """Validate a stacked call; return ``(p, st)``: the Problem of layer 0 and the Stack.

    Everything about the data (inputs, targets, mask, loss weights) is validated by the
    single-layer validator on a view of the params that holds layer 0 and the head.
    """
    from . import _validate as V
    from . import cells

    L, D = check_layout(num_layers, bidirectional)
    cl = cells.get(cell)
    if truncate is not None and D == 2:
        raise ValueError("truncate is not supported with bidirectional=True: the reverse direction "
                         "reads every later step, so no window of the sequence can be backpropagated "
                         "on its own; use checkpoint= to save memory instead")
    dtype = V.float_dtype_of_params(params, cl)
    arrays = {k: V.as_array(f"params['{k}']", params[k]) for k in params}
    extra = {k: (f"params['{k}']", arrays[k]) for k in cl.extra}
    n_in, H, _ = V.check_weights(arrays["U"], arrays["W"], arrays["b"], dtype,
                                 names=("params['U']", "params['W']", "params['b']"), cell=cl, extra=extra)
    Va = arrays["V"]
    expected = param_shapes(cl.name, n_in, H, num_layers=L, bidirectional=D == 2,
                            n_out=Va.shape[0] if Va.ndim == 2 else 0,
                            vocab_size=arrays["E"].shape[0] if "E" in arrays and arrays["E"].ndim == 2 else None)
    layout = f"cell={cl.name!r}, num_layers={L}, bidirectional={D == 2}"
    missing = [k for k in expected if k not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    if missing or unexpected:
        raise ValueError(f"params do not fit {layout}: "
                         + "; ".join(s for s in (f"missing {', '.join(map(repr, missing))}" if missing else "",
                                                  f"unexpected {', '.join(map(repr, unexpected))}" if unexpected else "")
                                     if s))
    if Va.ndim != 2 or Va.shape[0] == 0 or Va.shape[1] != D * H:
        raise ValueError(f"params['V'] must be [n_out, D·H] = [n_out>0, {D * H}] "
                         f"(the head reads {'[h_fwd | h_bwd]' if D == 2 else 'h'} of the top layer); "
                         f"got shape {Va.shape}")
    for k, shape in expected.items():
        a = arrays[k]
        if a.shape != shape:
            raise ValueError(f"params[{k!r}] must be {list(shape)} for {layout}, n_in={n_in}, "
                             f"H={H}; got shape {a.shape}")
        if a.dtype != dtype:
            raise TypeError(f"params[{k!r}] has dtype {a.dtype} but params['U'] has {dtype}; "
                            "cast explicitly, fastbptt does not mix precisions")

    # the data: the single-layer validator on layer 0 and a head of width H
    view = {k: arrays[k] for k in ("U", "W", "b", "c") + cl.extra + (("E",) if "E" in arrays else ())}
    view["V"] = np.ascontiguousarray(Va[:, :H])
    p = V.validate_loss_and_grad(view, inputs, targets, None, activation, loss, reduction, mask,
                                 batch_first, backend, truncate, checkpoint, cell=cl.name)
    if D == 2 and mask is not None:
        valid = np.asarray(mask).astype(bool)
        valid = valid.T if batch_first else valid
        bad = np.nonzero((np.diff(valid.astype(np.int8), axis=0) > 0).any(axis=0))[0]
        if len(bad):
            b = int(bad[0])
            raise ValueError(f"mask must be right-padded with bidirectional=True (1s, then 0s, in "
                             f"each sequence); sequence {b} (batch index) has a 0 at step "
                             f"{int(np.argmin(valid[:, b]))} before a 1 at step "
                             f"{int(len(valid) - 1 - np.argmax(valid[::-1, b]))}")
    state0 = _states(h0, L * D, p.B, H, dtype, cl)
    C = np.ascontiguousarray
    weights = [[{k: C(arrays[param_key(k, layer, d == 1)]) for k in ("U", "W", "b") + cl.extra}
                for d in range(D)] for layer in range(L)]
    st = Stack(L=L, D=D, H=H, weights=weights, V=C(Va), c=p.c,
               state0=[[tuple(s[layer * D + d] for s in state0) for d in range(D)] for layer in range(L)])
    return p, st


def _states(h0, n, B, H, dtype, cl):
    """h0 (or the LSTM's (h0, c0)) of a stacked model -> tuple of [n, B, H] arrays."""
    from . import _validate as V

    parts = [h0, None]
    if cl.S == 2 and isinstance(h0, tuple):
        if len(h0) != 2:
            raise ValueError(f"h0 for cell='lstm' must be None, an array [L·D, B, H] or a tuple "
                             f"(h0, c0); got a tuple of {len(h0)} items")
        parts = list(h0)
    elif isinstance(h0, tuple):
        raise TypeError(f"h0 must be an array [L·D, B, H] for cell={cl.name!r} (a tuple (h0, c0) "
                        "is the LSTM's state); got a tuple")
    out = []
    for name, a in zip(("h0", "c0"), parts[:cl.S]):
        if a is None:
            out.append(np.zeros((n, B, H), dtype=dtype))
            continue
        a = V.as_array(name, a)
        if a.dtype != dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but params have {dtype}; "
                            "cast explicitly, fastbptt does not mix precisions")
        if a.shape != (n, B, H):
            raise ValueError(f"{name} must be [num_layers·D, B, H] = [{n}, {B}, {H}] (index l·D + d, "
                             f"PyTorch's layout); got shape {a.shape}")
        out.append(np.ascontiguousarray(a))
    return tuple(out)


def init_params(n_in, n_hidden, n_out, *, cell="rnn", num_layers=1, bidirectional=False,
                vocab_size=None, dtype=np.float32, seed=None):
    """Parameters of a stacked model: each layer initialised as :func:`fastbptt.init_params`
    initialises one (LeCun normal over that layer's fan-in, the cell's biases), ``V`` over
    the D·H features it reads. See :func:`fastbptt.init_params`."""
    from .api import init_params as one_layer

    L, D = check_layout(num_layers, bidirectional)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    H = n_hidden
    first = one_layer(n_in, H, n_out, cell=cell, vocab_size=vocab_size, dtype=dtype, seed=rng)
    params = {"E": first["E"]} if vocab_size is not None else {}
    for layer in range(L):
        for d in range(D):
            one = first if layer == d == 0 else one_layer(n_in if layer == 0 else D * H, H, 1,
                                                          cell=cell, dtype=dtype, seed=rng)
            for k in ("U", "W", "b", "bn"):
                if k in one:
                    params[param_key(k, layer, d == 1)] = one[k]
    dt = np.dtype(dtype)
    params["V"] = np.ascontiguousarray((rng.standard_normal((n_out, D * H)) / np.sqrt(D * H)).astype(dt))
    params["c"] = first["c"]
    return params


def loss_and_grad(params, inputs, targets, h0=None, *, cell="rnn", activation="tanh",
                  num_layers=1, bidirectional=False, loss="cross_entropy", reduction="sum",
                  mask=None, batch_first=False, backend="cpu", truncate=None, checkpoint=None):
    """:func:`fastbptt.loss_and_grad` for a stacked or bidirectional model (see there).

    Returns
    -------
    loss : float
    grads : dict
        Every params key, plus ``"h0"`` (and ``"c0"``) ``[num_layers·D, B, H]``.
    h_last : array [num_layers·D, B, H], or for the LSTM the tuple (h, c)
        Index l·D + d: the forward direction's state at each sequence's last valid step, the
        reverse direction's after step 0.

    Notes
    -----
    ``backend="numpy"`` runs :mod:`fastbptt.reference_stack`; ``"cpu"`` the layer API once per
    layer, direction and segment (see :func:`_cpu_loss_and_grad`), which holds every layer's
    outputs ``[T, B, D·H]``, except with ``truncate`` (unidirectional only): then it runs one
    truncation window at a time through all layers and holds O(k2) steps of outputs and caches
(:func:`_cpu_windowed`); ``checkpoint`` drops the per-step caches as well. One-hot id
    inputs are expanded to ``[T, B, n_in]`` rows for layer 0 on the host. ``"cuda"`` runs
    the same schedule with each layer call on the GPU (``rnn_forward(..., backend="cuda")``
    ...): arrays travel between host and device at every call, and the head, the loss and
    the gathers of the reverse direction run on the host.
    """
    p, st = validate(params, inputs, targets, h0, cell=cell, activation=activation,
                     num_layers=num_layers, bidirectional=bidirectional, loss=loss,
                     reduction=reduction, mask=mask, batch_first=batch_first, backend=backend,
                     truncate=truncate, checkpoint=checkpoint)
    if backend == "numpy":
        from . import reference_stack
        value, grads, last = reference_stack.loss_and_grad(p, st)
    elif backend == "cpu":
        from .cpu import parallel
        n = parallel.parts_of(p, layers=st.L * st.D, directions=st.D)
        if n == 1:
            value, grads, last = _cpu_loss_and_grad(p, st)
        else:   # the batch's rows across the cores, as for one layer (fastbptt.cpu.parallel)
            value, grads, last = parallel.run_parts(
                p.B, n, lambda lo, hi: (parallel.rows_of(p, lo, hi), _stack_rows(st, lo, hi)),
                _cpu_loss_and_grad, state_axis=1, states=("h0", "c0"))
    else:   # "cuda": the same schedule over the CUDA layer calls
        value, grads, last = _cpu_loss_and_grad(p, st, backend)
    return value, grads, last if p.cell.S == 2 else last[0]


def _stack_rows(st, lo, hi):
    """The Stack with every initial state cut to the sequences lo .. hi-1."""
    return replace(st, state0=[[tuple(np.ascontiguousarray(a[lo:hi]) for a in s) for s in layer]
                               for layer in st.state0])


def _directions(tasks, backend):
    """Run a bidirectional layer's two directions (callables), side by side on the CPU.

    The directions are independent within a layer, so on two free cores each runs on its
    own with single-threaded products (:func:`fastbptt.cpu.parallel.side_by_side`), instead
    of both in turn with each product split across the cores; a busy machine runs them in
    turn, with the same single-threaded products, so the result never depends on the load.
    """
    if backend != "cpu" or len(tasks) == 1:
        return [t() for t in tasks]
    from .cpu import parallel
    return parallel.side_by_side(tasks)


def collect(weight_grads, dV, dc, dE, dstate0, finals):
    """The flat ``grads`` dict and final states of a stacked run, from per-layer results.

    ``weight_grads[l][d]`` and ``dstate0[l][d]`` are a layer's ``{name: gradient}`` and the
    gradient of its initial state (a tuple of [B, H]); ``finals`` its final states, in the
    order l·D + d. Returns ``(grads, last)`` with states stacked to ``[L·D, B, H]``.
    """
    L, D = len(weight_grads), len(weight_grads[0])
    grads = {param_key(k, layer, d == 1): v for layer in range(L) for d in range(D)
             for k, v in weight_grads[layer][d].items()}
    grads.update({"V": dV, "c": dc})
    if dE is not None:
        grads["E"] = dE
    flat0 = [dstate0[layer][d] for layer in range(L) for d in range(D)]
    for j, name in enumerate(("h0", "c0")[:len(flat0[0])]):
        grads[name] = np.stack([s[j] for s in flat0])
    last = tuple(np.stack([f[j] for f in finals]) for j in range(len(finals[0])))
    return grads, last


# --------------------------------------------------------------------------- cpu backend

def _layer_api(cell, backend="cpu"):
    """(forward, backward) of one layer through the layer API, in a common form.

    forward(x [n, B, F], state, w, activation, alloc=None) -> (hs [n, B, H], cache, end state)
    backward(dhs [n, B, H], cache, dc_last, need_dx) -> (dx [n, B, F] or None without need_dx,
                                                         dstate0 tuple, {key: grad})

    ``alloc`` (CPU): the call's :class:`~fastbptt.cpu.workspace.Arena`'s ``empty``, for the
    cache's state rows; hs is then a view of them.
    """
    from . import api
    from . import layer as _layer

    if getattr(api, f"{cell.name}_forward", None) is None:
        raise NotImplementedError(f"cell={cell.name!r} has no CPU layer kernels yet; stacked and "
                                  "bidirectional models of it run on backend='numpy'")

    def forward(x, state, w, activation, alloc=None):
        hs, cache = _layer.forward(cell.name, x, state[0], state[1] if cell.S == 2 else None,
                                   w["U"], w["W"], w["b"], w.get("bn"),
                                   activation=activation if cell.name == "rnn" else "tanh",
                                   backend=backend, alloc=alloc if backend == "cpu" else None)
        return hs, cache, ((hs[-1], cache.c_last) if cell.S == 2 else (hs[-1],))

    def backward(dhs, cache, dc_last, need_dx):
        dx, ds, dU, dW, db, dbn = _layer.backward(cell.name, dhs, cache, None, dc_last,
                                                  input_grad=need_dx)
        H = dW.shape[1]
        g = {"U": dU, "W": dW, "b": db}
        if dbn is not None:
            g["bn"] = dbn
        return dx, tuple(ds[:, j * H:(j + 1) * H] for j in range(cell.S)), g
    return forward, backward


# A head of at least this many multiply-adds runs as row blocks (None: the size from which
# its products would be threaded, fastbptt.cpu.blas.THREAD_MIN). Its own setting, read in
# Python only: THREAD_MIN is compiled into gemm, so a test must not lower that one.
HEAD_BLOCKS_MIN = None


def _head(p, top, V, c, t0=0):
    """Loss, dV, dc and ∂L/∂top [n, B, D·H] of the output layer, over the rows with loss.

    ``top`` holds the steps ``t0 .. t0 + n - 1`` (all T by default). A head big enough to
    thread runs as row blocks side by side, one per core, each with one-thread products
    (:func:`fastbptt.cpu.parallel.side_by_side`), and the blocks' losses and dV are added in
    order. Why not threaded products: OpenBLAS's worker threads spin for a while after a
    threaded product, and the bidirectional layer that runs next (its two directions on the
    two cores) lost that core: the reverse direction of the top layer's backward pass took
    1.3-1.7x the forward one's time at the medium size.
    """
    from .cpu import blas, mse_rows, parallel, softmax_xent_ids, softmax_xent_probs
    from .cpu.blas import gemm, gemm_scratch, register_blas, restore_threads

    T, B, F = top.shape
    O = V.shape[0]
    w = p.weights[t0:t0 + T].reshape(-1)
    rows = np.flatnonzero(w)
    R = len(rows)
    g = rows + t0 * B                                         # rows of the whole [T·B] problem
    dense = R == T * B                                        # every row carries loss: no copies
    h = top.reshape(T * B, F) if dense else top.reshape(T * B, F)[rows]      # [R, D·H]
    wr = np.ascontiguousarray(w[rows])
    tgt = y = None
    if p.tgt_ids is not None:
        tgt = np.ascontiguousarray(p.tgt_ids.reshape(-1)[g])
    else:
        y = p.y_rows[g] if p.y_map is None else p.y_rows[p.y_map.reshape(-1)[g]]
        y = np.ascontiguousarray(y)
    # the products go to the layers' BLAS: NumPy's own OpenBLAS would leave a second pool of
    # spinning threads next to the directions that run after the head
    register_blas()
    o = np.empty((R, O), p.dtype)
    o[...] = c
    dh = np.empty((R, F), p.dtype)

    def block(lo, hi):
        sc, fs = gemm_scratch(blas.threads_now(), V)
        ob = o[lo:hi]
        gemm(h[lo:hi], 0, V, 1, ob, 1.0, sc, fs)              # [r, n_out], becomes w·∂ℓ/∂o
        if tgt is not None:
            loss = softmax_xent_ids(ob, tgt[lo:hi], wr[lo:hi])
        elif p.loss == "mse":
            loss = mse_rows(ob, y[lo:hi], wr[lo:hi])
        else:
            loss = softmax_xent_probs(ob, y[lo:hi], wr[lo:hi])
        gemm(ob, 0, V, 0, dh[lo:hi], 0.0, sc, fs)
        dV = np.empty_like(V)
        gemm(ob, 1, h[lo:hi], 0, dV, 0.0, sc, fs)
        restore_threads(sc)
        return loss, dV

    # the blocks follow from the shapes and the core count only, never the load
    big = R * F * O >= (HEAD_BLOCKS_MIN or blas.THREAD_MIN)
    n = blas.NTHREADS if big and R >= 2 * blas.NTHREADS else 1
    if n == 1:
        parts = [block(0, R)]
    else:
        parts = parallel.side_by_side([lambda lo=lo, hi=hi: block(lo, hi)
                                       for lo, hi in parallel.bounds(R, n)])
    loss, dV = parts[0]
    loss = float(loss)
    for lp, dVp in parts[1:]:
        loss += float(lp)
        dV += dVp
    if dense:
        dtop = dh.reshape(T, B, F)
    else:
        dtop = np.zeros_like(top)
        dtop.reshape(T * B, F)[rows] = dh
    return loss, dV, o.sum(axis=0), dtop


def _cpu_loss_and_grad(p, st, backend="cpu"):
    """Stacked model on the CPU: one layer-API call per layer, direction and segment.

    Segments are cut where a state is read out (the LSTM's at each sequence's last valid step;
    h is read from the outputs), at the truncation windows' ends and every ``checkpoint`` steps; consecutive segments hand the
    state on in the forward pass and its gradient back in the backward pass, so the result is
    that of one call per layer and direction. The reverse direction runs on the inputs reversed within each sequence. With
    checkpointing a segment keeps only its initial state and is recomputed just before its
    backward pass: the per-step caches of one segment live at a time (the layers' outputs,
    which the next layer reads, are kept whole).
    """
    from .cpu import scatter_add_rows
    from .cpu.workspace import Arena

    if p.truncate is not None and st.D == 1:
        return _cpu_windowed(p, st, backend)
    T, B, H, L, D = p.T, p.B, st.H, st.L, st.D
    forward, backward = _layer_api(p.cell, backend)
    cols = np.arange(B)
    # reverse direction: step s of sequence b reads time rev[s, b] (padding keeps its place)
    s_idx = np.arange(T)[:, None]
    rev = np.where(s_idx <= p.last[None, :], p.last[None, :] - s_idx, s_idx)
    valid_rev = s_idx <= p.last[None, :]                      # [T, B]
    # every sequence full length: the reverse direction is plain time reversal (views, no gathers)
    flip = bool((p.last == T - 1).all())
    k1, k2 = p.truncate if p.truncate is not None else (T, T)
    blocks = [(s0, min(T, s0 + k1), max(0, s0 - (k2 - k1))) for s0 in range(0, T, k1)]
    # an LSTM's c at a sequence's last valid step is only seen as a segment's final state
    reads = {int(v) + 1 for v in p.last if v >= 0} if p.cell.S == 2 else set()
    cuts = sorted({0, T} | reads
                  | {e for blk in blocks for e in blk}
                  | set(range(0, T, p.checkpoint or T)))
    segments = list(zip(cuts[:-1], cuts[1:]))

    if p.x is not None:
        x0 = p.x
    else:
        table = p.E if p.E is not None else np.eye(p.n_in, dtype=p.dtype)   # one-hot rows
        x0 = table[p.ids]                                     # [T, B, n_in]

    # ---- forward ----
    # What lives from the forward pass to the end of the call (the layers' outputs, the
    # caches' state rows, the reverse direction's inputs) comes from a kept arena: fresh, the
    # LSTM's rows were mapped and faulted in on every call. Checkpointed segments' caches do
    # not live that long (they are recomputed), so those rows stay NumPy's.
    arena = Arena() if backend == "cpu" else None
    keep = arena.empty if arena is not None else np.empty
    alloc = keep if arena is not None and not p.checkpoint else None

    def kept_copy(a):
        """a as a C-contiguous array that may live for the call (the cache holds it)."""
        if a.flags.c_contiguous:
            return a
        c = keep(a.shape, a.dtype)
        c[...] = a
        return c

    outs, runs, finals = [], [], []
    x = x0
    for layer in range(L):
        # every element is written, but for the reverse direction's padding when not flipped
        out = keep((T, B, D * H), p.dtype)
        if D == 2 and not flip:
            out[...] = 0

        def forward_direction(d, layer=layer, x=x, out=out):
            w = st.weights[layer][d]
            xd = x if d == 0 else x[::-1] if flip else x[rev, cols]
            state, ends, run = st.state0[layer][d], {0: st.state0[layer][d]}, []
            # the reverse direction's outputs go to their times: through a reversed view of
            # out, or scattered afterwards
            hs = (out[:, :, :H] if d == 0 else out[::-1, :, H:] if flip
                  else np.empty((T, B, H), dtype=p.dtype))
            for a, e in segments:
                start = state
                hseg, cache, state = forward(kept_copy(xd[a:e]), state, w, p.activation, alloc)
                hs[a:e] = hseg
                ends[e] = state
                # checkpointing keeps the segment's initial state and recomputes its cache
                run.append((a, e, start if p.checkpoint else cache))
            if d == 1 and not flip:
                out[rev[valid_rev], np.nonzero(valid_rev)[1], H:] = hs[valid_rev]
            # the state at each sequence's last valid step (forward) or after step 0 (reverse)
            if p.cell.S == 2:
                final = tuple(np.stack([ends[int(v) + 1][j][b] for b, v in enumerate(p.last)])
                              for j in range(len(state)))
            else:
                h0 = st.state0[layer][d][0]
                final = (np.where((p.last >= 0)[:, None], hs[np.maximum(p.last, 0), cols], h0),)
            return (xd, run), final

        for run, final in _directions([lambda d=d: forward_direction(d) for d in range(D)], backend):
            runs.append(run)
            finals.append(final)
        outs.append(out)
        x = out

    loss, dV, dc, dtop = _head(p, outs[-1], st.V, st.c)

    # ---- backward: top layer down, once per truncation block ----
    grads = [[{k: np.zeros_like(v) for k, v in st.weights[layer][d].items()} for d in range(D)]
             for layer in range(L)]
    dstate0 = [[tuple(np.zeros_like(a) for a in st.state0[layer][d]) for d in range(D)]
               for layer in range(L)]
    dx0 = np.zeros_like(x0) if p.E is not None else None     # for dE only
    for s0, s1, lo in blocks:
        # arrays local to the window [lo, s1): the block's own losses flow down every layer
        dcur = dtop if len(blocks) == 1 else dtop[lo:s1].copy()
        dcur[:s0 - lo] = 0
        for layer in range(L - 1, -1, -1):
            width = (outs[layer - 1] if layer else x0).shape[2]
            need_dx = bool(layer) or dx0 is not None

            def backward_direction(d, layer=layer, dcur=dcur, need_dx=need_dx, width=width, s1=s1,
                                   lo=lo):
                xd, run = runs[layer * D + d]
                w = st.weights[layer][d]
                dh = dcur[:, :, d * H:(d + 1) * H]
                # (the reverse direction is never truncated: its window is the whole sequence)
                dhs = dh if d == 0 else dh[::-1] if flip else np.where(valid_rev[:, :, None], dh[rev, cols], 0)
                carry = tuple(np.zeros((B, H), dtype=p.dtype) for _ in st.state0[layer][d])
                segs = [(a, e, c) for a, e, c in reversed(run) if e > lo and a < s1]
                # one segment over the whole window: its input gradient is the direction's, as
                # returned (no zeroed buffer, no copy: 26 MB each at the medium size)
                whole = len(segs) == 1 and segs[0][:2] == (lo, s1)
                dx = np.zeros((s1 - lo, B, width), p.dtype) if need_dx and not whole else None
                for a, e, cache in segs:
                    if p.checkpoint:
                        cache = forward(np.ascontiguousarray(xd[a:e]), cache, w, p.activation)[1]
                    seg = dhs[a - lo:e - lo].copy()
                    seg[-1] += carry[0]                       # ∂L/∂h at the segment's end
                    # layer 0 fed by data: no δ U product (as big as its input projection)
                    dxs, carry, g = backward(seg, cache, carry[1] if len(carry) == 2 else None,
                                             need_dx)
                    for k, v in g.items():
                        grads[layer][d][k] += v
                    if need_dx:
                        if whole:
                            dx = dxs
                        else:
                            dx[a - lo:e - lo] = dxs
                if lo == 0:
                    for acc, v in zip(dstate0[layer][d], carry):
                        acc += v
                return dx

            dxs = _directions([lambda d=d: backward_direction(d) for d in range(D)], backend)
            dbelow = dxs[0]                           # the forward direction's, ours to add to
            if dbelow is not None and D == 2:
                if flip:
                    dbelow += dxs[1][::-1]
                else:
                    dbelow[rev[valid_rev], np.nonzero(valid_rev)[1]] += dxs[1][valid_rev]
            dcur = dbelow
        if dx0 is not None:
            dx0[lo:s1] += dcur
    dE = None
    if dx0 is not None:
        dE = np.zeros_like(p.E)
        scatter_add_rows(dE, p.ids.reshape(-1), dx0.reshape(-1, p.n_in))
    out, last = collect(grads, dV, dc, dE, dstate0, finals)
    if arena is not None:
        arena.close()
    return loss, out, last


def _cpu_windowed(p, st, backend="cpu"):
    """A truncated unidirectional stacked model, one truncation window at a time.

    Window ``[lo, s1)`` of block ``[s0, s1)`` runs forward through every layer from the
    states saved at ``lo``, the head reads its steps ``[s0, s1)``, and the backward pass
    goes down the layers within the window; then only the window's own outputs and caches
    are dropped. So the per-step arrays held are O(k2) whatever T is (the steps
    ``[lo, s0)`` shared with the previous window are recomputed: the same calls on the
    same states, so the same numbers). Segments, cuts and results are those of
    :func:`_cpu_loss_and_grad`.
    """
    from .cpu import scatter_add_rows

    T, B, H, L = p.T, p.B, st.H, st.L
    forward, backward = _layer_api(p.cell, backend)
    S = p.cell.S
    cols = np.arange(B)
    k1, k2 = p.truncate
    blocks = [(s0, min(T, s0 + k1), max(0, s0 - (k2 - k1))) for s0 in range(0, T, k1)]
    reads = {int(v) + 1 for v in p.last if v >= 0} if S == 2 else set()
    cuts = sorted({0, T} | reads | {e for blk in blocks for e in blk}
                  | set(range(0, T, p.checkpoint or T)))
    segments = list(zip(cuts[:-1], cuts[1:]))
    table = None
    if p.x is None:
        table = p.E if p.E is not None else np.eye(p.n_in, dtype=p.dtype)   # one-hot rows

    grads = [{k: np.zeros_like(v) for k, v in st.weights[layer][0].items()} for layer in range(L)]
    dstate0 = [tuple(np.zeros_like(a) for a in st.state0[layer][0]) for layer in range(L)]
    dE = np.zeros_like(p.E) if p.E is not None else None
    dV, dc = np.zeros_like(st.V), np.zeros_like(st.c)
    loss = 0.0
    # state at each sequence's last valid step (the initial state where it has none)
    finals = [tuple(a.copy() for a in st.state0[layer][0]) for layer in range(L)]
    # the states every layer starts a later window from: {time: [state of layer l]}
    los = {lo for _, _, lo in blocks}
    starts = {0: [st.state0[layer][0] for layer in range(L)]}

    for i, (s0, s1, lo) in enumerate(blocks):
        n = s1 - lo
        segs = [(a, e) for a, e in segments if lo <= a and e <= s1]
        x = p.x[lo:s1] if table is None else table[p.ids[lo:s1]]     # [n, B, n_in]
        ins, runs = [], []
        here = (p.last >= s0) & (p.last < s1)                 # sequences that end in this block
        for layer in range(L):
            w = st.weights[layer][0]
            state, run = starts[lo][layer], []
            hs = np.empty((n, B, H), dtype=p.dtype)           # [n, B, H]
            for a, e in segs:
                start = state
                hseg, cache, state = forward(np.ascontiguousarray(x[a - lo:e - lo]), state, w,
                                             p.activation)
                hs[a - lo:e - lo] = hseg
                # checkpointing keeps the segment's initial state and recomputes its cache
                run.append((a, e, start if p.checkpoint else cache))
                if e in los and e > lo:
                    starts.setdefault(e, [None] * L)[layer] = state
                if S == 2 and e - 1 >= s0:
                    ending = here & (p.last == e - 1)
                    for acc, v in zip(finals[layer], state):
                        acc[ending] = v[ending]
            if S == 1 and here.any():
                finals[layer][0][here] = hs[p.last[here] - lo, cols[here]]
            ins.append(x)
            runs.append(run)
            x = hs
        if i + 1 == len(blocks) or blocks[i + 1][2] != lo:   # early windows may share lo = 0
            del starts[lo]

        lw, dVw, dcw, dtop = _head(p, x[s0 - lo:], st.V, st.c, t0=s0)
        loss += lw
        dV += dVw
        dc += dcw
        dcur = np.zeros((n, B, H), dtype=p.dtype)             # [n, B, H] ∂L/∂h of the top layer
        dcur[s0 - lo:] = dtop
        del dtop
        for layer in range(L - 1, -1, -1):
            w = st.weights[layer][0]
            xw = ins[layer]
            need_dx = layer > 0 or dE is not None
            dbelow = np.empty((n, B, xw.shape[2]), dtype=p.dtype) if need_dx else None
            carry = tuple(np.zeros((B, H), dtype=p.dtype) for _ in range(S))
            for a, e, cache in reversed(runs[layer]):
                if p.checkpoint:
                    cache = forward(np.ascontiguousarray(xw[a - lo:e - lo]), cache, w, p.activation)[1]
                seg = dcur[a - lo:e - lo].copy()
                seg[-1] += carry[0]                           # ∂L/∂h at the segment's end
                dxs, carry, g = backward(seg, cache, carry[1] if S == 2 else None, need_dx)
                for k, v in g.items():
                    grads[layer][k] += v
                if need_dx:
                    dbelow[a - lo:e - lo] = dxs
            if lo == 0:
                for acc, v in zip(dstate0[layer], carry):
                    acc += v
            runs[layer] = None                                # drop this layer's caches now
            dcur = dbelow
        if dE is not None:
            scatter_add_rows(dE, p.ids[lo:s1].reshape(-1), dcur.reshape(-1, p.n_in))
    out, last = collect([[g] for g in grads], dV, dc, dE, [[d] for d in dstate0], finals)
    return loss, out, last
