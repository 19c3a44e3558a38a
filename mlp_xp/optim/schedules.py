"""Learning-rate schedules: callables ``schedule(count) -> lr`` of the update count.

``count`` is the number of optimizer updates already done (0 for the first step), so by
default a schedule advances once per minibatch. With ``per="epoch"`` its lengths
(``step_size``, ``milestones``, ``total_steps``, ``T_0``, ``warmup_steps``) count epochs
instead, and it advances once per epoch: ``fit`` tells it how many updates an epoch has
(``steps_per_epoch``). ``cosine``'s and ``one_cycle``'s ``total_steps`` may be left out: the
first ``fit`` that uses the schedule sets it to that run's length (in steps, or epochs with
``per="epoch"``).

Each schedule equals a ``torch.optim.lr_scheduler`` one stepped once per update (per epoch
with ``per="epoch"``): ``step`` StepLR, ``multistep`` MultiStepLR, ``cosine``
CosineAnnealingLR (held at ``final_lr`` after ``total_steps``), ``cosine_warm_restarts``
CosineAnnealingWarmRestarts, ``one_cycle`` OneCycleLR (its learning rate), and ``warmup`` with
``start_factor`` LinearLR (followed by ``base``, as SequentialLR). Pass a schedule as an
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
    >>> [round(schedules.multistep(1.0, milestones=[2, 4], gamma=0.5)(c), 4) for c in range(6)]
    [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Literal, Sequence, SupportsFloat

__all__ = ["constant", "step", "multistep", "cosine", "cosine_warm_restarts", "one_cycle", "warmup", "Schedule",
           "resolve", "continue_schedule"]

PER = ("step", "epoch")
#: for type checkers: a learning rate: a number (or a 0-d array), a schedule or a function of the update count
LearningRate = SupportsFloat | Callable[[int], float]


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


def _check_number(value, name, low=0.0, high=math.inf, low_open=False, high_open=True):
    """``value`` is a real number (not a bool, not a function) in the interval from ``low`` to ``high``."""
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and (low < value if low_open else low <= value) and (value < high if high_open else value <= high))
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """Base class; subclasses are frozen dataclasses (their fields are their config).

    Attributes:
        per: "step" (lengths count optimizer updates) or "epoch" (they count epochs).
        steps_per_epoch: updates per epoch, needed with ``per="epoch"``; ``fit`` sets it.
    """

    per: Literal["step", "epoch"] = "step"
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
class multistep(Schedule):
    """``lr * gamma ** k`` with ``k`` the number of ``milestones`` reached (``<= t``): decay by
    ``gamma`` at each milestone step (or epoch), as ``torch.optim.lr_scheduler.MultiStepLR``.

    ``milestones`` are ints >= 0, kept sorted as a tuple; one given twice decays twice (as torch's).

    Example:
        >>> from mlp_xp.optim import schedules
        >>> lr = schedules.multistep(0.1, milestones=[30, 80])
        >>> [round(lr(c), 6) for c in (0, 29, 30, 79, 80)]
        [0.1, 0.1, 0.01, 0.01, 0.001]
    """

    lr: float
    milestones: Sequence[int]
    gamma: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        _check_number(self.lr, "lr")
        milestones = self.milestones
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise ValueError(f"milestones must be a list of ints >= 0, got {milestones!r}")
        milestones = tuple(milestones)
        for milestone in milestones:
            if isinstance(milestone, bool) or not isinstance(milestone, numbers.Integral) or milestone < 0:
                raise ValueError(f"milestones must be a list of ints >= 0, got {self.milestones!r} "
                                 f"(with {milestone!r})")
        object.__setattr__(self, "milestones", tuple(sorted(int(milestone) for milestone in milestones)))
        _check_number(self.gamma, "gamma")

    def value(self, t):
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, t)

    def device_value(self, ops, t):
        if not self.milestones:
            return float(self.lr)
        xp = ops.xp
        reached = None  # (how many milestones are <= t: one comparison each, no array from the host)
        for milestone in self.milestones:
            hit = xp.astype(t >= milestone, t.dtype)
            reached = hit if reached is None else reached + hit
        return self.lr * ops.power(self.gamma, reached)


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
class cosine_warm_restarts(Schedule):
    """Cosine decay from ``lr`` to ``eta_min`` over ``T_0`` steps (or epochs), then again from
    ``lr``, each cycle ``T_mult`` times as long as the one before (SGDR), as
    ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` stepped once per step (or epoch):
    ``eta_min + (lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``, ``T_cur`` the steps since the
    last restart and ``T_i`` the length of the current cycle.

    Example:
        >>> from mlp_xp.optim import schedules
        >>> lr = schedules.cosine_warm_restarts(1.0, T_0=4, T_mult=2)
        >>> [round(lr(c), 4) for c in (0, 2, 3, 4, 8, 11, 12)]
        [1.0, 0.5, 0.1464, 1.0, 0.5, 0.0381, 1.0]
    """

    lr: float
    T_0: int
    T_mult: int = 1
    eta_min: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        _check_number(self.lr, "lr")
        _check_length(self.T_0, "T_0")
        _check_length(self.T_mult, "T_mult")
        _check_number(self.eta_min, "eta_min")

    def _cycle(self, t):
        """(steps since the last restart, length of the current cycle) after ``t`` steps."""
        if self.T_mult == 1:
            return t % self.T_0, self.T_0
        t_cur, t_i = t, self.T_0
        while t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * self.T_mult
        return t_cur, t_i

    def value(self, t):
        t_cur, t_i = self._cycle(t)
        return self.eta_min + (self.lr - self.eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2

    def device_value(self, ops, t):
        xp = ops.xp
        if self.T_mult == 1:
            t_cur, t_i = t - self.T_0 * xp.floor(t / self.T_0), float(self.T_0)
        else:
            mult = float(self.T_mult)

            def start(cycle):  # the step at which cycle number ``cycle`` (0-based) starts
                return self.T_0 * (ops.power(mult, cycle) - 1.0) / (mult - 1.0)

            cycle = xp.floor(xp.log(t * ((mult - 1.0) / self.T_0) + 1.0) / math.log(mult))
            # (the logarithm can round across a restart: settle the cycle with exact integer arithmetic)
            cycle = xp.where(t < start(cycle), cycle - 1.0, cycle)
            cycle = xp.where(t >= start(cycle + 1.0), cycle + 1.0, cycle)
            t_cur, t_i = t - start(cycle), self.T_0 * ops.power(mult, cycle)
        return self.eta_min + (self.lr - self.eta_min) * (1.0 + xp.cos(math.pi * t_cur / t_i)) / 2


ANNEAL = ("cos", "linear")


@dataclass(frozen=True)
class one_cycle(Schedule):
    """The 1cycle policy's learning rate, as ``torch.optim.lr_scheduler.OneCycleLR``: from
    ``max_lr / div_factor`` up to ``max_lr`` over the first ``pct_start`` of ``total_steps``,
    then down to ``max_lr / div_factor / final_div_factor`` at step ``total_steps - 1`` (with
    ``three_phase``: back down to ``max_lr / div_factor`` over as many steps as the rise, then
    to the minimum), annealing by cosine (``anneal_strategy="cos"``) or linearly; after
    ``total_steps`` it stays at the minimum (where torch raises). Momentum is not cycled.

    ``total_steps=None``: the first ``fit`` using the schedule sets it to its own length.

    Example:
        >>> from mlp_xp.optim import schedules
        >>> lr = schedules.one_cycle(1.0, total_steps=10, pct_start=0.5, anneal_strategy="linear")
        >>> [round(lr(c), 4) for c in (0, 2, 4, 9)]
        [0.04, 0.52, 1.0, 0.0]
    """

    max_lr: float
    total_steps: int | None = None
    pct_start: float = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False

    def __post_init__(self):
        super().__post_init__()
        _check_number(self.max_lr, "max_lr")
        _check_length(self.total_steps, "total_steps", optional=True)
        _check_number(self.pct_start, "pct_start", 0.0, 1.0)
        if self.anneal_strategy not in ANNEAL:
            raise ValueError(f"anneal_strategy must be one of {ANNEAL}, got {self.anneal_strategy!r}")
        _check_number(self.div_factor, "div_factor", low_open=True)
        _check_number(self.final_div_factor, "final_div_factor", low_open=True)
        if not isinstance(self.three_phase, bool):
            raise ValueError(f"three_phase must be True or False, got {self.three_phase!r}")
        if self.total_steps is not None:
            start = 0.0
            for number, (end, _, _) in enumerate(self._phases(), 1):
                if end == start:
                    raise ValueError(f"one_cycle(pct_start={self.pct_start!r}, total_steps={self.total_steps}) has a "
                                     f"phase {number} zero steps long (it would divide by zero, as torch's "
                                     "OneCycleLR does): choose another pct_start")
                start = end

    def _phases(self):
        """(last step, starting rate, final rate) of each phase, as torch's OneCycleLR computes them."""
        initial = self.max_lr / self.div_factor
        minimum = initial / self.final_div_factor
        if self.three_phase:
            return [(float(self.pct_start * self.total_steps) - 1, initial, self.max_lr),
                    (float(2 * self.pct_start * self.total_steps) - 2, self.max_lr, initial),
                    (self.total_steps - 1, initial, minimum)]
        return [(float(self.pct_start * self.total_steps) - 1, initial, self.max_lr),
                (self.total_steps - 1, self.max_lr, minimum)]

    def _anneal(self, xp, start, end, pct):
        if self.anneal_strategy == "linear":
            return (end - start) * pct + start
        return end + (start - end) / 2.0 * ((xp.cos(math.pi * pct) if xp else math.cos(math.pi * pct)) + 1)

    def value(self, t):
        if self.total_steps is None:
            raise ValueError(f"{self!r} has no total_steps: give it one, or use it in fit, which sets it")
        t = min(t, self.total_steps - 1)
        phases, start = self._phases(), 0.0
        for number, (end, start_lr, end_lr) in enumerate(phases, 1):
            if t <= end or number == len(phases):
                return self._anneal(None, start_lr, end_lr, (t - start) / (end - start))
            start = end

    def device_value(self, ops, t):
        self.value(0)  # (raises without total_steps)
        xp = ops.xp
        t = xp.minimum(t, float(self.total_steps - 1))
        phases, start, pieces = self._phases(), 0.0, []
        for end, start_lr, end_lr in phases:
            pieces.append((end, self._anneal(xp, start_lr, end_lr, (t - start) / (end - start))))
            start = end
        lr = pieces[-1][1]
        for end, piece in reversed(pieces[:-1]):  # (the first phase whose last step is not past t)
            lr = xp.where(t <= end, piece, lr)
        return lr


@dataclass(frozen=True)
class warmup(Schedule):
    """Linear warmup, then ``base`` (a number or a schedule, counted in the same unit).

    By default the rate climbs ``base(0) * (t + 1) / warmup_steps`` for the first
    ``warmup_steps`` steps (or epochs), reaching ``base(0)`` at the last of them, and is
    ``base(t - warmup_steps)`` after. With ``start_factor`` it is torch's LinearLR: ``base(0) *
    (start_factor + (end_factor - start_factor) * t / warmup_steps)`` for ``t < warmup_steps``, then
    ``end_factor * base(t - warmup_steps)``: for a number ``base``, exactly
    ``LinearLR(start_factor, end_factor, total_iters=warmup_steps)`` (``start_factor=1,
    end_factor=0`` is a linear decay to 0); for a schedule with ``end_factor=1``,
    ``SequentialLR([LinearLR(...), base], milestones=[warmup_steps])``.

    Example:
        >>> from mlp_xp.optim import schedules
        >>> [round(schedules.warmup(0.4, 4)(c), 4) for c in range(5)]
        [0.1, 0.2, 0.3, 0.4, 0.4]
        >>> [round(schedules.warmup(0.4, 4, start_factor=0.5)(c), 4) for c in range(5)]
        [0.2, 0.25, 0.3, 0.35, 0.4]
    """

    base: LearningRate
    warmup_steps: int
    start_factor: float | None = None
    end_factor: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _check_rate(self.base, "base")
        _check_length(self.warmup_steps, "warmup_steps")
        if isinstance(self.base, Schedule) and self.base.per != self.per:
            raise ValueError(f"warmup(per={self.per!r}) wraps a schedule with per={self.base.per!r}: use one unit")
        if self.start_factor is not None:
            _check_number(self.start_factor, "start_factor", 0.0, 1.0, high_open=False)
        _check_number(self.end_factor, "end_factor", 0.0, 1.0, high_open=False)
        if self.start_factor is None and self.end_factor != 1.0:
            raise ValueError(f"end_factor={self.end_factor!r} needs a start_factor (torch's LinearLR ramp from "
                             "start_factor to end_factor); without one the warmup climbs from base/warmup_steps "
                             "to base")

    def _base(self, t):
        return self.base.value(t) if isinstance(self.base, Schedule) else (
            self.base(t) if callable(self.base) else float(self.base))

    def value(self, t):
        if t < self.warmup_steps:
            if self.start_factor is None:
                return self._base(0) * (t + 1) / self.warmup_steps
            return self._base(0) * (self.start_factor
                                    + (self.end_factor - self.start_factor) * t / self.warmup_steps)
        after = self._base(t - self.warmup_steps)
        return after if self.start_factor is None else after * self.end_factor

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
        if self.start_factor is None:
            return xp.where(t < self.warmup_steps, self._base(0) * (t + 1.0) / self.warmup_steps, after)
        ramp = self._base(0) * (self.start_factor + (self.end_factor - self.start_factor) * t / self.warmup_steps)
        return xp.where(t < self.warmup_steps, ramp, after * self.end_factor)


#: the schedules whose ``total_steps`` may be left for ``fit`` to fill in
OPEN_LENGTH = (cosine, one_cycle)


def resolve(schedule: LearningRate, steps_per_epoch: int, epochs: int) -> LearningRate:
    """``schedule`` with what ``fit`` knows filled in: ``steps_per_epoch`` for ``per="epoch"``
    and a missing ``cosine`` or ``one_cycle`` ``total_steps`` (the run's ``epochs * steps_per_epoch``
    steps, or ``epochs`` epochs; inside ``warmup``, less the warmup). Numbers, plain functions and
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
    if isinstance(schedule, OPEN_LENGTH) and schedule.total_steps is None:
        changes["total_steps"] = max(1, length)
    if isinstance(schedule, warmup) and isinstance(schedule.base, Schedule):
        base = _resolve(schedule.base, steps_per_epoch, length - schedule.warmup_steps)
        if base is not schedule.base:
            changes["base"] = base
    return dataclasses.replace(schedule, **changes) if changes else schedule


def _open(schedule):
    """``schedule`` leaves a length for ``fit`` to fill in (a ``cosine`` or ``one_cycle`` without
    ``total_steps``)."""
    if isinstance(schedule, OPEN_LENGTH) and schedule.total_steps is None:
        return True
    return isinstance(schedule, warmup) and isinstance(schedule.base, Schedule) and _open(schedule.base)


def _filled(given, saved):
    """``given`` with the lengths it leaves open taken from ``saved``, where both are the same kind."""
    if type(given) is not type(saved):
        return given
    changes = {}
    if given.steps_per_epoch is None:
        changes["steps_per_epoch"] = saved.steps_per_epoch
    if isinstance(given, OPEN_LENGTH) and given.total_steps is None:
        changes["total_steps"] = saved.total_steps
    if isinstance(given, warmup) and isinstance(given.base, Schedule) and isinstance(saved.base, Schedule):
        changes["base"] = _filled(given.base, saved.base)
    return dataclasses.replace(given, **changes) if changes else given


def _end(schedule):
    """The update count from which ``schedule`` stays at its final rate (None: it never settles)."""
    unit = schedule.steps_per_epoch if schedule.per == "epoch" else 1
    if unit is None:
        return None
    if isinstance(schedule, OPEN_LENGTH) and schedule.total_steps is not None:
        # (one_cycle reaches its minimum at its last planned update, total_steps - 1, and holds it after)
        return schedule.total_steps * unit
    if isinstance(schedule, warmup):
        base = _end(schedule.base) if isinstance(schedule.base, Schedule) else 0
        return None if base is None else base + schedule.warmup_steps * unit
    return None


def _epoch_length(schedule):
    """The ``steps_per_epoch`` of the per-epoch parts of ``schedule`` (None where it has none)."""
    if not isinstance(schedule, Schedule):
        return None
    if schedule.per == "epoch":
        return schedule.steps_per_epoch
    return _epoch_length(schedule.base) if isinstance(schedule, warmup) else None


def _open_epochs(schedule):
    """``schedule`` counts epochs and leaves their length to ``fit``."""
    if not isinstance(schedule, Schedule):
        return False
    if schedule.per == "epoch" and schedule.steps_per_epoch is None:
        return True
    return isinstance(schedule, warmup) and _open_epochs(schedule.base)


def continue_schedule(given: LearningRate, saved: LearningRate, count: int, steps_per_epoch: int | None = None,
                      updates: int | None = None) -> LearningRate:
    """The learning rate a fit resumed from a checkpoint at update ``count`` trains with, where
    ``given`` is its optimizer's ``lr``, ``saved`` the checkpoint's (resolved) one, and
    ``steps_per_epoch`` and ``updates`` the resumed run's (None: not known).

    A number, a function or a schedule with every length given is taken as given. A schedule that
    leaves a length open (``cosine()`` without ``total_steps``) continues the saved schedule when it
    is that schedule with its lengths left open. A ValueError, naming what to give instead, where
    that cannot be right:

    - the open schedule is not the saved one (its open length would be counted from the resumed
      run while the update count goes on from ``count``);
    - the saved schedule has ended by ``count``, or would end during the resumed run (its last
      updates would train at the final rate, 0 for a plain cosine);
    - a schedule counting epochs, whose epoch length is left to ``fit``, was saved with another
      epoch length than the resumed run's (another batch size: its epochs would not line up).

    Example:
        >>> from mlp_xp.optim import schedules
        >>> saved = schedules.cosine(0.1, total_steps=500)
        >>> schedules.continue_schedule(schedules.cosine(0.1), saved, count=200) == saved
        True
    """
    if not isinstance(given, Schedule) or count == 0:
        return given
    hint = ("give every length explicitly, counted from the first update of the first run (for instance "
            "cosine(lr, total_steps=<the first run's updates + this run's>))")
    saved_epoch = _epoch_length(saved)
    if (steps_per_epoch is not None and _open_epochs(given) and saved_epoch is not None
            and saved_epoch != steps_per_epoch):
        raise ValueError(f"lr={given!r} counts epochs, and the checkpoint's schedule counted {saved_epoch} updates "
                         f"per epoch while this run has {steps_per_epoch} (another batch size or data): its epochs "
                         f"would not line up; resume with the first run's batch size, or give steps_per_epoch")
    if not _open(given):
        return given
    if not isinstance(saved, Schedule) or _filled(given, saved) != saved:
        raise ValueError(f"resuming at update {count} with lr={given!r}, which leaves its length open, while the "
                         f"checkpoint was trained with lr={saved!r}: the open length would be counted from this run "
                         f"while the update count goes on from the checkpoint's {count}; {hint}")
    end = _end(saved)
    if end is not None and count >= end:
        raise ValueError(f"the checkpoint's schedule {saved!r} ended at update {end} and the checkpoint is at update "
                         f"{count}: the resumed run would train at its final rate {saved(count)!r} throughout; {hint}")
    if end is not None and updates is not None and count + updates > end:
        left = end - count
        epochs = f" ({left // steps_per_epoch} epochs)" if steps_per_epoch and left % steps_per_epoch == 0 else ""
        raise ValueError(f"the checkpoint's schedule {saved!r} ends at update {end}, {left} updates{epochs} after the "
                         f"checkpoint's {count}, and this run takes {updates}: its last {count + updates - end} would "
                         f"train at the final rate {saved(end)!r}; fit for the {left} updates{epochs} left, or {hint}")
    return saved
