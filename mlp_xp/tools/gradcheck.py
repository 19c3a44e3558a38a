"""Float64 central-difference gradient checking over the model's flat parameter vector."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..data import checks
from .._backend import to_numpy

__all__ = ["check_gradients", "GradientCheck"]


class GradientCheck(NamedTuple):
    """Result of :func:`check_gradients`.

    Attributes:
        max_rel_error: the largest per-parameter relative error.
        ok: ``max_rel_error < tolerance``.
        errors: {state_dict key: relative error} for each parameter tensor checked.
        tolerance: the threshold used for ``ok``.
        checked: how many scalar parameters were perturbed.
    """

    max_rel_error: float
    ok: bool
    errors: dict
    tolerance: float
    checked: int


def check_gradients(model, X, y, loss, eps=1e-6, tolerance=1e-7, max_per_tensor=None, seed=0) -> GradientCheck:
    """Compare the analytic gradient with float64 central differences.

    The model is copied to float64 on its own backend; each checked parameter ``p_i`` is
    moved by ``+-eps`` and ``(L(p + eps e_i) - L(p - eps e_i)) / (2 eps)`` is compared with
    the backpropagated gradient. Layers run in evaluation mode (dropout off).

    For each parameter tensor the relative error is
    ``max_i |analytic_i - numeric_i| / max(max_i |analytic_i|, max_i |numeric_i|)``:
    the worst elementwise error measured against the tensor's gradient scale, which stays
    meaningful where single gradients are zero (dead ReLUs, unused inputs).

    Args:
        model: the model (left unchanged).
        X, y: a small batch; every analytic gradient is one forward+backward, every
            numeric one two forward passes per checked parameter.
        loss: the loss to differentiate.
        eps: the finite-difference step.
        tolerance: ``ok`` is ``max_rel_error < tolerance``.
        max_per_tensor: check at most this many randomly chosen entries of each tensor
            (None: all of them).
        seed: chooses those entries.

    Returns:
        A :class:`GradientCheck`.

    Example:
        >>> import numpy as np, mlp_xp as mx
        >>> model = mx.Sequential(mx.Linear(3, 4), mx.Tanh(), mx.Linear(4, 2), seed=0)
        >>> X = np.random.default_rng(0).normal(size=(5, 3))
        >>> result = mx.check_gradients(model, X, np.array([0, 1, 1, 0, 1]), mx.losses.CrossEntropy())
        >>> result.ok, result.max_rel_error < 1e-7
        (True, True)
    """
    model = model.to(dtype="float64")
    model.check_loss(loss)
    x = checks.prepare_inputs(model, X)
    target = checks.prepare_targets(model, y, loss, x.shape[0])
    xp = model.xp
    _, analytic_flat, _ = model.value_and_grad(x, target, loss)
    analytic = _to_host(analytic_flat)
    base = _to_host(model.params).astype(np.float64)
    rng = np.random.default_rng(seed)

    def loss_at(flat_host):
        params = model.backend.asarray(flat_host, dtype=xp.float64)
        return float(loss.value(model.forward(x, params, loss=loss), target, xp))

    errors = {}
    checked = 0
    for spec in model.param_specs:
        indices = np.arange(spec.offset, spec.offset + spec.size)
        if max_per_tensor is not None and spec.size > max_per_tensor:
            indices = np.sort(rng.choice(indices, size=max_per_tensor, replace=False))
        numeric = np.empty(len(indices))
        for position, index in enumerate(indices):
            shifted = base.copy()
            shifted[index] = base[index] + eps
            plus = loss_at(shifted)
            shifted[index] = base[index] - eps
            minus = loss_at(shifted)
            numeric[position] = (plus - minus) / (2.0 * eps)
        exact = analytic[indices]
        scale = max(np.max(np.abs(exact)), np.max(np.abs(numeric)))
        errors[spec.key] = float(np.max(np.abs(exact - numeric)) / scale) if scale > 0 else 0.0
        checked += len(indices)
    max_error = max(errors.values(), default=0.0)
    return GradientCheck(max_error, bool(max_error < tolerance), errors, tolerance, checked)


def _to_host(array):
    return np.array(to_numpy(array), dtype=np.float64)
