"""The Array API reference of the operations a training step is written in.

The vocabulary (:class:`GenericOps`' methods): ``linear`` and ``linear_backward`` (Linear
layers), ``relu_backward``, ``cross_entropy`` and ``binary_cross_entropy`` (the losses' value
and gradient), ``dropout_keep`` and ``dropout_multiplier`` (Dropout), the guard's pieces, the
step's numbers (``counter``, ``step_counter``, ``as_scalar``, ``power``, ``constant``,
``step_mix``, ``layer_keys``) and the optimizer primitives ``adam``, ``sgd`` and ``rmsprop`` (each
rule once, guarded, taking arrays and 0-d scalars). A backend overrides any of them
(:mod:`mlp_xp.ops`, ops/README.md); a loss's own ``value_and_grad`` uses the module's functions
of ``xp``.

Nothing here imports numpy or cupy or reads a value on the host: these methods run on any
Array API namespace and device, and under ``jax.jit``. The optimizer primitives write the
parameters and their state in place (``__setitem__``), except where the namespace's arrays
cannot be written (JAX), where they return new arrays and the step stays a pure function.

Randomness is counter-based: a dropout mask is a hash of (key, element index), so it needs
no generator state on the device, is reproducible from the model seed and the step number,
and is the same on every backend that runs this code (numpy and array_api_strict bitwise).
"""

from __future__ import annotations

import math

from .. import _math

__all__ = ["GenericOps", "mix32", "layer_key", "target_distribution", "linear", "linear_backward", "dropout_multiplier",
           "softmax_cross_entropy", "sigmoid_cross_entropy"]

MASK32 = 0xFFFFFFFF
# multipliers of the "lowbias32" integer hash (Chris Wellons, hash-prospector)
HASH_M1, HASH_M2 = 0x7FEB352D, 0x846CA68B
GOLDEN32 = 0x9E3779B9


def mix32(value, c=int):
    """lowbias32: a bijection of 32-bit integers with good avalanche, on a host int or (with
    ``c`` making constants of its dtype) a uint32 array."""
    mask = c(MASK32)
    value = value & mask
    value = value ^ (value >> c(16))
    value = (value * c(HASH_M1)) & mask
    value = value ^ (value >> c(15))
    value = (value * c(HASH_M2)) & mask
    return value ^ (value >> c(16))


def layer_key(seed_key: int, layer: int) -> int:
    """The constant 32-bit key of the ``layer``-th Dropout layer of a model (host arithmetic)."""
    return mix32(seed_key ^ mix32((layer * 0x632BE5AB) & MASK32))


# ---------------------------------------------------------------------- the reference math
# (functions of the namespace: GenericOps' methods, and a loss's own ``value_and_grad``)


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
    target = target_distribution(xp, output, target, label_smoothing, classes_row)
    log_p = _math.log_softmax(xp, output)
    batch = output.shape[0]
    # (the sum over -batch: bitwise -(sum / batch), one operation fewer)
    return xp.sum(target * log_p) / -batch, (xp.exp(log_p) - target) / batch


def target_distribution(xp, output, target, label_smoothing=0.0, classes_row=None):
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
        mutable: False: layers return their gradients (numpy's Ops write them into the
            model's flat gradient buffer instead).
        host_flags: False: finiteness flags and counts are device arrays, read only at a sync.
        in_place: the optimizer primitives write parameters and state in place (every
            namespace but JAX's, whose arrays cannot be written).
        scalar_dtype: what the step's scalars are computed in (float64 where available).
    """

    name = "generic"
    mutable = False
    host_flags = False

    def __init__(self, xp, device=None, in_place=None, matmul=None):
        import array_api_compat

        self.xp, self.device = xp, device
        #: the matrix product of Linear layers: ``xp.matmul``, or a precision's (TF32 rounding,
        #: float32 accumulation of float16 inputs: :mod:`mlp_xp.train.precision`)
        self.matmul = matmul
        self._constants = {}  # arrays made once per Ops (see _constant)
        # capabilities: torch has no uint32 shifts (hash in int64, masked to 32 bits); JAX takes
        # no Python int above int32's range next to a uint32 array (constants become uint32)
        self._wide = array_api_compat.is_torch_namespace(xp)
        jax = array_api_compat.is_jax_namespace(xp)
        self._c = (lambda value: xp.asarray(value, dtype=xp.uint32)) if jax else int
        self._cache = not jax  # under jax.jit an array kept between calls would leak a tracer; XLA folds it
        self._int = xp.int32 if jax else xp.int64  # (JAX has no int64 without x64)
        self.in_place = not jax if in_place is None else in_place
        try:  # float64 where this namespace and device have it (not JAX without x64, say)
            wide = "float64" in xp.__array_namespace_info__().dtypes(device=device, kind="real floating")
        except (AttributeError, TypeError):
            wide = True
        self.scalar_dtype = xp.float64 if wide else xp.float32

    def __repr__(self):
        return f"{type(self).__name__}()" if self.matmul is None else f"{type(self).__name__}(matmul={self.matmul!r})"

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
        h = h * c(HASH_M1)
        if self._wide:
            h = h & MASK32
        h = h ^ (h >> c(15))
        h = h * c(HASH_M2)
        if self._wide:
            h = h & MASK32
        return h >= c(min(int(round(p * 4294967296.0)), MASK32))

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
        device = self._device_of(keep)
        scale, zero = self._constant(("dropout", p, dtype, device), lambda: (
            xp.asarray(1.0 / (1.0 - p), dtype=dtype, device=device), xp.zeros((), dtype=dtype, device=device)))
        return xp.where(keep, scale, zero)

    # ------------------------------------------------------------------ layer pieces

    def linear(self, x, weight, bias=None):
        """A Linear layer's forward pass, ``x @ weight (+ bias)``."""
        return linear(self.xp, x, weight, bias, self.matmul)

    def linear_backward(self, x, weight, dy, bias=True, need_input_grad=True, out=None):
        """Its backward pass: (input gradient or None, {"weight": ..., "bias": ...}). ``out``:
        views of the model's flat gradient that mutable Ops write these gradients into."""
        return linear_backward(self.xp, x, weight, dy, bias, need_input_grad, self.matmul)

    def relu_backward(self, x, dy):
        """``dy`` where ``x > 0``, else 0 (as torch's ``threshold_backward``: no NaN of ``dy``
        passes a closed unit)."""
        xp, device = self.xp, self._device_of(dy)
        return xp.where(x > 0, dy, self._constant(("zero", dy.dtype, device), lambda: xp.zeros(
            (), dtype=dy.dtype, device=device)))

    def _device_of(self, array):
        """The Ops' device, or (Ops made without one, for a ForwardContext built by hand) the array's."""
        if self.device is not None:
            return self.device
        import array_api_compat

        return array_api_compat.device(array)

    # ------------------------------------------------------------------ losses

    def cross_entropy(self, output, target, label_smoothing=0.0):
        """:class:`~mlp_xp.nn.losses.CrossEntropy`'s (loss, gradient): :func:`softmax_cross_entropy`,
        with the labels' one-hot row ``arange(classes)`` kept between steps (a constant)."""
        classes_row = None
        if target.ndim == 1 and self._cache:
            classes = output.shape[-1]
            classes_row = self._constant(("classes", classes, target.dtype), lambda: self.xp.reshape(
                self.xp.arange(classes, dtype=target.dtype, device=self.device), (1, -1)))
        return softmax_cross_entropy(self.xp, output, target, label_smoothing, classes_row)

    def binary_cross_entropy(self, output, target):
        """:class:`~mlp_xp.nn.losses.BinaryCrossEntropy`'s (loss, gradient)."""
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

    def true(self):
        return self.xp.ones((), dtype=self.xp.bool, device=self.device)

    # ------------------------------------------------------------------ the step's numbers

    def counter(self, value):
        """A step or update count as the step keeps it: a 0-d integer array on the device
        (``value`` an int, or such an array already)."""
        if isinstance(value, int):
            return self.xp.asarray(value, dtype=self._int, device=self.device)
        return value

    def constant(self, value: float, dtype):
        """A 0-d array of ``value``, made once per Ops (a number that does not change per step)."""
        xp = self.xp
        return self._constant(("scalar", value, dtype), lambda: xp.asarray(value, dtype=dtype, device=self.device))

    def step_counter(self, value):
        """The training step (the Dropout masks' counter) as the step keeps it: a 0-d uint32
        array on the device (int64 where the namespace has no uint32 arithmetic)."""
        if isinstance(value, int):
            return self.xp.asarray(value, dtype=self.xp.int64 if self._wide else self.xp.uint32, device=self.device)
        return value

    def as_scalar(self, count):
        """A count as the floating-point 0-d array the step's scalars are computed in
        (float64 where the namespace has it, so the arithmetic is the host's)."""
        return self.xp.astype(self.xp.asarray(count), self.scalar_dtype)

    def power(self, base, exponent):
        """``base ** exponent`` for a host number ``base`` (or a tuple of them: then a vector of
        their powers, in one operation) and a 0-d ``exponent``, always through the namespace's
        ``pow`` (numpy's power ufunc and the C library's ``pow``, which a numpy scalar would use,
        differ in the last bit for some exponents)."""
        xp = self.xp
        return xp.pow(self._constant(("base", base, self.scalar_dtype), lambda: xp.asarray(
            base, dtype=self.scalar_dtype, device=self.device)), exponent)

    def step_mix(self, step):
        """``step * 0x9E3779B9 mod 2**32``: what a training step adds to every Dropout layer's key
        (a host int for a host ``step``, else a 0-d array)."""
        if isinstance(step, int):
            return (step * GOLDEN32) & MASK32
        mixed = self.xp.multiply(step, self._c(GOLDEN32))  # (a ufunc: numpy scalars would warn on the wrap)
        return mixed & MASK32 if self._wide else mixed

    def layer_keys(self, mix, layer_keys: tuple):
        """The keys of a model's Dropout layers' masks at one step: their constant keys
        (:func:`layer_key`) xor the step's ``mix`` (:meth:`step_mix`), all in one operation
        (``keys[i]`` is the i-th layer's)."""
        if isinstance(mix, int):
            return [mix ^ key for key in layer_keys]
        xp = self.xp
        constants = self._constant(("layer keys", layer_keys), lambda: xp.asarray(
            layer_keys, dtype=xp.int64 if self._wide else xp.uint32, device=self.device))
        return mix ^ constants

    # ------------------------------------------------------------------ optimizer primitives
    # Each rule once: the arithmetic of torch.optim's single-tensor (foreach=False) updates, in
    # the same order, on the flat vectors; the optimizer (mlp_xp.optim) computes the scalars.
    # The update is guarded: it lands only where ``ok`` holds and the new parameters and
    # squared-gradient state are finite; then parameters and state are written in place (a
    # namespace whose arrays cannot be written, JAX, gets new arrays), else nothing changes.

    def adam(self, params, grads, exp_avg, exp_avg_sq, ok, *, step_size, beta1, beta2, eps, bias_correction2_sqrt,
             weight_decay=0.0, decay=None, grad_scale=None, undo=None, max_exp_avg_sq=None):
        """Adam / AdamW. ``step_size``: ``lr / (1 - beta1**t)``; ``bias_correction2_sqrt``:
        ``sqrt(1 - beta2**t)``; ``weight_decay``: L2 added to the gradient; ``decay``: the
        parameters' factor ``1 - lr * weight_decay`` (AdamW), or None; ``grad_scale``: the
        gradient's factor (the clip factor, negated to maximize), or None; ``undo``: an array
        shaped like ``params`` that the Ops may overwrite (the used-up gradient), to keep the old
        parameters in while it writes in place (numpy_ops); ``max_exp_avg_sq``: AMSGrad's running
        maximum of ``exp_avg_sq`` (the denominator uses it), or None. Returns (params, exp_avg,
        exp_avg_sq, max_exp_avg_sq, ok)."""
        xp = self.xp

        def rule(p, g, m, v, v_max=None):
            if grad_scale is not None:
                g = g * grad_scale
            if weight_decay:
                g = g + weight_decay * p
            if decay is not None:
                p = p * decay
            m = m + (1.0 - beta1) * (g - m)  # torch's lerp
            v = beta2 * v + (1.0 - beta2) * (g * g)
            if v_max is not None:  # AMSGrad, as torch: torch.maximum(v_max, v), then its square root
                v_max = xp.maximum(v_max, v)
            denom = xp.sqrt(v if v_max is None else v_max) / bias_correction2_sqrt + eps
            return p - step_size * m / denom, m, v, v_max

        (params, exp_avg, exp_avg_sq, max_exp_avg_sq), ok = self._guarded(
            rule, ok, params, grads, (exp_avg, exp_avg_sq, max_exp_avg_sq), (2,))
        return params, exp_avg, exp_avg_sq, max_exp_avg_sq, ok

    def sgd(self, params, grads, momentum_buffer, ok, *, lr, momentum=0.0, dampening=None, nesterov=False,
            weight_decay=0.0, grad_scale=None, undo=None):
        """SGD with optional (Nesterov) momentum. ``momentum_buffer``: zeros before the first
        update (or None without momentum); ``dampening``: the new gradient's factor in the
        buffer, ``1 - dampening`` (1 on the first update), or None for 1. Returns (params,
        momentum_buffer, ok)."""

        def rule(p, g, buffer):
            if grad_scale is not None:
                g = g * grad_scale
            if weight_decay:
                g = g + weight_decay * p
            if buffer is not None:
                buffer = momentum * buffer + (g if dampening is None else dampening * g)
                g = g + momentum * buffer if nesterov else buffer
            return p - lr * g, buffer

        (params, momentum_buffer), ok = self._guarded(rule, ok, params, grads, (momentum_buffer,))
        return params, momentum_buffer, ok

    def rmsprop(self, params, grads, square_avg, momentum_buffer, grad_avg, ok, *, lr, alpha, eps, momentum=0.0,
                weight_decay=0.0, grad_scale=None, undo=None):
        """RMSprop; ``momentum_buffer`` and ``grad_avg`` (centered) may be None. Returns (params,
        square_avg, momentum_buffer, grad_avg, ok)."""
        xp = self.xp

        def rule(p, g, v, buffer, g_avg):
            if grad_scale is not None:
                g = g * grad_scale
            if weight_decay:
                g = g + weight_decay * p
            v = alpha * v + (1.0 - alpha) * (g * g)
            if g_avg is not None:
                g_avg = g_avg + (1.0 - alpha) * (g - g_avg)
                avg = xp.sqrt(v - g_avg * g_avg) + eps
            else:
                avg = xp.sqrt(v) + eps
            if buffer is not None:
                buffer = momentum * buffer + g / avg
                return p - lr * buffer, v, buffer, g_avg
            return p - lr * g / avg, v, buffer, g_avg

        (params, square_avg, momentum_buffer, grad_avg), ok = self._guarded(
            rule, ok, params, grads, (square_avg, momentum_buffer, grad_avg), (1,))
        return params, square_avg, momentum_buffer, grad_avg, ok

    #: False: the primitives return what the update gives, landed or not (never in place)
    guarded = True

    #: a guarded in-place update of a vector up to this long is one pass; a longer one goes in
    #: pieces (checked in one pass, written in another), so that its temporaries stay near a
    #: sixteenth of the vector each, about a third of P in all
    chunk_size = 1 << 20
    pieces = 16

    def _guarded(self, rule, ok, params, grads, states, squared=()):
        """Apply ``rule(p, g, *states) -> (p, *states)`` where it lands (see above).
        ``squared``: positions (in the result) of squared-gradient state, whose overflow fails
        the update. Returns ((params, *states), ok)."""
        xp = self.xp
        arrays = (params, *states)
        size = params.shape[0]
        if not self.guarded:  # (what the update would give: the training loop's diagnosis)
            return tuple(rule(params, grads, *states)), ok
        if not self.in_place or size <= self.chunk_size:
            new = rule(params, grads, *states)
            ok = self.both(ok, self._lands(new, squared))
            if not self.in_place:
                return tuple(old if old is None else xp.where(ok, value, old) for old, value in zip(arrays, new)), ok
            for old, value in zip(arrays, new):
                if old is not None:
                    old[...] = xp.where(ok, value, old)
            return arrays, ok

        def piece(start, stop):
            return rule(*(array if array is None else array[start:stop] for array in (params, grads, *states)))

        step = max(self.chunk_size // 4, -(-size // self.pieces))
        pieces = [(start, min(start + step, size)) for start in range(0, size, step)]
        for start, stop in pieces:  # first pass: does the whole update land?
            ok = self.both(ok, self._lands(piece(start, stop), squared))
        for start, stop in pieces:  # second: write it where it does
            for old, value in zip(arrays, piece(start, stop)):
                if old is not None:
                    old[start:stop] = xp.where(ok, value, old[start:stop])
        return arrays, ok

    def _lands(self, new, squared):
        """The new parameters and squared-gradient state are finite (0-d bool): one check of
        their sum, which is finite exactly when both are, unless both lie beyond half the
        dtype's range (a parameter there is lost anyway)."""
        total = new[0]
        for index in squared:
            total = total + new[index]
        return self.all_finite(total)
