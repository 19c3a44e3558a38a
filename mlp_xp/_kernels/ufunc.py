"""In-place fast paths for array libraries whose ufuncs take ``out=`` (numpy; cupy has the same API).

Each optimizer update here performs exactly the operations of its generic counterpart in
:mod:`mlp_xp.optim`, in the same order and with the same scalars, writing into preallocated
buffers instead of allocating a new array per operation. Results are therefore bitwise identical.
"""

from __future__ import annotations

from ..optim import SGD, Adam, AdamState, AdamW, SGDState


def round_to_tf32_bits(a):
    """numpy float32 rounded to TF32 with integer arithmetic on its bits (round half to even):
    bitwise the generic :func:`mlp_xp.precision.round_to_tf32`, several times faster."""
    import numpy

    bits = numpy.ascontiguousarray(a, dtype=numpy.float32).view(numpy.uint32)
    rounded = (bits + numpy.uint32(0xFFF) + ((bits >> numpy.uint32(13)) & numpy.uint32(1))) & numpy.uint32(0xFFFFE000)
    return rounded.view(numpy.float32)


class UfuncKernels:
    """Buffers-and-``out=`` versions of the hot operations for one array module."""

    name = "ufunc"

    def __init__(self, module):
        self.module = module

    # -- layer helpers: write a result into a preallocated gradient view
    def matmul(self, a, b, out):
        return self.module.matmul(a, b, out=out)

    def sum_rows(self, x, out):
        return self.module.sum(x, axis=0, out=out)

    def copy_into(self, destination, source):
        self.module.copyto(destination, source)

    # -- optimizers
    def optimizer(self, optimizer):
        """An in-place update for ``optimizer``, or None if it has no fast path here.

        The update has the signature ``update(grads, state, params, out) -> (state,
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
    def update(self, grads, state, params, out):
        np, opt = self.module, self.optimizer
        scratch = self.scratch(params)
        beta1, beta2 = opt.betas
        lr = opt.learning_rate(state.count)
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
    def update(self, grads, state, params, out):
        np, opt = self.module, self.optimizer
        lr = opt.learning_rate(state.count)
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
