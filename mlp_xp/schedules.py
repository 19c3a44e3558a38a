"""Learning-rate schedules: callables ``schedule(count) -> lr`` of the update count.

``count`` is the number of optimizer updates already done (0 for the first step), so a
schedule advances once per minibatch. Pass one as an optimizer's ``lr``.

Example:
    >>> from mlp_xp.optim import schedules
    >>> lr = schedules.warmup(schedules.cosine(0.1, total_steps=100), warmup_steps=10)
    >>> [round(lr(c), 4) for c in (0, 9, 10, 60, 110)]
    [0.01, 0.1, 0.1, 0.05, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["constant", "step", "cosine", "warmup", "Schedule"]


class Schedule:
    """Base class; subclasses are frozen dataclasses (their fields are their config)."""

    def __call__(self, count: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class constant(Schedule):
    """The same ``lr`` at every step."""

    lr: float

    def __call__(self, count):
        return self.lr


@dataclass(frozen=True)
class step(Schedule):
    """``lr * gamma ** (count // step_size)``: decay by ``gamma`` every ``step_size`` updates."""

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self):
        if self.step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {self.step_size!r}")

    def __call__(self, count):
        return self.lr * self.gamma ** (count // self.step_size)


@dataclass(frozen=True)
class cosine(Schedule):
    """Cosine decay from ``lr`` to ``final_lr`` over ``total_steps`` updates, then ``final_lr``."""

    lr: float
    total_steps: int
    final_lr: float = 0.0

    def __post_init__(self):
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps!r}")

    def __call__(self, count):
        progress = min(count, self.total_steps) / self.total_steps
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class warmup(Schedule):
    """Linear warmup: ``base(0) * (count + 1) / warmup_steps`` for the first ``warmup_steps``
    updates, then ``base(count - warmup_steps)``. ``base`` is a number or a schedule."""

    base: object
    warmup_steps: int

    def __post_init__(self):
        if self.warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {self.warmup_steps!r}")

    def _base(self, count):
        return self.base(count) if callable(self.base) else float(self.base)

    def __call__(self, count):
        if count < self.warmup_steps:
            return self._base(0) * (count + 1) / self.warmup_steps
        return self._base(count - self.warmup_steps)
