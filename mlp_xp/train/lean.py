"""The lean training step of numpy models: the common MLP, one call per piece of work.

The general step (:func:`mlp_xp.train.step.make_train_step`) goes through the model's layers, each
returning a backward closure, the loss's value and gradient, and the metrics' updates: about 170
Python calls a step, which on a small net (64-128-10, batch 32) cost more than the arithmetic. For
the model most people train, Linear layers with ReLU between them and softmax cross-entropy from
integer labels, this module plans the step once: the parameter and gradient views are made at the
first step and kept, and each step is the matrix products plus one call per piece in between
(bias and ReLU; bias, row maximum and the Accuracy count; log-probabilities and the loss terms;
the gradient), which numba's Ops (:mod:`mlp_xp.ops.numba_ops`) fuse into single passes.

It computes what the general step computes, operation for operation: the same numpy matrix
products and reductions, and the same elementwise arithmetic in the same order, so its parameters,
losses and metrics are bitwise the general step's (tests/test_lean.py). Anything else (other
layers, losses, metrics or options, mixed precision, data-parallel runs, weighted targets) takes
the general step; :func:`lean_train_step` returns None for such a model, and the step hands a
batch it does not take (float labels, a loss scale) to the general one.
"""

from __future__ import annotations

import math

__all__ = ["lean_train_step", "plan"]


def plan(model, loss, metrics=()):
    """The stages of ``model`` the lean step runs, ``[(weight index, bias index, relu), ...]``
    (indices into ``model.param_specs``), or None where it does not apply (see the module)."""
    from ..nn.layers import Linear, ReLU, Softmax
    from ..nn.losses import CrossEntropy
    from .metrics import Accuracy

    ops = model.ops
    if not getattr(ops, "lean", False) or ops.matmul is not None or model.precision.compute != model.dtype_name:
        return None
    if (type(loss) is not CrossEntropy or loss.label_smoothing or loss.weight is not None
            or loss.ignore_index is not None or loss.reduction != "mean"):
        return None
    if any(type(metric) is not Accuracy or metric.loss is not loss for metric in metrics):
        return None
    if model.running_specs:
        return None
    layers = list(model.layers)
    if layers and type(layers[-1]) is Softmax:
        layers = layers[:-1]  # (folded into the loss: the step computes from logits)
    specs = {(spec.layer_index, spec.name): index for index, spec in enumerate(model.param_specs)}
    stages = []
    for index, layer in enumerate(layers):
        if type(layer) is Linear:
            if layer.activation not in (None, "relu") or (index, "bias") not in specs:
                return None
            stages.append([specs[index, "weight"], specs[index, "bias"], layer.activation == "relu"])
        elif type(layer) is ReLU and stages and not stages[-1][2] and type(layers[index - 1]) is Linear:
            stages[-1][2] = True
        else:
            return None
    if not stages or stages[-1][2] or type(layers[0]) is not Linear:
        return None
    return [tuple(stage) for stage in stages]


def lean_train_step(model, loss, optimizer, metrics, general):
    """The lean ``train_step(state, x, y, scale=1.0)`` of ``model`` (the general step's contract;
    ``general`` takes any batch it does not), or None where :func:`plan` gives none."""
    from ..optim import guarded_update

    stages = plan(model, loss, metrics)
    if stages is None:
        return None
    ops, np = model.ops, model.ops.module
    dtype = np.dtype(model.dtype_name)
    specs = model.param_specs
    count_type = dtype.type
    views = {}

    def views_of(flat):
        """Per-parameter views of a flat vector, kept while it is the same array."""
        kept = views.get(id(flat))
        if kept is not None and kept[0] is flat:
            return kept[1]
        made = [flat[spec.offset:spec.offset + spec.size].reshape(spec.shape) for spec in specs]
        if len(views) >= 4:
            views.clear()
        views[id(flat)] = (flat, made)
        return made

    last = len(stages) - 1

    def train_step(state, x, y, scale=1.0):
        if (y.ndim != 1 or y.dtype.kind not in "iu" or scale != 1.0 or x.dtype != dtype or x.ndim != 2
                or state.running is not None):
            return general(state, x, y, scale)
        rows = x.shape[0]
        buffer = state.buffer
        if buffer is None:
            buffer = np.empty(model.num_parameters, dtype=dtype)
        params, grads = views_of(state.params), views_of(buffer)
        inputs, before_relu = [x], [None] * len(stages)
        h = x
        for index, (weight, bias, relu) in enumerate(stages[:last]):
            h = np.matmul(h, params[weight])
            if relu:
                before_relu[index] = h
                h = ops.bias_relu(h, params[bias])
            else:
                h += params[bias]
            inputs.append(h)
        weight, bias, _ = stages[last]
        logits = np.matmul(h, params[weight])
        correct = ops.shift_logits(logits, params[bias], y)  # (logits: shifted by their row maxima)
        probs = np.exp(logits)
        ops.log_probs(logits, np.log(np.add.reduce(probs, axis=-1, keepdims=True)), y, probs)
        value = np.add.reduce(probs, axis=None) / -rows  # (probs: the terms one_hot * log p)
        dy = np.exp(logits, out=probs)
        ops.probs_grad(dy, y, rows)
        for index in range(last, -1, -1):
            weight, bias, _ = stages[index]
            np.matmul(inputs[index].T, dy, out=grads[weight])
            np.add.reduce(dy, axis=0, out=grads[bias])
            if index:
                dy = np.matmul(dy, params[weight].T)
                if stages[index - 1][2]:
                    dy = ops.relu_backward(before_relu[index - 1], dy)
        checked = state.guard.ok and math.isfinite(value)
        new_params, opt_state, ok = guarded_update(optimizer, ops, buffer, state.opt_state, state.params, checked,
                                                   buffer)
        loss_sum = state.loss_sum + value * rows if ok else state.loss_sum
        totals = state.totals
        if totals:
            hits = count_type(correct)
            totals = tuple([(hits,) if total is None else (total[0] + hits,) for total in totals])
        guard = type(state.guard)(ok, state.guard.since, checked)  # (step.py's Guard and TrainState)
        return type(state)(new_params, opt_state, state.step + 1, guard, loss_sum, totals, buffer, None), value

    train_step.ops = ops
    train_step.lean = True
    return train_step
