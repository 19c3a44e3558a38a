"""The vocabulary a training step is written in, owned by the backend.

:class:`~mlp_xp.ops.generic.GenericOps` is the reference: Array API code only, so it runs on
every backend (numpy, array_api_strict on any device, cupy, torch, jax); its optimizer primitives
write in place where the namespace's arrays can be written and return new arrays on JAX, whose
step stays pure so that it compiles whole. A backend may override any of its methods with a
faster version that computes the same thing: numpy with in-place ufuncs and numba
(:mod:`mlp_xp.ops.numpy_ops`), CuPy with fused elementwise kernels (:mod:`mlp_xp.ops.cupy_ops`).
:func:`for_model` picks them by the model's namespace and dtype, not by a name the user gives.

Overrides are checked against the generic ops: bitwise on numpy (tests/test_kernels.py), within
a stated tolerance on CUDA (tests/test_step.py, and whole training runs in tests/test_gpu_parity.py).
"""

from __future__ import annotations

from .generic import GenericOps

__all__ = ["GenericOps", "for_model"]


def for_model(backend, dtype_name: str, use_numba: bool = True, fast: bool = True):
    """The Ops of a backend and dtype: its fast overrides where it has them (``fast``), else the
    generic reference."""
    import array_api_compat

    xp, device = backend.xp, backend.device
    if fast and dtype_name in ("float32", "float64"):
        if array_api_compat.is_numpy_namespace(xp):
            if use_numba:  # numba's fused updates where numba is installed, else in-place ufuncs
                try:
                    from .numba_ops import NumbaOps
                except ImportError:
                    pass
                else:
                    return NumbaOps(xp, device)
            from .numpy_ops import UfuncOps

            return UfuncOps(xp, device)
        if array_api_compat.is_cupy_namespace(xp):
            from .cupy_ops import CupyOps

            return CupyOps(xp, device)
    return GenericOps(xp, device)
