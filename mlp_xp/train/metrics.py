"""Metrics for ``fit(metrics=[...])`` and ``evaluate(metrics=[...])``.

A metric is accumulated on the device batch by batch and read once, at the end of the
epoch (or evaluation), so it costs no host round-trip per step. Give metrics by name or as
objects:

==========================  =================================  =====================
name                        object                             for losses
==========================  =================================  =====================
``"accuracy"``              :class:`Accuracy`                  classification
``"top_k_accuracy"``        :class:`TopKAccuracy` ``(k=5)``    ``CrossEntropy``
``"mae"``                   :class:`MeanAbsoluteError`         regression
``"mse"``                   :class:`MeanSquaredError`          regression
``"rmse"``                  :class:`RootMeanSquaredError`      regression
``"r2"``                    :class:`R2Score`                   regression
==========================  =================================  =====================

The training value of a metric is measured on each batch's output in training mode, before
that batch's update (as Keras does); ``val_<name>`` on the validation data after the epoch.
Accuracy is always logged for classification losses.

Example:
    >>> import numpy as np, mlp_xp as mx
    >>> X = np.random.default_rng(0).normal(size=(64, 3)); y = X @ np.array([1.0, -2.0, 0.5])
    >>> model = mx.Sequential(mx.Linear(3, 1), seed=0)
    >>> history = model.fit(X, y, loss=mx.losses.MSE(), optimizer=mx.optim.Adam(1e-2), epochs=2,
    ...                     metrics=["mae", "r2"], verbose=0)
    >>> sorted(history)
    ['loss', 'lr', 'mae', 'r2']
"""

from __future__ import annotations

import math

import array_api_compat
import numpy as np

__all__ = ["Metric", "Accuracy", "TopKAccuracy", "MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError",
           "R2Score", "get", "resolve"]


class Metric:
    """Base class: ``update(totals, output, target, xp) -> totals`` adds a batch's sums (device
    arrays; ``totals`` is None before the first batch) and ``result(totals, count) -> float``
    reads them once. ``output`` is what the loss sees (logits for fused Softmax/Sigmoid)."""

    name: str = ""
    #: the loss target kinds this metric makes sense for
    target_kinds: tuple = ("regression",)

    def update(self, totals, output, target, xp):
        raise NotImplementedError

    def result(self, totals, count) -> float:
        raise NotImplementedError

    def merge(self, parts):
        """Totals of several processes combined: ``parts`` is a list of (totals, row count), the
        totals as host arrays (or None where a process saw no rows). Sums by default."""
        present = [totals for totals, _ in parts if totals is not None]
        return tuple(sum(values) for values in zip(*present)) if present else None

    # the weighted form (``fit(weighted_metrics=...)``): by default a weighted mean of row values

    def row_values(self, output, target, xp):
        """Each row's value (1-D): the metric is their mean, and its weighted form their
        weighted mean."""
        raise TypeError(f"metric {self.name!r} has no weighted form")

    def weighted_update(self, totals, output, target, weights, xp):
        """``update`` with each row weighted by ``weights`` (1-D, the output's dtype)."""
        return _add(totals, (xp.sum(self.row_values(output, target, xp) * weights), xp.sum(weights)))

    def weighted_result(self, totals) -> float:
        """The weighted metric from its totals (NaN where every weight was 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(_host(totals[0]) / _host(totals[1]))

    def weighted_merge(self, parts):
        """:meth:`merge` for the weighted totals (sums by default)."""
        return Metric.merge(self, parts)

    def bind(self, loss):
        """This metric for ``loss``; raises ValueError where it makes no sense."""
        if loss.target_kind not in self.target_kinds:
            raise ValueError(f"metric {self.name!r} does not apply to {type(loss).__name__} "
                             f"(it is for {' / '.join(self.target_kinds)} losses)")
        return self

    def __repr__(self):
        return f"{type(self).__name__}()"


def _add(totals, values):
    return values if totals is None else tuple(total + value for total, value in zip(totals, values))


def _host(value):
    from .._backend import to_numpy

    return np.asarray(to_numpy(value), dtype=np.float64)


class Accuracy(Metric):
    """Fraction of correct predictions (argmax for CrossEntropy, logit > 0 for BinaryCrossEntropy)."""

    name = "accuracy"
    target_kinds = ("class", "binary")
    loss = None

    def bind(self, loss):
        super().bind(loss)
        bound = Accuracy()
        bound.loss = loss
        return bound

    def update(self, totals, output, target, xp):
        correct = self.loss.correct(output, target, xp)
        return (correct,) if totals is None else (totals[0] + correct,)

    def row_values(self, output, target, xp):
        return self.loss.correct_rows(output, target, xp)

    def result(self, totals, count):
        return float(_host(totals[0])) / count


class TopKAccuracy(Metric):
    """Fraction of rows whose true class is among the ``k`` highest scores (ties count as hits).

    Args:
        k: how many top classes count.
    """

    target_kinds = ("class",)

    def __init__(self, k=5):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"TopKAccuracy k must be an int >= 1, got {k!r}")
        self.k = int(k)
        self.name = f"top_{self.k}_accuracy"

    def update(self, totals, output, target, xp):
        return _add(totals, (xp.sum(self.row_values(output, target, xp)),))

    def row_values(self, output, target, xp):
        classes = output.shape[-1]
        labels = target if target.ndim == 1 else xp.argmax(target, axis=-1)
        columns = xp.arange(classes, dtype=labels.dtype, device=array_api_compat.device(output))
        one_hot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(columns, (1, -1)), output.dtype)
        true_score = xp.sum(output * one_hot, axis=-1, keepdims=True)
        above = xp.sum(xp.astype(output > true_score, output.dtype), axis=-1)
        return xp.astype(above < self.k, output.dtype)

    def result(self, totals, count):
        return float(_host(totals[0])) / count

    def __repr__(self):
        return f"TopKAccuracy(k={self.k})"


class MeanAbsoluteError(Metric):
    """Mean over samples and outputs of ``|output - target|``."""

    name = "mae"

    def update(self, totals, output, target, xp):
        return _add(totals, (xp.sum(xp.abs(output - target)) / output.shape[-1],))

    def row_values(self, output, target, xp):
        return xp.sum(xp.abs(output - target), axis=-1) / output.shape[-1]

    def result(self, totals, count):
        return float(_host(totals[0])) / count


class MeanSquaredError(Metric):
    """Mean over samples and outputs of ``(output - target)**2``."""

    name = "mse"

    def update(self, totals, output, target, xp):
        residual = output - target
        return _add(totals, (xp.sum(residual * residual) / output.shape[-1],))

    def row_values(self, output, target, xp):
        residual = output - target
        return xp.sum(residual * residual, axis=-1) / output.shape[-1]

    def result(self, totals, count):
        return float(_host(totals[0])) / count


class RootMeanSquaredError(MeanSquaredError):
    """Square root of the mean squared error over all outputs (for several outputs, scikit-learn's
    ``root_mean_squared_error`` averages each output's instead)."""

    name = "rmse"

    def result(self, totals, count):
        return math.sqrt(super().result(totals, count))

    def weighted_result(self, totals):
        return math.sqrt(super().weighted_result(totals))


class R2Score(Metric):
    """Coefficient of determination ``1 - SS_res / SS_tot`` per output, averaged over outputs
    (scikit-learn's ``r2_score``; an output with constant targets scores 1 if predicted
    exactly, else 0). Sums are taken about the first batch's mean, so large target offsets
    do not cancel in float32."""

    name = "r2"

    def update(self, totals, output, target, xp):
        shift = xp.mean(target, axis=0) if totals is None else totals[0]
        centered = target - shift
        residual = output - target
        values = (shift, xp.sum(centered, axis=0), xp.sum(centered * centered, axis=0),
                  xp.sum(residual * residual, axis=0))
        return values if totals is None else (shift,) + tuple(t + v for t, v in zip(totals[1:], values[1:]))

    def merge(self, parts):
        """Chan et al.'s pairwise update: each part's (mean, sum of squared deviations) combined."""
        merged = None
        for totals, rows in parts:
            if totals is None:
                continue
            shift, first, second, residual = (_host(value) for value in totals)
            mean, deviations = shift + first / rows, second - first * first / rows
            if merged is None:
                merged = (mean, deviations, residual, rows)
                continue
            mean_a, deviations_a, residual_a, rows_a = merged
            total_rows = rows_a + rows
            delta = mean - mean_a
            merged = (mean_a + delta * rows / total_rows,
                      deviations_a + deviations + delta * delta * rows_a * rows / total_rows,
                      residual_a + residual, total_rows)
        if merged is None:
            return None
        mean, deviations, residual, _ = merged
        return mean, np.zeros_like(mean), deviations, residual

    def result(self, totals, count):
        _, first, second, residual = (_host(value) for value in totals)
        return _r2(first, second, residual, count)

    def weighted_update(self, totals, output, target, weights, xp):
        """scikit-learn's ``r2_score(sample_weight=)``: sums weighted, the mean the weighted one."""
        shift = xp.mean(target, axis=0) if totals is None else totals[0]
        centered = target - shift
        residual = output - target
        column = xp.reshape(weights, (-1, 1))
        values = (shift, xp.sum(column * centered, axis=0), xp.sum(column * centered * centered, axis=0),
                  xp.sum(column * residual * residual, axis=0), xp.sum(weights))
        return values if totals is None else (shift,) + tuple(t + v for t, v in zip(totals[1:], values[1:]))

    def weighted_result(self, totals):
        _, first, second, residual, weight = (_host(value) for value in totals)
        return _r2(first, second, residual, weight)

    def weighted_merge(self, parts):
        """:meth:`merge`, each part counted by its sum of weights."""
        present = [(totals[:4], float(_host(totals[4]))) for totals, _ in parts if totals is not None]
        merged = self.merge([part for part in present if part[1] > 0])
        return None if merged is None else merged + (sum(weight for _, weight in present),)


def check_weighted(metric):
    """ValueError unless ``metric`` has a weighted form (``fit(weighted_metrics=)``)."""
    kind = type(metric)
    if kind.row_values is Metric.row_values and kind.weighted_update is Metric.weighted_update:
        raise ValueError(f"metric {metric.name!r} has no weighted form (a Metric gives row_values, or "
                         "weighted_update and weighted_result)")


def _r2(first, second, residual, count):
    """The mean over outputs of ``1 - SS_res / SS_tot`` from sums about a shift (``count``: the rows,
    or their sum of weights)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        total = second - first * first / count
        scores = np.where(total > 0, 1.0 - residual / np.where(total > 0, total, 1.0),
                          np.where(residual == 0, 1.0, 0.0))
    return float(np.mean(scores))


_NAMES = {
    "accuracy": Accuracy, "acc": Accuracy,
    "top_k_accuracy": TopKAccuracy, "top_5_accuracy": TopKAccuracy,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "rmse": RootMeanSquaredError, "root_mean_squared_error": RootMeanSquaredError,
    "r2": R2Score, "r2_score": R2Score,
}


def get(metric) -> Metric:
    """A metric from its name (``"mae"``, ``"r2"``, ``"top_k_accuracy"``, ``"top_3_accuracy"``...) or itself."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, type) and issubclass(metric, Metric):
        raise TypeError(f"metrics must be instances or names, got the class {metric.__name__} (add ())")
    if isinstance(metric, str):
        name = metric.lower()
        if name.startswith("top_") and name.endswith("_accuracy") and name[4:-9].isdigit():
            return TopKAccuracy(int(name[4:-9]))
        if name in _NAMES:
            return _NAMES[name]()
    raise ValueError(f"unknown metric {metric!r}: use one of {sorted(_NAMES)}, 'top_<k>_accuracy', "
                     "or an mx.metrics.Metric")


def resolve(metrics, loss, accuracy=True) -> list:
    """The metrics to log for ``loss``: accuracy first for classification losses (with
    ``accuracy``), then each of ``metrics`` once, each checked against the loss."""
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    resolved = [Accuracy().bind(loss)] if accuracy and loss.target_kind != "regression" else []
    for metric in metrics or ():
        bound = get(metric).bind(loss)
        if bound.name not in {existing.name for existing in resolved}:
            resolved.append(bound)
    return resolved
