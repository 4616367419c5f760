"""Finite-difference gradient checks in float64, for users to check their own models."""
from __future__ import annotations

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


def _rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def gradcheck(fun, params, *, keys=None, directions=4, elements=16, eps=1e-6, seed=None):
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
        Random unit directions ``d`` per check: ``(L(p + εd) − L(p − εd)) / 2ε`` is compared
        with ``⟨∇L, d⟩``: one scalar per check, sensitive to every entry at once.
    elements : int
        Entries sampled per parameter and checked one by one.
    eps : float
        Step of the central difference.
    seed : int, optional

    Returns
    -------
    GradcheckResult
        ``max_rel_error`` over all checks, the label of the worst one, and all errors.
    """
    rng = np.random.default_rng(seed)
    p64 = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    keys = list(p64) if keys is None else list(keys)
    _, grads = fun(p64)
    grads = {k: np.asarray(grads[k], dtype=np.float64) for k in keys}

    def loss_at(k, delta):
        q = dict(p64)
        q[k] = p64[k] + delta
        return float(fun(q)[0])

    errors = {}
    for k in keys:
        for i in range(directions):
            d = rng.standard_normal(p64[k].shape)
            d /= np.linalg.norm(d) or 1.0
            num = (loss_at(k, eps * d) - loss_at(k, -eps * d)) / (2 * eps)
            errors[f"{k}:direction{i}"] = _rel(num, float(np.sum(grads[k] * d)))
        flat = rng.choice(p64[k].size, size=min(elements, p64[k].size), replace=False)
        for j in flat:
            e = np.zeros(p64[k].size)
            e[j] = eps
            e = e.reshape(p64[k].shape)
            num = (loss_at(k, e) - loss_at(k, -e)) / (2 * eps)
            ana = float(grads[k].reshape(-1)[j])
            # entries whose gradient is ~0 are compared absolutely against the loss scale
            errors[f"{k}[{np.unravel_index(j, p64[k].shape)}]"] = (
                _rel(num, ana) if max(abs(num), abs(ana)) > 1e-7 else abs(num - ana))
    worst = max(errors, key=errors.get)
    return GradcheckResult(float(errors[worst]), worst, errors)
