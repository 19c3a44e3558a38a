"""Fused optimizer primitives for numpy arrays, compiled with numba.

One pass over the flat parameter vector instead of a dozen: each element's new state and
parameter are computed together and written in place, the old parameter is kept in the
gradient's slot (read by then; the fast path needs ``undo`` to be the gradient), and the guard's checks (new parameter finite, new squared state
below infinity) come out of the same loop; an update that fails puts the parameters back. The arithmetic is the generic path's,
operation for operation, in the array's own dtype (scalars are cast to it first, as numpy does
with Python scalars), and numba does not contract a*b+c into fused multiply-adds without
fastmath, so the results are bitwise identical to the generic path's.

The loops are serial on purpose: between matrix products, BLAS threads still hold the cores,
and a parallel loop fighting them measured slower than this one on two cores.
``error_model="numpy"`` drops numba's per-division zero check, which otherwise blocks
vectorization.

Importing this module raises ImportError when numba is not installed; the caller falls back.
"""

from __future__ import annotations

import numba
import numpy as np

from .numpy_ops import UfuncOps

_NO_BUFFER = {"f": np.zeros(1, np.float32), "d": np.zeros(1, np.float64)}  # (never read: no momentum)


# The gradient comes in and the old parameters go out through one array (``used``, the step's
# gradient buffer): four distinct arrays, which LLVM vectorizes (an undo array that aliases the
# gradient under another name made the loop several times slower).


@numba.njit(cache=True, error_model="numpy")
def _adam(used, params, m, v, one_minus_beta1, beta2, one_minus_beta2, bias_correction2_sqrt, eps,
          step_size, weight_decay, decay, l2, decoupled, scale, scaled):
    bad = np.uint8(0)  # the guard, in the same pass: every new parameter and v finite (a uint8 max vectorizes)
    for i in range(used.shape[0]):
        g = used[i]
        p = params[i]
        used[i] = p  # the old parameter, to put back if the update fails
        if scaled:
            g = g * scale
        if l2:
            g = g + weight_decay * p
        if decoupled:
            p = p * decay
        m_i = m[i] + one_minus_beta1 * (g - m[i])
        v_i = beta2 * v[i] + one_minus_beta2 * (g * g)
        m[i] = m_i
        v[i] = v_i
        p = p - step_size * m_i / (np.sqrt(v_i) / bias_correction2_sqrt + eps)
        params[i] = p
        total = p + v_i
        bad = max(bad, np.uint8(total - total != 0))  # (the generic check: their sum is finite)
    return bad == 0


@numba.njit(cache=True, error_model="numpy")
def _sgd(used, params, buffer, lr, momentum, weight_decay, dampening, nesterov, use_momentum, use_decay,
         damped, scale, scaled):
    bad = np.uint8(0)
    for i in range(used.shape[0]):
        g = used[i]
        p = params[i]
        used[i] = p
        if scaled:
            g = g * scale
        if use_decay:
            g = g + weight_decay * p
        if use_momentum:
            b = momentum * buffer[i] + (dampening * g if damped else g)
            buffer[i] = b
            g = g + momentum * b if nesterov else b
        p = p - lr * g
        params[i] = p
        bad = max(bad, np.uint8(p - p != 0))
    return bad == 0


@numba.njit(cache=True, error_model="numpy")
def _relu_backward(x, dy, out, zero):
    for i in range(x.shape[0]):
        out[i] = dy[i] if x[i] > 0 else zero  # the generic where(x > 0, dy, 0), fused


# The lean step's pieces (see UfuncOps): the same operations on each element, in one pass over
# C-contiguous (rows, columns) arrays. Maxima and argmaxima as numpy's: NaN wins, then the first
# largest; ReLU as numpy's maximum(x, 0): NaN kept, +0 for x <= 0.


@numba.njit(cache=True, error_model="numpy")
def _bias_relu(h, bias, out):
    zero = out.dtype.type(0.0)
    for i in range(h.shape[0]):
        for j in range(h.shape[1]):
            value = h[i, j] + bias[j]
            h[i, j] = value
            out[i, j] = value if value > zero or value != value else zero


@numba.njit(cache=True, error_model="numpy")
def _shift_logits(z, bias, labels):
    correct = 0
    for i in range(z.shape[0]):
        largest = z[i, 0] + bias[0]
        z[i, 0] = largest
        where = 0
        for j in range(1, z.shape[1]):
            value = z[i, j] + bias[j]
            z[i, j] = value
            if largest == largest and (value > largest or value != value):
                largest, where = value, j
        if where == labels[i]:
            correct += 1
        for j in range(z.shape[1]):
            z[i, j] = z[i, j] - largest
    return correct


@numba.njit(cache=True, error_model="numpy")
def _log_probs(shifted, log_sums, labels, out):
    one, zero = out.dtype.type(1.0), out.dtype.type(0.0)
    for i in range(shifted.shape[0]):
        for j in range(shifted.shape[1]):
            value = shifted[i, j] - log_sums[i, 0]
            shifted[i, j] = value
            out[i, j] = (one if j == labels[i] else zero) * value


@numba.njit(cache=True, error_model="numpy")
def _probs_grad(probs, labels, rows):
    one, zero = probs.dtype.type(1.0), probs.dtype.type(0.0)
    for i in range(probs.shape[0]):
        for j in range(probs.shape[1]):
            probs[i, j] = (probs[i, j] - (one if j == labels[i] else zero)) / rows


def _rows(a, dtype):
    """``a`` is C-contiguous, 2-D, of ``dtype`` (the fused pieces' assumption)."""
    return a.ndim == 2 and a.dtype == dtype and a.flags.c_contiguous


class NumbaOps(UfuncOps):
    """numpy Ops with fused Adam/AdamW and SGD primitives, ReLU backward and the lean step's pieces;
    the rest as UfuncOps."""

    name = "numba"

    def relu_backward(self, x, dy):
        """``where(x > 0, dy, 0)`` in one pass (C-contiguous arrays; others take the generic route)."""
        if not (x.flags.c_contiguous and dy.flags.c_contiguous and x.shape == dy.shape and x.dtype == dy.dtype):
            return super().relu_backward(x, dy)
        out = np.empty_like(dy)
        cast = dy.dtype.type
        _relu_backward(x.reshape(-1), dy.reshape(-1), out.reshape(-1), cast(0.0))
        return out

    def bias_relu(self, h, bias):
        if not (_rows(h, bias.dtype) and bias.shape == h.shape[1:]):
            return super().bias_relu(h, bias)
        out = np.empty_like(h)
        _bias_relu(h, bias, out)
        return out

    def shift_logits(self, z, bias, labels):
        if not (_rows(z, bias.dtype) and bias.shape == z.shape[1:] and z.shape[1] and labels.shape == z.shape[:1]):
            return super().shift_logits(z, bias, labels)
        return _shift_logits(z, bias, labels)

    def log_probs(self, shifted, log_sums, labels, out):
        dtype = shifted.dtype
        if not (_rows(shifted, dtype) and _rows(log_sums, dtype) and _rows(out, dtype) and out.shape == shifted.shape
                and log_sums.shape == (shifted.shape[0], 1) and labels.shape == shifted.shape[:1]):
            return super().log_probs(shifted, log_sums, labels, out)
        _log_probs(shifted, log_sums, labels, out)

    def probs_grad(self, probs, labels, rows):
        if not (_rows(probs, probs.dtype) and labels.shape == probs.shape[:1]):
            return super().probs_grad(probs, labels, rows)
        _probs_grad(probs, labels, probs.dtype.type(rows))

    def adam(self, params, grads, exp_avg, exp_avg_sq, ok, *, step_size, beta1, beta2, eps, bias_correction2_sqrt,
             weight_decay=0.0, decay=None, grad_scale=None, undo=None, max_exp_avg_sq=None):
        if not ok or max_exp_avg_sq is not None or not self._fast(params, grads, undo, exp_avg, exp_avg_sq):
            return super().adam(params, grads, exp_avg, exp_avg_sq, ok, step_size=step_size, beta1=beta1,
                                beta2=beta2, eps=eps, bias_correction2_sqrt=bias_correction2_sqrt,
                                weight_decay=weight_decay, decay=decay, grad_scale=grad_scale, undo=undo,
                                max_exp_avg_sq=max_exp_avg_sq)
        cast = params.dtype.type
        finite = _adam(undo, params, exp_avg, exp_avg_sq, cast(1.0 - beta1), cast(beta2), cast(1.0 - beta2),
                       cast(bias_correction2_sqrt), cast(eps), cast(step_size), cast(weight_decay),
                       cast(1.0 if decay is None else decay), bool(weight_decay), decay is not None,
                       cast(1.0 if grad_scale is None else grad_scale), grad_scale is not None)
        return params, exp_avg, exp_avg_sq, None, self._kept(params, undo, finite)

    def sgd(self, params, grads, momentum_buffer, ok, *, lr, momentum=0.0, dampening=None, nesterov=False,
            weight_decay=0.0, grad_scale=None, undo=None):
        if not ok or not self._fast(params, grads, undo, momentum_buffer):
            return super().sgd(params, grads, momentum_buffer, ok, lr=lr, momentum=momentum, dampening=dampening,
                               nesterov=nesterov, weight_decay=weight_decay, grad_scale=grad_scale, undo=undo)
        cast = params.dtype.type
        buffer = momentum_buffer
        finite = _sgd(undo, params, _NO_BUFFER[params.dtype.char] if buffer is None else buffer, cast(lr), cast(momentum),
                      cast(weight_decay), cast(1.0 if dampening is None else dampening), nesterov, buffer is not None,
                      bool(weight_decay), dampening is not None, cast(1.0 if grad_scale is None else grad_scale),
                      grad_scale is not None)
        return params, buffer, self._kept(params, undo, finite)
