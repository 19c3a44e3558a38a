"""Shared fixtures: every backend that is installed (cupy only with a GPU), and helpers."""

import importlib
import os
import pathlib

import numpy as np
import pytest

import mlp_xp as mx


def _available(name):
    try:
        module = importlib.import_module(name)
    except ImportError:
        return False
    if name == "cupy":
        try:
            return module.cuda.runtime.getDeviceCount() > 0
        except Exception:
            return False
    return True


BACKENDS = ["numpy", "array_api_strict", "torch", "jax", "cupy"]
#: the ``backend`` fixture's cases: each backend, and array_api_strict on its simulated second device,
#: which refuses to mix devices the way a GPU does
BACKEND_CASES = ["numpy", "array_api_strict", "array_api_strict:device1", "torch", "jax", "cupy"]


class BackendName(str):
    """A backend name as tests pass it (``backend == "torch"`` still works), with the device its
    arrays live on (``device``: None for the default one)."""

    device = None

    def __new__(cls, name, device=None):
        self = super().__new__(cls, name)
        self.device = device
        return self

    @property
    def options(self):
        """``backend=`` and ``device=`` for ``mx.Sequential``, ``model.to`` and ``mx.load``."""
        return {"backend": str(self), "device": self.device}
#: backends whose results must be bitwise identical to numpy's (same kernels underneath)
NUMPY_EXACT = ["numpy", "array_api_strict"]


SOURCE = pathlib.Path(__file__).resolve().parent.parent


def _package_under_test():
    return pathlib.Path(mx.__file__).resolve().parent


def pytest_report_header(config):
    where = _package_under_test()
    kind = "the source tree (editable install)" if where.parent == SOURCE else "an installed copy"
    return f"mlp_xp {mx.__version__} under test: {where} ({kind})"


def pytest_configure(config):
    # CI sets this: the suite must test what `pip install` put in site-packages, not ./mlp_xp
    if os.environ.get("MLP_XP_TEST_INSTALLED") == "1" and _package_under_test().parent == SOURCE:
        raise pytest.UsageError(f"MLP_XP_TEST_INSTALLED=1 but mlp_xp was imported from the source tree "
                                f"{_package_under_test()}; install it with `pip install .` and run pytest")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU and cupy (skipped without one)")
    if _available("jax"):  # float64 tests need JAX's 64-bit mode (mlp_xp refuses float64 without it)
        import jax

        jax.config.update("jax_enable_x64", True)


def pytest_collection_modifyitems(config, items):
    if not _available("cupy"):
        skip = pytest.mark.skip(reason="needs a CUDA GPU with cupy installed")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(params=BACKEND_CASES)
def backend(request):
    """Each backend name in turn (a :class:`BackendName`: pass ``backend.device`` along, or
    ``**backend.options``); those not installed are skipped."""
    name, _, device = request.param.partition(":")
    if not _available(name):
        pytest.skip(f"{name} is not installed" + (" or has no GPU" if name == "cupy" else ""))
    if device:
        import array_api_strict

        return BackendName(name, array_api_strict.Device(device))
    return BackendName(name)


@pytest.fixture(params=NUMPY_EXACT)
def exact_backend(request):
    return request.param


def numpy_of(array):
    return np.asarray(mx.to_numpy(array), dtype=np.float64)


def torch_twin(torch, model):
    """A float64 torch.nn.Sequential of ``model`` (Linear and Tanh layers) with its weights
    (torch stores W as (out, in): transposed)."""
    layers = [torch.nn.Linear(layer.in_features, layer.out_features) if isinstance(layer, mx.Linear)
              else torch.nn.Tanh() for layer in model.layers]
    net = torch.nn.Sequential(*layers).double()
    weights = {key: mx.to_numpy(value) for key, value in model.state_dict().items()}
    with torch.no_grad():
        for index, layer in enumerate(model.layers):
            if isinstance(layer, mx.Linear):
                net[index].weight.copy_(torch.tensor(weights[f"{index}.weight"].T))
                net[index].bias.copy_(torch.tensor(weights[f"{index}.bias"]))
    return net


def relative_error(analytic, numeric):
    """max |a - n| / max(max |a|, max |n|): the gradient checker's per-tensor measure."""
    analytic, numeric = numpy_of(analytic), numpy_of(numeric)
    scale = max(np.max(np.abs(analytic)), np.max(np.abs(numeric)))
    return 0.0 if scale == 0 else float(np.max(np.abs(analytic - numeric)) / scale)
