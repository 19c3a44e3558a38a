"""Bad input gets a clear error naming the problem, before any training step."""

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import numpy_of

X = np.random.default_rng(0).normal(size=(6, 3))
Y = np.array([0, 1, 2, 0, 1, 2])


def _model(last=None, outputs=3, backend="numpy"):
    layers = [mx.Linear(3, 4), mx.ReLU(), mx.Linear(4, outputs)] + ([last] if last else [])
    return mx.Sequential(*layers, backend=backend, seed=0)


def _fit(model, X_, y_, loss=None, **kwargs):
    kwargs.setdefault("verbose", 0)
    return model.fit(X_, y_, loss=loss or mx.losses.CrossEntropy(), optimizer=kwargs.pop("optimizer", mx.optim.SGD()),
                     **kwargs)


with_nan = X.copy()
with_nan[2, 1] = np.nan
with_inf = X.copy()
with_inf[4, 0] = -np.inf

BAD_INPUTS = [
    ("nan", with_nan, Y, ValueError, r"X contains NaN or infinity: X\[2, 1\] = nan"),
    ("inf", with_inf, Y, ValueError, r"X\[4, 0\] = -inf"),
    ("overflows float32", X * 1e300, Y, ValueError, "after conversion to float32"),
    ("label too big", X, np.array([0, 1, 2, 3, 1, 2]), ValueError,
     r"label out of range: y\[3\] = 3 but the model has 3 outputs, so labels must be in \[0, 2\]"),
    ("negative label", X, np.array([0, -1, 2, 0, 1, 2]), ValueError, r"label out of range: y\[1\] = -1"),
    ("fractional label", X, np.array([0, 1.5, 2, 0, 1, 2]), ValueError, "non-integer class labels"),
    ("nan label", X, np.array([0, np.nan, 2, 0, 1, 2]), ValueError, "y contains NaN"),
    ("string labels", X, np.array(["a", "b", "c", "a", "b", "c"]), ValueError, "encode_labels"),
    ("bool labels", X, np.array([True, False] * 3), ValueError, "boolean"),
    ("wrong features", X[:, :2], Y, mx.ShapeError,
     r"X has 2 features \(shape \(6, 2\)\) but layer 0 \(Linear\(in_features=3.*\(batch, 3\)"),
    ("1-D X", X[:, 0], Y, ValueError, r"X must be 2-D \(samples, features\), got shape \(6,\); .*reshape"),
    ("3-D X", X.reshape(6, 3, 1), Y, ValueError, "X must be 2-D"),
    ("empty", np.zeros((0, 3)), np.zeros(0, dtype=int), ValueError, r"X is empty: shape \(0, 3\)"),
    ("mismatched", X, Y[:5], ValueError, "X has 6 samples but y has 5"),
    ("scalar y", X, 1, ValueError, "y has none"),
    ("ragged X", [[1.0, 2.0, 3.0], [1.0, 2.0]], [0, 1], ValueError, "ragged"),
    ("string X", np.array([["a", "b", "c"]]), [0], ValueError, "encode text columns"),
    ("None X", None, Y, ValueError, "X is None"),
    ("one-hot wrong width", X, np.eye(4)[[0, 1, 2, 0, 1, 2]], mx.ShapeError,
     r"y has shape \(6, 4\) but the model's outputs have shape \(6, 3\)"),
    ("probabilities not summing to 1", X, np.full((6, 3), 0.5), ValueError, "must sum to 1 per row; row 0 sums to 1.5"),
    ("column labels", X, Y.reshape(-1, 1), mx.ShapeError, "class labels must be 1-D"),
]


@pytest.mark.parametrize("name,X_,y_,error,match", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_raises_before_training(name, X_, y_, error, match, exact_backend):
    model = _model(backend=exact_backend)
    before = numpy_of(model.params)
    with pytest.raises(error, match=match):
        _fit(model, X_, y_)
    assert np.array_equal(numpy_of(model.params), before)


X_ONLY = [case for case in BAD_INPUTS if case[0] in ("nan", "inf", "overflows float32", "wrong features", "1-D X",
                                                    "3-D X", "ragged X", "string X", "None X")]


@pytest.mark.parametrize("name,X_,y_,error,match", X_ONLY, ids=[case[0] for case in X_ONLY])
def test_bad_input_to_predict(name, X_, y_, error, match):
    with pytest.raises(error, match=match):
        _model().predict(X_)


def test_bad_validation_data_is_named():
    with pytest.raises(ValueError, match="validation X contains NaN"):
        _fit(_model(), X, Y, validation_data=(with_nan, Y))
    with pytest.raises(ValueError, match="validation_data must be a pair"):
        _fit(_model(), X, Y, validation_data=X)
    with pytest.raises(ValueError, match=r"label out of range: validation y\[0\] = 7"):
        _fit(_model(), X, Y, validation_data=(X, np.full(6, 7)))


@pytest.mark.parametrize("y_,match", [(np.array([0.0, 1.0, 2.0, 0.5, 1.0, 1.0]), r"targets must lie in \[0, 1\]"),
                                      (np.ones((6, 2)), r"y has shape \(6, 2\)")])
def test_binary_targets(y_, match):
    with pytest.raises(ValueError, match=match):
        _fit(_model(mx.Sigmoid(), outputs=1), X, y_, loss=mx.losses.BinaryCrossEntropy())


def test_regression_targets_shape():
    with pytest.raises(mx.ShapeError, match=r"y has shape \(6,\) but the model's outputs have shape \(6, 3\)"):
        _fit(_model(), X, np.zeros(6), loss=mx.losses.MSE())


@pytest.mark.parametrize("last,loss,match", [
    (mx.Sigmoid(), mx.losses.CrossEntropy(), "ends in Sigmoid but the loss is CrossEntropy.*BinaryCrossEntropy"),
    (mx.Softmax(), mx.losses.BinaryCrossEntropy(), "ends in Softmax but the loss is BinaryCrossEntropy"),
])
def test_output_layer_and_loss_mismatch(last, loss, match):
    with pytest.raises(ValueError, match=match):
        _fit(_model(last), X, Y, loss=loss)


def test_cross_entropy_needs_two_outputs():
    with pytest.raises(ValueError, match="CrossEntropy needs >= 2 output features"):
        _fit(_model(outputs=1), X, np.zeros(6, dtype=int))


@pytest.mark.parametrize("kwargs,error,match", [
    ({"epochs": -1}, ValueError, "epochs must be an int >= 0"),
    ({"epochs": 2.5}, ValueError, "epochs must be an int"),
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1"),
    ({"verbose": 3}, ValueError, "verbose must be 0, 1, 2 or .auto."),
    ({"optimizer": mx.optim.Adam}, TypeError, "instead of an instance"),
    ({"loss": mx.losses.MSE}, TypeError, "instead of an instance"),
])
def test_bad_fit_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        _fit(_model(), X, Y, **kwargs)


def test_float_labels_that_are_integers_are_accepted():
    history = _fit(_model(), X, Y.astype(float), epochs=1)
    assert np.isfinite(history["loss"][0])


def test_lists_are_accepted():
    history = _fit(_model(), X.tolist(), Y.tolist(), epochs=1)
    assert np.isfinite(history["loss"][0])


def test_zero_epochs_trains_nothing():
    model = _model()
    before = numpy_of(model.params)
    assert _fit(model, X, Y, epochs=0)["loss"] == []
    assert np.array_equal(numpy_of(model.params), before)
