"""Sequential: shape inference and ShapeError, initialisation, state_dict, to(), loss_and_grad,
gradient checks of whole models, and cross-backend parity."""

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import numpy_of


def _digits_like(samples=64, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(samples, features)), rng.integers(0, classes, size=samples)


def test_shape_error_names_layer_and_both_shapes():
    with pytest.raises(mx.ShapeError) as info:
        mx.Sequential(mx.Linear(784, 256), mx.ReLU(), mx.Linear(128, 10))
    message = str(info.value)
    assert "layer 2" in message and "Linear(in_features=128" in message
    assert "(batch, 128)" in message and "(batch, 256)" in message
    assert isinstance(info.value, ValueError)


def test_in_features_none_is_inferred_and_any_stack_builds():
    model = mx.Sequential(mx.Linear(7, 13), mx.GELU(), mx.LayerNorm(), mx.Dropout(0.2), mx.Linear(None, 1),
                          mx.Identity(), mx.Linear(None, 5), mx.Softmax())
    assert model.in_features == 7 and model.out_features == 5
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {"0.weight": (7, 13), "0.bias": (13,), "2.weight": (13,), "2.bias": (13,),
                      "4.weight": (13, 1), "4.bias": (1,), "6.weight": (1, 5), "6.bias": (5,)}
    assert model.num_parameters == sum(int(np.prod(s)) for s in shapes.values())


def test_construction_errors():
    with pytest.raises(ValueError, match="at least one layer"):
        mx.Sequential()
    with pytest.raises(TypeError, match="instead of an instance"):
        mx.Sequential(mx.Linear(2, 2), mx.ReLU)
    with pytest.raises(ValueError, match="first Linear layer its in_features"):
        mx.Sequential(mx.Linear(None, 3))
    with pytest.raises(ValueError, match="first Linear layer its in_features"):
        mx.Sequential(mx.ReLU(), mx.Linear(None, 3), mx.Linear(3, 2))
    with pytest.raises(ValueError, match="first Linear layer its in_features"):
        mx.Sequential(mx.ReLU(), mx.Softmax())
    with pytest.raises(ValueError, match="backend must be one of"):
        mx.Sequential(mx.Linear(2, 2), backend="tensorflow")
    with pytest.raises(ValueError, match="dtype must be one of"):
        mx.Sequential(mx.Linear(2, 2), dtype="float16")
    with pytest.raises(ValueError, match="seed must be"):
        mx.Sequential(mx.Linear(2, 2), seed=-1)


def test_initialisation_follows_the_activation():
    model = mx.Sequential(mx.Linear(400, 300), mx.ReLU(), mx.Linear(300, 300), mx.Dropout(0.1), mx.Tanh(),
                          mx.Linear(300, 10), dtype="float64", seed=0)
    weights = {k: numpy_of(v) for k, v in model.state_dict().items()}
    assert weights["0.weight"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)       # He normal
    assert np.abs(weights["2.weight"]).max() <= np.sqrt(6 / 600)                        # Glorot uniform
    assert weights["2.weight"].std() == pytest.approx(np.sqrt(2 / 600), rel=0.02)
    assert weights["5.weight"].std() == pytest.approx(np.sqrt(2 / 310), rel=0.05)       # no activation: Glorot
    assert not weights["0.bias"].any()
    explicit = mx.Sequential(mx.Linear(400, 300, init="lecun_normal"), mx.ReLU(), dtype="float64")
    assert numpy_of(explicit.state_dict()["0.weight"]).std() == pytest.approx(np.sqrt(1 / 400), rel=0.02)


def test_same_seed_same_weights_on_every_backend(backend):
    layers = (mx.Linear(5, 4), mx.ReLU(), mx.Linear(4, 2))
    reference = mx.Sequential(*layers, seed=11).state_dict()
    other = mx.Sequential(*layers, **backend.options, seed=11).state_dict()
    for key in reference:
        assert np.array_equal(numpy_of(reference[key]), numpy_of(other[key]))
    different = mx.Sequential(*layers, seed=12).state_dict()
    assert not np.array_equal(numpy_of(reference["0.weight"]), numpy_of(different["0.weight"]))


def test_state_dict_round_trip_and_errors():
    model = mx.Sequential(mx.Linear(3, 4), mx.ReLU(), mx.Linear(4, 2), seed=0)
    state = model.state_dict()
    state["0.weight"][...] = 0  # a copy: the model is untouched
    assert numpy_of(model.state_dict()["0.weight"]).any()
    other = mx.Sequential(mx.Linear(3, 4), mx.ReLU(), mx.Linear(4, 2), seed=5)
    other.load_state_dict(model.state_dict())
    for key, value in model.state_dict().items():
        assert np.array_equal(numpy_of(value), numpy_of(other.state_dict()[key]))
    with pytest.raises(ValueError, match=r"missing \['2.bias'\]"):
        other.load_state_dict({k: v for k, v in state.items() if k != "2.bias"})
    bad_shape = dict(state, **{"0.weight": np.zeros((4, 3))})
    with pytest.raises(mx.ShapeError, match=r"state_dict\['0.weight'\] has shape \(4, 3\).*needs \(3, 4\)"):
        other.load_state_dict(bad_shape)
    with pytest.raises(ValueError, match="finite"):
        other.load_state_dict(dict(state, **{"2.bias": np.array([np.nan, 0.0])}))


def test_to_copies_weights_and_generators(backend):
    X, y = _digits_like()
    model = mx.Sequential(mx.Linear(8, 6), mx.Tanh(), mx.Dropout(0.2), mx.Linear(6, 3), dtype="float64", seed=4)
    moved = model.to(**backend.options)
    assert moved.backend.name == backend and moved.dtype_name == "float64"
    for key, value in model.state_dict().items():
        assert np.array_equal(numpy_of(value), numpy_of(moved.state_dict()[key]))
    single = model.to(dtype="float32")
    assert single.dtype_name == "float32" and single.backend.name == "numpy"
    assert str(mx.to_numpy(single.params).dtype) == "float32"
    # moving does not touch the original
    assert model.dtype_name == "float64"


def test_loss_and_grad_keys_and_values():
    X, y = _digits_like()
    model = mx.Sequential(mx.Linear(8, 6), mx.ReLU(), mx.Linear(6, 3), mx.Softmax(), dtype="float64")
    loss, grads = model.loss_and_grad(X, y, mx.losses.CrossEntropy())
    assert set(grads) == set(model.state_dict())
    assert all(tuple(grads[k].shape) == tuple(v.shape) for k, v in model.state_dict().items())
    assert loss == pytest.approx(model.evaluate(X, y, mx.losses.CrossEntropy())["loss"], rel=1e-12)


GRADCHECK_MODELS = {
    "relu-softmax-ce": (lambda: [mx.Linear(6, 8), mx.ReLU(), mx.Linear(8, 4), mx.Softmax()],
                        mx.losses.CrossEntropy(label_smoothing=0.1), "labels"),
    "every-activation": (lambda: [mx.Linear(6, 7), mx.GELU(), mx.Linear(7, 7), mx.SiLU(), mx.LayerNorm(),
                                  mx.Linear(7, 7), mx.ELU(), mx.Linear(7, 7), mx.Softplus(), mx.Linear(7, 7),
                                  mx.LeakyReLU(), mx.Linear(7, 5), mx.Tanh(), mx.Dropout(0.3), mx.Linear(5, 4)],
                         mx.losses.CrossEntropy(), "labels"),
    "sigmoid-bce": (lambda: [mx.Linear(6, 5), mx.Tanh(), mx.Linear(5, 2), mx.Sigmoid()],
                    mx.losses.BinaryCrossEntropy(), "binary"),
    "mse": (lambda: [mx.Linear(6, 5), mx.Sigmoid(), mx.Linear(5, 3), mx.Identity()], mx.losses.MSE(), "real"),
    "huber": (lambda: [mx.Linear(6, 5), mx.Tanh(), mx.Linear(5, 3, bias=False)], mx.losses.Huber(0.5), "real"),
    "softmax-mse": (lambda: [mx.Linear(6, 4), mx.Softmax()], mx.losses.MSE(), "real4"),
}


@pytest.mark.parametrize("case", sorted(GRADCHECK_MODELS))
def test_whole_model_gradient_check(case, backend):
    make_layers, loss, target_kind = GRADCHECK_MODELS[case]
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 6))
    y = {"labels": rng.integers(0, 4, size=10), "binary": rng.uniform(size=(10, 2)),
         "real": rng.normal(size=(10, 3)), "real4": rng.normal(size=(10, 4))}[target_kind]
    model = mx.Sequential(*make_layers(), **backend.options, dtype="float32", seed=2)
    result = mx.check_gradients(model, X, y, loss)
    assert result.ok, result.errors
    assert result.max_rel_error < 1e-7
    assert set(result.errors) == set(model.state_dict())
    assert result.checked == model.num_parameters


def test_gradient_check_catches_a_wrong_gradient(monkeypatch):
    model = mx.Sequential(mx.Linear(3, 4), mx.Tanh(), mx.Linear(4, 2), dtype="float64")
    X, y = np.random.default_rng(0).normal(size=(5, 3)), np.array([0, 1, 0, 1, 1])
    original = mx.Tanh._forward

    def wrong(self, xp, x):  # derivative off by 1%
        y, derivative = original(self, xp, x)
        return y, lambda dy: derivative(dy) * 1.01

    monkeypatch.setattr(mx.Tanh, "_forward", wrong)
    result = mx.check_gradients(model, X, y, mx.losses.CrossEntropy())
    assert not result.ok and result.max_rel_error > 1e-3
    assert result.errors["0.weight"] > 1e-3 and result.errors["2.weight"] < 1e-7


def test_gradient_check_subsamples_large_tensors():
    model = mx.Sequential(mx.Linear(30, 40), mx.Tanh(), mx.Linear(40, 3), dtype="float64")
    X, y = np.random.default_rng(0).normal(size=(4, 30)), np.array([0, 1, 2, 1])
    result = mx.check_gradients(model, X, y, mx.losses.CrossEntropy(), max_per_tensor=20)
    assert result.ok and result.checked == 20 + 20 + 20 + 3


def _train(backend, dtype="float32", epochs=3, device=None):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(200, 10)), rng.integers(0, 4, size=200)
    model = mx.Sequential(mx.Linear(10, 32), mx.ReLU(), mx.Dropout(0.2), mx.Linear(32, 16), mx.GELU(),
                          mx.LayerNorm(), mx.Linear(16, 4), mx.Softmax(), backend=backend, device=device, dtype=dtype,
                          seed=7)
    history = model.fit(X, y, loss=mx.losses.CrossEntropy(label_smoothing=0.05),
                        optimizer=mx.optim.Adam(lr=1e-2, clip_norm=1.0), epochs=epochs, batch_size=32,
                        validation_data=(X[:50], y[:50]), verbose=0)
    return model, history


@pytest.mark.parametrize("device", [None, "device1"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_and_array_api_strict_are_bitwise_identical(dtype, device):
    """Also on array_api_strict's second device, which refuses to mix devices as a GPU does."""
    strict = pytest.importorskip("array_api_strict")
    numpy_model, numpy_history = _train("numpy", dtype)
    strict_model, strict_history = _train("array_api_strict", dtype, device=device and strict.Device(device))
    if device:
        assert strict_model.params.device == strict.Device(device)
    for key, value in numpy_model.state_dict().items():
        assert np.array_equal(numpy_of(value), numpy_of(strict_model.state_dict()[key])), key
    assert numpy_history == strict_history


def test_other_backends_track_numpy_in_float64(backend):
    reference, _ = _train("numpy", "float64")
    other, _ = _train(backend, "float64", device=backend.device)
    for key, value in reference.state_dict().items():
        np.testing.assert_allclose(numpy_of(other.state_dict()[key]), numpy_of(value), rtol=1e-9, atol=1e-12)


def test_repr_lists_layers_and_backend():
    text = repr(mx.Sequential(mx.Linear(2, 3), mx.LeakyReLU(0.2), seed=3))
    assert text == ("Sequential(Linear(in_features=2, out_features=3, bias=True, init=None), "
                    "LeakyReLU(negative_slope=0.2), backend='numpy', dtype='float32', seed=3)")
