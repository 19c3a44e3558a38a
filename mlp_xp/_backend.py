"""The one place that turns a backend name into an Array API namespace and a device.

Everything else in mlp_xp receives a :class:`Backend` and calls ``backend.xp.*``;
nothing outside this module (and the backends' own :mod:`mlp_xp.ops` overrides) imports numpy or cupy
to compute.
"""

from __future__ import annotations

import importlib
import types
from typing import Any, NamedTuple

import numpy as np

BACKEND_NAMES = ("numpy", "array_api_strict", "cupy", "torch", "jax")
DTYPE_NAMES = ("float32", "float64")

# backend name -> (module to import, what to pip install if it is missing)
_INSTALL_HINT = {
    "numpy": ("numpy", "pip install numpy"),
    "array_api_strict": ("array_api_strict", "pip install array-api-strict"),
    "cupy": ("cupy", "pip install 'mlp_xp[cuda12]' (or [cuda13], matching your CUDA driver)"),
    "torch": ("torch", "pip install torch"),
    "jax": ("jax", "pip install jax"),
}


class Backend(NamedTuple):
    """A resolved backend: a name, an Array API namespace and a device.

    Attributes:
        name: one of ``BACKEND_NAMES``, or the namespace's module name.
        xp: the Array API namespace (array-api-compat wrapped where needed).
        device: the device arrays are created on (``None``: the namespace default).
    """

    name: str
    xp: Any
    device: Any

    def asarray(self, value, dtype=None):
        """Put host data (numpy array, list, scalar) on this backend and device."""
        return self.xp.asarray(value, dtype=dtype, device=self.device)

    def dtype(self, name: str):
        """The namespace's floating dtype object for ``"float32"`` / ``"float64"``."""
        return getattr(self.xp, resolve_dtype_name(name))

    def dtype_itemsize(self, name: str) -> int:
        """Bytes per element of a dtype name ("float32": 4)."""
        return np.dtype(resolve_dtype_name(name)).itemsize

    @property
    def index_dtype(self):
        """Integer dtype for labels and row indices: int64, or int32 where JAX lacks 64-bit mode."""
        if self.name == "jax":
            import jax

            if not jax.config.jax_enable_x64:
                return self.xp.int32
        return self.xp.int64


def resolve_dtype_name(dtype) -> str:
    """Normalise a dtype given as a string or dtype object to "float32"/"float64"."""
    if isinstance(dtype, str):
        name = dtype
    elif isinstance(dtype, type):  # numpy scalar types such as numpy.float32
        name = dtype.__name__
    else:
        name = str(getattr(dtype, "name", dtype))
    name = name.rsplit(".", 1)[-1]
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {dtype!r}")
    return name


def _import_backend_module(name: str):
    module_name, hint = _INSTALL_HINT[name]
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"backend {name!r} needs the package {module_name!r}, which is not installed: {hint}"
        ) from error


def resolve_backend(backend="numpy", device=None) -> Backend:
    """Resolve ``backend`` (a name or a namespace module) and ``device`` once.

    Args:
        backend: "numpy", "array_api_strict", "cupy", "torch", "jax", or a module that
            implements the Array API (e.g. ``array_api_strict`` itself).
        device: a device of that backend; None selects its default.

    Returns:
        A :class:`Backend`.

    Raises:
        ValueError: an unknown backend name.
        ImportError: the backend's package is missing (the message says what to install).
    """

    if isinstance(backend, Backend):
        return backend if device is None else backend._replace(device=device)
    if isinstance(backend, types.ModuleType):
        module = backend
        name = module.__name__.split(".")[-1] if module.__name__ != "numpy" else "numpy"
        if module.__name__.startswith("array_api_compat."):
            name = module.__name__.rsplit(".", 1)[-1]
        if module.__name__ in ("jax", "jax.numpy"):
            name = "jax"
    elif isinstance(backend, str):
        name = backend.lower().replace("-", "_")
        if name not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {BACKEND_NAMES} or a namespace module, got {backend!r}")
        module = _import_backend_module(name)
    else:
        raise TypeError(f"backend must be a name or a namespace module, got {type(backend).__name__}")

    if name == "torch" and device is not None:
        device = _torch_device(module, device)
    if name in ("numpy", "cupy", "torch"):
        xp = importlib.import_module(f"array_api_compat.{name}")
    elif name == "jax":
        xp = importlib.import_module("jax.numpy")
    else:
        xp = module
    return Backend(name, xp, device)


def _torch_device(torch, device):
    """``device`` as a torch.device that exists here, or a ValueError saying which does not."""
    try:
        resolved = torch.device(device)
        torch.empty(0, device=resolved)
    except (RuntimeError, AssertionError, TypeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ValueError(f"torch device {device!r} is not available here ({reason}); this machine has "
                         f"{cuda} CUDA device(s): use 'cpu'" + (f" or 'cuda:0'..'cuda:{cuda - 1}'" if cuda else "")
                         ) from None
    return resolved


def available_memory() -> int | None:
    """Bytes of host memory available now (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(needed: int, what: str):
    """MemoryError before allocating ``needed`` bytes of host memory that are not there."""
    available = available_memory()
    if available is not None and needed > available:
        raise MemoryError(f"{what} needs {needed / 1e9:.1f} GB of memory but only {available / 1e9:.1f} GB are "
                          "available: use fewer or narrower layers")


def is_host_array(value) -> bool:
    return isinstance(value, (np.ndarray, np.generic))


def to_numpy(array) -> np.ndarray:
    """Copy (or view) any supported backend's array as a ``numpy.ndarray``.

    Works for numpy, array_api_strict, cupy (device -> host copy), torch (any device)
    and jax arrays, and for anything ``numpy.asarray`` accepts.

    Example:
        >>> import mlp_xp as mx, numpy as np
        >>> mx.to_numpy(np.arange(3))
        array([0, 1, 2])
    """
    if isinstance(array, np.ndarray):
        return array
    module = type(array).__module__.split(".")[0]
    if module == "cupy":
        return array.get()
    if module == "torch":
        return array.detach().cpu().numpy()
    if module in ("array_api_strict", "jax", "jaxlib"):
        return np.from_dlpack(array) if module == "array_api_strict" else np.asarray(array)
    if hasattr(array, "__dlpack__"):  # any other DLPack producer on the CPU
        return np.from_dlpack(array)
    return np.asarray(array)


def namespace_name(array) -> str | None:
    """The backend name an array belongs to, or None for host data (lists, numpy)."""
    module = type(array).__module__.split(".")[0]
    return {"cupy": "cupy", "torch": "torch", "array_api_strict": "array_api_strict",
            "jax": "jax", "jaxlib": "jax"}.get(module)
