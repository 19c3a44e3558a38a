"""numpy's Ops: in-place ufuncs with ``out=`` (numba fuses more, see :mod:`mlp_xp.ops.numba_ops`).

The optimizer primitives here perform exactly the operations of their generic counterparts
(:mod:`mlp_xp.ops.generic`), in the same order and with the same scalars, writing into the
state's own arrays instead of allocating a new array per operation. Results are therefore
bitwise identical to :class:`~mlp_xp.ops.generic.GenericOps` (tests/test_kernels.py).

On the CPU a finiteness flag costs nothing to read, so these Ops keep their flags and counts
as host values (``host_flags``): a step whose loss is not finite skips its update outright
rather than computing it and selecting the old values. The update writes parameters and state
in place in one pass and keeps the old parameters in the ``undo`` array the step offers (its
gradient buffer, used up by then), so an update that turns out not finite puts the parameters
back without a standing copy of them; its moments are spoiled then, and the training loop
discards them (it raises, or stops, on such an update: skipping a batch cannot help).
"""

from __future__ import annotations

import math
import operator

from .generic import GenericOps


def round_to_tf32_bits(a):
    """numpy float32 rounded to TF32 with integer arithmetic on its bits (round half to even):
    bitwise the generic :func:`mlp_xp.train.precision.round_to_tf32`, several times faster."""
    import numpy

    bits = numpy.ascontiguousarray(a, dtype=numpy.float32).view(numpy.uint32)
    rounded = (bits + numpy.uint32(0xFFF) + ((bits >> numpy.uint32(13)) & numpy.uint32(1))) & numpy.uint32(0xFFFFE000)
    return rounded.view(numpy.float32)


class UfuncOps(GenericOps):
    """Buffers-and-``out=`` versions of the hot operations, for numpy arrays."""

    name = "ufunc"
    mutable = True
    host_flags = True
    #: has the lean step's pieces (bias_relu, shift_logits, log_probs, probs_grad): mlp_xp.train.lean
    lean = True

    def __init__(self, xp=None, device=None):
        import numpy

        super().__init__(xp if xp is not None else numpy, device)
        self.module = numpy
        self._scratch = None
        self._checked = ()
        self._checked_one_hot = None

    # -- flags and counts are host values: reading a numpy value is free
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

    def true(self):
        return True

    def counter(self, value):
        return int(value)

    step_counter = counter

    def constant(self, value, dtype):
        return value  # (a Python number: numpy casts it to the arrays' dtype)

    def as_scalar(self, count):
        # a 0-d array, not a Python float: numpy's power ufunc (what array_api_strict computes
        # with) and the C library's pow differ in the last bit for some counts
        return self.module.asarray(float(count))

    # -- layers: the generic math with numpy's own functions, gradients written into the model's
    # flat gradient buffer (``out``) where given: no temporary, no copy
    def linear(self, x, weight, bias=None):
        y = self.module.matmul(x, weight)
        if bias is not None:
            y += bias  # (y is new: adding in place computes the same values without a second array)
        return y

    def linear_backward(self, x, weight, dy, bias=True, need_input_grad=True, out=None):
        np = self.module
        grads = {"weight": np.matmul(x.T, dy, out=None if out is None else out["weight"])}
        if bias:
            grads["bias"] = np.sum(dy, axis=0, out=None if out is None else out["bias"])
        return (np.matmul(dy, weight.T) if need_input_grad else None), grads

    def copy_into(self, destination, source):
        self.module.copyto(destination, source)

    # -- the lean step's pieces (mlp_xp.train.lean): a Linear layer's bias and what follows it, and
    # softmax cross-entropy from labels, as the generic layers and loss compute them, in place where
    # the generic code makes a new array (numba's Ops fuse each into one pass)
    def bias_relu(self, h, bias):
        """``h += bias`` (a Linear layer's output, in place), then ``maximum(h, 0)`` (ReLU's)."""
        h += bias
        return self.module.maximum(h, 0.0)

    def shift_logits(self, z, bias, labels):
        """``z += bias``; the number of rows whose argmax is their label (Accuracy's count); then
        ``z -= max(z, axis=-1)`` in place (the shift of :func:`mlp_xp._math.log_softmax`)."""
        np = self.module
        z += bias
        correct = np.count_nonzero(np.argmax(z, axis=-1) == labels)
        np.subtract(z, np.max(z, axis=-1, keepdims=True), out=z)
        return correct

    def _one_hot(self, labels, like):
        kept = self._checked_one_hot
        if kept is not None and kept[0] is labels and kept[1].dtype == like.dtype and kept[1].shape == like.shape:
            return kept[1]
        np = self.module
        one_hot = (labels.reshape(-1, 1) == np.arange(like.shape[-1], dtype=labels.dtype).reshape(1, -1)).astype(
            like.dtype)
        self._checked_one_hot = (labels, one_hot)
        return one_hot

    def log_probs(self, shifted, log_sums, labels, out):
        """``shifted -= log_sums`` (log-softmax, in place), and ``out = one_hot(labels) * shifted``
        (the terms whose sum is the loss)."""
        shifted -= log_sums
        self.module.multiply(self._one_hot(labels, shifted), shifted, out=out)

    def probs_grad(self, probs, labels, rows):
        """``(probs - one_hot(labels)) / rows`` in place: the cross-entropy's gradient."""
        probs -= self._one_hot(labels, probs)
        probs /= rows

    # -- optimizer primitives: parameters and state in place, the old parameters in ``undo``
    def _fast(self, params, grads, undo, *states):
        """The fast update applies: the gradient is the undo array (used up: the update keeps
        the old parameters there), and contiguous vectors of one floating dtype (else the generic
        in-place update). The arrays of the last call that passed are kept: a training step
        passes the same ones every time."""
        arrays = (params, grads, undo, *states)
        checked = self._checked
        if len(checked) == len(arrays) and all(map(operator.is_, arrays, checked)):
            return True
        fast = (undo is grads and undo is not params and undo.shape == params.shape
                and params.dtype in (self.module.float32, self.module.float64)
                and all(a is None or (a.dtype == params.dtype and a.shape == params.shape and a.flags.c_contiguous)
                        for a in arrays))
        if fast:
            self._checked = arrays
        return fast

    def _kept(self, params, undo, finite):
        """The guard's flag of an update written in place: where it failed, the parameters are
        put back from ``undo``."""
        if not finite:
            self.module.copyto(params, undo)
        return bool(finite)

    def _landed(self, params, squared, scratch):
        """The generic check, that the sum of the new parameters and ``squared`` state is
        finite, from reductions alone where they decide it: every |p + v| is at most
        max|p| + max v (rounding is monotonic), so a finite bound says yes; a NaN says no; only
        beyond that the sum itself is formed (in ``scratch``). max and min propagate NaN. The
        squared state is >= 0 (by construction, and files holding negative values are refused at
        load); the vectors are not empty (``_parts`` gives no empty piece)."""
        np = self.module
        largest = max(float(np.max(params)), -float(np.min(params)))
        for v in squared:
            largest += float(np.max(v))  # (v >= 0)
        if largest != largest:  # NaN
            return False
        if largest <= float(np.finfo(params.dtype).max):
            return True
        total = params
        for v in squared:
            total = np.add(total, v, out=scratch)
        return bool(np.isfinite(np.max(total)) and np.isfinite(np.min(total)))

    def relu_backward(self, x, dy):
        """``where(x > 0, dy, 0)`` bitwise (a NaN or -0 of an open unit kept, +0 for a closed
        one), as an AND of ``dy``'s bits with an all-ones-or-zero mask: several times faster
        than numpy's ``where`` with a scalar."""
        np = self.module
        if x.shape != dy.shape or dy.ndim == 0 or dy.dtype not in (np.float32, np.float64):
            return super().relu_backward(x, dy)
        bits = np.uint32 if dy.dtype == np.float32 else np.uint64
        keep = np.negative(np.greater(x, 0).astype(bits))  # 0 - 1 wraps to all ones
        return np.bitwise_and(dy.view(bits), keep, out=keep).view(dy.dtype)

    def _parts(self, params):
        """Slices of the flat vectors an update goes through one at a time, with the scratch
        array for one of them: its temporary space is one piece, not a whole vector."""
        size, step = params.shape[0], self.chunk_size
        if self._scratch is None or self._scratch.shape[0] != min(size, step) or self._scratch.dtype != params.dtype:
            self._scratch = self.module.empty(min(size, step), dtype=params.dtype)
        return self._scratch, [slice(start, min(start + step, size)) for start in range(0, size, step)]

    def adam(self, params, grads, exp_avg, exp_avg_sq, ok, *, step_size, beta1, beta2, eps, bias_correction2_sqrt,
             weight_decay=0.0, decay=None, grad_scale=None, undo=None, max_exp_avg_sq=None):
        if not ok:  # a known-bad step: nothing is computed, nothing changes
            return params, exp_avg, exp_avg_sq, max_exp_avg_sq, False
        if max_exp_avg_sq is not None or not self._fast(params, grads, undo, exp_avg, exp_avg_sq):
            return super().adam(params, grads, exp_avg, exp_avg_sq, ok, step_size=step_size, beta1=beta1,
                                beta2=beta2, eps=eps, bias_correction2_sqrt=bias_correction2_sqrt,
                                weight_decay=weight_decay, decay=decay, grad_scale=grad_scale,
                                max_exp_avg_sq=max_exp_avg_sq)
        scratch, parts = self._parts(params)
        finite = True
        for part in parts:
            finite &= self._adam_part(params[part], grads[part], exp_avg[part], exp_avg_sq[part], undo[part],
                                      scratch[:part.stop - part.start], step_size, beta1, beta2, eps,
                                      bias_correction2_sqrt, weight_decay, decay, grad_scale)
        return params, exp_avg, exp_avg_sq, None, self._kept(params, undo, finite)

    def _adam_part(self, params, grads, m, v, undo, scratch, step_size, beta1, beta2, eps, bias_correction2_sqrt,
                   weight_decay, decay, grad_scale):
        np = self.module
        if grad_scale is not None:
            grads = np.multiply(grads, grad_scale, out=grads)
        if weight_decay:  # grads + wd * params
            np.multiply(params, weight_decay, out=scratch)
            grads = np.add(grads, scratch, out=grads)
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
        np.divide(scratch, bias_correction2_sqrt, out=scratch)
        np.add(scratch, eps, out=scratch)
        # step_size * m / denom; the gradient is used up: it keeps the old parameters
        np.divide(np.multiply(m, step_size, out=grads), scratch, out=scratch)
        np.copyto(undo, params)
        if decay is not None:
            np.multiply(params, decay, out=params)
        np.subtract(params, scratch, out=params)
        return self._landed(params, (v,), scratch)

    def sgd(self, params, grads, momentum_buffer, ok, *, lr, momentum=0.0, dampening=None, nesterov=False,
            weight_decay=0.0, grad_scale=None, undo=None):
        if not ok:
            return params, momentum_buffer, False
        if not self._fast(params, grads, undo, momentum_buffer):
            return super().sgd(params, grads, momentum_buffer, ok, lr=lr, momentum=momentum, dampening=dampening,
                               nesterov=nesterov, weight_decay=weight_decay, grad_scale=grad_scale)
        scratch, parts = self._parts(params)
        finite = True
        for part in parts:
            finite &= self._sgd_part(params[part], grads[part], None if momentum_buffer is None else
                                     momentum_buffer[part], undo[part], scratch[:part.stop - part.start], lr,
                                     momentum, dampening, nesterov, weight_decay, grad_scale)
        return params, momentum_buffer, self._kept(params, undo, finite)

    def _sgd_part(self, params, grads, buffer, undo, scratch, lr, momentum, dampening, nesterov, weight_decay,
                  grad_scale):
        np = self.module
        if grad_scale is not None:
            grads = np.multiply(grads, grad_scale, out=grads)
        if weight_decay:
            np.multiply(params, weight_decay, out=scratch)
            np.add(grads, scratch, out=grads)
        if buffer is not None:
            np.multiply(buffer, momentum, out=buffer)
            if dampening is not None:
                np.add(buffer, np.multiply(grads, dampening, out=scratch), out=buffer)
            else:
                np.add(buffer, grads, out=buffer)
            if nesterov:
                np.multiply(buffer, momentum, out=scratch)
                grads = np.add(grads, scratch, out=grads)
            else:
                grads = buffer
        np.multiply(grads, lr, out=scratch)
        np.copyto(undo, params)  # (after the gradient's last use: undo is its buffer)
        np.subtract(params, scratch, out=params)
        return self._landed(params, (), scratch)
