"""Optional fast paths, selected by (backend, dtype); the generic Array API code is the reference.

``for_backend(name, dtype_name)`` returns a :class:`~mlp_xp._kernels.ufunc.UfuncKernels` (or a
subclass) for backends whose arrays are mutable and whose ufuncs take ``out=``, else None, in
which case the pure generic path runs. Every fast path computes the same operations in the same
order as the generic code, so results are bitwise identical (tests/test_kernels.py checks it).

- numpy: in-place ufuncs with preallocated buffers; with numba installed (``pip install
  'mlp_xp[fast]'``), Adam/AdamW and SGD updates are one fused pass.
- cupy: none yet (the generic path runs) until its kernels have been verified on a GPU.
"""

from __future__ import annotations


def for_backend(name: str, dtype_name: str, use_numba: bool = True):
    """The fast paths for a backend name and dtype, or None for the generic path."""
    if name != "numpy" or dtype_name not in ("float32", "float64"):
        return None
    if use_numba:
        try:
            from .numba_cpu import NumbaKernels
        except ImportError:
            pass
        else:
            return NumbaKernels()
    import numpy

    from .ufunc import UfuncKernels

    return UfuncKernels(numpy)
