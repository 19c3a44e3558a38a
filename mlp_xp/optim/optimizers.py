"""Optimizers over one flat parameter vector, with update rules identical to torch.optim.

An optimizer is a frozen set of hyperparameters. Its rule is written once, as a primitive of
the Ops (:meth:`mlp_xp.ops.GenericOps.adam`, ``sgd``, ``rmsprop``): the optimizer only computes
the step's scalars (learning rate, bias corrections, decay factor, clip scale) as 0-d arrays on
the parameters' device, from its hyperparameters and its state's step count (also on the
device), and calls that primitive. So nothing that changes from step to step is a Python
number, and a user's subclass that keeps the rule keeps every backend's fast path.

- ``init(params) -> state``: a NamedTuple of arrays shaped like the flat ``params``, and
  ``count`` (updates done, a 0-d integer array);
- ``apply(ops, grads, state, params, ok, undo=None) -> (params, state, ok)``: the guarded
  update of a training step (in place where the Ops write in place; ``ok`` false, or an update
  that is not finite, leaves the parameters as they were; ``undo``: the used-up gradient,
  which the Ops may overwrite with the old parameters, to put them back if the update fails);
- ``update(grads, state, params, xp=None) -> (params, state)``: the same rule as a pure
  function of its arrays (the reference; nothing is written in place).

``lr`` is a number or a schedule from :mod:`mlp_xp.optim.schedules` (evaluated on the device at
the number of updates done so far, 0 for the first), or any function of that count (evaluated
on the host: one read of the count per step). ``clip_norm`` rescales the gradient to that
global L2 norm first, exactly like ``torch.nn.utils.clip_grad_norm_`` before ``optimizer.step()``.

Example:
    >>> import numpy as np, mlp_xp as mx
    >>> opt = mx.optim.SGD(lr=0.1, momentum=0.9)
    >>> params = np.array([1.0, -2.0]); state = opt.init(params)
    >>> params, state = opt.update(np.array([0.5, 0.5]), state, params)
    >>> params.tolist(), int(state.count)
    ([0.95, -2.05], 1)
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NamedTuple

from . import schedules

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "SGDState", "AdamState",
           "RMSpropState", "schedules", "OPTIMIZER_TYPES", "OPTIMIZERS", "SQUARED_STATE", "guarded_update"]

#: optimizer state that accumulates squared gradients: once inf, every later update of those
#: weights divides by inf, so an overflow there is a failure even though the weights stay finite
SQUARED_STATE = ("exp_avg_sq", "max_exp_avg_sq", "square_avg")


def _np_bool_types():
    """numpy's bool type where numpy is loaded (a flag given as ``np.True_``), else none."""
    import sys

    numpy = sys.modules.get("numpy")
    return (numpy.bool_,) if numpy is not None else ()


def _check_non_negative(name, value):
    """A finite number >= 0 (inf would make every update NaN or inf)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _generic_ops(array, xp=None):
    import array_api_compat

    from ..ops import GenericOps

    xp = xp or array_api_compat.array_namespace(array)
    return GenericOps(xp, array_api_compat.device(array), in_place=False)


class Optimizer:
    """Base class: learning rate (number or schedule), weight decay, gradient clipping.

    A subclass defines ``init`` and either ``apply`` (compute the step's scalars, call one Ops
    primitive: the fast path on every backend; ``update`` follows from it) or only the pure
    ``update(grads, state, params, xp)`` (then the step runs it on the generic ops and keeps its
    result where it lands). A subclass of a built-in optimizer that overrides ``update`` alone
    gets its ``update`` in training too (see :func:`guarded_update`)."""

    _config_keys: tuple = ("lr", "weight_decay", "clip_norm")
    #: follow the gradient uphill (torch's ``maximize``)
    maximize = False

    def __init__(self, lr: schedules.LearningRate, weight_decay: float = 0.0, clip_norm: float | None = None,
                 maximize: bool = False) -> None:
        if not callable(lr) and getattr(lr, "shape", None) == ():  # a 0-d array (torch's tensor lr): its value
            lr = float(lr)
        if not callable(lr):
            if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 <= lr < math.inf:
                raise ValueError(f"lr must be a finite number >= 0 or a schedule, got {lr!r}")
            lr = float(lr)
        self.lr = lr
        self.weight_decay = _check_non_negative("weight_decay", weight_decay)
        if clip_norm is not None and (isinstance(clip_norm, bool) or not isinstance(clip_norm, numbers.Real)
                                      or not 0 < clip_norm < math.inf):
            raise ValueError(f"clip_norm must be a finite number > 0 or None, got {clip_norm!r}")
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        if not isinstance(maximize, (bool, _np_bool_types())):
            raise ValueError(f"maximize must be True or False, got {maximize!r}")
        self.maximize = bool(maximize)

    def learning_rate(self, count: int) -> float:
        """The learning rate of update number ``count`` (0-based), on the host.

        Raises:
            ValueError: a schedule (a plain function, say) gave a negative or non-finite rate.
        """
        if not callable(self.lr):
            return self.lr
        lr = float(self.lr(int(count)))
        if not 0 <= lr < math.inf:
            raise ValueError(f"the learning-rate schedule {self.lr!r} gave lr={lr!r} at update {count}")
        return lr

    def init(self, params: Any) -> Any:
        raise NotImplementedError

    def apply(self, ops, grads, state, params, ok, undo=None):
        """The guarded update of a training step: (params, state, ok). This default, for a
        subclass that defines only :meth:`update`, runs that pure update and keeps its result
        where ``ok`` holds and the new parameters and squared-gradient state are finite."""
        if type(self).update is Optimizer.update:
            raise NotImplementedError(f"{type(self).__name__} defines neither apply nor update")
        state = state._replace(count=ops.counter(state.count))
        new_params, new_state = self.update(grads, state, params, ops.xp)
        if not ops.guarded:  # (what the update gives, landed or not: the training loop's diagnosis)
            return new_params, new_state, ok
        ok = ops.both(ok, ops.all_finite(new_params))
        for field in SQUARED_STATE:
            if getattr(new_state, field, None) is not None:
                ok = ops.both(ok, ops.all_finite(getattr(new_state, field)))
        fields = [ops.select(ok, ops.counter(new), old) if name == "count" else
                  new if new is None or old is None else ops.select(ok, new, old)
                  for name, new, old in zip(new_state._fields, new_state, state)]
        return ops.select(ok, new_params, params), type(new_state)(*fields), ok

    def update(self, grads: Any, state: Any, params: Any, xp: Any = None) -> tuple[Any, Any]:
        """The pure form of :meth:`apply`: new parameters and state, nothing written in place."""
        if type(self).apply is Optimizer.apply:
            raise NotImplementedError(f"{type(self).__name__} defines neither apply nor update")
        ops = _generic_ops(params, xp)
        state = state._replace(count=ops.counter(state.count))  # (an int from a file or a pickle)
        params, state, _ = self.apply(ops, grads, state, params, ops.true())
        return params, state

    @property
    def lr_on_host(self) -> bool:
        """The learning rate is a function with no device form (evaluated on the host each step:
        one read of the update count and one upload; not under ``jax.jit``)."""
        return callable(self.lr) and not (isinstance(self.lr, schedules.Schedule) and self.lr.has_device_form())

    # ------------------------------------------------------------------ the step's scalars

    @staticmethod
    def _zero_count(params):
        import array_api_compat

        xp = array_api_compat.array_namespace(params)
        jax = array_api_compat.is_jax_namespace(xp)
        return xp.zeros((), dtype=xp.int32 if jax else xp.int64, device=array_api_compat.device(params))

    def _lr(self, ops, count, dtype):
        """This update's learning rate: a Python number when constant (the same every step),
        else a 0-d array of ``dtype`` (a schedule on the device; a plain function on the host)."""
        if not callable(self.lr):
            return self.lr
        if isinstance(self.lr, schedules.Schedule):
            lr = self.lr.on_device(ops, ops.as_scalar(count))
            if isinstance(lr, numbers.Real) and not hasattr(lr, "dtype"):  # constant: a Python number
                return float(lr)
            if lr is not None:
                return ops.xp.astype(lr, dtype)
        return ops.xp.asarray(self.learning_rate(count), dtype=dtype, device=ops.device)

    def _grad_scale(self, ops, grads):
        """The factor the gradient is scaled by, or None: ``clip_grad_norm_``'s (0-d, on the
        device), negated with ``maximize`` (torch's ``-grad``: exact, as a product with -1 is)."""
        sign = -1.0 if self.maximize else 1.0
        if self.clip_norm is None:
            return None if sign == 1.0 else sign
        xp = ops.xp
        # as torch.nn.utils.clip_grad_norm_: always scaled, by min(1, max_norm / (norm + 1e-6))
        norm = xp.sqrt(xp.sum(grads * grads))
        scale = xp.minimum(self.clip_norm / (norm + 1e-6), 1.0)
        return scale if sign == 1.0 else -scale

    def config(self):
        return {key: getattr(self, key) for key in self._config_keys}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"




class SGDState(NamedTuple):
    count: Any
    momentum_buffer: Any  # None without momentum


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    ``g += weight_decay * p``; ``buf = g`` on the first step, else
    ``buf = momentum * buf + (1 - dampening) * g``; ``p -= lr * (g + momentum * buf if nesterov else buf)``.

    Args:
        lr: learning rate or schedule.
        momentum: momentum factor (0 disables the buffer).
        dampening: dampening of the momentum's new gradient (not on the first step, as torch).
        nesterov: Nesterov momentum (needs momentum > 0 and no dampening).
        weight_decay: L2 penalty added to the gradient.
        clip_norm: global gradient-norm clip, or None.
        maximize: follow the gradient uphill.

    The default learning rate is torch's, 1e-3 (0.01 before mlp_xp 0.5).
    """

    _config_keys = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "clip_norm", "maximize")

    def __init__(self, lr: schedules.LearningRate = 1e-3, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, clip_norm: float | None = None, dampening: float = 0.0,
                 maximize: bool = False) -> None:
        super().__init__(lr, weight_decay, clip_norm, maximize)
        self.momentum = _check_non_negative("momentum", momentum)
        self.dampening = _check_non_negative("dampening", dampening)
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("Nesterov momentum requires momentum > 0 and zero dampening")
        self.nesterov = bool(nesterov)

    def init(self, params: Any) -> Any:
        import array_api_compat

        buffer = array_api_compat.array_namespace(params).zeros_like(params) if self.momentum else None
        return SGDState(self._zero_count(params), buffer)

    def apply(self, ops, grads, state, params, ok, undo=None):
        count = state.count + 1
        buffer = state.momentum_buffer
        if self.momentum and buffer is None:  # a state saved before its first update
            buffer = ops.xp.zeros_like(params)
        dampening = None
        if self.momentum and self.dampening:  # (no dampening on the first step, as torch)
            dampening = ops.select(state.count == 0, ops.constant(1.0, params.dtype),
                                   ops.constant(1.0 - self.dampening, params.dtype))
        params, buffer, ok = ops.sgd(params, grads, buffer, ok, lr=self._lr(ops, state.count, params.dtype),
                                     momentum=self.momentum, dampening=dampening, nesterov=self.nesterov,
                                     weight_decay=self.weight_decay, grad_scale=self._grad_scale(ops, grads), undo=undo)
        return params, SGDState(ops.select(ok, count, state.count), buffer), ok  # (counted where it landed)


class AdamState(NamedTuple):
    count: Any
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any = None  # AMSGrad's running maximum of exp_avg_sq (None without amsgrad)


class Adam(Optimizer):
    """Adam (Kingma & Ba), as ``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradient).

    ``m = lerp(m, g, 1 - b1)``; ``v = b2 v + (1 - b2) g^2``;
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``; with ``amsgrad``,
    ``v_max = max(v_max, v)`` takes ``v``'s place in the denominator.

    Args:
        lr: learning rate or schedule.
        betas: (b1, b2) decay rates of the moment estimates.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient (use AdamW for decoupled decay).
        clip_norm: global gradient-norm clip, or None.
        amsgrad: the AMSGrad variant (one more parameter-sized state vector).
        maximize: follow the gradient uphill.
    """

    _config_keys = ("lr", "betas", "eps", "weight_decay", "clip_norm", "amsgrad", "maximize")
    #: weight decay applied to the parameters (AdamW) instead of added to the gradient
    decoupled = False

    def __init__(self, lr: schedules.LearningRate = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, clip_norm: float | None = None, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(lr, weight_decay, clip_norm, maximize)
        if not isinstance(amsgrad, (bool, _np_bool_types())):
            raise ValueError(f"amsgrad must be True or False, got {amsgrad!r}")
        self.amsgrad = bool(amsgrad)
        try:
            beta1, beta2 = (float(beta) for beta in betas)
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}") from None
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        self.betas = (float(beta1), float(beta2))
        self.eps = _check_non_negative("eps", eps)

    def init(self, params: Any) -> Any:
        import array_api_compat

        xp = array_api_compat.array_namespace(params)
        return AdamState(self._zero_count(params), xp.zeros_like(params), xp.zeros_like(params),
                         xp.zeros_like(params) if self.amsgrad else None)

    def apply(self, ops, grads, state, params, ok, undo=None):
        xp, dtype = ops.xp, params.dtype
        beta1, beta2 = self.betas
        count = state.count + 1
        step = ops.as_scalar(count)  # (float64 where the device has it: the host's arithmetic)
        lr = self._lr(ops, state.count, ops.scalar_dtype)
        corrections = 1.0 - ops.power((beta1, beta2), step)  # (both bias corrections in one operation)
        step_size = xp.astype(lr / corrections[0], dtype)
        bias_correction2_sqrt = xp.astype(xp.sqrt(corrections[1]), dtype)
        decay = None
        if self.weight_decay and self.decoupled:
            decay = 1.0 - lr * self.weight_decay
            decay = decay if type(decay) is float else xp.astype(decay, dtype)  # (a numpy float is a float too)
        max_exp_avg_sq = state.max_exp_avg_sq
        if self.amsgrad and max_exp_avg_sq is None:  # (a state saved before its first update)
            max_exp_avg_sq = xp.zeros_like(params)
        params, exp_avg, exp_avg_sq, max_exp_avg_sq, ok = ops.adam(
            params, grads, state.exp_avg, state.exp_avg_sq, ok, step_size=step_size, beta1=beta1, beta2=beta2,
            eps=self.eps, bias_correction2_sqrt=bias_correction2_sqrt,
            weight_decay=0.0 if self.decoupled else self.weight_decay, decay=decay,
            grad_scale=self._grad_scale(ops, grads), undo=undo,
            max_exp_avg_sq=max_exp_avg_sq if self.amsgrad else None)
        return params, AdamState(ops.select(ok, count, state.count), exp_avg, exp_avg_sq, max_exp_avg_sq), ok


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``: ``p *= 1 - lr * wd`` first.

    Same arguments as :class:`Adam`; ``weight_decay`` defaults to 0.01.
    """

    decoupled = True

    def __init__(self, lr: schedules.LearningRate = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, clip_norm: float | None = None, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(lr, betas, eps, weight_decay, clip_norm, amsgrad, maximize)


class RMSpropState(NamedTuple):
    count: Any
    square_avg: Any
    momentum_buffer: Any  # None without momentum
    grad_avg: Any  # None unless centered


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    ``v = alpha v + (1 - alpha) g^2``; ``avg = sqrt(v - g_avg^2 if centered else v) + eps``;
    ``buf = momentum buf + g / avg; p -= lr buf`` (or ``p -= lr g / avg`` without momentum).

    Args:
        lr: learning rate or schedule.
        alpha: smoothing constant.
        eps: added to the denominator.
        momentum: momentum factor.
        centered: normalise by the estimated variance instead of the second moment.
        weight_decay: L2 penalty added to the gradient.
        clip_norm: global gradient-norm clip, or None.
        maximize: follow the gradient uphill.
    """

    _config_keys = ("lr", "alpha", "eps", "momentum", "centered", "weight_decay", "clip_norm", "maximize")

    def __init__(self, lr: schedules.LearningRate = 0.01, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 centered: bool = False, weight_decay: float = 0.0, clip_norm: float | None = None,
                 maximize: bool = False) -> None:
        super().__init__(lr, weight_decay, clip_norm, maximize)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.eps = _check_non_negative("eps", eps)
        self.momentum = _check_non_negative("momentum", momentum)
        self.centered = bool(centered)

    def init(self, params: Any) -> Any:
        import array_api_compat

        xp = array_api_compat.array_namespace(params)
        return RMSpropState(self._zero_count(params), xp.zeros_like(params),
                            xp.zeros_like(params) if self.momentum else None,
                            xp.zeros_like(params) if self.centered else None)

    def apply(self, ops, grads, state, params, ok, undo=None):
        count = state.count + 1
        params, square_avg, buffer, grad_avg, ok = ops.rmsprop(
            params, grads, state.square_avg, state.momentum_buffer, state.grad_avg, ok,
            lr=self._lr(ops, state.count, params.dtype), alpha=self.alpha, eps=self.eps, momentum=self.momentum,
            weight_decay=self.weight_decay, grad_scale=self._grad_scale(ops, grads), undo=undo)
        return params, RMSpropState(ops.select(ok, count, state.count), square_avg, buffer, grad_avg), ok


@functools.lru_cache(maxsize=64)
def _update_overridden(cls) -> bool:
    """``cls`` (a subclass of a built-in optimizer) overrides ``update`` below its ``apply``."""
    owner = {name: next(klass for klass in cls.__mro__ if name in vars(klass)) for name in ("apply", "update")}
    return cls.__mro__.index(owner["update"]) < cls.__mro__.index(owner["apply"])  # (a mixin's update too)


def guarded_update(optimizer: Optimizer, ops: Any, grads: Any, state: Any, params: Any, ok: Any,
                   undo: Any = None) -> tuple[Any, Any, Any]:
    """What a training step calls: ``optimizer.apply(...)``, or, for a subclass that overrides
    only the pure ``update`` of a built-in optimizer (the 0.3 contract), that ``update`` on the
    generic ops, guarded (:meth:`Optimizer.apply`'s default)."""
    if _update_overridden(type(optimizer)):
        return Optimizer.apply(optimizer, ops, grads, state, params, ok)
    return optimizer.apply(ops, grads, state, params, ok, undo=undo)


#: the registry of optimizers by class name (what ``mx.save`` writes and ``mx.load`` reads)
OPTIMIZER_TYPES = {cls.__name__: cls for cls in (SGD, Adam, AdamW, RMSprop)}
#: the same by lower-case name (the command line's ``--optimizer``)
OPTIMIZERS = {name.lower(): cls for name, cls in OPTIMIZER_TYPES.items()}
