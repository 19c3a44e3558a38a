"""Optimizers (:mod:`mlp_xp.optim.optimizers`) and learning-rate schedules
(:mod:`mlp_xp.optim.schedules`): hyperparameters and the per-step scalars, computed on the
device; each rule itself is an :mod:`mlp_xp.ops` primitive."""

from . import schedules
from .optimizers import (OPTIMIZER_TYPES, OPTIMIZERS, SGD, SQUARED_STATE, Adam, AdamState, AdamW, Optimizer, RMSprop,
                         RMSpropState, SGDState, guarded_update)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "SGDState", "AdamState", "RMSpropState", "schedules",
           "OPTIMIZER_TYPES", "OPTIMIZERS", "SQUARED_STATE", "guarded_update"]
