"""CuPy's Ops: the generic operations, with the hot ones fused into one CUDA kernel each.

- ``dropout_keep``: the generic counter hash, one elementwise kernel (the generic code launches
  six); the masks are bitwise those of every other backend (integer arithmetic). The key may be
  a 0-d device array (the step's key, computed on the device).
- ``relu_backward``: ``where(x > 0, dy, 0)`` in one kernel instead of two.
- ``adam`` (Adam/AdamW): two kernels over the flat vectors and one CUB reduction. The first
  computes each element's new parameter and second moment and flags it where either is not
  finite (nothing is written); ``cupy.any`` reduces the flags; the second kernel, reading the
  device flag, writes parameters and both moments in place where the update lands. Memory beyond
  the state: one byte per parameter for the flags. Every scalar that changes per step is a 0-d
  device array, so the launches are the same at every step.

CUDA contracts ``a * b + c`` into fused multiply-adds, so the updates agree with numpy's within
rounding (tested in tests/test_gpu_parity.py), not bitwise.
"""

from __future__ import annotations

import functools

import numpy as np

from .generic import HASH_M1, HASH_M2, MASK32, GenericOps


@functools.lru_cache(maxsize=None)
def _kernels():
    import cupy

    keep = cupy.ElementwiseKernel(
        "uint32 key, uint32 start, uint32 threshold", "bool keep",
        f"unsigned int h = ((unsigned int)i + start) ^ key; h *= {HASH_M1}u; h ^= h >> 15; h *= {HASH_M2}u; "
        "keep = h >= threshold;",
        "mlp_xp_dropout_keep")
    relu_backward = cupy.ElementwiseKernel(
        "T x, T dy", "T dx", "dx = x > (T)0 ? dy : (T)0", "mlp_xp_relu_backward")
    rule = """
        T grad = scaled ? g * grad_scale : g;
        grad = l2 ? grad + weight_decay * p : grad;
        T param = decoupled ? p * decay : p;
        T m_i = m + one_minus_beta1 * (grad - m);
        T v_i = beta2 * v + one_minus_beta2 * (grad * grad);
        T p_i = param - step_size * m_i / (sqrt(v_i) / bias_correction2_sqrt + eps);
    """
    scalars = ("T one_minus_beta1, T beta2, T one_minus_beta2, T bias_correction2_sqrt, T eps, T step_size, "
               "T weight_decay, T decay, T grad_scale, bool l2, bool decoupled, bool scaled")
    adam_check = cupy.ElementwiseKernel(
        "T g, T p, T m, T v, " + scalars, "bool bad",
        rule + "T total = p_i + v_i; bad = !(total - total == (T)0);",  # (the generic check: a finite sum)
        "mlp_xp_adam_check")
    adam_commit = cupy.ElementwiseKernel(
        "T g, bool ok, " + scalars, "T p, T m, T v",
        "if (ok) {" + rule + "p = p_i; m = m_i; v = v_i; }",
        "mlp_xp_adam_commit")
    return {"keep": keep, "relu_backward": relu_backward, "adam_check": adam_check, "adam_commit": adam_commit}


class CupyOps(GenericOps):
    """GenericOps with fused CUDA kernels for Dropout masks, ReLU backward and Adam/AdamW."""

    name = "cupy"

    def dropout_keep(self, key, shape, p, start=0):
        if not 0 <= start <= MASK32 or not (isinstance(key, int) or getattr(key, "dtype", None) == np.uint32):
            return super().dropout_keep(key, shape, p, start)
        import cupy

        keep = cupy.empty(tuple(shape), dtype=cupy.bool_)
        threshold = min(int(round(p * 4294967296.0)), MASK32)
        key = np.uint32(key) if isinstance(key, int) else key
        _kernels()["keep"](key, np.uint32(start), np.uint32(threshold), keep)
        return keep

    def relu_backward(self, x, dy):
        if x.shape != dy.shape or x.dtype != dy.dtype:
            return super().relu_backward(x, dy)
        return _kernels()["relu_backward"](x, dy)

    def adam(self, params, grads, exp_avg, exp_avg_sq, ok, *, step_size, beta1, beta2, eps, bias_correction2_sqrt,
             weight_decay=0.0, decay=None, grad_scale=None, undo=None, max_exp_avg_sq=None):
        import cupy

        arrays = (params, grads, exp_avg, exp_avg_sq)
        if (max_exp_avg_sq is not None or params.dtype not in (np.float32, np.float64)
                or any(a.dtype != params.dtype for a in arrays)):  # (AMSGrad: the generic rule)
            return super().adam(params, grads, exp_avg, exp_avg_sq, ok, step_size=step_size, beta1=beta1, beta2=beta2,
                                eps=eps, bias_correction2_sqrt=bias_correction2_sqrt, weight_decay=weight_decay,
                                decay=decay, grad_scale=grad_scale, max_exp_avg_sq=max_exp_avg_sq)
        kernels, cast = _kernels(), params.dtype.type
        def scalar(value):  # (0-d device arrays and host numbers, in the arrays' dtype: T must match)
            return value.astype(params.dtype, copy=False) if hasattr(value, "shape") else cast(value)

        scalars = (cast(1.0 - beta1), cast(beta2), cast(1.0 - beta2), scalar(bias_correction2_sqrt), cast(eps),
                   scalar(step_size), cast(weight_decay), scalar(1.0 if decay is None else decay),
                   scalar(1.0 if grad_scale is None else grad_scale), bool(weight_decay), decay is not None,
                   grad_scale is not None)
        bad = kernels["adam_check"](grads, params, exp_avg, exp_avg_sq, *scalars)
        ok = cupy.logical_and(ok, cupy.logical_not(cupy.any(bad)))  # (cupy.any: CUB, all blocks)
        del bad
        kernels["adam_commit"](grads, ok, *scalars, params, exp_avg, exp_avg_sq)
        return params, exp_avg, exp_avg_sq, None, ok
