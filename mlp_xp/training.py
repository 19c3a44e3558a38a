"""fit / evaluate / predict: minibatch loops, validation, history and the non-finite guard."""

from __future__ import annotations

import sys
import time

from . import _validation
from ._errors import NonFiniteError
from .layers import ForwardContext
from .optim import Optimizer

__all__ = ["fit", "evaluate", "predict", "History", "make_context"]


class History(dict):
    """Per-epoch metrics from ``fit``: ``history["loss"][i]`` is epoch i+1's mean loss.

    Keys: "loss", "accuracy" (classification losses), "val_loss" and "val_accuracy" (with
    validation data); each holds one float per epoch.
    """

    @property
    def epochs(self) -> int:
        return len(self.get("loss", []))


def make_context(model, train: bool) -> ForwardContext:
    """A forward context; in training, dropout masks come from the model's host generator
    (identical on every backend for the same seed)."""
    if not train:
        return ForwardContext(model.xp, False, None, model.kernels)
    backend, rng = model.backend, model.dropout_rng

    def uniform(shape, dtype):
        return backend.asarray(rng.random(shape, dtype=model.dtype_name), dtype=dtype)

    return ForwardContext(model.xp, True, uniform, model.kernels)


class _Updater:
    """Applies optimizer steps.

    Generic path: ``optimizer.update`` returns new arrays. Fast path (mutable backends with
    kernels): gradients land in one preallocated buffer, and new parameters are written into
    the spare of two parameter buffers, so the previous parameters stay intact for the
    non-finite guard and nothing is allocated per step.
    """

    def __init__(self, model, optimizer):
        self.optimizer, self.xp = optimizer, model.xp
        kernels = model.kernels
        self.kernel = kernels.optimizer(optimizer) if kernels is not None else None
        self.grad_buffer = None
        if self.kernel is not None:
            self.grad_buffer = model.xp.empty_like(model.params)
            self.spare = model.xp.empty_like(model.params)
            # train in buffers of our own: never write into an array the caller may still hold
            model.params = model.xp.asarray(model.params, copy=True)

    def step(self, grad, state, params):
        if self.kernel is None:
            return self.optimizer.update(grad, state, params, self.xp)
        out, self.spare = self.spare, params
        return out, self.kernel(grad, state, params, out)


def _batches(count, batch_size):
    return [(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def _first_non_finite_parameter(model, params):
    xp = model.xp
    for spec in model.param_specs:
        if not bool(xp.all(xp.isfinite(params[spec.offset:spec.offset + spec.size]))):
            return spec.key
    return None


def _first_non_finite_activation(model, params, x):
    xp = model.xp
    per_layer = model._layer_params(params)
    ctx = ForwardContext(xp, False)
    for index, layer in enumerate(model.layers):
        x, _ = layer.forward(per_layer[index], x, ctx)
        if not bool(xp.all(xp.isfinite(x))):
            return f"output of layer {index} ({layer!r})"
    return None


def _non_finite_error(model, epoch, step, params, previous_params, x):
    """Build the error for a non-finite loss at (epoch, step) and restore finite weights."""
    bad_parameter = _first_non_finite_parameter(model, params)
    if bad_parameter is not None and previous_params is not None:
        model.params = previous_params
        detail = (f"parameter {bad_parameter!r} became non-finite in the previous update; the model keeps "
                  "its weights from before that update. Lower the learning rate or set clip_norm")
        name = bad_parameter
    elif bad_parameter is not None:
        detail = f"parameter {bad_parameter!r} is non-finite"
        name = bad_parameter
    else:
        where = _first_non_finite_activation(model, params, x)
        detail = (f"the parameters are finite but the forward pass overflowed ({where or 'in the loss'}); "
                  "scale the inputs or lower the learning rate")
        name = "loss"
    return NonFiniteError(f"non-finite loss at epoch {epoch}, step {step}: {detail}",
                          epoch=epoch, step=step, name=name)


def _format_logs(logs):
    return " - ".join(f"{key} {value:.4f}" for key, value in logs.items())


def fit(model, X, y, loss, optimizer, epochs=1, batch_size=32, shuffle=True, validation_data=None,
        callbacks=None, verbose=1) -> History:
    """Train ``model`` in place with minibatch gradient steps.

    Every input is checked before the first step. Calling ``fit`` again with the same
    optimizer object continues its state (moments, step count).

    Args:
        model: a :class:`~mlp_xp.Sequential`.
        X: (samples, in_features) inputs: numpy, lists, or arrays of any backend.
        y: targets as ``loss`` takes them.
        loss: an ``mx.losses`` loss.
        optimizer: an ``mx.optim`` optimizer.
        epochs: passes over the data.
        batch_size: samples per step (the last batch may be smaller).
        shuffle: reshuffle each epoch with the model's seeded generator.
        validation_data: optional (X_val, y_val), evaluated after each epoch.
        callbacks: objects with any of ``on_train_begin(model)``,
            ``on_epoch_end(epoch, logs, model) -> stop?`` and ``on_train_end(model)``.
        verbose: 0 silent; 1 or 2 print one line per epoch.

    Returns:
        A :class:`History`.

    Raises:
        ValueError / ShapeError / TypeError: bad inputs or arguments, before any step.
        NonFiniteError: the loss or a parameter became NaN or infinite; names the epoch, step
            and parameter, and the model keeps its last finite weights.
    """
    model._check_loss(loss)
    if not isinstance(optimizer, Optimizer):
        hint = " (did you pass the class instead of an instance?)" if isinstance(optimizer, type) else ""
        raise TypeError(f"optimizer must be an mx.optim optimizer, got {optimizer!r}{hint}")
    epochs = _validation.check_positive_int(epochs, "epochs", minimum=0)
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    x = _validation.prepare_inputs(model, X)
    target = _validation.prepare_targets(model, y, loss, x.shape[0])
    validation = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        x_val = _validation.prepare_inputs(model, validation_data[0], name="validation X")
        validation = (x_val, _validation.prepare_targets(model, validation_data[1], loss, x_val.shape[0],
                                                         name="validation y"))
    callbacks = list(callbacks or [])

    xp = model.xp
    updater = _Updater(model, optimizer)
    if optimizer is not model._optimizer or model._optimizer_state is None:
        model._optimizer, model._optimizer_state = optimizer, optimizer.init(model.params)
    state = model._optimizer_state
    samples = x.shape[0]
    has_accuracy = loss.target_kind != "regression"
    ctx = make_context(model, train=True)
    history = History(loss=[], **({"accuracy": []} if has_accuracy else {}))
    for callback in callbacks:
        getattr(callback, "on_train_begin", lambda m: None)(model)

    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        x_epoch, target_epoch = x, target
        if shuffle:
            order = model.backend.asarray(model.shuffle_rng.permutation(samples), dtype=xp.int64)
            x_epoch, target_epoch = xp.take(x, order, axis=0), xp.take(target, order, axis=0)
        loss_sum = correct_sum = 0.0
        params = previous = model.params
        for step, (start, stop) in enumerate(_batches(samples, batch_size), start=1):
            x_batch, target_batch = x_epoch[start:stop, ...], target_epoch[start:stop, ...]
            value, grad, output = model._loss_and_flat_grad(params, x_batch, target_batch, loss, ctx,
                                                            updater.grad_buffer)
            value_host = float(value)
            if value_host != value_host or value_host in (float("inf"), float("-inf")):
                model.params, model._optimizer_state = params, None
                raise _non_finite_error(model, epoch, step, params, previous, x_batch)
            previous = params
            params, state = updater.step(grad, state, params)
            model.params, model._optimizer_state = params, state
            loss_sum += value_host * (stop - start)
            if has_accuracy:
                correct_sum = correct_sum + loss.correct(output, target_batch, xp)
        if not bool(xp.all(xp.isfinite(params))):
            model.params, model._optimizer_state = previous, None
            raise _non_finite_error(model, epoch, step, params, previous, x_batch)

        logs = {"loss": loss_sum / samples}
        if has_accuracy:
            logs["accuracy"] = float(correct_sum) / samples
        if validation is not None:
            for key, value in evaluate(model, *validation, loss=loss, _prepared=True).items():
                logs[f"val_{key}"] = value
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        if verbose:
            print(f"epoch {epoch}/{epochs} - {_format_logs(logs)} - {time.perf_counter() - started:.2f}s",
                  file=sys.stdout, flush=True)
        stop_training = False
        for callback in callbacks:
            if getattr(callback, "on_epoch_end", lambda e, l, m: None)(epoch, logs, model):
                stop_training = True
        if stop_training:
            break
    for callback in callbacks:
        getattr(callback, "on_train_end", lambda m: None)(model)
    return history


def evaluate(model, X, y, loss, batch_size=1024, _prepared=False) -> dict:
    """Mean loss over (X, y) in evaluation mode, and accuracy for classification losses.

    A model ending in Softmax/Sigmoid evaluated with the matching cross-entropy is scored
    from its logits, exactly as in training.

    Returns:
        {"loss": float} plus {"accuracy": float} for CrossEntropy / BinaryCrossEntropy.
    """
    if _prepared:
        x, target = X, y
    else:
        model._check_loss(loss)
        batch_size = _validation.check_positive_int(batch_size, "batch_size")
        x = _validation.prepare_inputs(model, X)
        target = _validation.prepare_targets(model, y, loss, x.shape[0])
    xp = model.xp
    stop_layer = model._loss_forward_stop(loss)
    ctx = ForwardContext(xp, False)
    loss_sum = correct = 0.0
    samples = x.shape[0]
    for start, stop in _batches(samples, batch_size):
        output, _ = model._forward(model.params, x[start:stop, ...], ctx, stop_layer)
        target_batch = target[start:stop, ...]
        loss_sum = loss_sum + loss.value(output, target_batch, xp) * (stop - start)
        if loss.target_kind != "regression":
            correct = correct + loss.correct(output, target_batch, xp)
    result = {"loss": float(loss_sum) / samples}
    if loss.target_kind != "regression":
        result["accuracy"] = float(correct) / samples
    return result


def predict(model, X, batch_size=1024):
    """The model's outputs (probabilities after Softmax/Sigmoid) for X, in evaluation mode.

    Returns:
        An array of the model's backend, shape (samples, out_features); ``mx.to_numpy``
        turns it into numpy.
    """
    batch_size = _validation.check_positive_int(batch_size, "batch_size")
    x = _validation.prepare_inputs(model, X)
    ctx = ForwardContext(model.xp, False)
    outputs = [model._forward(model.params, x[start:stop, ...], ctx)[0]
               for start, stop in _batches(x.shape[0], batch_size)]
    return outputs[0] if len(outputs) == 1 else model.xp.concat(outputs, axis=0)
