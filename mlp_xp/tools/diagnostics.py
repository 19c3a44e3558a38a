"""Per-layer statistics for spotting vanishing, exploding or dying units."""

from __future__ import annotations

from ..data import checks
from .._backend import to_numpy
from ..nn.layers import ForwardContext

__all__ = ["layer_statistics", "format_statistics"]

_RECTIFIERS = ("ReLU",)


def layer_statistics(model, X, y=None, loss=None):
    """Mean and standard deviation of each layer's output and of the loss gradient at it.

    Layers run in evaluation mode. Without ``y`` and ``loss`` only activations are reported.

    Args:
        model: a :class:`~mlp_xp.Sequential`.
        X: a representative batch of inputs.
        y, loss: targets and loss, to also report gradients.

    Returns:
        One dict per layer: ``index``, ``layer`` (its repr), ``mean``, ``std`` of its output,
        ``grad_mean``, ``grad_std`` of d loss / d output (None without ``loss``), and
        ``dead_fraction``: for ReLU and ``Linear(activation="relu")``, the fraction of units that
        output 0 for every sample (they get no gradient and stop learning); None for other layers.

    Example:
        >>> import numpy as np, mlp_xp as mx
        >>> model = mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Linear(8, 2), seed=0)
        >>> stats = mx.layer_statistics(model, np.ones((16, 4)), np.zeros(16, dtype=int), mx.losses.CrossEntropy())
        >>> [row["layer"].split("(")[0] for row in stats], stats[1]["dead_fraction"] is not None
        (['Linear', 'ReLU', 'Linear'], True)
    """
    xp = model.xp
    x = checks.prepare_inputs(model, X)
    per_layer = model.layer_params()
    ctx = ForwardContext(xp, False)
    outputs, backwards = [], []
    for index, layer in enumerate(model.layers):
        x, backward = layer.forward(per_layer[index], x, ctx)
        outputs.append(x)
        backwards.append(backward)
    grads = [None] * len(outputs)
    if loss is not None:
        model.check_loss(loss)
        target = checks.prepare_targets(model, y, loss, outputs[-1].shape[0])
        stop = model.layers_before_loss(loss)
        _, grad = loss.value_and_grad(outputs[stop - 1], target, xp)
        for index in range(stop - 1, -1, -1):
            grads[index] = grad
            grad, _ = backwards[index](grad)
    rows = []
    for index, (layer, output) in enumerate(zip(model.layers, outputs)):
        values = to_numpy(output)
        row = {"index": index, "layer": repr(layer), "mean": float(values.mean()), "std": float(values.std()),
               "grad_mean": None, "grad_std": None, "dead_fraction": None}
        if grads[index] is not None:
            gradient = to_numpy(grads[index])
            row["grad_mean"], row["grad_std"] = float(gradient.mean()), float(gradient.std())
        if type(layer).__name__ in _RECTIFIERS or getattr(layer, "activation", None) == "relu":
            row["dead_fraction"] = float((values <= 0).all(axis=0).mean())
        rows.append(row)
    return rows


def format_statistics(rows):
    """The rows of :func:`layer_statistics` as a fixed-width table."""
    lines = [f"{'#':>3} {'layer':28} {'act mean':>10} {'act std':>10} {'grad std':>10} {'dead':>6}"]
    for row in rows:
        grad = f"{row['grad_std']:.3e}" if row["grad_std"] is not None else "-"
        dead = f"{row['dead_fraction']:.0%}" if row["dead_fraction"] is not None else "-"
        name = row["layer"] if len(row["layer"]) <= 28 else row["layer"][:25] + "..."
        lines.append(f"{row['index']:>3} {name:28} {row['mean']:>10.3e} {row['std']:>10.3e} {grad:>10} {dead:>6}")
    return "\n".join(lines)
