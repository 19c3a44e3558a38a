"""Callbacks for ``fit``: objects with any of ``on_train_begin(model)``,
``on_epoch_end(epoch, logs, model) -> stop?`` and ``on_train_end(model)``."""

from __future__ import annotations

import math

__all__ = ["Callback", "EarlyStopping"]


class Callback:
    """Base class with do-nothing hooks; ``on_epoch_end`` returning True stops training."""

    def on_train_begin(self, model):
        pass

    def on_epoch_end(self, epoch, logs, model):
        return False

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
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, model):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.wait = 0
        self._best_params = None

    def on_epoch_end(self, epoch, logs, model):
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, which is not in the logs {sorted(logs)}"
                           + (" (pass validation_data to fit)" if self.monitor.startswith("val_") else ""))
        value = logs[self.monitor]
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
