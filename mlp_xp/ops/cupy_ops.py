"""CuPy's Ops: the generic operations, with the hot ones fused into one CUDA kernel each.

- ``dropout_keep``: the generic counter hash, one elementwise kernel (the generic code launches
  six); the masks are bitwise those of every other backend (integer arithmetic).
- ``relu_backward``: ``dy * (x > 0)`` in one kernel instead of three.
- Adam/AdamW: the update of parameters and both moments in one kernel, the guard's
  squared-state check as ``cupy.max`` (CUB), and the freeze (``ok ? new : old`` for all three)
  in one more kernel: five launches where the generic code makes about twenty.

Everything stays on the device and nothing is written in place, as in the generic ops, so the
step stays a pure function (CUDA-graph capture needs that and fixed shapes). CUDA contracts
``a * b + c`` into fused multiply-adds, so the updates agree with numpy's within rounding (tested
in tests/test_gpu_parity.py), not bitwise.
"""

from __future__ import annotations

import functools

import numpy as np

from ..optim import Adam, AdamState, AdamW
from .generic import _M1, _M2, _MASK, GenericOps


@functools.lru_cache(maxsize=None)
def _kernels():
    import cupy

    keep = cupy.ElementwiseKernel(
        "uint32 key, uint32 start, uint32 threshold", "bool keep",
        f"unsigned int h = ((unsigned int)i + start) ^ key; h *= {_M1}u; h ^= h >> 15; h *= {_M2}u; "
        "keep = h >= threshold;",
        "mlp_xp_dropout_keep")
    relu_backward = cupy.ElementwiseKernel(
        "T x, T dy", "T dx", "dx = dy * (x > (T)0 ? (T)1 : (T)0)", "mlp_xp_relu_backward")
    adam = cupy.ElementwiseKernel(
        "T g, T p, T m, T v, T one_minus_beta1, T beta2, T one_minus_beta2, T bias_correction2_sqrt, T eps, "
        "T step_size, T weight_decay, T decay, bool l2, bool decoupled",
        "T p_out, T m_out, T v_out",
        """
        T grad = l2 ? g + weight_decay * p : g;
        T param = decoupled ? p * decay : p;
        T m_i = m + one_minus_beta1 * (grad - m);
        T v_i = beta2 * v + one_minus_beta2 * (grad * grad);
        m_out = m_i;
        v_out = v_i;
        p_out = param - step_size * m_i / (sqrt(v_i) / bias_correction2_sqrt + eps);
        """,
        "mlp_xp_adam")
    freeze = cupy.ElementwiseKernel(
        "bool ok, T p_new, T m_new, T v_new, T p, T m, T v", "T p_out, T m_out, T v_out",
        "p_out = ok ? p_new : p; m_out = ok ? m_new : m; v_out = ok ? v_new : v;", "mlp_xp_freeze3")
    return {"keep": keep, "relu_backward": relu_backward, "adam": adam, "freeze": freeze}


class CupyOps(GenericOps):
    """GenericOps with fused CUDA kernels for Dropout masks, ReLU backward and Adam/AdamW."""

    name = "cupy"

    def dropout_keep(self, key, shape, p, start=0):
        if not isinstance(key, int) or not 0 <= start <= _MASK:
            return super().dropout_keep(key, shape, p, start)
        import cupy

        keep = cupy.empty(tuple(shape), dtype=cupy.bool_)
        threshold = min(int(round(p * 4294967296.0)), _MASK)
        _kernels()["keep"](np.uint32(key), np.uint32(start), np.uint32(threshold), keep)
        return keep

    def relu_backward(self, x, dy):
        if x.shape != dy.shape or x.dtype != dy.dtype:
            return super().relu_backward(x, dy)
        return _kernels()["relu_backward"](x, dy)

    def optimizer_update(self, optimizer, grads, state, params, ok, lr=None):
        if type(optimizer) not in (Adam, AdamW) or params.dtype not in (np.float32, np.float64):
            return super().optimizer_update(optimizer, grads, state, params, ok, lr)
        kernels, cast = _kernels(), params.dtype.type
        beta1, beta2 = optimizer.betas
        lr = optimizer.learning_rate(state.count) if lr is None else lr
        step = state.count + 1
        grads = optimizer._clip(self.xp, grads)
        decoupled = bool(optimizer.weight_decay) and optimizer._decoupled
        p_new, m_new, v_new = kernels["adam"](
            grads, params, state.exp_avg, state.exp_avg_sq, cast(1.0 - beta1), cast(beta2), cast(1.0 - beta2),
            cast((1.0 - beta2 ** step) ** 0.5), cast(optimizer.eps), cast(lr / (1.0 - beta1 ** step)),
            cast(optimizer.weight_decay), cast(1.0 - lr * optimizer.weight_decay),
            bool(optimizer.weight_decay) and not decoupled, decoupled)
        # cupy.max (CUB) rather than a ReductionKernel: cupy reduces a whole array in one block,
        # which measured 40 ms on 58M elements of an H100 against well under 1 ms here
        ok = self.both(ok, self.xp.max(v_new) < np.inf)
        p, m, v = kernels["freeze"](ok, p_new, m_new, v_new, params, state.exp_avg, state.exp_avg_sq)
        return p, AdamState(step, m, v), ok
