"""Callbacks for ``fit``: objects with any of these hooks.

=======================================  ==========================================================
``on_train_begin(model)``                before the first epoch
``on_epoch_begin(epoch, model)``         before each epoch
``on_train_batch_begin(step, model)``    before each update (Keras's name; ``on_batch_begin`` too)
``on_batch_end(step, loss, model)``      after each update (``loss`` a float); Keras's
                                         ``on_train_batch_end`` is the same hook
``on_epoch_end(epoch, logs, model)``     after each epoch; returning True stops training
``on_train_end(model)``                  after the last epoch
``check_config(log_keys)``               before any work: raise ValueError on a configuration
                                         that cannot work with these log keys
=======================================  ==========================================================

Epochs and steps are numbered from 1 everywhere in mlp_xp: in these hooks, in
``LearningRateScheduler``, in ``ModelCheckpoint`` paths, in progress lines and in
:class:`~mlp_xp.NonFiniteError` (Keras numbers epochs and batches from 0). ``logs`` maps metric
names to floats.

Keras-style hooks work too: each hook's arguments are matched by name (``epoch``, ``step`` or
``batch``, ``loss``, ``logs``, ``model``) and otherwise by position, so ``on_epoch_end(self,
epoch, logs=None)``, ``on_epoch_begin(self, epoch, logs=None)``, ``on_train_begin(self,
logs=None)``, ``on_train_batch_begin(self, batch, logs=None)`` and ``on_train_batch_end(self,
batch, logs=None)`` (``logs = {"loss": ...}``) are called as written. A hook that cannot be called
this way, or a callback with none of these hooks, is a TypeError before the first epoch.

As in Keras, every callback gets the model before ``on_train_begin``: ``callback.set_model(model)``
where it has that method, else ``callback.model = model``. ``model.stop_training = True``, set in
any hook, is read as Keras reads it, after each batch and after each epoch: set during an epoch
(``on_epoch_begin``, a batch hook) it ends training after the current batch (the epoch is cut
short: its logs cover the batches that ran, and ``on_epoch_end`` and ``on_train_end`` are still
called); set in ``on_epoch_end``, after that epoch. ``fit`` sets it to False before
``on_train_begin``.

Batch hooks cost time on device backends: an ``on_batch_end`` / ``on_train_batch_end`` hook
makes ``fit`` read the loss from the device after every step.

What to do when training produces NaN/inf is not a callback but ``fit(on_nonfinite=...)``,
because it must act inside the epoch, before a bad update lands.
"""

from __future__ import annotations

import csv
import inspect
import math
import os
import string
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from ..data.datasets import PathLike

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler", "ReduceLROnPlateau",
           "LambdaCallback", "CSVLogger"]

#: each hook's arguments, in the order mlp_xp's own signatures take them
HOOK_ARGUMENTS = {
    "on_train_begin": ("model",),
    "on_epoch_begin": ("epoch", "model"),
    "on_train_batch_begin": ("step", "model"),
    "on_batch_end": ("step", "loss", "model"),
    "on_epoch_end": ("epoch", "logs", "model"),
    "on_train_end": ("model",),
}
#: Keras's names of the batch hooks: each callback's first one found is bound to the hook
HOOK_NAMES = {
    "on_train_batch_begin": ("on_train_batch_begin", "on_batch_begin"),
    "on_batch_end": ("on_train_batch_end", "on_batch_end"),
}
_ALIASES = {"batch": "step", "iteration": "step"}
#: for type checkers: a callback's ``mode``
Mode = Literal["auto", "min", "max"]


def _mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return ("max" if "acc" in monitor or monitor.endswith("r2") else "min") if mode == "auto" else mode


def _check_monitor(monitor, log_keys, who):
    if monitor not in log_keys:
        hint = " (pass validation_data or validation_split to fit)" if monitor.startswith("val_") else ""
        raise ValueError(f"{who} monitors {monitor!r}, which fit will not log: the logs hold {sorted(log_keys)}{hint}")


def _plan(method, hook, owner):
    """Which of the hook's values to pass, in order, to ``method`` (matched by name, then position)."""
    canonical = HOOK_ARGUMENTS[hook]
    try:
        parameters = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: mlp_xp's own order
        return list(canonical)
    names, unused = [], [name for name in canonical]
    known = set(canonical) | {"logs"}
    for parameter in parameters:
        if parameter.kind is parameter.VAR_POSITIONAL:
            return names + unused
        if parameter.kind is parameter.VAR_KEYWORD:
            continue
        name = _ALIASES.get(parameter.name, parameter.name)
        if parameter.kind is parameter.KEYWORD_ONLY:
            if parameter.default is parameter.empty:
                break  # fails below
            continue
        if name in known and name not in names:
            names.append(name)
            if name in unused:
                unused.remove(name)
        elif parameter.default is not parameter.empty:
            return names  # the rest keep their defaults
        elif unused:
            names.append(unused.pop(0))
        else:
            break
    else:
        return names
    expected = ", ".join(canonical)
    raise TypeError(f"callback {owner!r}: cannot call {hook}{inspect.signature(method)}; fit passes ({expected}) "
                    "(or Keras-style arguments named epoch/batch/logs)")


class Hooks:
    """A list of callbacks with their hooks bound once, so a bad signature fails before training.

    ``hooks.call("on_epoch_end", epoch=1, logs={...}, model=model)`` calls every callback's
    hook with the arguments it takes and returns True if any asked to stop.
    """

    def __init__(self, callbacks, main_process=True):
        callbacks = list(callbacks or [])
        for callback in callbacks:
            if isinstance(callback, type):
                raise TypeError(f"callbacks must be instances, got the class {callback.__name__} (add ())")
        # in distributed training, callbacks that write files run on process 0 only
        self.callbacks = [callback for callback in callbacks
                          if main_process or not getattr(callback, "main_process_only", False)]
        self._bound = {hook: [] for hook in HOOK_ARGUMENTS}
        for callback in self.callbacks:
            found = callable(getattr(callback, "check_config", None))
            for hook in HOOK_ARGUMENTS:
                name = next((name for name in HOOK_NAMES.get(hook, (hook,)) if getattr(callback, name, None)
                             is not None), None)
                if name is None:
                    continue
                method = getattr(callback, name)
                if not callable(method):
                    raise TypeError(f"callback {callback!r}: {name} is not callable")
                self._bound[hook].append((method, _plan(method, hook, callback)))
                found = True
            if not found:
                others = sorted(name for name in dir(callback) if name.startswith("on_"))
                known = sorted({name for names in HOOK_NAMES.values() for name in names} | set(HOOK_ARGUMENTS))
                hint = f" (it has {others}, which fit does not call)" if others else ""
                raise TypeError(f"callback {callback!r} has none of the hooks fit calls{hint}: give it one of "
                                f"{known} or check_config, or subclass mx.callbacks.Callback")

    def attach(self, model):
        """Before ``on_train_begin``, as Keras: ``model.stop_training = False`` and every callback
        gets the model (``set_model(model)``, else ``callback.model = model``)."""
        model.stop_training = False
        for callback in self.callbacks:
            set_model = getattr(callback, "set_model", None)
            if callable(set_model):
                set_model(model)
                continue
            try:
                callback.model = model
            except AttributeError:  # (__slots__ without "model", a read-only property: it takes the argument)
                pass

    def batches(self, batches, model, call=None):
        """One epoch's ``batches``, each announced to the ``on_train_batch_begin`` hooks (through
        ``call``, default :meth:`call`), ending early once ``model.stop_training`` is set after a
        batch ran (as Keras: checked after each batch, so at least one runs per epoch)."""
        call = call or (lambda hook, **values: self.call(hook, model=model, **values))
        for step, batch in enumerate(batches, start=1):
            if step > 1 and getattr(model, "stop_training", False):
                return
            if self._bound["on_train_batch_begin"]:
                call("on_train_batch_begin", step=step)
            yield batch

    def has(self, hook):
        return bool(self._bound[hook])

    def check_config(self, log_keys):
        for callback in self.callbacks:
            check = getattr(callback, "check_config", None)
            if callable(check):
                check(tuple(log_keys))

    def call(self, hook, **values):
        if hook == "on_train_begin":
            self.attach(values["model"])
        values.setdefault("logs", {} if hook != "on_batch_end" else {"loss": values.get("loss")})
        stop = False
        for method, names in self._bound[hook]:
            if method(*(values[name] for name in names)):
                stop = True
        return stop


class Callback:
    """Base class with do-nothing hooks; ``on_epoch_end`` returning True stops training.

    Attributes:
        model: the model being trained, set before ``on_train_begin`` (see :meth:`set_model`);
            as in Keras, ``self.model.stop_training = True`` stops training.
    """

    model = None

    def set_model(self, model):
        """Called by ``fit`` with the model before ``on_train_begin``."""
        self.model = model

    def on_train_begin(self, model):
        pass

    def on_epoch_end(self, epoch, logs, model):
        return False

    def on_epoch_begin(self, epoch, model):
        pass

    def on_train_end(self, model):
        pass

    def check_config(self, log_keys):
        """Called by ``fit`` before any work with the keys every epoch's logs will hold."""


class EarlyStopping(Callback):
    """Stop when a monitored metric has not improved for ``patience`` epochs.

    Args:
        monitor: a key of the epoch logs ("val_loss", "loss", "val_accuracy", ...).
        patience: epochs without improvement to wait before stopping.
        min_delta: the least change that counts as an improvement.
        mode: "min", "max" or "auto" (max for accuracies, min otherwise).
        restore_best_weights: at the end, put back the weights of the best epoch (and its
            BatchNorm running statistics).

    Attributes:
        best: the best value seen; ``best_epoch`` its epoch; ``stopped_epoch`` the epoch
            training stopped in (0 if it ran to the end).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0, mode: Mode = "auto",
                 restore_best_weights: bool = False) -> None:
        self.monitor = monitor
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.mode = _mode(monitor, mode)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, model):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.wait = 0
        self._best_params = self._best_running = None

    def check_config(self, log_keys):
        _check_monitor(self.monitor, log_keys, "EarlyStopping")

    def on_epoch_end(self, epoch, logs, model):
        value = logs[self.monitor]
        improved = (value < self.best - self.min_delta) if self.mode == "min" else (value > self.best + self.min_delta)
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                # a copy: on backends with fast paths, fit updates its parameter buffers in place
                self._best_params = model.xp.asarray(model.params, copy=True)
                self._best_running = model.running  # (BatchNorm's: a step replaces them, never writes them)
            return False
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, model):
        if self.restore_best_weights and self._best_params is not None:
            model.params, model.running = self._best_params, self._best_running


class ModelCheckpoint(Callback):
    """Save the model (and optimizer state, for ``fit(resume_from=...)``) after epochs.

    Args:
        path: file to write; may contain ``{epoch}`` and log keys, e.g.
            ``"ckpt-{epoch:03d}-{val_loss:.3f}.safetensors"``.
        monitor: the metric that decides "best" with ``save_best_only``.
        save_best_only: write only when ``monitor`` improves; else after every epoch.
        mode: "min", "max" or "auto" (max for accuracies).
        save_optimizer: include the optimizer state and step count (needed to resume exactly).

    Writes are atomic (temporary file + rename), so a crash never leaves a half-written file.
    In distributed training only process 0 writes.
    """

    main_process_only = True

    def __init__(self, path: PathLike, monitor: str = "val_loss", save_best_only: bool = False, mode: Mode = "auto",
                 save_optimizer: bool = True) -> None:
        self.path = os.fspath(path)
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode = _mode(monitor, mode)
        self.save_optimizer = bool(save_optimizer)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved = []

    def check_config(self, log_keys):
        if self.save_best_only:
            _check_monitor(self.monitor, log_keys, "ModelCheckpoint")
        fields = {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(self.path)
                  if field is not None}
        unknown = sorted(fields - {"epoch", *log_keys})
        if unknown:
            raise ValueError(f"ModelCheckpoint path {self.path!r} names {unknown}, which fit will not log; "
                             f"it can use {{epoch}} and {sorted(log_keys)}")
        try:
            example = self.path.format(epoch=1, **{key: 0.5 for key in log_keys})
        except (ValueError, IndexError, KeyError) as error:
            raise ValueError(f"ModelCheckpoint path {self.path!r} cannot be formatted: {error}") from None
        from ..io import check_writable

        check_writable(example, "ModelCheckpoint path")

    def on_epoch_end(self, epoch, logs, model):
        if self.save_best_only:
            value = logs[self.monitor]
            if not (value < self.best if self.mode == "min" else value > self.best):
                return False
            self.best = value
        path = self.path.format(epoch=epoch, **logs)
        model.save(path, optimizer=model.optimizer if self.save_optimizer else None)
        self.saved.append(path)
        return False


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of each epoch.

    Args:
        schedule: ``schedule(epoch) -> lr`` or ``schedule(epoch, lr) -> lr``, with ``epoch``
            the epoch about to run, numbered from 1 as everywhere in mlp_xp, and ``lr`` the
            current rate. (For a schedule from :mod:`mlp_xp.optim.schedules`, pass it as the
            optimizer's ``lr`` with ``per="epoch"`` instead.)

    The rate used in each epoch is recorded in ``self.history`` (and in ``fit``'s
    ``history["lr"]``). It is a plain number on the optimizer, read by every step; JAX's compiled
    step has it compiled in, so ``fit`` compiles the step again at each epoch whose rate is new
    (to change the rate every epoch on JAX without that, give the optimizer a schedule of
    :mod:`mlp_xp.optim.schedules` with ``per="epoch"``: evaluated on the device).

    Example:
        >>> import mlp_xp as mx
        >>> halve_every_10 = mx.callbacks.LearningRateScheduler(lambda epoch: 0.1 * 0.5 ** ((epoch - 1) // 10))
    """

    def __init__(self, schedule: Callable[[int], float] | Callable[[int, float], float]) -> None:
        from ..optim.schedules import Schedule

        if isinstance(schedule, Schedule):
            raise TypeError(f"{schedule!r} counts optimizer steps: pass it as the optimizer's lr (with per='epoch' "
                            "to advance once per epoch) rather than to LearningRateScheduler")
        if not callable(schedule):
            raise TypeError(f"schedule must be a function of the epoch, got {schedule!r}")
        self.schedule = schedule
        self._with_lr = self._takes_lr(schedule)
        self.history = []

    @staticmethod
    def _takes_lr(schedule):
        try:
            parameters = inspect.signature(schedule).parameters.values()
        except (TypeError, ValueError):
            return True
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if any(p.kind is p.VAR_POSITIONAL for p in parameters):
            return True
        required = [p for p in positional if p.default is p.empty]
        if not 1 <= len(required) <= 2 or not positional:
            raise TypeError(f"schedule must take (epoch) or (epoch, lr), got {schedule!r} with "
                            f"{inspect.signature(schedule)}")
        return len(positional) >= 2

    def on_train_begin(self, model):
        _learning_rate_settable(model.optimizer, "LearningRateScheduler")

    def on_epoch_begin(self, epoch, model):
        optimizer = model.optimizer
        new_lr = self.schedule(epoch, optimizer.lr) if self._with_lr else self.schedule(epoch)
        try:
            new_lr = float(new_lr)
        except (TypeError, ValueError):
            raise TypeError(f"LearningRateScheduler's schedule returned {new_lr!r} for epoch {epoch}, "
                            "not a number") from None
        if not 0 <= new_lr < math.inf:
            raise ValueError(f"LearningRateScheduler produced lr={new_lr!r} for epoch {epoch}")
        optimizer.lr = new_lr
        self.history.append(new_lr)


def _learning_rate_settable(optimizer, who):
    if callable(optimizer.lr):
        raise ValueError(f"{who} sets the optimizer's lr, which is already a schedule ({optimizer.lr!r}); "
                         "use one or the other")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when a monitored metric stops improving, as
    ``torch.optim.lr_scheduler.ReduceLROnPlateau(threshold_mode="abs")`` with Keras's argument names
    (``min_delta`` is torch's ``threshold``, ``min_lr`` its ``min_lrs``).

    After each epoch: an improvement is a value below ``best - min_delta`` ("min") or above
    ``best + min_delta`` ("max"); otherwise the epoch counts as bad. Bad epochs are not counted
    during the ``cooldown`` epochs after a reduction. When more than ``patience`` epochs in a row
    are bad, ``lr`` becomes ``max(lr * factor, min_lr)`` (unless that changes it by less than
    1e-8) for the next epoch, and the cooldown starts. The rates are torch's value by value.

    Keras counts ``patience`` one epoch shorter (it reduces after ``patience`` bad epochs, torch
    and mlp_xp after ``patience + 1``; for patience 0 both after the first): to keep a Keras
    configuration's timing, pass ``patience - 1``.

    The new rate is a plain number on the optimizer (``optimizer.lr``), read by every later step:
    no step is rebuilt on numpy, torch, cupy or array-api-strict. JAX's compiled step has the rate
    compiled in: ``fit`` compiles the step again at the next epoch (once per distinct rate; the
    model keeps the last few compiled steps). Each epoch's rate is in ``history["lr"]``.

    Args:
        monitor: a key of the epoch logs ("val_loss", "loss", "val_accuracy", ...).
        factor: the multiplier, in [0, 1).
        patience: bad epochs tolerated before a reduction (an int >= 0).
        mode: "min", "max" or "auto" (max for accuracies and r2, min otherwise).
        min_delta: the least change that counts as an improvement (>= 0).
        cooldown: epochs after a reduction in which bad epochs are not counted (an int >= 0).
        min_lr: the rate never goes below this (>= 0).
        verbose: 1 prints a line at each reduction.

    Attributes:
        best: the best value seen; ``reductions`` a list of (epoch, new lr) for each reduction.

    Raises:
        ValueError: a bad argument (here); at the start of ``fit``, a ``monitor`` that fit will
            not log, or an optimizer whose ``lr`` is a schedule.

    Example:
        >>> import mlp_xp as mx
        >>> plateau = mx.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2)
    """

    #: torch's ``eps``: a reduction smaller than this is not applied
    eps = 1e-8

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, mode: Mode = "auto",
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0, verbose: int = 0) -> None:
        self.monitor = monitor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0.0 <= factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau factor must be a number in [0, 1) (the lr is multiplied by it), "
                             f"got {factor!r}")
        self.factor = float(factor)
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ReduceLROnPlateau {name} must be an int >= 0, got {value!r}")
        self.patience, self.cooldown = int(patience), int(cooldown)
        for name, value in (("min_delta", min_delta), ("min_lr", min_lr)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < math.inf:
                raise ValueError(f"ReduceLROnPlateau {name} must be a finite number >= 0, got {value!r}")
        self.min_delta, self.min_lr = float(min_delta), float(min_lr)
        self.mode = _mode(monitor, mode)
        self.verbose = verbose
        self._reset()

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.bad_epochs = 0
        self.cooldown_counter = 0
        self.reductions = []

    def check_config(self, log_keys):
        _check_monitor(self.monitor, log_keys, "ReduceLROnPlateau")

    def on_train_begin(self, model):
        _learning_rate_settable(model.optimizer, "ReduceLROnPlateau")
        self._reset()

    def on_epoch_end(self, epoch, logs, model):
        current = float(logs[self.monitor])
        if (current < self.best - self.min_delta) if self.mode == "min" else (current > self.best + self.min_delta):
            self.best, self.bad_epochs = current, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_counter > 0:  # bad epochs in the cooldown are not counted
            self.cooldown_counter -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            optimizer = model.optimizer
            old_lr = float(optimizer.lr)
            new_lr = max(old_lr * self.factor, self.min_lr)
            if old_lr - new_lr > self.eps:
                optimizer.lr = new_lr
                self.reductions.append((epoch, new_lr))
                if self.verbose:
                    print(f"epoch {epoch}: ReduceLROnPlateau reduced the learning rate to {new_lr:.4g}")
            self.cooldown_counter = self.cooldown
            self.bad_epochs = 0
        return False


class LambdaCallback(Callback):
    """A callback made of functions, as Keras's: each is called with Keras's arguments,
    ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``, ``on_train_begin(logs)``,
    ``on_train_end(logs)``, ``on_train_batch_begin(batch, logs)``,
    ``on_train_batch_end(batch, logs)`` (``logs = {"loss": ...}``), always positionally. Epochs
    and batches are numbered from 1, as everywhere in mlp_xp. ``self.model`` is the model being
    trained. A batch-end function makes ``fit`` read the loss from the device after every step.

    Raises:
        TypeError: a function that is not callable.

    Example:
        >>> import mlp_xp as mx
        >>> losses = []
        >>> log = mx.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: losses.append(logs["loss"]))
    """

    _KERAS = {"on_epoch_begin": ("epoch",), "on_epoch_end": ("epoch",), "on_train_begin": (),
              "on_train_end": (), "on_train_batch_begin": ("batch",), "on_train_batch_end": ("batch",)}

    def __init__(self, on_epoch_begin: Callable[..., Any] | None = None, on_epoch_end: Callable[..., Any] | None = None,
                 on_train_begin: Callable[..., Any] | None = None, on_train_end: Callable[..., Any] | None = None,
                 on_train_batch_begin: Callable[..., Any] | None = None,
                 on_train_batch_end: Callable[..., Any] | None = None) -> None:
        given = {"on_epoch_begin": on_epoch_begin, "on_epoch_end": on_epoch_end, "on_train_begin": on_train_begin,
                 "on_train_end": on_train_end, "on_train_batch_begin": on_train_batch_begin,
                 "on_train_batch_end": on_train_batch_end}
        for hook, function in given.items():
            if function is None:
                setattr(self, hook, None)  # (an absent hook: no per-step read for an unused batch hook)
                continue
            if not callable(function):
                raise TypeError(f"LambdaCallback {hook} must be a function, got {function!r}")
            setattr(self, hook, self._keras_hook(function, bool(self._KERAS[hook])))

    @staticmethod
    def _keras_hook(function, numbered):
        """A hook that calls ``function`` as Keras does and ignores what it returns (a truthy
        value from ``on_epoch_end`` would otherwise stop training)."""
        if numbered:
            def hook(number, logs=None):
                function(number, logs)
        else:
            def hook(logs=None):
                function(logs)
        return hook


class CSVLogger(Callback):
    """Append one row per epoch (``epoch`` and every log value) to a CSV file, flushed each time.
    In distributed training only process 0 writes.

    Args:
        path: the CSV file.
        append: keep an existing file's rows (its header is reused); otherwise start afresh.
    """

    main_process_only = True

    def __init__(self, path: PathLike, append: bool = False) -> None:
        self.path = os.fspath(path)
        self.append = bool(append)
        self._keys = None

    def check_config(self, log_keys):
        from ..io import check_writable

        check_writable(self.path, "CSVLogger path")

    def on_train_begin(self, model):
        self._keys = None
        if not self.append and os.path.exists(self.path):
            os.remove(self.path)
        if self.append and os.path.exists(self.path):
            with open(self.path, newline="") as file:
                self._keys = next(csv.reader(file), None)

    def on_epoch_end(self, epoch, logs, model):
        write_header = self._keys is None
        if write_header:
            self._keys = ["epoch"] + list(logs)
        with open(self.path, "a", newline="") as file:
            writer = csv.writer(file)
            if write_header:
                writer.writerow(self._keys)
            row = {"epoch": epoch, **logs}
            writer.writerow([row.get(key, "") for key in self._keys])
        return False
