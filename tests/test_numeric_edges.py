"""Numeric edges: outputs that overflow in predict / evaluate, statistics of huge features, and
bfloat16 inputs."""

import csv
import json

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp import cli

from .conftest import _available, numpy_of

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflows are the point

FLOAT16_BACKENDS = ["numpy", "torch", "jax"]
LAYER_0 = r"output of layer 0 \(Linear"


def _classifier(precision="float16", backend="numpy", device=None):
    return mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Linear(8, 3), mx.Softmax(), backend=backend, device=device,
                         precision=precision, seed=0)


def _skip_missing(backend):
    if not _available(backend):
        pytest.skip(f"{backend} is not installed")


# ---------------------------------------------------------------- 1. overflow in predict / evaluate


@pytest.mark.parametrize("backend", FLOAT16_BACKENDS)
def test_float16_overflow_in_predict_and_evaluate_raises_naming_layer_0(backend):
    _skip_missing(backend)
    model = _classifier(backend=backend)
    X = np.full((5, 4), 1e5, dtype=np.float32)  # finite in float32, inf in float16
    y = np.array([0, 1, 2, 0, 1])
    with pytest.raises(mx.NonFiniteError, match=LAYER_0):
        model.predict(X)
    with pytest.raises(mx.NonFiniteError, match=LAYER_0):
        model.evaluate(X, y, mx.losses.CrossEntropy())
    with pytest.raises(mx.NonFiniteError, match=LAYER_0):  # what fit already said
        model.fit(X, y, mx.losses.CrossEntropy(), mx.optim.SGD(0.1), verbose=0)


def test_the_error_names_the_first_overflowing_row_among_several_batches():
    model = _classifier()
    X = np.ones((10, 4), dtype=np.float32)
    X[7] = 1e5
    y = np.arange(10) % 3
    with pytest.raises(mx.NonFiniteError, match=r"X\[7\].*" + LAYER_0) as error:
        model.predict(X, batch_size=3)
    assert error.value.epoch is None and error.value.name == "output"
    with pytest.raises(mx.NonFiniteError, match=r"X\[7\].*" + LAYER_0):
        model.evaluate(X, y, mx.losses.CrossEntropy(), batch_size=3)
    assert np.all(np.isfinite(numpy_of(model.predict(X[:7], batch_size=3))))  # finite rows: unchanged


def _overflowing_float32_model(backend):
    model = mx.Sequential(mx.Linear(2, 2), mx.ReLU(), mx.Linear(2, 1), **backend.options)
    state = {key: np.ones(tuple(value.shape)) for key, value in model.state_dict().items()}
    return model.load_state_dict(state)


def test_overflow_is_caught_on_every_backend(backend):
    """float32 rows whose layer-0 product overflows (3e38 + 3e38 = inf): the check is Array API
    code, so it runs on array-api-strict (and its second device) as on the others."""
    model = _overflowing_float32_model(backend)
    X = np.array([[1.0, 2.0], [3e38, 3e38]], dtype=np.float32)
    with pytest.raises(mx.NonFiniteError, match=r"X\[1\].*output of layer 0 \(Linear"):
        model.predict(X)
    with pytest.raises(mx.NonFiniteError, match=r"X\[1\].*output of layer 0 \(Linear"):
        model.evaluate(X, np.zeros(2), mx.losses.MSE())
    assert np.all(np.isfinite(numpy_of(model.predict(X[:1]))))


def test_a_loss_that_overflows_with_finite_outputs_is_named():
    model = mx.Sequential(mx.Linear(1, 1), seed=0)
    model.load_state_dict({"0.weight": np.ones((1, 1)), "0.bias": np.zeros(1)})
    X = np.array([[3e38]], dtype=np.float32)
    with pytest.raises(mx.NonFiniteError, match="loss") as error:
        model.evaluate(X, np.array([[-3e38]]), mx.losses.MSE())  # (6e38)^2 overflows float32
    assert error.value.name == "loss"


def test_fit_stops_on_validation_rows_that_overflow():
    model = _classifier()
    X, y = np.ones((6, 4), dtype=np.float32), np.arange(6) % 3
    X_val = X.copy()
    X_val[2] = 1e5
    with pytest.raises(mx.NonFiniteError, match=r"X\[2\].*" + LAYER_0):
        model.fit(X, y, mx.losses.CrossEntropy(), mx.optim.SGD(0.1), validation_data=(X_val, y), verbose=0)


# ---------------------------------------------------------------- 2. statistics of huge features


def _huge_column(scale=1e200):
    rng = np.random.default_rng(0)
    return np.stack([rng.normal(size=50), rng.normal(3.0, 2.0, size=50) * scale], axis=1)


def test_standardizer_handles_a_feature_of_1e200():
    X = _huge_column()
    scaler = mx.datasets.Standardizer().fit(X)
    down = X[:, 1] / 1e200
    assert scaler.mean[1] == pytest.approx(np.mean(down) * 1e200, rel=1e-12)
    assert scaler.scale[1] == pytest.approx(np.std(down) * 1e200, rel=1e-12)
    expected = (down - np.mean(down)) / np.std(down)
    np.testing.assert_allclose(scaler.transform(X)[:, 1], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(X)), X, rtol=1e-12)
    train, test = mx.datasets.standardize(X[:40], X[40:])
    assert np.all(np.isfinite(train)) and np.std(train[:, 1]) == pytest.approx(1.0)
    assert np.all(np.isfinite(test))


def test_standardizer_is_unchanged_on_ordinary_data():
    X = _huge_column(scale=1.0)
    scaler = mx.datasets.Standardizer().fit(X)
    assert np.array_equal(scaler.mean, X.mean(axis=0)) and np.array_equal(scaler.scale, X.std(axis=0))


def test_standardizer_at_the_edge_of_float64():
    big = np.finfo(np.float64).max
    X = np.array([[-0.9 * big], [0.9 * big], [0.9 * big]])  # x - mean overflows; the scale does not
    out = mx.datasets.Standardizer().fit_transform(X)
    down = X[:, 0] / big
    np.testing.assert_allclose(out[:, 0], (down - down.mean()) / down.std(), rtol=1e-12)
    tiny = mx.datasets.Standardizer().fit(np.array([[0.0, 1.0], [1e-300, 2.0]]))
    # 1e10 standardizes to 1e10 / 5e-301: beyond float64, refused naming the value's row and column
    with pytest.raises(ValueError, match=r"X\[0, 0\] = 1e\+10 .*beyond float64's range \(column 0"):
        tiny.transform(np.array([[1e10, 1.0]]))


def test_cli_learns_from_a_feature_of_1e200(tmp_path, capsys):
    rng = np.random.default_rng(1)
    signal = rng.normal(size=200)
    path = tmp_path / "huge.csv"
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["noise", "huge", "label"])
        for value in signal:
            writer.writerow([repr(float(rng.normal())), repr(float(value * 1e200)), "yes" if value > 0 else "no"])
    report = tmp_path / "run.json"
    status = cli.main(["train", "--data", str(path), "--epochs", "30", "--quiet", "--json", str(report)])
    err = capsys.readouterr().err
    assert status == 0, err
    assert json.load(open(report))["test"]["accuracy"] > 0.9


# ---------------------------------------------------------------- 3. bfloat16 inputs


def _bfloat16_rows():
    return np.array([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.75, 3.0]], dtype=np.float32)  # exact in bfloat16


def _reference(model, rows):
    return numpy_of(model.predict(rows))


def test_numpy_bfloat16_arrays_are_accepted():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="numpy's bfloat16 comes from the ml_dtypes package")
    model = _classifier(precision=None)
    rows = _bfloat16_rows()
    np.testing.assert_array_equal(numpy_of(model.predict(rows.astype(ml_dtypes.bfloat16))), _reference(model, rows))
    np.testing.assert_array_equal(numpy_of(model.predict(rows.astype(np.float16))), _reference(model, rows))
    scaler = mx.datasets.Standardizer().fit(rows.astype(ml_dtypes.bfloat16))
    assert np.array_equal(scaler.mean, rows.astype(np.float64).mean(axis=0))
    regression = mx.Sequential(mx.Linear(4, 1), seed=0)
    targets = np.array([1.0, 2.0], dtype=ml_dtypes.bfloat16)
    assert np.isfinite(regression.evaluate(rows, targets, mx.losses.MSE())["loss"])


@pytest.mark.parametrize("source", ["torch", "jax"])
@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_torch_and_jax_bfloat16_arrays_are_accepted(source, backend):
    _skip_missing(source)
    _skip_missing(backend)
    rows = _bfloat16_rows()
    if source == "torch":
        import torch

        X = torch.asarray(rows).to(torch.bfloat16)
    else:
        import jax.numpy as jnp

        X = jnp.asarray(rows, dtype=jnp.bfloat16)
    model = _classifier(precision=None, backend=backend)
    np.testing.assert_array_equal(numpy_of(model.predict(X)), _reference(model, rows))
