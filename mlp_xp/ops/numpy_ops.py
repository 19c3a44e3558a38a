"""numpy's Ops: in-place ufuncs with ``out=`` and preallocated buffers (numba fuses more, see
:mod:`mlp_xp.ops.numba_ops`).

Each optimizer update here performs exactly the operations of its generic counterpart in
:mod:`mlp_xp.optim`, in the same order and with the same scalars, writing into preallocated
buffers instead of allocating a new array per operation. Results are therefore bitwise identical
to :class:`~mlp_xp.ops.generic.GenericOps` (tests/test_kernels.py).

On the CPU a finiteness flag costs nothing to read, so these Ops keep their flags as host
booleans (``host_flags``): a step whose loss is not finite skips its update outright rather than
computing it and selecting the old values.
"""

from __future__ import annotations

import math

from ..optim import SGD, Adam, AdamState, AdamW, SGDState
from .generic import GenericOps


def round_to_tf32_bits(a):
    """numpy float32 rounded to TF32 with integer arithmetic on its bits (round half to even):
    bitwise the generic :func:`mlp_xp.precision.round_to_tf32`, several times faster."""
    import numpy

    bits = numpy.ascontiguousarray(a, dtype=numpy.float32).view(numpy.uint32)
    rounded = (bits + numpy.uint32(0xFFF) + ((bits >> numpy.uint32(13)) & numpy.uint32(1))) & numpy.uint32(0xFFFFE000)
    return rounded.view(numpy.float32)


class UfuncOps(GenericOps):
    """Buffers-and-``out=`` versions of the hot operations, for numpy arrays."""

    name = "ufunc"
    mutable = True
    host_flags = True

    def __init__(self, xp=None, device=None):
        import numpy

        super().__init__(xp if xp is not None else numpy, device)
        self.module = numpy
        self._updates = {}
        self._buffers = None

    # -- flags are host booleans: reading a numpy value is free
    def finite(self, value):
        return math.isfinite(value)  # a 0-d numpy value: the same answer, several times faster

    def all_finite(self, array):
        return bool(self.module.all(self.module.isfinite(array)))

    def below(self, array, limit):
        return bool(self.module.max(self.module.abs(array)) < limit)

    def both(self, a, b):
        return bool(a) and bool(b)

    def select(self, ok, new, old):
        return new if ok else old

    def count(self, ok, total):
        return total + int(bool(ok))

    def zero_count(self):
        return 0

    def true(self):
        return True

    # -- layers: the generic math with numpy's own functions, gradients written into the model's
    # flat gradient buffer (``out``) where given: no temporary, no copy
    def linear(self, x, weight, bias=None, matmul=None):
        if matmul is not None:
            return super().linear(x, weight, bias, matmul)
        y = self.module.matmul(x, weight)
        if bias is not None:
            y += bias  # (y is new: adding in place computes the same values without a second array)
        return y

    def linear_backward(self, x, weight, dy, bias=True, need_input_grad=True, out=None, matmul=None):
        if matmul is not None:
            return super().linear_backward(x, weight, dy, bias, need_input_grad, out, matmul)
        np = self.module
        grads = {"weight": np.matmul(x.T, dy, out=None if out is None else out["weight"])}
        if bias:
            grads["bias"] = np.sum(dy, axis=0, out=None if out is None else out["bias"])
        return (np.matmul(dy, weight.T) if need_input_grad else None), grads

    def copy_into(self, destination, source):
        self.module.copyto(destination, source)

    # -- optimizers
    def prepare(self, params):
        """Train in two parameter buffers of our own, alternately: an update writes the buffer that
        does not hold the current parameters, so the parameters before it stay intact (for the
        non-finite guard) and nothing is allocated per step. Never writes into an array the
        caller may still hold."""
        params = self.module.array(params, copy=True)
        self._buffers = (params, self.module.empty_like(params))
        return params

    def optimizer_update(self, optimizer, grads, state, params, ok, lr=None):
        if not ok:  # a known-bad step: nothing is computed, nothing changes
            return params, state, False
        update = self._updates.get(id(optimizer))
        if update is None or update[0] is not optimizer:
            update = self._updates[id(optimizer)] = (optimizer, self.optimizer(optimizer))
        kernel = update[1]
        buffers = self._buffers
        if kernel is None or buffers is None or buffers[0].shape != params.shape or buffers[0].dtype != params.dtype:
            return super().optimizer_update(optimizer, grads, state, params, ok, lr)
        # write into whichever buffer ``params`` is not (after a restore both may be "spare")
        out = buffers[1] if params is buffers[0] else buffers[0]
        state, overflowed = kernel(grads, state, params, out, lr)
        if overflowed is not None:  # the moments are spoiled (fit resets them); the weights are not
            return params, state, False
        return out, state, True

    def optimizer(self, optimizer):
        """An in-place update for ``optimizer``, or None if it has no fast path here.

        The update has the signature ``update(grads, state, params, out, lr) -> (state,
        overflowed)``: it writes the new parameters into ``out`` (never into ``params``),
        updates the state's buffers in place, and names the squared-gradient state field that
        became inf or NaN (else None). ``grads`` may be overwritten.
        """
        # exact types: a user subclass may change the update rule
        if type(optimizer) in (Adam, AdamW):
            return _UfuncAdam(self.module, optimizer).update
        if type(optimizer) is SGD:
            return _UfuncSGD(self.module, optimizer).update
        return None


class _UfuncUpdate:
    """An optimizer's in-place update, with one scratch buffer kept between steps."""

    def __init__(self, module, optimizer):
        self.module, self.optimizer = module, optimizer
        self._scratch = None

    def scratch(self, params):
        if self._scratch is None or self._scratch.shape != params.shape or self._scratch.dtype != params.dtype:
            self._scratch = self.module.empty_like(params)
        return self._scratch


class _UfuncAdam(_UfuncUpdate):
    def update(self, grads, state, params, out, lr=None):
        np, opt = self.module, self.optimizer
        scratch = self.scratch(params)
        beta1, beta2 = opt.betas
        lr = opt.learning_rate(state.count) if lr is None else lr
        step = state.count + 1
        grads = opt._clip(np, grads)  # the generic clip: the module's sqrt/sum/minimum serve as xp
        source = params
        if opt.weight_decay:
            if opt._decoupled:  # params * (1 - lr * wd)
                np.multiply(params, 1.0 - lr * opt.weight_decay, out=out)
                source = out
            else:  # grads + wd * params
                np.multiply(params, opt.weight_decay, out=scratch)
                grads = np.add(grads, scratch, out=grads)
        m, v = state.exp_avg, state.exp_avg_sq
        # m + (1 - b1) * (g - m)
        np.subtract(grads, m, out=scratch)
        np.multiply(scratch, 1.0 - beta1, out=scratch)
        np.add(m, scratch, out=m)
        # b2 * v + (1 - b2) * (g * g)
        np.multiply(grads, grads, out=scratch)
        np.multiply(scratch, 1.0 - beta2, out=scratch)
        np.multiply(v, beta2, out=v)
        np.add(v, scratch, out=v)
        # sqrt(v) / sqrt(1 - b2^t) + eps
        np.sqrt(v, out=scratch)
        np.divide(scratch, (1.0 - beta2 ** step) ** 0.5, out=scratch)
        np.add(scratch, opt.eps, out=scratch)
        # params - step_size * m / denom
        update = np.multiply(m, lr / (1.0 - beta1 ** step), out=grads)
        np.divide(update, scratch, out=update)
        np.subtract(source, update, out=out)
        return AdamState(step, m, v), None if np.max(v) < np.inf else "exp_avg_sq"


class _UfuncSGD(_UfuncUpdate):
    def update(self, grads, state, params, out, lr=None):
        np, opt = self.module, self.optimizer
        lr = opt.learning_rate(state.count) if lr is None else lr
        grads = opt._clip(np, grads)
        if opt.weight_decay:
            scratch = self.scratch(params)
            np.multiply(params, opt.weight_decay, out=scratch)
            np.add(grads, scratch, out=grads)
        buffer = None
        if opt.momentum:
            if state.momentum_buffer is None:
                buffer = grads.copy()
            else:
                buffer = state.momentum_buffer
                np.multiply(buffer, opt.momentum, out=buffer)
                np.add(buffer, grads, out=buffer)
            if opt.nesterov:
                np.multiply(buffer, opt.momentum, out=out)
                grads = np.add(grads, out, out=grads)
            else:
                grads = buffer
        np.multiply(grads, lr, out=out)
        np.subtract(params, out, out=out)
        return SGDState(state.count + 1, buffer), None
