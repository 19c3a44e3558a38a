"""Learning-rate schedules: callables ``schedule(count) -> lr`` of the update count.

``count`` is the number of optimizer updates already done (0 for the first step), so by
default a schedule advances once per minibatch. With ``per="epoch"`` its lengths
(``step_size``, ``total_steps``, ``warmup_steps``) count epochs instead, and it advances
once per epoch: ``fit`` tells it how many updates an epoch has (``steps_per_epoch``).
``cosine``'s ``total_steps`` may be left out: the first ``fit`` that uses the schedule sets
it to that run's length (in steps, or epochs with ``per="epoch"``). Pass a schedule as an
optimizer's ``lr``; after ``fit``, ``optimizer.lr`` holds the resolved schedule, which is
also what ``mx.save`` writes.

Example:
    >>> from mlp_xp.optim import schedules
    >>> lr = schedules.warmup(schedules.cosine(0.1, total_steps=100), warmup_steps=10)
    >>> [round(lr(c), 4) for c in (0, 9, 10, 60, 110)]
    [0.01, 0.1, 0.1, 0.05, 0.0]
    >>> per_epoch = schedules.step(0.1, step_size=2, gamma=0.5, per="epoch", steps_per_epoch=100)
    >>> [per_epoch(c) for c in (0, 199, 200, 400)]
    [0.1, 0.1, 0.05, 0.025]
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

__all__ = ["constant", "step", "cosine", "warmup", "Schedule", "resolve", "continue_schedule"]

PER = ("step", "epoch")


def _check_length(value, name, optional=False):
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1{' or None' if optional else ''}, got {value!r}")


def _check_rate(value, name):
    if callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Base class; subclasses are frozen dataclasses (their fields are their config).

    Attributes:
        per: "step" (lengths count optimizer updates) or "epoch" (they count epochs).
        steps_per_epoch: updates per epoch, needed with ``per="epoch"``; ``fit`` sets it.
    """

    per: str = "step"
    steps_per_epoch: int | None = None

    def __post_init__(self):
        if self.per not in PER:
            raise ValueError(f"per must be one of {PER}, got {self.per!r}")
        _check_length(self.steps_per_epoch, "steps_per_epoch", optional=True)

    def __call__(self, count: int) -> float:
        if self.per == "epoch":
            if self.steps_per_epoch is None:
                raise ValueError(f"{self!r} counts epochs but does not know how many steps an epoch has: pass it "
                                 "to an optimizer used by fit (which sets steps_per_epoch), or set steps_per_epoch")
            count //= self.steps_per_epoch
        return self.value(count)

    def value(self, t: int) -> float:
        """The rate after ``t`` steps (or epochs) of this schedule's unit."""
        raise NotImplementedError

    def on_device(self, ops, count):
        """The rate at update ``count`` (a 0-d floating-point array), computed with the
        :mod:`mlp_xp.ops` ``ops`` on their device: what a training step uses, so that no per-step
        number comes from the host. A float when the rate is constant; None where the schedule
        has no device form (then the optimizer evaluates it on the host)."""
        if self.per == "epoch":
            if self.steps_per_epoch is None:
                self(0)  # (raises the error that names what is missing)
            count = ops.xp.floor(count / self.steps_per_epoch)
        return self.device_value(ops, count)

    def device_value(self, ops, t):
        """:meth:`value` of a 0-d floating-point array ``t``, with ``ops`` (None: no device form)."""
        return None

    def has_device_form(self) -> bool:
        """:meth:`device_value` computes the rate on the device (a subclass that defines only
        :meth:`value` is evaluated on the host)."""
        return type(self).device_value is not Schedule.device_value


@dataclass(frozen=True)
class constant(Schedule):
    """The same ``lr`` at every step."""

    lr: float

    def __post_init__(self):
        super().__post_init__()
        _check_rate(self.lr, "lr")

    def value(self, t):
        return self.lr

    def device_value(self, ops, t):
        return float(self.lr)


@dataclass(frozen=True)
class step(Schedule):
    """``lr * gamma ** (t // step_size)``: decay by ``gamma`` every ``step_size`` steps (or epochs)."""

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        _check_rate(self.lr, "lr")
        _check_length(self.step_size, "step_size")
        _check_rate(self.gamma, "gamma")

    def value(self, t):
        return self.lr * self.gamma ** (t // self.step_size)

    def device_value(self, ops, t):
        return self.lr * ops.power(self.gamma, ops.xp.floor(t / self.step_size))


@dataclass(frozen=True)
class cosine(Schedule):
    """Cosine decay from ``lr`` to ``final_lr`` over ``total_steps`` steps (or epochs), then ``final_lr``.

    ``total_steps=None``: the first ``fit`` using the schedule sets it to its own length.
    """

    lr: float
    total_steps: int | None = None
    final_lr: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        _check_rate(self.lr, "lr")
        _check_length(self.total_steps, "total_steps", optional=True)
        _check_rate(self.final_lr, "final_lr")

    def value(self, t):
        if self.total_steps is None:
            raise ValueError(f"{self!r} has no total_steps: give it one, or use it in fit, which sets it")
        progress = min(t, self.total_steps) / self.total_steps
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (1.0 + math.cos(math.pi * progress))

    def device_value(self, ops, t):
        self.value(0)  # (raises without total_steps)
        xp = ops.xp
        progress = xp.minimum(t, float(self.total_steps)) / self.total_steps
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (1.0 + xp.cos(math.pi * progress))


@dataclass(frozen=True)
class warmup(Schedule):
    """Linear warmup: ``base(0) * (t + 1) / warmup_steps`` for the first ``warmup_steps``
    steps (or epochs), then ``base(t - warmup_steps)``. ``base`` is a number or a schedule
    (counted in the same unit)."""

    base: object
    warmup_steps: int

    def __post_init__(self):
        super().__post_init__()
        _check_rate(self.base, "base")
        _check_length(self.warmup_steps, "warmup_steps")
        if isinstance(self.base, Schedule) and self.base.per != self.per:
            raise ValueError(f"warmup(per={self.per!r}) wraps a schedule with per={self.base.per!r}: use one unit")

    def _base(self, t):
        return self.base.value(t) if isinstance(self.base, Schedule) else (
            self.base(t) if callable(self.base) else float(self.base))

    def value(self, t):
        if t < self.warmup_steps:
            return self._base(0) * (t + 1) / self.warmup_steps
        return self._base(t - self.warmup_steps)

    def has_device_form(self):
        return self.base.has_device_form() if isinstance(self.base, Schedule) else not callable(self.base)

    def device_value(self, ops, t):
        xp = ops.xp
        if not isinstance(self.base, Schedule) and callable(self.base):
            return None  # (a plain function: evaluated on the host)
        after = (self.base.device_value(ops, t - self.warmup_steps) if isinstance(self.base, Schedule)
                 else float(self.base))
        if after is None:
            return None
        return xp.where(t < self.warmup_steps, self._base(0) * (t + 1.0) / self.warmup_steps, after)


def resolve(schedule, steps_per_epoch: int, epochs: int):
    """``schedule`` with what ``fit`` knows filled in: ``steps_per_epoch`` for ``per="epoch"``
    and a missing ``cosine`` ``total_steps`` (the run's ``epochs * steps_per_epoch`` steps, or
    ``epochs`` epochs; inside ``warmup``, less the warmup). Numbers, plain functions and
    complete schedules come back unchanged.

    Example:
        >>> from mlp_xp.optim import schedules
        >>> schedules.resolve(schedules.warmup(schedules.cosine(0.1), 10), steps_per_epoch=50, epochs=2).base
        cosine(per='step', steps_per_epoch=None, lr=0.1, total_steps=90, final_lr=0.0)
    """
    if not isinstance(schedule, Schedule):
        return schedule
    return _resolve(schedule, steps_per_epoch, epochs if schedule.per == "epoch" else epochs * steps_per_epoch)


def _resolve(schedule, steps_per_epoch, length):
    changes = {}
    if schedule.per == "epoch" and schedule.steps_per_epoch is None:
        changes["steps_per_epoch"] = steps_per_epoch
    if isinstance(schedule, cosine) and schedule.total_steps is None:
        changes["total_steps"] = max(1, length)
    if isinstance(schedule, warmup) and isinstance(schedule.base, Schedule):
        base = _resolve(schedule.base, steps_per_epoch, length - schedule.warmup_steps)
        if base is not schedule.base:
            changes["base"] = base
    return dataclasses.replace(schedule, **changes) if changes else schedule


def _open(schedule):
    """``schedule`` leaves a length for ``fit`` to fill in (a ``cosine`` without ``total_steps``)."""
    if isinstance(schedule, cosine) and schedule.total_steps is None:
        return True
    return isinstance(schedule, warmup) and isinstance(schedule.base, Schedule) and _open(schedule.base)


def _filled(given, saved):
    """``given`` with the lengths it leaves open taken from ``saved``, where both are the same kind."""
    if type(given) is not type(saved):
        return given
    changes = {}
    if given.steps_per_epoch is None:
        changes["steps_per_epoch"] = saved.steps_per_epoch
    if isinstance(given, cosine) and given.total_steps is None:
        changes["total_steps"] = saved.total_steps
    if isinstance(given, warmup) and isinstance(given.base, Schedule) and isinstance(saved.base, Schedule):
        changes["base"] = _filled(given.base, saved.base)
    return dataclasses.replace(given, **changes) if changes else given


def _end(schedule):
    """The update count from which ``schedule`` stays at its final rate (None: it never settles)."""
    unit = schedule.steps_per_epoch if schedule.per == "epoch" else 1
    if unit is None:
        return None
    if isinstance(schedule, cosine) and schedule.total_steps is not None:
        return schedule.total_steps * unit
    if isinstance(schedule, warmup):
        base = _end(schedule.base) if isinstance(schedule.base, Schedule) else 0
        return None if base is None else base + schedule.warmup_steps * unit
    return None


def continue_schedule(given, saved, count: int):
    """The learning rate a fit resumed from a checkpoint at update ``count`` trains with, where
    ``given`` is its optimizer's ``lr`` and ``saved`` the checkpoint's (resolved) one.

    A number, a function or a schedule with every length given is taken as given. A schedule that
    leaves a length open (``cosine()`` without ``total_steps``) continues the saved schedule when it
    is that schedule with its lengths left open; a ValueError otherwise, since the open length would
    be counted from the resumed run while the update count goes on from ``count``; and a
    ValueError where the saved schedule has ended by ``count`` (the whole resumed run would train
    at its final rate, 0 for a plain cosine).

    Example:
        >>> from mlp_xp.optim import schedules
        >>> saved = schedules.cosine(0.1, total_steps=500)
        >>> schedules.continue_schedule(schedules.cosine(0.1), saved, count=200) == saved
        True
    """
    if not (isinstance(given, Schedule) and _open(given)) or count == 0:
        return given
    hint = ("give every length explicitly, counted from the first update of the first run (for instance "
            "cosine(lr, total_steps=<the first run's updates + this run's>))")
    if not isinstance(saved, Schedule) or _filled(given, saved) != saved:
        raise ValueError(f"resuming at update {count} with lr={given!r}, which leaves its length open, while the "
                         f"checkpoint was trained with lr={saved!r}: the open length would be counted from this run "
                         f"while the update count goes on from the checkpoint's {count}; {hint}")
    end = _end(saved)
    if end is not None and count >= end:
        raise ValueError(f"the checkpoint's schedule {saved!r} ended at update {end} and the checkpoint is at update "
                         f"{count}: the resumed run would train at its final rate {saved(count)!r} throughout; {hint}")
    return saved
