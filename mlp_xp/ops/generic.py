"""The Array API reference of every operation a training step needs beyond layer math.

Nothing here imports numpy or cupy, writes an array in place or reads a value on the host:
these methods run on any Array API namespace and device, and under ``jax.jit``.

Randomness is counter-based: a dropout mask is a hash of (key, element index), so it needs
no generator state on the device, is reproducible from the model seed and the step number,
and is the same on every backend that runs this code (numpy and array_api_strict bitwise).
"""

from __future__ import annotations

import math

__all__ = ["GenericOps", "mix32", "dropout_key"]

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
        self._indices = {}
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
        size = math.prod(shape)
        cached = self._indices.get((start, shape))
        if cached is None:
            xp = self.xp
            dtype = xp.int64 if self._wide else xp.uint32
            cached = xp.reshape(xp.arange(start, start + size, dtype=dtype, device=self.device), shape)
            if self._cache:
                if len(self._indices) > 16:
                    self._indices.clear()
                self._indices[(start, shape)] = cached
        return cached

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

    # ------------------------------------------------------------------ layer pieces

    def relu_backward(self, x, dy):
        """``dy`` where ``x > 0``, else 0 (a multiply by the 0/1 mask is several times faster than
        ``where`` on numpy)."""
        return dy * self.xp.astype(x > 0, dy.dtype)

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
