"""Finite-difference gradient checks in float64, for users to check their own models."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class GradcheckResult:
    """Worst relative error found, where, and whether it is within the tolerance.

    ``bool(result)`` is ``result.passed``: every error (none NaN) is at most ``tol``.
    """

    max_rel_error: float
    worst: str
    errors: dict = field(default_factory=dict)
    tol: float = 1e-6

    @property
    def passed(self) -> bool:
        return bool(self.max_rel_error <= self.tol)      # False for NaN

    def __bool__(self):
        return self.passed


def _rel(num, ana, scale, floor):
    """|num − ana| relative to the larger of the two and to ``scale``.

    ``scale`` keeps near-zero derivatives (where the difference is all round-off) from
    reporting huge relative errors: for a unit direction it is ‖∇L‖, the largest the
    directional derivative can be; for one entry, 1e-2 of the largest entry. ``floor`` is
    the round-off of the difference quotient itself, so an exactly-zero gradient checks as 0.
    """
    return abs(num - ana) / max(abs(num), abs(ana), scale, floor)


def _check_args(fun, params, keys, directions, elements, eps, tol):
    """Validate gradcheck's arguments; return the list of keys to check."""
    if not callable(fun):
        raise TypeError(f"fun must be callable, fun(params) -> (loss, grads); got {type(fun).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of float arrays; got {type(params).__name__}")
    if not params:
        raise ValueError("params is an empty dict: nothing would be checked")
    for name, v in (("directions", directions), ("elements", elements)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative int; got {v!r}")
    if directions == 0 and elements == 0:
        raise ValueError("directions and elements are both 0: nothing would be checked")
    for name, v in (("eps", eps), ("tol", tol)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.floating, np.integer)) \
                or not np.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite float > 0; got {v!r}")
    if isinstance(keys, str):
        raise TypeError(f"keys must be an iterable of parameter names; got the string {keys!r}")
    keys = list(params) if keys is None else list(keys)
    if not keys:
        raise ValueError("keys is empty: nothing would be checked")
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"keys {missing} are not in params (it has {list(params)})")
    return keys


def gradcheck(fun: Callable[[dict], tuple[float, dict]], params: dict, *, keys: Iterable[str] | None = None,
              directions: int = 4, elements: int = 16, eps: float = 2e-4,
              seed: int | None = None, tol: float = 1e-6) -> GradcheckResult:
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
    tol : float
        The largest relative error that passes (``result.passed``, ``bool(result)``).

    Returns
    -------
    GradcheckResult
        ``max_rel_error`` over all checks, the label of the worst one, all errors and
        ``passed``.
    """
    keys = _check_args(fun, params, keys, directions, elements, eps, tol)
    rng = np.random.default_rng(seed)
    p64 = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    loss0, grads = fun(dict(p64))
    missing = [k for k in keys if k not in grads]
    if missing:
        raise ValueError(f"fun's gradients have no {missing} (they have {list(grads)})")
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
    if not errors:
        raise ValueError(f"nothing was checked: the parameters {keys} are empty and directions=0")
    # NaN (a NaN gradient or loss) is the worst error, never hidden by max()
    worst = max(errors, key=lambda k: np.inf if np.isnan(errors[k]) else errors[k])
    return GradcheckResult(float(errors[worst]), worst, errors, float(tol))
