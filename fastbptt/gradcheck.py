"""Finite-difference gradient checks in float64, for users to check their own models."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class GradcheckResult:
    """Worst relative error found, and where."""

    max_rel_error: float
    worst: str
    errors: dict = field(default_factory=dict)

    def __bool__(self):  # pragma: no cover - convenience
        return bool(np.isfinite(self.max_rel_error))


def _rel(num, ana, scale, floor):
    """|num − ana| relative to the larger of the two and to ``scale``.

    ``scale`` keeps near-zero derivatives (where the difference is all round-off) from
    reporting huge relative errors: for a unit direction it is ‖∇L‖, the largest the
    directional derivative can be; for one entry, 1e-2 of the largest entry. ``floor`` is
    the round-off of the difference quotient itself, so an exactly-zero gradient checks as 0.
    """
    return abs(num - ana) / max(abs(num), abs(ana), scale, floor)


def gradcheck(fun: Callable[[dict], tuple[float, dict]], params: dict, *, keys: Iterable[str] | None = None,
              directions: int = 4, elements: int = 16, eps: float = 2e-4,
              seed: int | None = None) -> GradcheckResult:
    """Compare a function's analytic gradient with central differences in float64.

    Parameters
    ----------
    fun : callable
        ``fun(params) -> (loss, grads)`` with ``grads[k]`` the gradient for ``params[k]``.
        For fastbptt itself: ``lambda q: fastbptt.loss_and_grad(q, x, y)[:2]``.
    params : dict of float arrays
        The point at which to check; converted to float64 copies (the caller's arrays are
        never modified). Float inputs that ``fun`` closes over should be float64 too.
    keys : iterable of str, optional
        Which entries to check; all by default.
    directions : int
        Random unit directions ``d`` per parameter: the fourth-order central difference
        of ``L(p + εd)`` in ε is compared with ``⟨∇L, d⟩`` relative to ‖∇L‖: one scalar per check, sensitive to every
        entry at once.
    elements : int
        Entries sampled per parameter and checked one by one (relative to the entry, or to
        1e-2 of the parameter's largest gradient entry when the entry is tiny: differences
        carry a round-off of about ``1e-16·|L|/eps``, which swamps entries far below the largest).
    eps : float
        Step of the (fourth-order, five-point) central difference.
    seed : int, optional

    Returns
    -------
    GradcheckResult
        ``max_rel_error`` over all checks, the label of the worst one, and all errors.
    """
    rng = np.random.default_rng(seed)
    p64 = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    keys = list(p64) if keys is None else list(keys)
    loss0, grads = fun(dict(p64))
    # round-off of a difference quotient: a few ulps of the loss, divided by the step
    floor = 64 * np.finfo(np.float64).eps * max(abs(float(loss0)), 1.0) / eps
    grads = {k: np.asarray(grads[k], dtype=np.float64) for k in keys}

    def loss_at(k, delta):
        q = dict(p64)
        q[k] = p64[k] + delta
        return float(fun(q)[0])

    def derivative(k, step):
        # fourth-order central difference: error O(eps⁴), so eps can be large enough that
        # round-off (≈ 1e-16·|L|/eps) stays far below small derivatives
        return (8 * (loss_at(k, step) - loss_at(k, -step))
                - (loss_at(k, 2 * step) - loss_at(k, -2 * step))) / 12

    errors = {}
    for k in keys:
        for i in range(directions):
            d = rng.standard_normal(p64[k].shape)
            d /= np.linalg.norm(d) or 1.0
            num = derivative(k, eps * d) / eps
            errors[f"{k}:direction{i}"] = _rel(num, float(np.sum(grads[k] * d)),
                                               float(np.linalg.norm(grads[k])), floor)
        flat = rng.choice(p64[k].size, size=min(elements, p64[k].size), replace=False)
        for j in flat:
            e = np.zeros(p64[k].size)
            e[j] = eps
            e = e.reshape(p64[k].shape)
            num = derivative(k, e) / eps
            ana = float(grads[k].reshape(-1)[j])
            idx = tuple(int(i) for i in np.unravel_index(j, p64[k].shape))
            errors[f"{k}{list(idx)}"] = _rel(num, ana, 1e-2 * float(np.abs(grads[k]).max()), floor)
    worst = max(errors, key=errors.get)
    return GradcheckResult(float(errors[worst]), worst, errors)
