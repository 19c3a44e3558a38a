"""fit / evaluate / predict: the loop around :mod:`mlp_xp.train.step` and the errors a failed step raises.

``fit`` itself is the epoch loop (hooks, logs, history). What one call needs lives in ``_Run``:
its arguments and data, checked before any step (``__init__``); the training step it loops over;
one epoch of steps with the reads of the device-side guard and sums (``train_epoch``), what a
read finds (``_landed``, ``_failed``); the epoch's logs and its report."""

from __future__ import annotations

import contextlib
import numbers
import sys
import threading
import time
import weakref

import numpy as np

from ..data import checks
from .._errors import NonFiniteError
from .._interrupts import Interrupts
from ..optim import SQUARED_STATE, Optimizer, guarded_update
from .step import cleared, jit_train_step, make_train_step, square_limit

__all__ = ["fit", "evaluate", "predict", "History"]


class History(dict):
    """Per-epoch metrics from ``fit``: ``history["loss"][i]`` is the mean loss of epoch
    ``first_epoch + i`` (epoch i+1, unless the fit resumed from a checkpoint).

    Keys: "loss", "accuracy" (classification losses), "val_loss" and "val_accuracy" (with
    validation data); each holds one float per epoch.
    """

    #: why training ended early (``on_nonfinite="stop"``), else None
    stop_reason = None
    #: the number of the fit's first epoch: 1, or the checkpoint's epoch + 1 for a resumed fit
    first_epoch = 1

    @property
    def epochs(self) -> int:
        """How many epochs the fit ran."""
        return len(self.get("loss", []))

    @property
    def epoch_numbers(self) -> list:
        """The number of each epoch the fit ran, as its callbacks and logs saw it."""
        return list(range(self.first_epoch, self.first_epoch + self.epochs))

    def plot(self, path=None, keys=None):
        """Draw loss and metric curves per epoch with matplotlib (``pip install matplotlib``).

        Losses go in one panel and accuracies in another, training solid and validation dashed.

        Neither matplotlib's backend nor pyplot's figures change: a figure written to a file is a
        bare ``matplotlib.figure.Figure``, so a notebook's inline plots keep working.

        Args:
            path: write the figure to this file (PNG, SVG, PDF by extension); None shows it with
                pyplot (inline in a Jupyter notebook, else a window).
            keys: which history keys to draw (default: every loss and accuracy).

        Returns:
            The Figure written to ``path``; None once shown, since a returned Figure would be
            displayed a second time as a notebook cell's value.
        """
        from .._plotting import finish, new_figure

        keys = [k for k in (keys or self) if k in self and ("loss" in k or "accuracy" in k)]
        if not keys:
            raise ValueError(f"nothing to plot: history has {sorted(self)}")
        panels = [kind for kind in ("loss", "accuracy") if any(kind in key for key in keys)]
        figure, axes = new_figure("History.plot", len(panels), (5 * len(panels), 3.5), window=path is None)
        for axis, kind in zip(axes, panels):
            for key in (k for k in keys if kind in k):
                epochs = range(self.first_epoch, self.first_epoch + len(self[key]))
                axis.plot(epochs, self[key], "--" if key.startswith("val_") else "-", marker="o", markersize=3,
                          label=key)
            axis.set_xlabel("epoch")
            axis.set_ylabel(kind)
            axis.grid(alpha=0.3)
            axis.legend()
        figure.tight_layout()
        return finish(figure, path)


def _batches(count, batch_size):
    return [(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def _inference_batches(model, count, batch_size):
    """The chunks ``predict`` and ``evaluate`` run: ``_batches``, except that a BatchNorm that
    normalises with the batch's own statistics (``track_running_stats=False``) cannot take a
    last chunk of one row, which then joins the chunk before it."""
    from ..nn.layers import BatchNorm

    batches = _batches(count, batch_size)
    if len(batches) > 1 and batches[-1][1] - batches[-1][0] == 1 and any(
            isinstance(layer, BatchNorm) and not layer.track_running_stats for layer in model.layers):
        batches[-2:] = [(batches[-2][0], count)]
    return batches


def _first_non_finite_parameter(model, params):
    xp = model.xp
    for spec in model.param_specs:
        if not bool(xp.all(xp.isfinite(params[spec.offset:spec.offset + spec.size]))):
            return spec.key
    return None


def _first_non_finite_activation(model, params, x):
    xp = model.xp
    for index, layer in enumerate(model.layers):
        if not bool(xp.all(xp.isfinite(model.forward(x, params, stop=index + 1)))):
            return f"output of layer {index} ({layer!r})"
    return None


def _non_finite_error(model, epoch, step, params, x, skipped=0, gradient=False):
    """The error for a non-finite loss (or, with ``gradient``, gradient) at (epoch, step), where
    the model kept ``params``: the weights from before that step (the guard lets no update
    land that would make them non-finite; parameters that were not finite when training
    started are named)."""
    bad_parameter = _first_non_finite_parameter(model, params)
    keeps = "the model keeps its weights from before that step"
    if bad_parameter is not None:
        detail = f"parameter {bad_parameter!r} is not finite; {keeps}. Load or initialise finite weights"
        name = bad_parameter
    elif gradient:
        compute = model.precision.compute
        detail = (f"the loss is finite but its gradient overflowed {compute} in the backward pass"
                  + (" with no loss scale left to lower" if model.precision.scaled else "")
                  + f"; {keeps}. Scale the inputs or targets, or train in float32")
        name = "gradient"
    else:
        where = _first_non_finite_activation(model, params, x)
        detail = (f"the parameters are finite but the forward pass overflowed ({where or 'in the loss'}); "
                  f"{keeps}. Scale the inputs, or lower the learning rate if earlier updates grew the weights")
        name = "loss"
    if skipped:
        detail = (f"skipping cannot recover: this is the {skipped + 1}th non-finite batch in a row (an epoch's "
                  f"worth). {detail}")
    what = "gradient" if gradient and bad_parameter is None else "loss"
    return NonFiniteError(f"non-finite {what} at epoch {epoch}, step {step}: {detail}",
                          epoch=epoch, step=step, name=name)


def _state_overflow_error(model, epoch, step, field):
    limit = square_limit(model.dtype_name)
    return NonFiniteError(
        f"non-finite optimizer state at epoch {epoch}, step {step}: {field!r} (a running mean of squared "
        f"gradients) overflowed {model.dtype_name}: gradients beyond about {limit:.3g} square to infinity and "
        "would freeze those weights. The model keeps its weights from before that update; scale the inputs, "
        "lower the learning rate or set clip_norm", epoch=epoch, step=step, name=f"optimizer.{field}")


def _in_memory_batches(model, x, target, shuffle, batch_size, gather=True):
    """One epoch of (x, target, recipe) batches; ``recipe`` gathers the batch again (``_gather``).

    Shuffled batches are gathered one at a time rather than as a shuffled copy of the whole
    data set: no second copy in memory, and each batch is still in cache when the first matrix
    product reads it (W1: 10-20% faster per epoch, measured interleaved). The permutation is
    uploaded once per epoch. With ``gather=False`` the batches are (None, None, recipe): the
    jitted JAX step gathers its rows itself.
    """
    samples = x.shape[0]
    order = (model.backend.asarray(model.shuffle_rng.permutation(samples), dtype=model.backend.index_dtype)
             if shuffle else None)
    for start, stop in _batches(samples, batch_size):
        recipe = (order, start, stop)
        yield (*(_gather(model, None, x, target, recipe, False) if gather else (None, None)), recipe)


def _gather(model, loss, x, target, recipe, streaming):
    """The batch of ``recipe``: rows start:stop of the epoch's order (in-memory data), or the
    host batch itself (streamed data, put on the device again)."""
    if streaming:
        xb, yb = recipe
        xb = checks.prepare_inputs(model, xb)
        return xb, checks.prepare_targets(model, yb, loss, xb.shape[0])
    order, start, stop = recipe
    if order is None:
        return x[start:stop, ...], target[start:stop, ...]
    if model.ops.host_flags:  # numpy's own method: np.take's wrappers cost more than a small batch's gather
        rows = order[start:stop]
        return x.take(rows, axis=0), target.take(rows, axis=0)
    xp = model.xp
    return xp.take(x, order[start:stop], axis=0), xp.take(target, order[start:stop], axis=0)


def _failed_step(state, window):
    """At a read that found the guard down: (the state as it was before the failing step, that
    step's number in the epoch, its batch recipe, the rows of the steps before it that landed).
    ``window`` holds (step, rows, recipe) of each step since the last read."""
    from .step import landed as landed_updates

    landed = landed_updates(state)
    kept = state._replace(step=state.step - len(window) + landed)
    step, _, recipe = window[landed]
    return kept, step, recipe, sum(rows for _, rows, _ in window[:landed])


def _diagnose(model, loss, optimizer, kept, epoch, step, x, target, skipped=0, value_finite=None):
    """The NonFiniteError of a step the guard stopped, found by running it again from the state
    it started from (``kept``; the step is a function of it, its batch and its key): its loss,
    its gradient, then (both finite) its update, out of place."""
    from ..ops import GenericOps

    generic = GenericOps(model.xp, model.device)
    # (host-drawn masks cannot be drawn again: the generator has moved on; then without Dropout)
    value, grad, _, running = model.value_grad_and_running(
        x, target, loss, kept.params, train=model.dropout_masks == "device", step=kept.step,
        scale=model.loss_scale.scale, running=kept.running)
    if value_finite is None:
        value_finite = bool(generic.finite(value))
    if value_finite and running is not None and not bool(generic.all_finite(running)):
        return _running_overflow_error(model, epoch, step, running)
    if not value_finite or not bool(generic.all_finite(grad)) or model.precision.scaled:
        return _non_finite_error(model, epoch, step, kept.params, x, skipped, gradient=value_finite)
    limit = square_limit(model.dtype_name)
    fields = [field for field in kept.opt_state._fields if field in SQUARED_STATE]
    if fields and (skipped or not bool(generic.below(grad, limit))):
        return _state_overflow_error(model, epoch, step, fields[0])
    unguarded = GenericOps(model.xp, model.device, in_place=False)
    unguarded.guarded = False
    new_params, new_state, _ = guarded_update(optimizer, unguarded, grad, kept.opt_state, kept.params, unguarded.true())
    parameter = _first_non_finite_parameter(model, new_params)
    if parameter is not None:
        return _update_overflow_error(model, epoch, step, parameter, skipped)
    for field in fields:  # (an overflow of the squared state from a gradient just below the limit)
        if not bool(model.xp.max(getattr(new_state, field)) < float("inf")):
            return _state_overflow_error(model, epoch, step, field)
    return _non_finite_error(model, epoch, step, kept.params, x, skipped, gradient=True)


def _running_overflow_error(model, epoch, step, running):
    xp = model.xp
    key = next(spec.key for spec in model.running_specs
               if not bool(xp.all(xp.isfinite(running[spec.offset:spec.offset + spec.size]))))
    return NonFiniteError(f"non-finite running statistic at epoch {epoch}, step {step}: {key!r} overflowed "
                          f"{model.dtype_name} in this batch (its inputs are too large); the step was refused and "
                          "the model keeps its weights and statistics from before it. Scale the inputs, or train in "
                          "float64", epoch=epoch, step=step, name=key)


def _update_overflow_error(model, epoch, step, parameter, skipped=0):
    detail = (f"parameter {parameter!r} became non-finite in the update of this step (loss and gradient are "
              "finite); the update was refused and the model keeps its weights from before that update. Lower "
              "the learning rate or set clip_norm")
    if skipped:
        detail = f"skipping cannot recover: {detail}"
    return NonFiniteError(f"non-finite parameter at epoch {epoch}, step {step}: {detail}", epoch=epoch, step=step,
                          name=parameter)


def _format_logs(logs):
    return " - ".join(f"{key} {value:.4g}" if key == "lr" else f"{key} {value:.4f}" for key, value in logs.items())


ON_NONFINITE = ("raise", "skip_batch", "stop")


def _progress_bar(verbose, epoch, epochs, samples):
    """tqdm.auto's bar for ``verbose=1``: a widget in a Jupyter notebook with ipywidgets, else text.
    In a notebook without ipywidgets tqdm.auto falls back to the text bar itself, but on its first
    import warns "TqdmWarning: IProgress not found": the fallback is fine, the warning is not."""
    if verbose != 1:
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "IProgress not found")
        from tqdm.auto import tqdm

    return tqdm(total=samples, desc=f"epoch {epoch}/{epochs}", unit="sample", unit_scale=True, leave=True,
                dynamic_ncols=True)


def _in_notebook():
    """True inside a Jupyter kernel, where stderr is not a terminal but a bar still shows."""
    shell = sys.modules.get("IPython")
    try:
        # (a subclass too: Colab's shell is one)
        return shell is not None and any(cls.__name__ == "ZMQInteractiveShell"
                                         for cls in type(shell.get_ipython()).__mro__)
    except Exception:
        return False


def _resolve_verbose(verbose):
    """fit's ``verbose``; "auto" is 1 (a bar) where someone watches: stderr is a terminal, or a
    Jupyter kernel (IPython's ZMQInteractiveShell), whose stderr is not a terminal."""
    if verbose == "auto":
        return 1 if sys.stderr.isatty() or _in_notebook() else 0
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return verbose


def _next_loss_scale(precision, state, overflowed):
    """GradScaler's rule: halve on overflow, double after ``growth_interval`` good steps in a row."""
    from .precision import LossScale

    if not precision.dynamic:
        return state
    if overflowed:
        return LossScale(max(state.scale * 0.5, 1.0), 0)
    good = state.good_steps + 1
    if good >= precision.growth_interval:
        return LossScale(state.scale * 2.0, 0)
    return LossScale(state.scale, good)


def _check_replicas(model, engine, samples, validation=None, **run):
    """Every process must hold the same weights, state and data and train them the same way, or the
    replicas would drift (or wait in mismatched collectives): one all-gather compares them all and
    every process raises the same ValueError (see :func:`mlp_xp.train.distributed.check_replicas`)."""
    from .distributed import check_replicas

    check_replicas(engine, model, samples, validation_samples=None if validation is None else validation[0].shape[0],
                   **run)


def _merge_totals(engine, metric_list, totals, count):
    """Every process's metric totals, merged (each metric knows how), as host arrays."""
    from .._backend import to_numpy

    mine = [None if total is None else tuple(np.asarray(to_numpy(value)) for value in total) for total in totals]
    everyone = engine.allgather((mine, count))
    return [metric.merge([(parts[index], rows) for parts, rows in everyone])
            for index, metric in enumerate(metric_list)]


def _check_all_batches(model, batches, loss):
    """Every row of a ``datasets.Batches`` checked before the first step, in chunks of about 64 MB
    so that memory-mapped data is never read whole; errors name the row in the whole data set."""
    rows = max(1, (1 << 23) // max(1, model.in_features))
    for start in range(0, len(batches.X), rows):
        checks.check_host_chunk(model, batches.X[start:start + rows], batches.y[start:start + rows], loss, start)


def _check_batch_norm_rows(model, samples, batch_size):
    """A batch of one row cannot be normalised by its own statistics: refuse, before the first
    step, a run with BatchNorm in which one would occur (PyTorch fails at that batch)."""
    from ..nn.layers import BatchNorm

    index = next((index for index, layer in enumerate(model.layers) if isinstance(layer, BatchNorm)), None)
    if index is None or samples == 0 or (samples % batch_size or batch_size) != 1:
        return
    layer = f"layer {index} ({model.layers[index]!r}) needs at least 2 rows per batch in training"
    if samples == 1:
        raise ValueError(f"{layer}, but there is 1 training row")
    better = next(size for size in range(batch_size + 1, samples + 2) if samples % size != 1)
    where = ("batch_size=1" if batch_size == 1 else
             f"the last batch of each epoch has 1 row ({samples} rows, batch_size={batch_size})")
    raise ValueError(f"{layer}, but {where}: use another batch_size (batch_size={better} leaves no batch of 1 row), "
                     "or one row fewer or more")


def _split_validation(model, x, target, fraction):
    """Hold out ``fraction`` of the rows, drawn with a generator seeded from the model's seed
    (stratified by class for integer labels), without touching the model's own generators."""
    import numpy as np

    from ..data.datasets import split_indices

    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_split must be a fraction in (0, 1), got {fraction!r}")
    labels = None
    if target.ndim == 1:  # class labels: stratify (one host read, before training)
        from .._backend import to_numpy

        labels = np.asarray(to_numpy(target))
    try:
        train, held_out = split_indices(x.shape[0], fraction, labels, seed=model.seed)
    except ValueError as error:
        raise ValueError(f"validation_split={fraction}: {error}") from None
    take = model.backend.index_dtype
    train, held_out = model.backend.asarray(train, dtype=take), model.backend.asarray(held_out, dtype=take)
    xp = model.xp
    return ((xp.take(x, train, axis=0), xp.take(target, train, axis=0)),
            (xp.take(x, held_out, axis=0), xp.take(target, held_out, axis=0)))


def fit(model, X, y, loss, optimizer, epochs=1, batch_size=32, shuffle=True, validation_data=None,
        validation_split=None, metrics=None, callbacks=None, verbose="auto", on_nonfinite="raise",
        resume_from=None, distributed=None, sync_every=None, sample_weight=None, class_weight=None,
        weighted_metrics=None) -> History:
    """Train ``model`` in place with minibatch gradient steps: what :meth:`mlp_xp.Sequential.fit` does.

    Its docstring documents every argument, what it returns and what it raises (one copy, there: it
    is what ``help(model.fit)`` shows).
    """
    with _training(model):
        run = _Run(model, X, y, loss, optimizer, epochs, batch_size, shuffle, validation_data, validation_split,
                   metrics, callbacks, verbose, on_nonfinite, resume_from, distributed, sync_every, sample_weight,
                   class_weight, weighted_metrics)
        history = History({key: [] for key in run.log_keys})
        history.first_epoch = run.first_epoch
        run.hooks.call("on_train_begin", model=model)
        try:
            with run.interrupts:
                _epochs(run, history)
        finally:  # (the gradient buffer is the run's, not the model's: no second copy of P kept after fit)
            model.set_train_state(model.record._replace(buffer=None))
        run.hooks.call("on_train_end", model=model)
    return history


class _FitToken:
    """Alive while a fit runs (its ``_training`` frame holds it)."""


_TRAINING = {}  # id(model) -> (weak reference to the running fit's token, its thread)


@contextlib.contextmanager
def _training(model):
    """One fit at a time per model: a second one (another thread's, or a callback's) would write
    into the same parameter buffers as the first. (No lock: Ctrl-C between a lock's acquisition and
    its ``with`` block leaves it held; ``dict.setdefault`` is atomic, and an entry whose fit ended
    without removing it, interrupted in between, is known by its dead token.)"""
    token = _FitToken()
    entry = (weakref.ref(token), threading.get_ident())
    key = id(model)
    while True:
        other = _TRAINING.setdefault(key, entry)
        if other is entry:
            break
        if other[0]() is None:  # a fit that ended without removing its entry
            if _TRAINING.get(key) is other:
                _TRAINING.pop(key, None)
            continue
        where = "this thread (a callback?)" if other[1] == threading.get_ident() else "another thread"
        raise RuntimeError(f"this model is being trained by another fit call, in {where}: two fits at once would "
                           "write into the same parameters; wait for it to end, or fit a copy (model.to() makes one)")
    try:
        yield
    finally:
        if _TRAINING.get(key) is entry:
            _TRAINING.pop(key, None)


def _epochs(run, history):
    model = run.model
    # Keras's batch hooks: on_train_batch_begin before each step; model.stop_training, set by a hook,
    # ends the epoch after the batch it was set in (no callbacks: no wrapper, nothing per step)
    if run.hooks.callbacks:
        epoch_batches = run._batches
        run._batches = lambda: run.hooks.batches(epoch_batches(), model, run.call_hook)
    built = repr(run.optimizer)
    for epoch in range(run.first_epoch, run.last_epoch + 1):
        run.hooks.call("on_epoch_begin", epoch=epoch, model=model)
        if run.jitted and repr(run.optimizer) != built:  # a callback set the lr: JAX compiled the old one in
            run.train_step, built = run._train_step(run.on_nonfinite == "skip_batch"), repr(run.optimizer)
        started = time.perf_counter()
        steps = run.train_epoch(epoch)
        model.epoch = epoch
        logs = run.epoch_logs(steps)  # (a validation that overflows under on_nonfinite="stop" sets stop_reason too)
        if steps.stop_reason is not None:
            history.stop_reason = steps.stop_reason
        for key, value in logs.items():
            history[key].append(value)
        run.report(epoch, logs, steps, time.perf_counter() - started)
        stop = bool(run.call_hook("on_epoch_end", epoch=epoch, logs=logs) or steps.stop_reason is not None
                    or getattr(model, "stop_training", False))  # (Keras's flag, set by any hook)
        if run.engine is not None:  # every process stops if one does (a callback of one process's, say)
            stop = any(run.engine.allgather(stop))
        if stop:
            break


def _by_name(name, what, classes, kind):
    """``classes[name]``, also with underscores left out ("binary_crossentropy"), or a ValueError
    listing the names."""
    squeezed = {key.replace("_", ""): cls for key, cls in classes.items()}
    found = classes.get(name.lower(), squeezed.get(name.lower().replace("_", "")))
    if found is None:
        raise ValueError(f"unknown {what} {name!r}: use one of {sorted(classes)} or {kind}")
    return found


def _named_loss(loss):
    """A loss given by name, as Keras takes it (the snake_case of a class in the losses' registry,
    ``LOSS_TYPES``, looked up now: CrossEntropy is "cross_entropy", MSE "mse"), made with its
    defaults; anything else as given."""
    if not isinstance(loss, str):
        return loss
    import re

    from ..nn.losses import LOSS_TYPES

    names = {re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower(): cls
             for name, cls in LOSS_TYPES.items()}
    return _by_name(loss, "loss", names, "an mx.losses loss")()


def _named_optimizer(optimizer):
    """An optimizer given by name ("adam", "sgd", ...), made with its default hyperparameters."""
    if not isinstance(optimizer, str):
        return optimizer
    from ..optim import optimizers as optimizers_module

    names = {name.lower(): cls for name, cls in optimizers_module.OPTIMIZER_TYPES.items()}
    return _by_name(optimizer, "optimizer", names, "an mx.optim optimizer")()


class _Epoch:
    """What one epoch's steps leave for its logs and its report."""

    def __init__(self, bar):
        self.bar = bar
        self.seen = self.seen_local = 0  # rows whose updates landed (all processes', this process's)
        self.skipped = self.skipped_steps = 0  # batches skipped (skip_batch), steps skipped (loss scaling)
        self.window = []  # (step, rows, how to gather the batch) of each step since the last read
        self.window_rows = 0
        self.last_refresh = 0.0
        self.last = None  # (step, batch, recipe) of the epoch's last step
        self.stop_reason = None  # on_nonfinite="stop": why training ends

    def read(self):
        """The steps since the last read are accounted for."""
        self.window.clear()
        self.window_rows = 0


class _Run:
    """One call of ``fit``: its arguments and data, checked before any step; the training step;
    and one epoch's loop over it (batches, the reads of the device-side guard and sums, and what
    a step the guard stopped does)."""

    def __init__(self, model, X, y, loss, optimizer, epochs, batch_size, shuffle, validation_data,
                 validation_split, metrics, callbacks, verbose, on_nonfinite, resume_from, distributed, sync_every,
                 sample_weight=None, class_weight=None, weighted_metrics=None):
        from . import distributed as distributed_module
        from . import metrics as metrics_module
        from .callbacks import Hooks
        from ..data.datasets import Batches
        from ..optim.schedules import resolve

        loss, optimizer = _named_loss(loss), _named_optimizer(optimizer)
        model.check_loss(loss)
        last = model.layers[-1]  # a Keras habit check_loss cannot see: Dense(1, activation="sigmoid") + BCE
        if loss.target_kind in ("class", "binary") and getattr(last, "activation", None) == "sigmoid":
            raise ValueError(f"the model's last layer {last!r} applies sigmoid, but {type(loss).__name__} takes "
                             "logits: drop its activation= (for probabilities from predict, end the model with "
                             "mx.Sigmoid() for BinaryCrossEntropy or mx.Softmax() for CrossEntropy: fused with the "
                             "loss in training)")
        if not isinstance(optimizer, Optimizer):
            hint = " (did you pass the class instead of an instance?)" if isinstance(optimizer, type) else ""
            raise TypeError(f"optimizer must be an mx.optim optimizer, got {optimizer!r}{hint}")
        self.epochs = checks.check_positive_int(epochs, "epochs", minimum=0)
        if sync_every is not None:
            sync_every = checks.check_positive_int(sync_every, "sync_every")
        batch_size = checks.check_positive_int(batch_size, "batch_size")
        verbose = _resolve_verbose(verbose)
        engine = distributed_module.resolve(distributed)
        if engine is not None and model.running_specs:
            from .step import batch_norm_distributed_error

            raise ValueError(batch_norm_distributed_error(model))
        if engine is not None and not engine.is_main:
            verbose = 0  # one process prints
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be one of {ON_NONFINITE}, got {on_nonfinite!r}")
        metric_list = metrics_module.resolve(metrics, loss)
        weighted_list = metrics_module.resolve(weighted_metrics, loss, accuracy=False)
        for metric in weighted_list:
            metrics_module.check_weighted(metric)
        self.hooks = Hooks(callbacks, main_process=engine is None or engine.is_main)
        if validation_split is not None and validation_data is not None:
            raise ValueError("give validation_data or validation_split, not both")
        self.streaming = streaming = isinstance(X, Batches)
        validation = None
        if streaming:
            if y is not None:
                raise ValueError("with X a datasets.Batches, the targets come from it: pass y=None")
            if validation_split is not None:
                raise ValueError("validation_split needs in-memory data; with a datasets.Batches pass validation_data")
            self.batches = X
            samples = len(X.X)
            x = target = None  # (batches come from X; a failed one is taken from its host copy)
            steps_per_epoch = len(X)
            _check_all_batches(model, X, loss)
        else:
            x = checks.prepare_inputs(model, X)
            target = checks.prepare_targets(model, y, loss, x.shape[0])
            if validation_split is not None:
                (x, target), validation = _split_validation(model, x, target, validation_split)
            samples = x.shape[0]
            steps_per_epoch = -(-samples // batch_size)
        if self.epochs:
            _check_batch_norm_rows(model, samples, X.batch_size if streaming else batch_size)
        weighting = sample_weight is not None or class_weight is not None
        if weighting:
            if streaming:
                raise ValueError("sample_weight and class_weight need in-memory data, not a datasets.Batches")
            if sample_weight is not None and validation_split is not None:
                raise ValueError("sample_weight with validation_split: split the rows and their weights yourself "
                                 "and pass validation_data")
            from . import weights as weights_module
            from .._backend import to_numpy

            host = weights_module.row_weights(sample_weight, class_weight, np.asarray(to_numpy(target)), loss,
                                              samples)  # (one read of the targets, at the start)
            labels, shape = target.ndim == 1 and loss.target_kind == "class", tuple(target.shape[1:])
            target = weights_module.pack(model.xp, target, model.backend.asarray(host, dtype=model.dtype))
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            x_val = checks.prepare_inputs(model, validation_data[0], name="validation X")
            validation = (x_val, checks.prepare_targets(model, validation_data[1], loss, x_val.shape[0],
                                                             name="validation y"))
        names = ["loss"] + [metric.name for metric in metric_list]
        log_keys = (names + [f"weighted_{metric.name}" for metric in weighted_list]
                    + ([f"val_{name}" for name in names] if validation is not None else []) + ["lr"])
        if on_nonfinite == "skip_batch":
            log_keys.append("skipped_batches")
        scaling = model.precision.scaled  # float16: dynamic loss scaling skips steps whose gradients overflow
        if scaling:
            log_keys += ["loss_scale", "skipped_steps"]
        self.hooks.check_config(log_keys)
        undo = None
        try:
            if resume_from is not None:
                undo = model.load_checkpoint(resume_from, optimizer, steps_per_epoch=steps_per_epoch,
                                             updates=self.epochs * steps_per_epoch)
            if engine is not None:
                _check_replicas(model, engine, samples, validation, loss=loss, optimizer=optimizer,
                                epochs=self.epochs, batch_size=X.batch_size if streaming else batch_size,
                                steps_per_epoch=steps_per_epoch, shuffle=shuffle, on_nonfinite=on_nonfinite,
                                sync_every=sync_every, metrics=metric_list + weighted_list)
            optimizer.lr = resolve(optimizer.lr, steps_per_epoch, self.epochs)
        except Exception:
            if undo is not None:  # (a refused call changes nothing: the resume is undone)
                undo()
            raise
        # a fit that continues the model's training (resumed from a file, or with the optimizer whose state
        # the model holds) numbers its epochs after the model's (history, logs, callbacks, file names)
        continuing = optimizer is model.optimizer and model.optimizer_state is not None
        self.first_epoch = model.epoch + 1 if continuing else 1
        self.last_epoch = self.first_epoch + self.epochs - 1

        # validation: the loss and metrics as given; training: with the weights, if any (see train/weights.py)
        self.eval_loss, self.eval_metrics = loss, metric_list
        if weighting:
            loss = weights_module.WeightedLoss(loss, labels, shape)
            metric_list = [weights_module.UnpackedMetric(metric, labels, shape) for metric in metric_list]
        if weighted_list:
            from .weights import WeightedMetric

            metric_list = metric_list + [WeightedMetric(metric, labels, shape) if weighting else WeightedMetric(metric)
                                         for metric in weighted_list]
        self.model, self.loss, self.optimizer, self.metric_list = model, loss, optimizer, metric_list
        self.engine, self.x, self.target, self.validation, self.samples = engine, x, target, validation, samples
        self.batch_size, self.shuffle, self.steps_per_epoch = batch_size, shuffle, steps_per_epoch
        self.log_keys = log_keys
        self.verbose, self.on_nonfinite, self.sync_every, self.scaling = verbose, on_nonfinite, sync_every, scaling
        self.ops = model.ops
        if optimizer is not model.optimizer or model.optimizer_state is None:
            model.set_optimizer(optimizer, optimizer.init(model.params))
        self.train_step = self._train_step(on_nonfinite == "skip_batch")
        self.jitted = hasattr(self.train_step, "jitted")
        self.batch_hooks = self.hooks.has("on_batch_end")
        # read the guard after every step where that is free (host flags) or asked for: skipping a
        # batch, loss scaling and per-batch callbacks decide on the host after each step
        self.every_step = self.ops.host_flags or on_nonfinite == "skip_batch" or scaling or self.batch_hooks
        # the optimizer writes the parameters in place: a hook that keeps them gets a copy
        self.copy_for_hooks = self.ops.in_place
        self.state = model.train_state(optimizer, metric_list)
        self.consecutive_skips = 0
        self.interrupts = Interrupts()

    def _train_step(self, check_grads):
        model, loss, optimizer, metric_list = self.model, self.loss, self.optimizer, self.metric_list
        if (model.backend.name == "jax" and self.engine is None and not self.scaling and model.dropout_masks == "device"
                and not optimizer.lr_on_host):  # (a learning-rate function without a device form runs eagerly)
            # JAX's fast path: the whole step compiled, kept on the model for later fits with the same
            # loss and optimizer objects (a new function would compile again)
            # (hyperparameters are compiled in: a changed one makes a new step)
            key = (id(loss), id(optimizer), repr(loss), repr(optimizer), tuple(map(repr, metric_list)), check_grads)
            return model.compiled_step(key, (loss, optimizer), lambda: jit_train_step(make_train_step(
                model, loss, optimizer, metric_list, None, check_grads, self.scaling)))
        return make_train_step(model, loss, optimizer, metric_list, self.engine, check_grads, self.scaling)

    def _batches(self):
        model = self.model
        if not self.streaming:
            return _in_memory_batches(model, self.x, self.target, self.shuffle, self.batch_size,
                                      gather=not self.jitted)
        loss = self.loss
        batches = ((xb, yb, (xb, yb)) for xb, yb in self.batches.epoch(model.shuffle_rng, self.shuffle))
        batches = ((checks.prepare_inputs(model, xb), yb, host) for xb, yb, host in batches)
        return ((xb, checks.prepare_targets(model, yb, loss, xb.shape[0]), host) for xb, yb, host in batches)

    def _gather(self, recipe):
        return _gather(self.model, self.loss, self.x, self.target, recipe, self.streaming)

    def train_epoch(self, epoch) -> _Epoch:
        """Every step of one epoch, reading the device at the epoch's end, at progress-bar
        refreshes, every ``sync_every`` steps, or after every step where that is free or needed."""
        model, train_step = self.model, self.train_step
        if model.params is not self.state.params or model.running is not self.state.running:
            # a callback replaced them (EarlyStopping restores, ...)
            self.state = model.train_state(self.optimizer, self.metric_list)
        self.state = cleared(model, self.state)
        steps = _Epoch(_progress_bar(self.verbose, epoch, self.last_epoch, self.samples))
        for step, (x_batch, target_batch, recipe) in enumerate(self._batches(), start=1):
            count = x_batch.shape[0] if x_batch is not None else recipe[2] - recipe[1]
            before = self.state
            self.interrupts.critical = True  # (the step writes the model's arrays in place: committed at once)
            try:
                if self.jitted and x_batch is None:  # (the compiled step gathers its batch)
                    self.state, value = train_step.gather(self.state, self.x, self.target, recipe[0], recipe[1],
                                                          count)
                else:
                    self.state, value = train_step(self.state, x_batch, target_batch, model.loss_scale.scale)
                model.set_train_state(self.state)  # (one assignment: the model's record is the step's)
            finally:
                self.interrupts.leave()
            steps.window.append((step, count, recipe))
            steps.window_rows += count
            steps.last = (step, x_batch, recipe)
            if self.engine is not None:
                begin, end = self.engine.shard(0, count)
                steps.seen_local += end - begin
            refresh = steps.bar is not None and time.monotonic() - steps.last_refresh > 0.25
            if not (self.every_step or refresh or (self.sync_every and len(steps.window) >= self.sync_every)):
                continue
            if bool(self.state.guard.ok):  # the read: one host sync
                self._landed(steps, step, value, refresh)
            elif self._failed(steps, epoch, before, value, x_batch, target_batch):
                break
        if steps.stop_reason is None and steps.window:  # the epoch's last steps
            if bool(self.state.guard.ok):
                steps.seen += steps.window_rows
                if steps.bar is not None:
                    steps.bar.update(steps.window_rows)
            else:  # as in _failed, without skipping: the epoch is over
                self._stop_at_failed_step(steps, epoch)
        steps.read()
        return steps

    def _landed(self, steps, step, value, refresh):
        """A read found every step since the last one landed: commit them."""
        model = self.model
        steps.seen += steps.window_rows
        if self.scaling:
            model.loss_scale = _next_loss_scale(model.precision, model.loss_scale, False)
        self.state = cleared(model, self.state, sums=False)
        self.consecutive_skips = 0
        if self.batch_hooks:
            self.call_hook("on_batch_end", step=step, loss=float(value))
        if steps.bar is not None:
            steps.bar.update(steps.window_rows)
            if refresh:
                steps.bar.set_postfix(loss=f"{float(self.state.loss_sum) / max(steps.seen, 1):.4f}", refresh=False)
                steps.last_refresh = time.monotonic()
        steps.read()

    def _failed(self, steps, epoch, before, value, x_batch, target_batch):
        """A read found the guard down: skip the step (float16 overflow, ``skip_batch``) or stop
        with the error that names it. True when training stops."""
        model = self.model
        value_finite = self.ops.finite(value) if self.every_step else None
        # the scaled backward pass overflowed float16 (skip the step, halve the scale), or a batch
        # to skip while the weights are finite and skipping has not lasted an epoch
        rescale = self.scaling and value_finite and model.precision.dynamic and model.loss_scale.scale > 1.0
        skip = (not rescale and self.on_nonfinite == "skip_batch"
                and self.consecutive_skips + 1 < self.steps_per_epoch
                and _first_non_finite_parameter(model, before.params) is None)
        if (rescale or skip) and bool(self.state.guard.checked):
            rescale = skip = False  # the batch was fine, its update was not: skipping cannot help
        if not (rescale or skip):
            batch = (x_batch, target_batch) if self.every_step and x_batch is not None else None
            self._stop_at_failed_step(steps, epoch, batch, value_finite)
            return steps.stop_reason is not None
        steps.seen += _failed_step(self.state, steps.window)[3]
        if rescale:
            model.loss_scale = _next_loss_scale(model.precision, model.loss_scale, True)
            steps.skipped_steps += 1
        else:
            steps.skipped += 1
            self.consecutive_skips += 1
        self.state = cleared(model, before, sums=False)._replace(step=before.step + 1)
        model.set_train_state(self.state)  # the same weights, one step on: the next step draws fresh masks
        steps.read()
        return False

    def _stop_at_failed_step(self, steps, epoch, batch=None, value_finite=None):
        """Keep the weights from before the step the guard stopped and fail with what went wrong
        there (its ``batch``, gathered again when None)."""
        model = self.model
        kept, failed_step, failed_recipe, landed_rows = _failed_step(self.state, steps.window)
        steps.seen += landed_rows
        model.set_train_state(kept)
        failed_x, failed_target = batch if batch is not None else self._gather(failed_recipe)
        skipped = self.consecutive_skips if self.on_nonfinite == "skip_batch" else 0
        error = _diagnose(model, self.loss, self.optimizer, kept, epoch, failed_step, failed_x, failed_target,
                          skipped=skipped, value_finite=value_finite)
        self.state = kept._replace(params=model.params)
        self._fail(steps, error)

    def _fail(self, steps, error):
        """Raise ``error`` or (``on_nonfinite="stop"``) record it; the optimizer state is reset."""
        self.model.optimizer_state = None
        if self.on_nonfinite == "stop":
            steps.stop_reason = str(error)
            return
        if steps.bar is not None:
            steps.bar.close()
        raise error

    def epoch_logs(self, steps) -> dict:
        """The epoch's loss and metrics (read from the device), validation, learning rate, counts."""
        model, state, seen = self.model, self.state, steps.seen
        logs = {"loss": float(state.loss_sum) / seen if seen else float("nan")}
        totals = state.totals
        if self.engine is not None:  # the training metrics of every process's shards
            totals = _merge_totals(self.engine, self.metric_list, totals, steps.seen_local)
        for metric, total in zip(self.metric_list, totals):
            logs[metric.name] = metric.result(total, seen) if seen and total is not None else float("nan")
        if self.validation is not None:
            try:
                values = _evaluate_prepared(model, *self.validation, self.eval_loss, self.eval_metrics,
                                            what=f"validation after epoch {model.epoch}")
            except NonFiniteError as error:  # the weights are finite; the validation rows overflow with them
                error.epoch = model.epoch
                if self.on_nonfinite != "stop":
                    if steps.bar is not None:
                        steps.bar.close()
                    raise
                steps.stop_reason = str(error)  # ("stop": the run ends here, with this epoch's logs)
                values = {name: float("nan") for name in ["loss"] + [metric.name for metric in self.eval_metrics]}
            for key, value in values.items():
                logs[f"val_{key}"] = value
        updates = model.optimizer_state.count if model.optimizer_state is not None else 0
        logs["lr"] = self.optimizer.learning_rate(max(int(updates) - 1, 0))
        if self.on_nonfinite == "skip_batch":
            logs["skipped_batches"] = steps.skipped
        if self.scaling:
            logs["loss_scale"], logs["skipped_steps"] = model.loss_scale.scale, steps.skipped_steps
        return logs

    def report(self, epoch, logs, steps, elapsed):
        """The epoch's progress bar or line; then the parameters the epoch's hooks may keep."""
        if steps.bar is not None:
            steps.bar.set_postfix_str(_format_logs({k: v for k, v in logs.items() if k != "skipped_batches"}))
            steps.bar.close()
        elif self.verbose == 2:
            print(f"epoch {epoch}/{self.last_epoch} - {_format_logs(logs)} - {elapsed:.2f}s - "
                  f"{steps.seen / elapsed:.0f} samples/s", file=sys.stdout, flush=True)

    def call_hook(self, hook, **values):
        """Call ``hook`` of every callback with the model, whose ``params`` are a copy the hook
        may keep (the optimizer writes the live ones in place); a hook that puts other weights
        into the model (EarlyStopping's best ones, say) has them trained from then on."""
        model = self.model
        if not (self.copy_for_hooks and self.hooks.has(hook)):
            try:
                return self.hooks.call(hook, model=model, **values)
            finally:  # (a hook that put in other weights or statistics: trained from now on)
                if model.params is not self.state.params or model.running is not self.state.running:
                    self.state = self.state._replace(params=model.params, running=model.running)
        live, opt_state = model.params, model.optimizer_state
        handed = model.params = model.xp.asarray(live, copy=True)
        try:
            return self.hooks.call(hook, model=model, **values)
        finally:
            if model.params is handed:
                model.params = live
            elif self.state.params is live:  # trained from now on: a copy, in case the hook keeps them
                model.params = model.xp.asarray(model.params, copy=True)
                self.state = self.state._replace(params=model.params)
            if model.running is not self.state.running:  # (BatchNorm's, put in by the hook)
                self.state = self.state._replace(running=model.running)
            if model.optimizer_state is not opt_state:  # (load_state_dict: a fresh optimizer state)
                fresh = model.train_state(self.optimizer, self.metric_list)
                self.state = fresh._replace(loss_sum=self.state.loss_sum, totals=self.state.totals)
                model.set_train_state(self.state, self.optimizer)


def evaluate(model, X, y, loss, batch_size=1024, metrics=None) -> dict:
    """Mean loss, accuracy for classification losses and ``metrics``: what
    :meth:`mlp_xp.Sequential.evaluate` does (its docstring documents the arguments)."""
    from . import metrics as metrics_module

    loss = _named_loss(loss)
    model.check_loss(loss)
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    metric_list = metrics_module.resolve(metrics, loss)
    x = checks.prepare_inputs(model, X)
    return _evaluate_prepared(model, x, checks.prepare_targets(model, y, loss, x.shape[0]), loss, metric_list,
                              batch_size, what="evaluate")


def _evaluate_prepared(model, x, target, loss, metric_list, batch_size=1024, what="evaluation"):
    """evaluate() on inputs and targets already checked and on the backend (fit's validation data).

    Whether every output is finite is gathered on the device (one small reduction per batch)
    and read once at the end; a non-finite output or loss raises NonFiniteError (``what``
    begins its message), also in ``fit``, whose validation goes through here."""
    xp = model.xp
    loss_sum = 0.0
    finite = None
    totals = [None] * len(metric_list)
    samples = x.shape[0]
    weighted = getattr(loss, "batch_weight", None)
    weight_sum = 0
    for start, stop in _inference_batches(model, samples, batch_size):
        output = model.forward(x[start:stop, ...], loss=loss)
        target_batch = target[start:stop, ...]
        weight = weighted(xp, output, target_batch) if weighted is not None else None
        if weight is None:  # a batch's mean is over its rows
            value = loss.value(output, target_batch, xp)
            loss_sum, weight_sum = loss_sum + value * (stop - start), weight_sum + (stop - start)
        else:  # over its weight (sum_i w[y_i]): the whole set's mean, however it is batched
            with np.errstate(invalid="ignore", divide="ignore"):  # (a batch of ignored rows: 0 / 0, not counted)
                value = loss.value(output, target_batch, xp)
            loss_sum = loss_sum + xp.where(weight > 0, value * weight, xp.zeros_like(value))
            weight_sum = weight_sum + weight
        batch_finite = xp.all(xp.isfinite(output))
        finite = batch_finite if finite is None else finite & batch_finite
        for index, metric in enumerate(metric_list):
            totals[index] = metric.update(totals[index], output, target_batch, xp)
    if not bool(finite):  # the one extra read
        raise _non_finite_output_error(model, x, batch_size, what, loss)
    result = {"loss": float(loss_sum) / float(weight_sum)}
    if not np.isfinite(result["loss"]):
        raise NonFiniteError(f"{what}: the loss is {result['loss']} though every output is finite: "
                             f"{type(loss).__name__} overflowed {model.dtype_name} (outputs or targets far "
                             "beyond the range the model was trained on?)", name="loss")
    for metric, total in zip(metric_list, totals):
        result[metric.name] = metric.result(total, samples)
    return result


def predict(model, X, batch_size=1024):
    """The model's outputs in evaluation mode: what :meth:`mlp_xp.Sequential.predict` does (its
    docstring documents the arguments)."""
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    x = checks.prepare_inputs(model, X)
    outputs = [model.forward(x[start:stop, ...])
               for start, stop in _inference_batches(model, x.shape[0], batch_size)]
    output = outputs[0] if len(outputs) == 1 else model.xp.concat(outputs, axis=0)
    if not bool(model.xp.all(model.xp.isfinite(output))):
        raise _non_finite_output_error(model, x, batch_size, "predict")
    return output


def _non_finite_output_error(model, x, batch_size, what, loss=None):
    """The NonFiniteError of a predict / evaluate whose outputs (those ``loss`` takes) are not all
    finite, diagnosed as ``fit`` diagnoses a step: a non-finite parameter, else the first row
    whose output is not finite and the first layer whose output is not finite for it."""
    xp = model.xp
    parameter = _first_non_finite_parameter(model, model.params)
    if parameter is not None:
        return NonFiniteError(f"{what}: an output is not finite, and parameter {parameter!r} is not finite "
                              "either: load or train finite weights", name=parameter)
    row = None
    for start, stop in _inference_batches(model, x.shape[0], batch_size):  # (argmax finds the first bad row)
        bad_rows = ~xp.all(xp.isfinite(model.forward(x[start:stop, ...], loss=loss)), axis=1)
        if bool(xp.any(bad_rows)):
            row = start + int(xp.argmax(xp.astype(bad_rows, xp.int32)))
            break
    where = None if row is None else _first_non_finite_activation(model, model.params, x[row:row + 1, ...])
    hint = ", or compute in float32 (precision='float32')" if model.precision.mixed else ""
    return NonFiniteError(f"{what}: the output for {'a row' if row is None else f'X[{row}]'} is not finite: the "
                          f"parameters are finite but the forward pass overflowed {model.precision.compute}"
                          f"{f' ({where})' if where else ''}. Scale the inputs as for training{hint}", name="output")
