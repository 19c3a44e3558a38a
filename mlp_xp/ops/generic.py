"""The Array API reference of the operations a training step is written in.

The vocabulary (:class:`GenericOps`' methods): ``linear`` and ``linear_backward`` (Linear
layers), ``relu_backward``, ``cross_entropy`` and ``binary_cross_entropy`` (the losses' value
and gradient), ``dropout_keep`` and ``dropout_multiplier`` (Dropout), the guard's pieces, and
``optimizer_update`` (each optimizer's rule, frozen by the guard). A backend overrides any of
them (:mod:`mlp_xp.ops`); layers and losses without Ops use the same functions of ``xp``.

Nothing here imports numpy or cupy, writes an array in place or reads a value on the host:
these methods run on any Array API namespace and device, and under ``jax.jit``.

Randomness is counter-based: a dropout mask is a hash of (key, element index), so it needs
no generator state on the device, is reproducible from the model seed and the step number,
and is the same on every backend that runs this code (numpy and array_api_strict bitwise).
"""

from __future__ import annotations

import math

from .. import _math

__all__ = ["GenericOps", "mix32", "dropout_key", "linear", "linear_backward", "dropout_multiplier",
           "softmax_cross_entropy", "sigmoid_cross_entropy"]

_MASK = 0xFFFFFFFF
# multipliers of the "lowbias32" integer hash (Chris Wellons, hash-prospector)
_M1, _M2 = 0x7FEB352D, 0x846CA68B
_GOLDEN = 0x9E3779B9

#: optimizer state that accumulates squared gradients: once inf, every later update of those
#: weights divides by inf, so an overflow there is a failure even though the weights stay finite
SQUARED_STATE = ("exp_avg_sq", "square_avg")


def mix32(value, c=int):
    """lowbias32: a bijection of 32-bit integers with good avalanche, on a host int or (with
    ``c`` making constants of its dtype) a uint32 array."""
    mask = c(_MASK)
    value = value & mask
    value = value ^ (value >> c(16))
    value = (value * c(_M1)) & mask
    value = value ^ (value >> c(15))
    value = (value * c(_M2)) & mask
    return value ^ (value >> c(16))


def dropout_key(seed_key: int, step, layer: int, c=int):
    """The 32-bit key of one Dropout layer's mask at one training step: host arithmetic on a
    host ``step``, or array arithmetic on a traced uint32 ``step`` (``c``: its constants)."""
    salt = (layer * 0x632BE5AB) & _MASK
    return mix32(c(seed_key) ^ mix32((step * c(_GOLDEN) + c(salt)) & c(_MASK), c), c)


# ---------------------------------------------------------------------- the reference math
# (functions of the namespace, so layers and losses use them without Ops too: mixed precision,
# a ForwardContext built by hand)


def linear(xp, x, weight, bias=None, matmul=None):
    """``x @ weight (+ bias)``; ``matmul`` replaces ``xp.matmul`` (a precision's product)."""
    y = (matmul or xp.matmul)(x, weight)
    return y if bias is None else y + bias


def linear_backward(xp, x, weight, dy, bias=True, need_input_grad=True, matmul=None):
    """(``dy @ weight.T`` or None, {"weight": ``x.T @ dy``, "bias": column sums of ``dy``})."""
    matmul = matmul or xp.matmul
    grads = {"weight": matmul(x.T, dy)}
    if bias:
        grads["bias"] = xp.sum(dy, axis=0)
    return (matmul(dy, weight.T) if need_input_grad else None), grads


def dropout_multiplier(xp, keep, p, dtype):
    """What Dropout multiplies by: ``1 / (1 - p)`` where the boolean ``keep``, else 0."""
    return xp.astype(keep, dtype) * (1.0 / (1.0 - p))


def softmax_cross_entropy(xp, output, target, label_smoothing=0.0, classes_row=None):
    """Mean softmax cross-entropy of logits ``output`` (batch, classes) and its gradient
    ``(softmax - target) / batch``, by log-sum-exp. ``target``: integer labels (batch,) or class
    probabilities (batch, classes); ``classes_row``: ``arange(classes)`` shaped (1, classes) in
    the labels' dtype, if the caller keeps one."""
    target = _target_distribution(xp, output, target, label_smoothing, classes_row)
    log_p = _math.log_softmax(xp, output)
    batch = output.shape[0]
    # (the sum over -batch: bitwise -(sum / batch), one operation fewer)
    return xp.sum(target * log_p) / -batch, (xp.exp(log_p) - target) / batch


def _target_distribution(xp, output, target, label_smoothing=0.0, classes_row=None):
    classes = output.shape[-1]
    if target.ndim == 1:  # integer labels -> one-hot, built per batch
        if classes_row is None:
            try:
                device = target.device
            except AttributeError:  # a JAX tracer (under jax.jit) has none
                import array_api_compat

                device = array_api_compat.device(target)
            classes_row = xp.reshape(xp.arange(classes, dtype=target.dtype, device=device), (1, -1))
        target = xp.astype(xp.reshape(target, (-1, 1)) == classes_row, output.dtype)
    if label_smoothing:
        target = (1.0 - label_smoothing) * target + label_smoothing / classes
    return target


def sigmoid_cross_entropy(xp, output, target):
    """Mean sigmoid cross-entropy ``softplus(z) - y z`` of logits ``output`` and targets in
    [0, 1] shaped like it, and its gradient ``(sigmoid(z) - y) / count``. ``exp(-|z|)`` is taken
    once for both (the values of :func:`mlp_xp._math.softplus` and :func:`~mlp_xp._math.sigmoid`,
    bitwise)."""
    e = xp.exp(-xp.abs(output))
    count = output.shape[0] * output.shape[1]
    loss = xp.sum(xp.maximum(output, 0.0) + xp.log1p(e) - target * output) / count
    s = 1.0 / (1.0 + e)
    return loss, (xp.where(output >= 0, s, e * s) - target) / count


class GenericOps:
    """Reference implementations, for one namespace and device.

    Attributes:
        xp, device: the namespace and device the arrays live on.
        mutable: False: nothing is written in place, the step is a pure function.
        host_flags: False: finiteness flags are device arrays, read only at a sync.
    """

    name = "generic"
    mutable = False
    host_flags = False

    def __init__(self, xp, device=None):
        import array_api_compat

        self.xp, self.device = xp, device
        self._constants = {}  # arrays made once per Ops (see _constant)
        # capabilities: torch has no uint32 shifts (hash in int64, masked to 32 bits); JAX takes
        # no Python int above int32's range next to a uint32 array (constants become uint32)
        self._wide = array_api_compat.is_torch_namespace(xp)
        jax = array_api_compat.is_jax_namespace(xp)
        self._c = (lambda value: xp.asarray(value, dtype=xp.uint32)) if jax else int
        self._cache = not jax  # under jax.jit an array kept between calls would leak a tracer; XLA folds it
        self._int = xp.int32 if jax else xp.int64  # (JAX has no int64 without x64)

    def __repr__(self):
        return f"{type(self).__name__}()"

    # ------------------------------------------------------------------ randomness

    def _element_indices(self, start, shape):
        """uint32 element numbers start, start+1, ... shaped like ``shape`` (built once per shape:
        a constant, so not a per-step operation)."""
        xp = self.xp
        dtype = xp.int64 if self._wide else xp.uint32
        return self._constant(("indices", start, shape), lambda: xp.reshape(
            xp.arange(start, start + math.prod(shape), dtype=dtype, device=self.device), shape))

    def dropout_keep(self, key, shape, p, start=0):
        """Boolean mask, True with probability ``1 - p`` per element, from a hash of
        (``key``, element index); ``start`` numbers the first element (a shard of a larger batch
        draws the mask the whole batch would). ``key`` is a host int or a 0-d uint32 array."""
        c = self._c
        h = self._element_indices(start, tuple(shape)) ^ (c(key) if isinstance(key, int) else key)
        h = h * c(_M1)
        if self._wide:
            h = h & _MASK
        h = h ^ (h >> c(15))
        h = h * c(_M2)
        if self._wide:
            h = h & _MASK
        return h >= c(min(int(round(p * 4294967296.0)), _MASK))

    def _constant(self, key, make):
        """``make()``, kept for later calls where that is safe (not under ``jax.jit``, where XLA
        folds constants itself and a kept array would leak a tracer)."""
        if not self._cache:
            return make()
        value = self._constants.get(key)
        if value is None:
            if len(self._constants) > 16:
                self._constants.clear()
            value = self._constants[key] = make()
        return value

    def dropout_multiplier(self, keep, p, dtype):
        """What Dropout multiplies by (:func:`dropout_multiplier`), as one ``where`` on two 0-d
        constants kept between steps: the same values, one operation fewer."""
        xp = self.xp
        if not self._cache:
            return dropout_multiplier(xp, keep, p, dtype)
        scale, zero = self._constant(("dropout", p, dtype), lambda: (
            xp.asarray(1.0 / (1.0 - p), dtype=dtype, device=self.device),
            xp.zeros((), dtype=dtype, device=self.device)))
        return xp.where(keep, scale, zero)

    # ------------------------------------------------------------------ layer pieces

    def linear(self, x, weight, bias=None, matmul=None):
        """A Linear layer's forward pass, ``x @ weight (+ bias)``."""
        return linear(self.xp, x, weight, bias, matmul)

    def linear_backward(self, x, weight, dy, bias=True, need_input_grad=True, out=None, matmul=None):
        """Its backward pass: (input gradient or None, {"weight": ..., "bias": ...}). ``out``:
        views of the model's flat gradient that mutable Ops write these gradients into."""
        return linear_backward(self.xp, x, weight, dy, bias, need_input_grad, matmul)

    def relu_backward(self, x, dy):
        """``dy`` where ``x > 0``, else 0 (a multiply by the 0/1 mask is several times faster than
        ``where`` on numpy)."""
        return dy * self.xp.astype(x > 0, dy.dtype)

    # ------------------------------------------------------------------ losses

    def cross_entropy(self, output, target, label_smoothing=0.0):
        """:class:`~mlp_xp.losses.CrossEntropy`'s (loss, gradient): :func:`softmax_cross_entropy`,
        with the labels' one-hot row ``arange(classes)`` kept between steps (a constant)."""
        classes_row = None
        if target.ndim == 1 and self._cache:
            classes = output.shape[-1]
            classes_row = self._constant(("classes", classes, target.dtype), lambda: self.xp.reshape(
                self.xp.arange(classes, dtype=target.dtype, device=self.device), (1, -1)))
        return softmax_cross_entropy(self.xp, output, target, label_smoothing, classes_row)

    def binary_cross_entropy(self, output, target):
        """:class:`~mlp_xp.losses.BinaryCrossEntropy`'s (loss, gradient)."""
        return sigmoid_cross_entropy(self.xp, output, target)

    # ------------------------------------------------------------------ the guard

    def finite(self, value):
        """A 0-d boolean: ``value`` (a 0-d array) is finite."""
        return self.xp.isfinite(value)

    def all_finite(self, array):
        return self.xp.all(self.xp.isfinite(array))

    def below(self, array, limit):
        """Every ``|element| < limit`` (False for NaN)."""
        return self.xp.max(self.xp.abs(array)) < limit

    def both(self, a, b):
        return self.xp.logical_and(a, b)

    def select(self, ok, new, old):
        """``new`` where the 0-d flag ``ok`` is true, else ``old``."""
        return self.xp.where(ok, new, old)

    def count(self, ok, total):
        """``total + 1`` if ``ok`` else ``total`` (``total`` a 0-d integer array)."""
        return total + self.xp.astype(ok, total.dtype)

    def zero_count(self):
        return self.xp.zeros((), dtype=self._int, device=self.device)

    def true(self):
        return self.xp.ones((), dtype=self.xp.bool, device=self.device)

    # ------------------------------------------------------------------ optimizers

    def optimizer_update(self, optimizer, grads, state, params, ok, lr=None):
        """One update, frozen where ``ok`` (or the update itself) is not finite.

        Returns (params, state, ok): the new parameters and state if the flag holds, the given
        ones otherwise; ``ok`` also turns false when a squared-gradient state overflowed."""
        if lr is None:  # (a user's subclass may not take ``lr``)
            new_params, new_state = optimizer.update(grads, state, params, self.xp)
        else:
            new_params, new_state = optimizer.update(grads, state, params, self.xp, lr=lr)
        for field in SQUARED_STATE:
            value = getattr(new_state, field, None)
            if value is not None:
                ok = self.both(ok, self.xp.max(value) < math.inf)  # NaN compares false too
        frozen = [value if field == "count" or value is None or getattr(state, field) is None
                  else self.select(ok, value, getattr(state, field))
                  for field, value in zip(new_state._fields, new_state)]
        return self.select(ok, new_params, params), type(new_state)(*frozen), ok

    def prepare(self, params):
        """Parameters this Ops may train in (the fast paths copy them into buffers of their own)."""
        return params
