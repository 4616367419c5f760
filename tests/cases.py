"""Random problems for the tests: every input kind, target kind, mask and layout.

``make_case`` returns the arguments of ``fastbptt.loss_and_grad`` as a dict, so a test reads
``loss_and_grad(**case)``. Other test files import it (``from cases import make_case``).
"""
from __future__ import annotations

import itertools

import numpy as np

import fastbptt

ACTIVATIONS = ("tanh", "sigmoid", "relu")
INPUT_KINDS = ("float", "onehot", "embed")
TARGET_KINDS = ("ids", "probs", "mse")      # CE with ids, CE with probability rows, MSE


def make_case(activation="tanh", input_kind="float", target_kind="ids", reduction="sum",
              many_to_one=False, masked=False, batch_first=False, dtype=np.float64,
              T=5, B=3, n_in=4, H=6, n_out=5, vocab=7, seed=0, h0=True, cell="rnn"):
    rng = np.random.default_rng(seed)
    params = fastbptt.init_params(n_in, H, n_out, vocab_size=vocab if input_kind == "embed" else None,
                                  dtype=dtype, seed=seed, cell=cell)
    # non-zero biases, so their gradients and the activation's regimes are all exercised
    params["b"] = (0.3 * rng.standard_normal(params["b"].shape)).astype(dtype)
    if "bn" in params:
        params["bn"] = (0.3 * rng.standard_normal(H)).astype(dtype)
    params["c"] = (0.3 * rng.standard_normal(n_out)).astype(dtype)
    if input_kind == "float":
        inputs = rng.standard_normal((T, B, n_in)).astype(dtype)
    else:
        inputs = rng.integers(0, vocab if input_kind == "embed" else n_in, size=(T, B))
    lead = (B,) if many_to_one else (T, B)
    if target_kind == "ids":
        targets = rng.integers(0, n_out, size=lead)
    elif target_kind == "probs":
        logits = rng.standard_normal(lead + (n_out,))
        targets = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(dtype)
    else:
        targets = rng.standard_normal(lead + (n_out,)).astype(dtype)
    mask = None
    if masked:
        lengths = rng.integers(1, T + 1, size=B)
        lengths[0] = T                                    # one full-length sequence
        if B > 2:
            lengths[-1] = max(1, T // 2)
        mask = (np.arange(T)[:, None] < lengths[None, :]).astype(np.float64)
    state = (0.5 * rng.standard_normal((B, H))).astype(dtype) if h0 else None
    if h0 and cell == "lstm":
        state = (state, (0.5 * rng.standard_normal((B, H))).astype(dtype))
    case = dict(params=params, inputs=inputs, targets=targets, h0=state,
                activation=activation, loss="mse" if target_kind == "mse" else "cross_entropy",
                reduction=reduction, mask=mask, batch_first=batch_first)
    if cell != "rnn":
        case["cell"] = cell
    if batch_first:
        case["inputs"] = np.ascontiguousarray(np.swapaxes(inputs, 0, 1))
        if not many_to_one:
            case["targets"] = np.ascontiguousarray(np.swapaxes(targets, 0, 1))
        if mask is not None:
            case["mask"] = np.ascontiguousarray(mask.T)
    return case


def all_combinations(**fixed):
    """Every (activation, input, target, reduction, many_to_one, masked) combination."""
    keys = ("activation", "input_kind", "target_kind", "reduction", "many_to_one", "masked")
    values = (ACTIVATIONS, INPUT_KINDS, TARGET_KINDS, ("sum", "mean"), (False, True), (False, True))
    for combo in itertools.product(*values):
        kw = dict(zip(keys, combo))
        kw.update(fixed)
        yield kw


def combo_id(kw):
    return "-".join(str(v) if not isinstance(v, bool) else (k if v else f"no_{k}")
                    for k, v in kw.items() if k in ("activation", "input_kind", "target_kind",
                                                     "reduction", "many_to_one", "masked",
                                                     "batch_first"))
