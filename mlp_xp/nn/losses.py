"""Losses, computed from the model's raw outputs (logits) in numerically stable forms.

Every loss implements ``value_and_grad(output, target, xp=None) -> (loss, d_output)``: the loss
over the batch, reduced as its ``reduction`` says, and its gradient with respect to ``output``.
No loss ever takes ``log`` of a probability, so no loss can produce ``log(0)``.

``reduction`` is "mean" (the default), "sum" or "none", with ``torch.nn.functional``'s meaning:
"none" gives the unreduced losses (one per sample for :class:`CrossEntropy` and
:class:`KLDivergence`, one per element for the elementwise losses), and then ``d_output`` is
the gradient of their sum (row ``i`` holds the gradient of sample ``i``'s loss). ``fit``,
``evaluate``, ``loss_and_grad``, ``check_gradients`` and the training step average over samples
themselves: they take ``reduction="mean"`` only and refuse another before any work (call
``value`` / ``value_and_grad`` on ``model.forward(x, loss=loss)`` for sums or per-sample values).

When a model ends in :class:`~mlp_xp.Softmax` and is trained with :class:`CrossEntropy` or
:class:`KLDivergence` (or ends in :class:`~mlp_xp.Sigmoid` and is trained with
:class:`BinaryCrossEntropy`), the model hands the loss the logits *before* that layer: the
gradient is ``p - y``, with no overflow and no log(0), while ``predict`` still returns
probabilities.

Example:
    >>> import numpy as np, mlp_xp as mx
    >>> logits = np.array([[1e4, -1e4], [0.0, 0.0]])
    >>> loss, grad = mx.losses.CrossEntropy().value_and_grad(logits, np.array([1, 0]))
    >>> round(float(loss), 6), grad.tolist()
    (10000.346574, [[0.5, -0.5], [-0.25, 0.25]])
    >>> per_sample, _ = mx.losses.CrossEntropy(reduction="none").value_and_grad(logits, np.array([1, 0]))
    >>> per_sample.round(6).tolist()
    [20000.0, 0.693147]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Sequence

from .. import _math
from .layers import Sigmoid, Softmax
from ..ops.generic import target_distribution, sigmoid_cross_entropy, softmax_cross_entropy

__all__ = ["Loss", "CrossEntropy", "BinaryCrossEntropy", "MSE", "Huber", "L1", "SmoothL1", "KLDivergence"]

REDUCTIONS = ("mean", "sum", "none")
#: for type checkers: a ``reduction``
Reduction = Literal["mean", "sum", "none"]

if TYPE_CHECKING:
    from .._types import ArrayLike


def _namespace(xp, *arrays):
    if xp is not None:
        return xp
    import array_api_compat

    return array_api_compat.array_namespace(*arrays)


def _check_reduction(reduction, loss):
    if reduction not in REDUCTIONS:
        hint = " (KLDivergence's 'mean' is torch's 'batchmean')" if reduction == "batchmean" else ""
        raise ValueError(f"{loss} reduction must be one of {', '.join(map(repr, REDUCTIONS))}, "
                         f"got {reduction!r}{hint}")
    return reduction


def _real_number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) and type(value).__module__ != "numpy":
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _weights(values, name):
    """``values`` (a sequence or any backend's 1-D array) as a tuple of finite floats >= 0, or None."""
    if values is None:
        return None
    import math

    from .._backend import to_numpy

    try:
        array = to_numpy(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got {values!r} ({error})") from None
    if array.dtype.kind not in "biuf" or array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of real numbers, got {values!r}")
    floats = tuple(float(item) for item in array.tolist())
    if not all(math.isfinite(item) and item >= 0 for item in floats):
        raise ValueError(f"{name} must hold finite numbers >= 0, got {list(floats)}")
    return floats


def _traced(array):
    """True for a JAX tracer (inside ``jax.jit``), whose values cannot be read on the host (told by
    its class, so that jax need not be imported)."""
    return any(cls.__name__ == "Tracer" and cls.__module__.startswith("jax") for cls in type(array).__mro__)


def _reduce(xp, losses, grad, reduction, count):
    """(loss, grad) for ``reduction``, given unreduced losses and the gradient of their sum;
    "mean" divides both by ``count``."""
    if reduction == "mean":
        return xp.sum(losses) / count, grad / count
    if reduction == "sum":
        return xp.sum(losses), grad
    return losses, grad


class Loss:
    """Base class.

    Attributes:
        fuses_with: the output layer class whose math this loss absorbs in training (a model
            ending in exactly that layer gives the loss the layer's input).
        target_kind: "class" (labels or class probabilities), "binary" (values in [0, 1])
            or "regression" (real values); decides how targets are checked and whether
            accuracy is reported.
        reduction: "mean", "sum" or "none" (see the module's docstring); training takes "mean".
    """

    fuses_with: type | None = None
    target_kind = "regression"
    reduction = "mean"
    _config_keys: tuple = ()

    def value_and_grad(self, output: ArrayLike, target: ArrayLike, xp: Any = None) -> tuple[Any, Any]:
        """The loss over the batch and its gradient with respect to ``output``.

        Args:
            output: (batch, features) raw model outputs (logits for cross-entropies).
            target: prepared targets (see each loss).
            xp: the Array API namespace; looked up from ``output`` when None.

        Returns:
            (loss, d_output): the loss reduced by ``reduction`` (a 0-d array for "mean" and
            "sum") and an array shaped like ``output``.
        """
        raise NotImplementedError

    def value(self, output: ArrayLike, target: ArrayLike, xp: Any = None) -> Any:
        """The loss over the batch, reduced by ``reduction`` (a 0-d array for "mean")."""
        return self.value_and_grad(output, target, xp)[0]

    def ops_value_and_grad(self, ops, output, target):
        """``value_and_grad`` in a training step, through the backend's :mod:`mlp_xp.ops` where
        they have this loss (cross-entropies: a kept one-hot row, a fused kernel); by default,
        and for a subclass with its own ``value_and_grad``, the loss's own code."""
        return self.value_and_grad(output, target, ops.xp)

    def check_fit(self, outputs):
        """Raise ValueError where ``fit``, ``evaluate`` and the other model entry points cannot
        use this loss on a model with ``outputs`` output features (called before any work).

        Raises:
            ValueError: ``reduction`` is not "mean" (the model averages over samples itself),
                or a per-class or per-output weight has the wrong length.
        """
        if self.reduction != "mean":
            raise ValueError(f"{self!r}: fit, evaluate, loss_and_grad and check_gradients average the loss over "
                             f"samples and take reduction='mean' only; use reduction={self.reduction!r} through "
                             "the loss's value / value_and_grad on model outputs (model.forward(x, loss=loss))")

    def correct(self, output, target, xp=None):
        """Number of correct predictions in the batch (0-d array); classification only."""
        raise TypeError(f"{type(self).__name__} has no accuracy")

    def correct_rows(self, output, target, xp=None):
        """Each row's share of correct predictions (1-D, of ``output``'s dtype; their sum is
        :meth:`correct`): what a weighted accuracy weighs."""
        raise TypeError(f"{type(self).__name__} has no accuracy")

    def config(self):
        return {key: getattr(self, key) for key in self._config_keys}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"

    def _vector(self, xp, values, like):
        """``values`` (a tuple of floats) as a 1-D array of ``like``'s dtype on its device, made
        once per namespace, dtype and device (under ``jax.jit`` each time: XLA folds it)."""
        import array_api_compat

        if array_api_compat.is_jax_namespace(xp):
            return xp.asarray(values, dtype=like.dtype)
        device = array_api_compat.device(like)
        cache = self.__dict__.setdefault("_arrays", {})
        key = (values, getattr(xp, "__name__", id(xp)), str(like.dtype), str(device))
        array = cache.get(key)
        if array is None:
            if len(cache) > 8:
                cache.clear()
            array = cache[key] = xp.asarray(values, dtype=like.dtype, device=device)
        return array

    def _check_length(self, values, name, size, what, allow_one=False):
        if values is not None and len(values) != size and not (allow_one and len(values) == 1):
            raise ValueError(f"{type(self).__name__} {name} has {len(values)} entries but the output has {size} "
                             f"{what}")


def _class_correct(xp, output, target):
    return xp.sum(_class_correct_rows(xp, output, target))


def _class_correct_rows(xp, output, target):
    labels = target if target.ndim == 1 else xp.argmax(target, axis=-1)
    return xp.astype(xp.argmax(output, axis=-1) == labels, output.dtype)


def _check_labels(xp, output, target, ignore_index=None):
    """:meth:`CrossEntropy.check_labels`."""
    if target.ndim != 1:
        return None
    classes = output.shape[-1]
    bad = xp.logical_or(target < 0, target >= classes)
    if ignore_index is not None:
        bad = xp.logical_and(bad, target != ignore_index)
    if _traced(target):
        return xp.any(bad)
    if bool(xp.any(bad)):
        row = int(xp.argmax(xp.astype(bad, xp.int32)))
        label = target[row]
        label = int(label) if xp.isdtype(label.dtype, "integral") else float(label)
        also = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
        raise ValueError(f"label out of range: target[{row}] = {label} but the output has {classes} classes, "
                         f"so labels must be in [0, {classes - 1}]{also}")
    return None


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits, by log-sum-exp; equal to
    ``torch.nn.functional.cross_entropy`` with the same arguments.

    Targets are integer class labels of shape (batch,) or class probabilities (one-hot or
    soft) of shape (batch, classes) whose rows sum to 1. A label outside ``[0, classes - 1]``
    is an error (ValueError naming it) in ``value``, ``value_and_grad``, ``fit`` and
    ``evaluate``, unless it equals ``ignore_index``. (Inside ``jax.jit`` the labels cannot be
    read: the loss there is NaN instead.)

    With labels, sample ``i`` has the loss ``l_i = -sum_c T_ic log softmax(z_i)_c`` for the target
    row ``T_i = w * ((1 - eps) onehot(y_i) + eps / classes)`` (``w`` all ones without ``weight``),
    zero where ``y_i == ignore_index``; "mean" is ``sum_i l_i / sum_i w[y_i]`` over the rows not
    ignored (torch's weighted mean: NaN when every row is ignored, as torch). In training, a batch
    whose rows are all ignored has loss 0 and gradient 0. With probability targets
    ``T_i = w * ((1 - eps) t_i + eps / classes)`` and "mean" divides by the batch size (as torch).
    ``ignore_index`` applies to labels only.

    ``evaluate`` (and ``fit``'s validation) weighs each batch's mean by its :meth:`batch_weight`, so
    that with ``weight`` or ``ignore_index`` its loss is the whole set's weighted mean however it is
    batched (a batch whose rows are all ignored counts for nothing). The training loss ``fit`` logs
    per epoch averages the batches' means by their rows. Accuracy counts ignored rows as wrong.

    Args:
        label_smoothing: eps in [0, 1], as in ``torch.nn.CrossEntropyLoss``.
        weight: per-class weights (a sequence of ``classes`` numbers >= 0), or None.
        ignore_index: a label whose rows contribute nothing (torch's default is -100; here
            None: no label is ignored and every label must be a class).
        reduction: "mean", "sum" or "none" (the per-sample losses, shape (batch,)).

    Shape:
        output: (batch, classes) logits -> loss: () ("none": (batch,)) ; d_output: (batch, classes)

    Raises:
        ValueError: an argument out of range (at construction); a label out of range, or a
            weight whose length is not the number of classes (at use).

    Example:
        >>> import numpy as np, mlp_xp as mx
        >>> loss = mx.losses.CrossEntropy(weight=[1.0, 3.0], ignore_index=-100)
        >>> value = loss.value(np.zeros((3, 2)), np.array([0, 1, -100]))
        >>> round(float(value), 6)  # (1 + 3) log 2 / (1 + 3)
        0.693147
    """

    fuses_with = Softmax
    target_kind = "class"
    _config_keys = ("label_smoothing", "weight", "ignore_index", "reduction")

    def __init__(self, label_smoothing: float = 0.0, weight: Sequence[float] | ArrayLike | None = None,
                 ignore_index: int | None = None, reduction: Reduction = "mean") -> None:
        label_smoothing = _real_number(label_smoothing, "label_smoothing")
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)
                                         and type(ignore_index).__module__ != "numpy"
                                         or int(ignore_index) != ignore_index):
            raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")
        self.label_smoothing = float(label_smoothing)
        self.weight = _weights(weight, "CrossEntropy weight")
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.reduction = _check_reduction(reduction, "CrossEntropy")

    @property
    def _plain(self):
        """No option beyond label smoothing: the fast paths (ops.cross_entropy) compute it."""
        return self.weight is None and self.ignore_index is None and self.reduction == "mean"

    def check_fit(self, outputs):
        super().check_fit(outputs)
        self._check_length(self.weight, "weight", outputs, "classes")

    def check_labels(self, xp, output, target):
        """Raise ValueError naming the first label of ``target`` that is not a class of ``output``
        (nor ``ignore_index``); one host read. Returns None, or inside ``jax.jit`` the 0-d
        boolean "some label is bad" (the caller makes the loss NaN)."""
        return _check_labels(xp, output, target, self.ignore_index)

    def value_and_grad(self, output: ArrayLike, target: ArrayLike, xp: Any = None) -> tuple[Any, Any]:
        xp = _namespace(xp, output)
        self._check_length(self.weight, "weight", output.shape[-1], "classes")
        bad = self.check_labels(xp, output, target)
        if self._plain:
            value, grad = softmax_cross_entropy(xp, output, target, self.label_smoothing)
        else:
            value, grad = self._general(xp, output, target, self.reduction)
        return (value, grad) if bad is None else (xp.where(bad, xp.nan, value), grad)

    def ops_value_and_grad(self, ops, output, target):
        if type(self).value_and_grad is not CrossEntropy.value_and_grad:
            return super().ops_value_and_grad(ops, output, target)
        if self._plain:
            return ops.cross_entropy(output, target, self.label_smoothing)
        self.check_fit(output.shape[-1])
        return self._general(ops.xp, output, target, "mean", training=True)

    def value(self, output: ArrayLike, target: ArrayLike, xp: Any = None) -> Any:
        if not self._plain:
            return self.value_and_grad(output, target, xp)[0]
        xp = _namespace(xp, output)
        bad = self.check_labels(xp, output, target)
        distribution = target_distribution(xp, output, target, self.label_smoothing)
        value = xp.sum(distribution * _math.log_softmax(xp, output)) / -output.shape[0]
        return value if bad is None else xp.where(bad, xp.nan, value)

    def _general(self, xp, output, target, reduction, training=False):
        """Weights, ignored labels and every reduction (torch's formulas); ``training``: a
        batch with nothing counted has mean 0 rather than 0 / 0."""
        eps, classes = self.label_smoothing, output.shape[-1]
        onehot = target_distribution(xp, output, target)  # labels -> one-hot; probabilities as given
        rows = onehot if not eps else (1.0 - eps) * onehot + eps / classes
        weight = None if self.weight is None else xp.reshape(self._vector(xp, self.weight, output), (1, -1))
        if weight is not None:
            rows = rows * weight
        count = output.shape[0]
        if target.ndim == 1 and (weight is not None or self.ignore_index is not None):
            if self.ignore_index is not None:
                rows = rows * xp.astype(xp.reshape(target != self.ignore_index, (-1, 1)), output.dtype)
            count = self._weight_of(xp, output, target, onehot, weight)
            if training:
                count = count + xp.astype(count == 0, count.dtype)
        log_p = _math.log_softmax(xp, output)
        losses = -xp.sum(rows * log_p, axis=-1)
        grad = xp.sum(rows, axis=-1, keepdims=True) * xp.exp(log_p) - rows
        return _reduce(xp, losses, grad, reduction, count)

    def _weight_of(self, xp, output, target, onehot, weight):
        """sum of w[y_i] (or of 1) over the rows of integer labels not ignored: "mean"'s denominator."""
        per_row = onehot if weight is None else onehot * weight
        if self.ignore_index is not None:
            per_row = per_row * xp.astype(xp.reshape(target != self.ignore_index, (-1, 1)), output.dtype)
        return xp.sum(per_row)

    def batch_weight(self, xp, output, target):
        """What "mean" divides this batch's losses by: with ``weight`` / ``ignore_index`` and integer
        labels ``sum_i w[y_i]`` over the rows not ignored (0-d), else None (its rows). ``evaluate``
        weighs each batch's mean by it, so that the mean over several batches is the whole set's."""
        if not (target.ndim == 1 and (self.weight is not None or self.ignore_index is not None)):
            return None  # (its rows)
        weight = None if self.weight is None else xp.reshape(self._vector(xp, self.weight, output), (1, -1))
        return self._weight_of(xp, output, target, target_distribution(xp, output, target), weight)

    def correct(self, output, target, xp=None):
        return _class_correct(_namespace(xp, output), output, target)

    def correct_rows(self, output, target, xp=None):
        return _class_correct_rows(_namespace(xp, output), output, target)


class BinaryCrossEntropy(Loss):
    """Sigmoid cross-entropy from logits: ``softplus(z) - y z`` per element; equal to
    ``torch.nn.functional.binary_cross_entropy_with_logits`` with the same arguments.

    Targets are values in [0, 1] shaped like the output, or (batch,) for one output.
    Accuracy counts ``(z > 0) == (y >= 0.5)`` over all elements. With ``pos_weight`` the loss
    is ``(1 - y) z + (1 + (pos_weight - 1) y) softplus(-z)``; ``weight`` multiplies each
    element's loss; "mean" divides by the number of elements (as torch).

    Args:
        pos_weight: per-output weight of the positive term (a sequence of k numbers >= 0, or
            one for all outputs), or None.
        weight: per-output weight of each element's loss (k numbers >= 0, or one), or None.
        reduction: "mean", "sum" or "none" (the elementwise losses, shape (batch, k)).

    Shape:
        output: (batch, k) logits -> loss: () ("none": (batch, k)) ; d_output: (batch, k)
    """

    fuses_with = Sigmoid
    target_kind = "binary"
    _config_keys = ("pos_weight", "weight", "reduction")

    def __init__(self, pos_weight: float | Sequence[float] | ArrayLike | None = None,
                 weight: float | Sequence[float] | ArrayLike | None = None, reduction: Reduction = "mean") -> None:
        self.pos_weight = _weights(pos_weight, "BinaryCrossEntropy pos_weight")
        self.weight = _weights(weight, "BinaryCrossEntropy weight")
        self.reduction = _check_reduction(reduction, "BinaryCrossEntropy")

    @property
    def _plain(self):
        return self.pos_weight is None and self.weight is None and self.reduction == "mean"

    def check_fit(self, outputs):
        super().check_fit(outputs)
        self._check_length(self.pos_weight, "pos_weight", outputs, "outputs", allow_one=True)
        self._check_length(self.weight, "weight", outputs, "outputs", allow_one=True)

    def value_and_grad(self, output: ArrayLike, target: ArrayLike, xp: Any = None) -> tuple[Any, Any]:
        xp = _namespace(xp, output)
        target = xp.reshape(target, output.shape)
        if self._plain:
            return sigmoid_cross_entropy(xp, output, target)
        self._check_length(self.pos_weight, "pos_weight", output.shape[-1], "outputs", allow_one=True)
        self._check_length(self.weight, "weight", output.shape[-1], "outputs", allow_one=True)
        return self._general(xp, output, target, self.reduction)

    def ops_value_and_grad(self, ops, output, target):
        if type(self).value_and_grad is not BinaryCrossEntropy.value_and_grad:
            return super().ops_value_and_grad(ops, output, target)
        target = ops.xp.reshape(target, output.shape)
        if self._plain:
            return ops.binary_cross_entropy(output, target)
        self.check_fit(output.shape[-1])
        return self._general(ops.xp, output, target, "mean")

    def _general(self, xp, output, target, reduction):
        e = xp.exp(-xp.abs(output))
        s = 1.0 / (1.0 + e)
        if self.pos_weight is None:
            losses = xp.maximum(output, 0.0) + xp.log1p(e) - target * output
            grad = xp.where(output >= 0, s, e * s) - target
        else:  # torch's form: (1 - y) z + (1 + (pw - 1) y) softplus(-z)
            log_weight = (self._vector(xp, self.pos_weight, output) - 1.0) * target + 1.0
            losses = (1.0 - target) * output + log_weight * (xp.log1p(e) + xp.maximum(-output, 0.0))
            grad = (1.0 - target) - log_weight * xp.where(output >= 0, e * s, s)
        if self.weight is not None:
            weight = self._vector(xp, self.weight, output)
            losses, grad = losses * weight, grad * weight
        return _reduce(xp, losses, grad, reduction, output.shape[0] * output.shape[1])

    def correct(self, output, target, xp=None):
        xp = _namespace(xp, output)
        target = xp.reshape(target, output.shape)
        hits = xp.astype((output > 0) == (target >= 0.5), output.dtype)
        return xp.sum(hits) / output.shape[1]

    def correct_rows(self, output, target, xp=None):
        xp = _namespace(xp, output)
        target = xp.reshape(target, output.shape)
        return xp.sum(xp.astype((output > 0) == (target >= 0.5), output.dtype), axis=-1) / output.shape[1]


class _Elementwise(Loss):
    """A loss of ``d = output - target`` per element: subclasses give (losses, gradient)."""

    _config_keys = ("reduction",)

    def __init__(self, reduction: Reduction = "mean") -> None:
        self.reduction = _check_reduction(reduction, type(self).__name__)

    def value_and_grad(self, output: ArrayLike, target: ArrayLike, xp: Any = None) -> tuple[Any, Any]:
        xp = _namespace(xp, output)
        return self._value_and_grad(xp, output - xp.reshape(target, output.shape), self.reduction,
                                    output.shape[0] * output.shape[1])

    def ops_value_and_grad(self, ops, output, target):
        if type(self).value_and_grad is not _Elementwise.value_and_grad:
            return super().ops_value_and_grad(ops, output, target)
        self.check_fit(output.shape[-1])
        xp = ops.xp
        return self._value_and_grad(xp, output - xp.reshape(target, output.shape), "mean",
                                    output.shape[0] * output.shape[1])

    def _value_and_grad(self, xp, diff, reduction, count):
        raise NotImplementedError


class MSE(_Elementwise):
    """Squared error ``(output - target) ** 2`` per element; "mean" over all elements. Equal to
    ``torch.nn.functional.mse_loss``.

    Args:
        reduction: "mean", "sum" or "none" (the elementwise losses).

    Shape:
        output: (batch, k); target: (batch, k) or (batch,) when k == 1.
    """

    def _value_and_grad(self, xp, diff, reduction, count):
        if reduction == "mean":
            return xp.sum(diff * diff) / count, diff * (2.0 / count)
        return _reduce(xp, diff * diff, diff * 2.0, reduction, count)


class Huber(_Elementwise):
    """Huber loss: ``0.5 d^2`` for ``|d| <= delta``, else ``delta (|d| - 0.5 delta)``, per element.

    Equal to ``torch.nn.functional.huber_loss(..., delta=delta)``.

    Args:
        delta: where the loss turns from quadratic to linear (> 0).
        reduction: "mean", "sum" or "none" (the elementwise losses).
    """

    _config_keys = ("delta", "reduction")

    def __init__(self, delta: float = 1.0, reduction: Reduction = "mean") -> None:
        delta = _real_number(delta, "Huber delta")
        if not delta > 0 or delta == float("inf"):
            raise ValueError(f"Huber delta must be > 0 and finite, got {delta!r}")
        super().__init__(reduction)
        self.delta = float(delta)

    def _value_and_grad(self, xp, diff, reduction, count):
        abs_diff = xp.abs(diff)
        small = abs_diff <= self.delta
        losses = xp.where(small, 0.5 * diff * diff, self.delta * (abs_diff - 0.5 * self.delta))
        grad = xp.where(small, diff, self.delta * xp.sign(diff))
        return _reduce(xp, losses, grad, reduction, count)


class L1(_Elementwise):
    """Absolute error ``|output - target|`` per element, gradient ``sign(d)`` (0 at 0). Equal to
    ``torch.nn.functional.l1_loss``.

    Args:
        reduction: "mean", "sum" or "none" (the elementwise losses).
    """

    def _value_and_grad(self, xp, diff, reduction, count):
        return _reduce(xp, xp.abs(diff), xp.sign(diff), reduction, count)


class SmoothL1(_Elementwise):
    """Smooth L1: ``0.5 d^2 / beta`` for ``|d| < beta``, else ``|d| - 0.5 beta``, per element
    (``beta=0``: L1). Equal to ``torch.nn.functional.smooth_l1_loss(..., beta=beta)``; Huber
    with ``delta=beta``, divided by ``beta``.

    Args:
        beta: where the loss turns from quadratic to linear (>= 0).
        reduction: "mean", "sum" or "none" (the elementwise losses).
    """

    _config_keys = ("beta", "reduction")

    def __init__(self, beta: float = 1.0, reduction: Reduction = "mean") -> None:
        beta = _real_number(beta, "SmoothL1 beta")
        if not beta >= 0 or beta == float("inf"):
            raise ValueError(f"SmoothL1 beta must be >= 0 and finite, got {beta!r}")
        super().__init__(reduction)
        self.beta = float(beta)

    def _value_and_grad(self, xp, diff, reduction, count):
        abs_diff = xp.abs(diff)
        if self.beta == 0.0:
            return _reduce(xp, abs_diff, xp.sign(diff), reduction, count)
        small = abs_diff < self.beta
        inverse = 1.0 / self.beta
        losses = xp.where(small, (0.5 * inverse) * diff * diff, abs_diff - 0.5 * self.beta)
        grad = xp.where(small, diff * inverse, xp.sign(diff))
        return _reduce(xp, losses, grad, reduction, count)


class KLDivergence(Loss):
    """Kullback-Leibler divergence ``KL(target || softmax(output))`` from logits, per sample
    ``sum_c t_c (log t_c - log_softmax(z)_c)`` (0 log 0 = 0).

    It takes logits, not log-probabilities (the stable form, fused with a Softmax output like
    :class:`CrossEntropy`): it equals ``torch.nn.functional.kl_div(log_softmax(z), target,
    reduction="batchmean", log_target=log_target)``; "sum" is torch's "sum", and "none" gives the
    per-sample sums of torch's "none" (torch's elementwise "mean" has no equivalent). The gradient
    is ``softmax(z) * sum(t) - t``; its value differs from CrossEntropy's by the target's entropy.

    Targets are class probabilities (batch, classes) whose rows sum to 1, or integer labels
    (batch,) (one-hot: then it equals CrossEntropy); with ``log_target=True``, log-probabilities
    (batch, classes) whose exponentials sum to 1 per row.

    Args:
        log_target: the targets are log-probabilities.
        reduction: "mean" (over samples: torch's "batchmean"), "sum" or "none" (shape (batch,)).

    Shape:
        output: (batch, classes) logits -> loss: () ("none": (batch,)) ; d_output: (batch, classes)
    """

    fuses_with = Softmax
    target_kind = "class"
    _config_keys = ("log_target", "reduction")

    def __init__(self, log_target: bool = False, reduction: Reduction = "mean") -> None:
        if not isinstance(log_target, bool):
            raise ValueError(f"KLDivergence log_target must be True or False, got {log_target!r}")
        self.log_target = log_target
        self.reduction = _check_reduction(reduction, "KLDivergence")

    def value_and_grad(self, output: ArrayLike, target: ArrayLike, xp: Any = None) -> tuple[Any, Any]:
        xp = _namespace(xp, output)
        if target.ndim == 1:
            if self.log_target:
                raise ValueError("KLDivergence(log_target=True) takes log-probabilities of shape (batch, classes), "
                                 f"got labels of shape {tuple(target.shape)}")
            bad = _check_labels(xp, output, target)
            value, grad = self._compute(xp, output, target, self.reduction)
            return (value, grad) if bad is None else (xp.where(bad, xp.nan, value), grad)
        return self._compute(xp, output, target, self.reduction)

    def ops_value_and_grad(self, ops, output, target):
        if type(self).value_and_grad is not KLDivergence.value_and_grad:
            return super().ops_value_and_grad(ops, output, target)
        self.check_fit(output.shape[-1])
        return self._compute(ops.xp, output, target, "mean")

    def _compute(self, xp, output, target, reduction):
        if target.ndim == 1:
            probabilities, entropy_terms = target_distribution(xp, output, target), None
        elif self.log_target:
            probabilities = xp.exp(target)
            entropy_terms = probabilities * target
        else:
            probabilities = target
            positive = target > 0
            entropy_terms = xp.where(positive, target * xp.log(xp.where(positive, target, 1.0)), 0.0)
        log_q = _math.log_softmax(xp, output)
        cross = probabilities * log_q
        losses = -xp.sum(cross, axis=-1) if entropy_terms is None else xp.sum(entropy_terms - cross, axis=-1)
        grad = xp.sum(probabilities, axis=-1, keepdims=True) * xp.exp(log_q) - probabilities
        return _reduce(xp, losses, grad, reduction, output.shape[0])

    def correct(self, output, target, xp=None):
        return _class_correct(_namespace(xp, output), output, target)

    def correct_rows(self, output, target, xp=None):
        return _class_correct_rows(_namespace(xp, output), output, target)


LOSS_TYPES = {cls.__name__: cls for cls in (CrossEntropy, BinaryCrossEntropy, MSE, Huber, L1, SmoothL1, KLDivergence)}
