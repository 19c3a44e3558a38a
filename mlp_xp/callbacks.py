"""Callbacks for ``fit``: objects with any of ``on_train_begin(model)``,
``on_epoch_begin(epoch, model)``, ``on_batch_end(step, loss, model)``,
``on_epoch_end(epoch, logs, model) -> stop?`` and ``on_train_end(model)``. Epochs and steps
are numbered from 1; ``logs`` maps metric names to floats.

What to do when training produces NaN/inf is not a callback but ``fit(on_nonfinite=...)``,
because it must act inside the epoch, before a bad update lands.
"""

from __future__ import annotations

import csv
import math
import os

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "LearningRateScheduler", "CSVLogger"]


def _mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return ("max" if "acc" in monitor else "min") if mode == "auto" else mode


def _monitored(monitor, logs, who):
    if monitor not in logs:
        raise KeyError(f"{who} monitors {monitor!r}, which is not in the logs {sorted(logs)}"
                       + (" (pass validation_data to fit)" if monitor.startswith("val_") else ""))
    return logs[monitor]


class Callback:
    """Base class with do-nothing hooks; ``on_epoch_end`` returning True stops training."""

    def on_train_begin(self, model):
        pass

    def on_epoch_end(self, epoch, logs, model):
        return False

    def on_epoch_begin(self, epoch, model):
        pass

    def on_train_end(self, model):
        pass


class EarlyStopping(Callback):
    """Stop when a monitored metric has not improved for ``patience`` epochs.

    Args:
        monitor: a key of the epoch logs ("val_loss", "loss", "val_accuracy", ...).
        patience: epochs without improvement to wait before stopping.
        min_delta: the least change that counts as an improvement.
        mode: "min", "max" or "auto" (max for accuracies, min otherwise).
        restore_best_weights: at the end, put back the weights of the best epoch.

    Attributes:
        best: the best value seen; ``best_epoch`` its epoch; ``stopped_epoch`` the epoch
            training stopped in (0 if it ran to the end).
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False):
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.mode = _mode(monitor, mode)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, model):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.wait = 0
        self._best_params = None

    def on_epoch_end(self, epoch, logs, model):
        value = _monitored(self.monitor, logs, "EarlyStopping")
        improved = (value < self.best - self.min_delta) if self.mode == "min" else (value > self.best + self.min_delta)
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                # a copy: on backends with fast paths, fit updates its parameter buffers in place
                self._best_params = model.xp.asarray(model.params, copy=True)
            return False
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, model):
        if self.restore_best_weights and self._best_params is not None:
            model.params = self._best_params


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
    """

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto", save_optimizer=True):
        self.path = os.fspath(path)
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode = _mode(monitor, mode)
        self.save_optimizer = bool(save_optimizer)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved = []

    def on_epoch_end(self, epoch, logs, model):
        from .io import save

        if self.save_best_only:
            value = _monitored(self.monitor, logs, "ModelCheckpoint")
            if not (value < self.best if self.mode == "min" else value > self.best):
                return False
            self.best = value
        path = self.path.format(epoch=epoch, **logs)
        save(model, path, optimizer=model.optimizer if self.save_optimizer else None)
        self.saved.append(path)
        return False


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of each epoch.

    Args:
        schedule: ``schedule(epoch, lr) -> new lr``, with ``epoch`` counted from 0 and ``lr``
            the current rate (per-step schedules belong in the optimizer's ``lr`` instead).

    The rate used in each epoch is recorded in ``self.history``.
    """

    def __init__(self, schedule):
        self.schedule = schedule
        self.history = []

    def on_epoch_begin(self, epoch, model):
        optimizer = model.optimizer
        if callable(optimizer.lr):
            raise ValueError("the optimizer's lr is already a schedule; use one or the other")
        new_lr = float(self.schedule(epoch - 1, optimizer.lr))
        if not new_lr >= 0:
            raise ValueError(f"LearningRateScheduler produced lr={new_lr!r} for epoch {epoch}")
        optimizer.lr = new_lr
        self.history.append(new_lr)


class CSVLogger(Callback):
    """Append one row per epoch (``epoch`` and every log value) to a CSV file, flushed each time.

    Args:
        path: the CSV file.
        append: keep an existing file's rows (its header is reused); otherwise start afresh.
    """

    def __init__(self, path, append=False):
        self.path = os.fspath(path)
        self.append = bool(append)
        self._keys = None

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
