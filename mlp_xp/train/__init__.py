"""Training: the one record of training state and the step over it (:mod:`~mlp_xp.train.step`),
the loop around it (:mod:`~mlp_xp.train.loop`: ``fit``, ``evaluate``, ``predict``), callbacks,
metrics, precisions and data-parallel engines."""

from . import callbacks, distributed, metrics, precision, step

__all__ = ["callbacks", "distributed", "metrics", "precision", "step"]
