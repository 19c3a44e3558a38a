"""Interop: inputs from other array libraries (DLPack), and mx.save files loaded into PyTorch."""

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import numpy_of


class DLPackOnly:
    """An array from an unknown library that only speaks DLPack."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def _trained():
    X, y = mx.datasets.load_digits()
    X = mx.datasets.standardize(X)
    model = mx.Sequential(mx.Linear(64, 32), mx.GELU(), mx.LayerNorm(), mx.Linear(32, 10), mx.Softmax(),
                          dtype="float64", seed=0)
    optimizer = mx.optim.Adam(lr=3e-3)
    model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=2, verbose=0)
    return model, optimizer, X, y


@pytest.mark.parametrize("wrap", ["dlpack", "torch", "jax", "array_api_strict"])
def test_inputs_from_other_libraries(wrap):
    model, _, X, y = _trained()
    expected = numpy_of(model.predict(X))
    if wrap == "dlpack":
        inputs, labels = DLPackOnly(X), DLPackOnly(y)
    else:
        library = pytest.importorskip(wrap)
        if wrap == "torch":
            convert = library.from_numpy
        elif wrap == "jax":
            convert = library.numpy.asarray
        else:
            convert = library.asarray
        inputs, labels = convert(X), convert(y)
    np.testing.assert_array_equal(numpy_of(model.predict(inputs)), expected)
    assert model.evaluate(inputs, labels, mx.losses.CrossEntropy()) == model.evaluate(X, y, mx.losses.CrossEntropy())


def test_saved_model_loads_into_torch_nn(tmp_path):
    """The README recipe: same keys as an nn.Sequential with the same layers, W transposed."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    model, optimizer, X, _ = _trained()
    mx.save(model, tmp_path / "model.safetensors", optimizer=optimizer)

    tensors = load_file(tmp_path / "model.safetensors")
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.GELU(approximate="tanh"), torch.nn.LayerNorm(32),
                              torch.nn.Linear(32, 10), torch.nn.Softmax(dim=-1)).double()
    net.load_state_dict({key: value.T if key.endswith(".weight") and value.ndim == 2 else value
                         for key, value in tensors.items() if not key.startswith("optimizer.")})
    with torch.no_grad():
        theirs = net(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(theirs, numpy_of(model.predict(X)), rtol=1e-12, atol=1e-15)
