"""The recurrent cells: what each one computes, and what every backend needs to know of it.

A cell is one unit. ``fastbptt/cells/<name>.py`` holds its equations and their plain NumPy
form (the oracle the reference uses); ``fastbptt/cpu/<name>.py`` its Numba pointwise kernels;
``fastbptt/cuda/<name>.py`` its CUDA kernels. The scheduler, truncation, checkpointing,
validation and the memory model only read the numbers a cell declares here.

Size letters: T steps, B batch, H hidden units, G gates. Per step a backend keeps one
**state row** ``[B, K·H]`` whose first ``S·H`` columns are the carried state (h, then c for
the LSTM) and whose remaining columns are what the backward pass needs (activated gates), and
produces one **delta row** ``[B, D·H]`` whose first ``G·H`` columns are the gradient of the
recurrent pre-activation ``h_{t-1} Wᵀ`` (see ``docs/cells.rst``).
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from . import gru, lstm, rnn


@dataclass(frozen=True)
class Cell:
    """What a backend needs to know of a cell.

    Attributes
    ----------
    name : str
    code : int
        Small integer that selects the cell inside compiled kernels.
    G : int
        Gates: ``U [G·H, n_in]``, ``W [G·H, H]``, ``b [G·H]``.
    S : int
        State arity: 1 (h) or 2 (h, c).
    K : int
        Width of a step's state row in units of H (state, then per-step cache).
    D : int
        Width of a step's delta row in units of H.
    split : bool
        The recurrent product is kept apart from the input projection (GRU: r multiplies
        only the recurrent part of the new gate). Otherwise it is accumulated onto it.
    extra : tuple of str
        Parameters beyond ``U, W, b`` (GRU: ``bn [H]``).
    xblocks : tuple of (int, int, int)
        The input-side pre-activation gradient as blocks (delta column, row of U, width), in
        units of H: dU, db and dx are products over these blocks of the delta row.
    bn_col : int
        The delta column block whose sum is ∂L/∂bn (-1: the cell has no bn).
    ref : module
        The NumPy step functions ``forward``/``backward``/``bias_grads`` (the oracle).
    """

    name: str
    code: int
    G: int
    S: int
    K: int
    D: int
    split: bool
    extra: tuple
    xblocks: tuple
    bn_col: int
    ref: ModuleType

    def shapes(self, n_in: int, H: int) -> dict:
        """Expected shape of each recurrent parameter."""
        G = self.G
        out = {"U": (G * H, n_in), "W": (G * H, H), "b": (G * H,)}
        for k in self.extra:
            out[k] = (H,)
        return out


CELLS = {m.NAME: Cell(m.NAME, code, m.G, m.S, m.K, m.D, m.SPLIT, m.EXTRA, m.XBLOCKS, m.BN_COL, m)
         for code, m in enumerate((rnn, lstm, gru))}


def get(name) -> Cell:
    """The :class:`Cell` called ``name``; ValueError naming the argument otherwise."""
    if not isinstance(name, str) or name not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}; got {name!r}")
    return CELLS[name]
