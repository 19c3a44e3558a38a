"""Optimizers over one flat parameter vector, with update rules identical to torch.optim.

An optimizer is a frozen set of hyperparameters with two pure methods (Optax style):

- ``init(params) -> state``: a NamedTuple of arrays shaped like the flat ``params``;
- ``update(grads, state, params, xp=None, lr=None) -> (new_params, new_state)``; ``lr`` overrides
  the learning rate of this update (a traced value under ``jax.jit``).

Because the model keeps all parameters in one vector, a step is a handful of elementwise
operations whatever the depth. ``lr`` is a number or a schedule from
:mod:`mlp_xp.optim.schedules`, evaluated at the number of updates done so far (0 for the
first step). ``clip_norm`` rescales the gradient to that global L2 norm first, exactly like
``torch.nn.utils.clip_grad_norm_`` before ``optimizer.step()``.

Example:
    >>> import numpy as np, mlp_xp as mx
    >>> opt = mx.optim.SGD(lr=0.1, momentum=0.9)
    >>> params = np.array([1.0, -2.0]); state = opt.init(params)
    >>> params, state = opt.update(np.array([0.5, 0.5]), state, params)
    >>> params.tolist()
    [0.95, -2.05]
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

from . import schedules

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "SGDState", "AdamState",
           "RMSpropState", "schedules", "OPTIMIZER_TYPES"]


def _namespace(xp, array):
    if xp is not None:
        return xp
    import array_api_compat

    return array_api_compat.array_namespace(array)


def _check_non_negative(name, value):
    """A finite number >= 0 (inf would make every update NaN or inf)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class Optimizer:
    """Base class: learning rate (number or schedule), weight decay, gradient clipping."""

    _config_keys: tuple = ("lr", "weight_decay", "clip_norm")

    def __init__(self, lr, weight_decay=0.0, clip_norm=None):
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

    def learning_rate(self, count: int) -> float:
        """The learning rate of update number ``count`` (0-based).

        Raises:
            ValueError: a schedule (a plain function, say) gave a negative or non-finite rate.
        """
        if not callable(self.lr):
            return self.lr
        lr = float(self.lr(count))
        if not 0 <= lr < math.inf:
            raise ValueError(f"the learning-rate schedule {self.lr!r} gave lr={lr!r} at update {count}")
        return lr

    def init(self, params):
        raise NotImplementedError

    def update(self, grads, state, params, xp=None, lr=None):
        raise NotImplementedError

    def _clip(self, xp, grads):
        if self.clip_norm is None:
            return grads
        # as torch.nn.utils.clip_grad_norm_: always scaled, by min(1, max_norm / (norm + 1e-6));
        # kept on the device, so no host sync
        norm = xp.sqrt(xp.sum(grads * grads))
        return grads * xp.minimum(self.clip_norm / (norm + 1e-6), 1.0)

    def config(self):
        return {key: getattr(self, key) for key in self._config_keys}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


class SGDState(NamedTuple):
    count: int
    momentum_buffer: Any  # None without momentum


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    ``g += weight_decay * p``; ``buf = g`` on the first step, else ``buf = momentum * buf + g``;
    ``p -= lr * (g + momentum * buf if nesterov else buf)``.

    Args:
        lr: learning rate or schedule.
        momentum: momentum factor (0 disables the buffer).
        nesterov: Nesterov momentum (needs momentum > 0).
        weight_decay: L2 penalty added to the gradient.
        clip_norm: global gradient-norm clip, or None.
    """

    _config_keys = ("lr", "momentum", "nesterov", "weight_decay", "clip_norm")

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, clip_norm=None):
        super().__init__(lr, weight_decay, clip_norm)
        self.momentum = _check_non_negative("momentum", momentum)
        if nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum requires momentum > 0")
        self.nesterov = bool(nesterov)

    def init(self, params):
        return SGDState(0, None)

    def update(self, grads, state, params, xp=None, lr=None):
        xp = _namespace(xp, params)
        lr = self.learning_rate(state.count) if lr is None else lr
        grads = self._clip(xp, grads)
        if self.weight_decay:
            grads = grads + self.weight_decay * params
        buffer = None
        if self.momentum:
            buffer = grads if state.momentum_buffer is None else self.momentum * state.momentum_buffer + grads
            grads = grads + self.momentum * buffer if self.nesterov else buffer
        return params - lr * grads, SGDState(state.count + 1, buffer)


class AdamState(NamedTuple):
    count: int
    exp_avg: Any
    exp_avg_sq: Any


class Adam(Optimizer):
    """Adam (Kingma & Ba), as ``torch.optim.Adam`` (L2 ``weight_decay`` added to the gradient).

    ``m = lerp(m, g, 1 - b1)``; ``v = b2 v + (1 - b2) g^2``;
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.

    Args:
        lr: learning rate or schedule.
        betas: (b1, b2) decay rates of the moment estimates.
        eps: added to the denominator.
        weight_decay: L2 penalty added to the gradient (use AdamW for decoupled decay).
        clip_norm: global gradient-norm clip, or None.
    """

    _config_keys = ("lr", "betas", "eps", "weight_decay", "clip_norm")
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip_norm=None):
        super().__init__(lr, weight_decay, clip_norm)
        try:
            beta1, beta2 = (float(beta) for beta in betas)
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}") from None
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        self.betas = (float(beta1), float(beta2))
        self.eps = _check_non_negative("eps", eps)

    def init(self, params):
        xp = _namespace(None, params)
        return AdamState(0, xp.zeros_like(params), xp.zeros_like(params))

    def update(self, grads, state, params, xp=None, lr=None):
        xp = _namespace(xp, params)
        beta1, beta2 = self.betas
        lr = self.learning_rate(state.count) if lr is None else lr
        step = state.count + 1
        grads = self._clip(xp, grads)
        if self.weight_decay:
            if self._decoupled:
                params = params * (1.0 - lr * self.weight_decay)
            else:
                grads = grads + self.weight_decay * params
        exp_avg = state.exp_avg + (1.0 - beta1) * (grads - state.exp_avg)  # torch's lerp
        exp_avg_sq = beta2 * state.exp_avg_sq + (1.0 - beta2) * (grads * grads)
        step_size = lr / (1.0 - beta1 ** step)
        denom = xp.sqrt(exp_avg_sq) / (1.0 - beta2 ** step) ** 0.5 + self.eps
        return params - step_size * exp_avg / denom, AdamState(step, exp_avg, exp_avg_sq)


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``: ``p *= 1 - lr * wd`` first.

    Same arguments as :class:`Adam`; ``weight_decay`` defaults to 0.01.
    """

    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, clip_norm=None):
        super().__init__(lr, betas, eps, weight_decay, clip_norm)


class RMSpropState(NamedTuple):
    count: int
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
    """

    _config_keys = ("lr", "alpha", "eps", "momentum", "centered", "weight_decay", "clip_norm")

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0,
                 clip_norm=None):
        super().__init__(lr, weight_decay, clip_norm)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.eps = _check_non_negative("eps", eps)
        self.momentum = _check_non_negative("momentum", momentum)
        self.centered = bool(centered)

    def init(self, params):
        xp = _namespace(None, params)
        return RMSpropState(0, xp.zeros_like(params), xp.zeros_like(params) if self.momentum else None,
                            xp.zeros_like(params) if self.centered else None)

    def update(self, grads, state, params, xp=None, lr=None):
        xp = _namespace(xp, params)
        alpha = self.alpha
        lr = self.learning_rate(state.count) if lr is None else lr
        grads = self._clip(xp, grads)
        if self.weight_decay:
            grads = grads + self.weight_decay * params
        square_avg = alpha * state.square_avg + (1.0 - alpha) * (grads * grads)
        grad_avg = None
        if self.centered:
            grad_avg = state.grad_avg + (1.0 - alpha) * (grads - state.grad_avg)
            avg = xp.sqrt(square_avg - grad_avg * grad_avg) + self.eps
        else:
            avg = xp.sqrt(square_avg) + self.eps
        buffer = None
        if self.momentum:
            buffer = self.momentum * state.momentum_buffer + grads / avg
            params = params - lr * buffer
        else:
            params = params - lr * grads / avg
        return params, RMSpropState(state.count + 1, square_avg, buffer, grad_avg)


OPTIMIZER_TYPES = {cls.__name__: cls for cls in (SGD, Adam, AdamW, RMSprop)}
