"""Backend resolution, dtypes, conversion to numpy and the missing-package message."""

import builtins
import sys

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp._backend import resolve_backend, resolve_dtype_name


def test_names_resolve_to_namespaces(backend):
    resolved = resolve_backend(backend, backend.device)
    assert resolved.name == backend
    array = resolved.asarray([1.0, 2.0], dtype=resolved.dtype("float64"))
    if backend.device is not None:  # (array_api_strict's second device)
        assert array.device == backend.device
    assert float(resolved.xp.sum(array)) == 3.0


def test_a_namespace_module_is_accepted():
    strict = pytest.importorskip("array_api_strict")
    model = mx.Sequential(mx.Linear(2, 2), backend=strict)
    assert model.backend.name == "array_api_strict"
    assert type(model.params).__module__.startswith("array_api_strict")
    assert resolve_backend(np).name == "numpy"


def test_unknown_backend_and_dtype():
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("tensorflow")
    with pytest.raises(TypeError, match="backend must be a name or a namespace module"):
        resolve_backend(42)
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype_name("int32")
    assert resolve_dtype_name(np.float64) == "float64" and resolve_dtype_name(np.dtype("float32")) == "float32"


def test_missing_backend_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_cupy)
    with pytest.raises(ImportError, match=r"backend 'cupy' needs the package 'cupy'.*pip install 'mlp_xp\[cuda12\]'"):
        mx.Sequential(mx.Linear(2, 2), backend="cupy")


def test_to_numpy_from_every_backend(backend):
    resolved = resolve_backend(backend, backend.device)
    array = resolved.asarray(np.arange(6.0).reshape(2, 3), dtype=resolved.dtype("float64"))
    host = mx.to_numpy(array)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, np.arange(6.0).reshape(2, 3))
    assert mx.to_numpy([1, 2]).tolist() == [1, 2]


def test_model_runs_on_the_requested_device():
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    model = mx.Sequential(mx.Linear(2, 3), mx.ReLU(), mx.Linear(3, 2), backend="array_api_strict", device=device)
    assert model.params.device == device
    history = model.fit(np.eye(2), [0, 1], loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), epochs=2,
                        verbose=0)
    assert model.params.device == device and len(history["loss"]) == 2
    assert model.predict(np.eye(2)).device == device


def test_jax_float64_needs_64_bit_mode():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            mx.Sequential(mx.Linear(2, 2), backend="jax", dtype="float64")
        model = mx.Sequential(mx.Linear(2, 2), backend="jax", dtype="float32")
        assert str(model.params.dtype) == "float32"
    finally:
        jax.config.update("jax_enable_x64", True)
