"""Losses, computed from the model's raw outputs (logits) in numerically stable forms.

Every loss implements ``value_and_grad(output, target, xp=None) -> (loss, d_output)``:
the mean loss over the batch as a 0-d array and its gradient with respect to ``output``.
No loss ever takes ``log`` of a probability, so no loss can produce ``log(0)``.

When a model ends in :class:`~mlp_xp.Softmax` and is trained with :class:`CrossEntropy`
(or ends in :class:`~mlp_xp.Sigmoid` and is trained with :class:`BinaryCrossEntropy`), the
model hands the loss the logits *before* that layer: the gradient is ``p - y``, with no
overflow and no log(0), while ``predict`` still returns probabilities.

Example:
    >>> import numpy as np, mlp_xp as mx
    >>> logits = np.array([[1e4, -1e4], [0.0, 0.0]])
    >>> loss, grad = mx.losses.CrossEntropy().value_and_grad(logits, np.array([1, 0]))
    >>> round(float(loss), 6), grad.tolist()
    (10000.346574, [[0.5, -0.5], [-0.25, 0.25]])
"""

from __future__ import annotations

from .. import _math
from .layers import Sigmoid, Softmax
from ..ops.generic import target_distribution, sigmoid_cross_entropy, softmax_cross_entropy

__all__ = ["Loss", "CrossEntropy", "BinaryCrossEntropy", "MSE", "Huber"]


def _namespace(xp, *arrays):
    if xp is not None:
        return xp
    import array_api_compat

    return array_api_compat.array_namespace(*arrays)


class Loss:
    """Base class.

    Attributes:
        fuses_with: the output layer class whose math this loss absorbs in training (a model
            ending in exactly that layer gives the loss the layer's input).
        target_kind: "class" (labels or class probabilities), "binary" (values in [0, 1])
            or "regression" (real values); decides how targets are checked and whether
            accuracy is reported.
    """

    fuses_with: type | None = None
    target_kind = "regression"
    _config_keys: tuple = ()

    def value_and_grad(self, output, target, xp=None):
        """Mean loss over the batch and its gradient with respect to ``output``.

        Args:
            output: (batch, features) raw model outputs (logits for cross-entropies).
            target: prepared targets (see each loss).
            xp: the Array API namespace; looked up from ``output`` when None.

        Returns:
            (loss, d_output): a 0-d array and an array shaped like ``output``.
        """
        raise NotImplementedError

    def value(self, output, target, xp=None):
        """Mean loss over the batch (a 0-d array)."""
        return self.value_and_grad(output, target, xp)[0]

    def ops_value_and_grad(self, ops, output, target):
        """``value_and_grad`` in a training step, through the backend's :mod:`mlp_xp.ops` where
        they have this loss (cross-entropies: a kept one-hot row, a fused kernel); by default,
        and for a subclass with its own ``value_and_grad``, the loss's own code."""
        return self.value_and_grad(output, target, ops.xp)

    def correct(self, output, target, xp=None):
        """Number of correct predictions in the batch (0-d array); classification only."""
        raise TypeError(f"{type(self).__name__} has no accuracy")

    def config(self):
        return {key: getattr(self, key) for key in self._config_keys}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits, by log-sum-exp.

    Targets are integer class labels of shape (batch,) or class probabilities (one-hot or
    soft) of shape (batch, classes) whose rows sum to 1.

    Args:
        label_smoothing: eps in [0, 1): targets become (1 - eps) * target + eps / classes,
            as in ``torch.nn.CrossEntropyLoss``.

    Shape:
        output: (batch, classes) logits -> loss: () ; d_output: (batch, classes)
    """

    fuses_with = Softmax
    target_kind = "class"
    _config_keys = ("label_smoothing",)

    def __init__(self, label_smoothing=0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def value_and_grad(self, output, target, xp=None):
        return softmax_cross_entropy(_namespace(xp, output), output, target, self.label_smoothing)

    def ops_value_and_grad(self, ops, output, target):
        if type(self).value_and_grad is not CrossEntropy.value_and_grad:
            return super().ops_value_and_grad(ops, output, target)
        return ops.cross_entropy(output, target, self.label_smoothing)

    def value(self, output, target, xp=None):
        xp = _namespace(xp, output)
        target = target_distribution(xp, output, target, self.label_smoothing)
        return xp.sum(target * _math.log_softmax(xp, output)) / -output.shape[0]

    def correct(self, output, target, xp=None):
        xp = _namespace(xp, output)
        labels = target if target.ndim == 1 else xp.argmax(target, axis=-1)
        return xp.sum(xp.astype(xp.argmax(output, axis=-1) == labels, output.dtype))


class BinaryCrossEntropy(Loss):
    """Sigmoid cross-entropy from logits: ``softplus(z) - y z``, mean over all elements.

    Targets are values in [0, 1] shaped like the output, or (batch,) for one output.
    Accuracy counts ``(z > 0) == (y >= 0.5)`` over all elements.

    Shape:
        output: (batch, k) logits -> loss: () ; d_output: (batch, k)
    """

    fuses_with = Sigmoid
    target_kind = "binary"

    def value_and_grad(self, output, target, xp=None):
        xp = _namespace(xp, output)
        return sigmoid_cross_entropy(xp, output, xp.reshape(target, output.shape))

    def ops_value_and_grad(self, ops, output, target):
        if type(self).value_and_grad is not BinaryCrossEntropy.value_and_grad:
            return super().ops_value_and_grad(ops, output, target)
        return ops.binary_cross_entropy(output, ops.xp.reshape(target, output.shape))

    def correct(self, output, target, xp=None):
        xp = _namespace(xp, output)
        target = xp.reshape(target, output.shape)
        hits = xp.astype((output > 0) == (target >= 0.5), output.dtype)
        return xp.sum(hits) / output.shape[1]


class MSE(Loss):
    """Mean squared error over all elements, ``mean((output - target) ** 2)``.

    Shape:
        output: (batch, k); target: (batch, k) or (batch,) when k == 1.
    """

    def value_and_grad(self, output, target, xp=None):
        xp = _namespace(xp, output)
        diff = output - xp.reshape(target, output.shape)
        count = output.shape[0] * output.shape[1]
        return xp.sum(diff * diff) / count, diff * (2.0 / count)


class Huber(Loss):
    """Huber loss: ``0.5 d^2`` for ``|d| <= delta``, else ``delta (|d| - 0.5 delta)``; mean.

    Equal to ``torch.nn.HuberLoss(delta=delta)``.

    Args:
        delta: where the loss turns from quadratic to linear (> 0).
    """

    _config_keys = ("delta",)

    def __init__(self, delta=1.0):
        if not delta > 0:
            raise ValueError(f"Huber delta must be > 0, got {delta!r}")
        self.delta = float(delta)

    def value_and_grad(self, output, target, xp=None):
        xp = _namespace(xp, output)
        diff = output - xp.reshape(target, output.shape)
        abs_diff = xp.abs(diff)
        small = abs_diff <= self.delta
        count = output.shape[0] * output.shape[1]
        loss = xp.sum(xp.where(small, 0.5 * diff * diff, self.delta * (abs_diff - 0.5 * self.delta))) / count
        grad = xp.where(small, diff, self.delta * xp.sign(diff)) / count
        return loss, grad


LOSS_TYPES = {cls.__name__: cls for cls in (CrossEntropy, BinaryCrossEntropy, MSE, Huber)}
