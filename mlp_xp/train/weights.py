"""Per-row weights in training: ``fit(sample_weight=..., class_weight=...)`` with Keras's meaning.

A batch's loss is ``sum_i w_i * l_i / rows``: each row's own loss (the mean over its outputs for
an elementwise loss such as MSE) times its weight, averaged over the batch's rows (Keras's
"sum over batch size"), and its gradient the same way. ``class_weight`` (a {label: weight}
mapping over the class labels, or ``"balanced"``: ``rows / (classes * rows of the class)``, as
scikit-learn's) gives each row the weight of its class; with both, a row's weight is their
product. The training metrics of ``metrics=`` (accuracy...) stay unweighted, as Keras's
``metrics`` are; ``fit(weighted_metrics=[...])`` logs them weighted too, as Keras's
``weighted_metrics`` (``"weighted_accuracy"``...: each row's value times its weight, over the sum of
the weights; scikit-learn's ``accuracy_score`` / ``r2_score``... with ``sample_weight``). The
validation loss and metrics are unweighted.

The weights go to the device once per fit, packed as one more column of the targets, so that
batches, shuffling, data-parallel shards and ``jax.jit`` carry them with no new plumbing: the
training step's loss (:class:`WeightedLoss`) takes the column off again.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..nn.losses import Loss
from .metrics import check_weighted

__all__ = ["row_weights", "pack", "WeightedLoss", "UnpackedMetric", "WeightedMetric"]


def row_weights(sample_weight, class_weight, labels, loss, samples):
    """The per-row weights (host float64, shape (samples,)) of ``fit``'s arguments, or None.

    Args:
        sample_weight: None, or one number >= 0 per row (any array-like of any backend).
        class_weight: None, ``"balanced"``, or a {class label: weight >= 0} mapping; for
            classification losses with integer labels only.
        labels: the prepared targets on the host (integer labels for classification).
        loss: the fit's loss.
        samples: the number of rows.

    Raises:
        ValueError: a weight that is negative, non-finite, or of the wrong shape; a class weight
            for a regression loss, for a label that is no class, or missing for a class; all
            weights zero.
    """
    from .._backend import to_numpy

    weights = None
    if sample_weight is not None:
        try:
            weights = np.asarray(to_numpy(sample_weight), dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"sample_weight must be one number per row, got {type(sample_weight).__name__}: "
                             f"{error}") from None
        if weights.shape != (samples,):
            raise ValueError(f"sample_weight must have shape ({samples},), one weight per row, got {weights.shape}")
        bad = np.flatnonzero(~(np.isfinite(weights) & (weights >= 0)))
        if bad.size:
            raise ValueError(f"sample_weight must hold finite numbers >= 0; row {bad[0]} has {weights[bad[0]]!r}")
    if class_weight is not None:
        if loss.target_kind != "class" or labels.ndim != 1:
            raise ValueError("class_weight needs a classification loss (CrossEntropy) with integer labels; give "
                             "sample_weight for other losses")
        labels = labels.astype(np.int64)
        counted = labels >= 0  # (a CrossEntropy ignore_index label, -100 say: its rows count for nothing anyway)
        classes = int(labels[counted].max()) + 1 if counted.any() else 0
        counts = np.bincount(labels[counted], minlength=classes)
        if isinstance(class_weight, str):
            if class_weight != "balanced":
                raise ValueError(f'class_weight must be a {{label: weight}} mapping or "balanced", got {class_weight!r}')
            present = counts > 0
            table = np.zeros(classes)
            table[present] = counted.sum() / (present.sum() * counts[present])
        elif hasattr(class_weight, "items"):
            table = np.full(classes, np.nan)
            for label, value in class_weight.items():
                if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label:
                    raise ValueError(f"class_weight keys must be class labels (ints >= 0), got {label!r}")
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < np.inf:
                    raise ValueError(f"class_weight[{label}] must be a finite number >= 0, got {value!r}")
                if label < classes:
                    table[label] = float(value)
            missing = [label for label in range(classes) if counts[label] and np.isnan(table[label])]
            if missing:
                raise ValueError(f"class_weight gives no weight for the classes {missing} of the data (Keras "
                                 "weighs them 1: give them, or use 'balanced')")
        else:
            raise ValueError(f'class_weight must be a {{label: weight}} mapping or "balanced", got {class_weight!r}')
        by_class = np.ones(samples)
        by_class[counted] = table[labels[counted]]
        weights = by_class if weights is None else weights * by_class
    if weights is not None and samples and not np.any(weights > 0):
        raise ValueError("every row has weight 0: nothing would be trained")
    return weights


def pack(xp, target, weights):
    """``target`` (device; labels (n,) or values (n, k)) with ``weights`` (device, (n,)) as one more
    column: (n, k + 1) in the weights' dtype."""
    rows = target.shape[0]
    values = xp.reshape(xp.astype(target, weights.dtype), (rows, -1))
    return xp.concat([values, xp.reshape(weights, (rows, 1))], axis=1)


def _unpack(xp, packed, labels, shape):
    """(target, weights) of a :func:`pack`'ed batch: integer labels again when ``labels``."""
    values, weights = packed[:, :-1], packed[:, -1]
    if labels:
        import array_api_compat

        index = xp.int32 if array_api_compat.is_jax_namespace(xp) else xp.int64
        return xp.astype(values[:, 0], index), weights
    return xp.reshape(values, (packed.shape[0], *shape)), weights


class WeightedLoss(Loss):
    """``loss`` with per-row weights carried in the targets' last column (see the module)."""

    def __init__(self, loss, labels, shape):
        from ..nn.losses import LOSS_TYPES

        self.loss, self.labels, self.shape = loss, labels, tuple(shape)
        config = dict(loss.config(), reduction="none")
        self._rows = type(loss)(**config) if type(loss).__name__ in LOSS_TYPES else None
        if self._rows is None:
            raise ValueError(f"sample_weight and class_weight need one of mx.losses' losses (which give per-row "
                             f"losses); got {type(loss).__name__}")
        self.fuses_with, self.target_kind, self.reduction = loss.fuses_with, loss.target_kind, "mean"

    def value_and_grad(self, output, packed, xp=None):
        import array_api_compat

        xp = xp or array_api_compat.array_namespace(output)
        target, weights = _unpack(xp, packed, self.labels, self.shape)
        losses, grad = self._rows.value_and_grad(output, target, xp)  # per row (or element); grad of their sum
        rows = output.shape[0]
        per = 1 if losses.ndim == 1 else losses.shape[-1]  # (an elementwise loss: each row's mean)
        column = xp.reshape(xp.astype(weights, output.dtype), (rows, 1))
        scaled = xp.reshape(column, (rows,)) if losses.ndim == 1 else column
        return xp.sum(losses * scaled) / (rows * per), grad * column / (rows * per)

    def config(self):
        return self.loss.config()

    def __repr__(self):
        return f"WeightedLoss({self.loss!r})"


class UnpackedMetric:
    """A training metric given the targets without their weight column (unweighted, as Keras's
    ``metrics``)."""

    def __init__(self, metric, labels, shape):
        self.metric, self.labels, self.shape = metric, labels, tuple(shape)
        self.name = metric.name

    def update(self, totals, output, packed, xp):
        return self.metric.update(totals, output, _unpack(xp, packed, self.labels, self.shape)[0], xp)

    def __getattr__(self, name):  # result, merge, ...: the metric's own
        return getattr(self.metric, name)

    def __repr__(self):
        return repr(self.metric)


class WeightedMetric:
    """A training metric weighted by the rows' weights (Keras's ``weighted_metrics``), logged as
    ``"weighted_<name>"``; with ``labels`` None the targets carry no weights (a fit without
    sample_weight or class_weight) and every row weighs 1."""

    def __init__(self, metric, labels=None, shape=()):
        self.metric, self.labels, self.shape = metric, labels, tuple(shape)
        self.name = f"weighted_{metric.name}"
        check_weighted(metric)

    def update(self, totals, output, packed, xp):
        if self.labels is None:
            return self.metric.weighted_update(totals, output, packed, xp.ones(output.shape[0], dtype=output.dtype,
                                                                           device=_device(output)), xp)
        target, weights = _unpack(xp, packed, self.labels, self.shape)
        return self.metric.weighted_update(totals, output, target, xp.astype(weights, output.dtype), xp)

    def result(self, totals, count):
        return self.metric.weighted_result(totals)

    def merge(self, parts):
        return self.metric.weighted_merge(parts)

    def __repr__(self):
        return f"WeightedMetric({self.metric!r})"


def _device(array):
    import array_api_compat

    return array_api_compat.device(array)
