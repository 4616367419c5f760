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
