"""End-to-end training: XOR, the bundled digits data set, stability of sigmoid + BCE at a high
learning rate, the non-finite guard, history, callbacks and continued training."""

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import numpy_of

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0])


@pytest.mark.parametrize("backend_name", ["numpy", "array_api_strict"])
def test_xor(backend_name):
    model = mx.Sequential(mx.Linear(2, 8), mx.Tanh(), mx.Linear(8, 1), mx.Sigmoid(), backend=backend_name, seed=0)
    history = model.fit(XOR_X, XOR_Y, loss=mx.losses.BinaryCrossEntropy(), optimizer=mx.optim.Adam(lr=0.05),
                        epochs=300, batch_size=4, verbose=0)
    predictions = numpy_of(model.predict(XOR_X)).ravel()
    assert np.array_equal(predictions > 0.5, XOR_Y == 1)
    assert history["accuracy"][-1] == 1.0 and history["loss"][-1] < 0.05


def test_digits_reaches_high_accuracy():
    X, y = mx.datasets.load_digits()
    X_train, X_test, y_train, y_test = mx.datasets.train_test_split(X, y, seed=0)
    X_train, X_test = mx.datasets.standardize(X_train, X_test)
    model = mx.Sequential(mx.Linear(64, 64), mx.ReLU(), mx.Linear(64, 10), mx.Softmax(), seed=0)
    history = model.fit(X_train, y_train, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(lr=3e-3),
                        epochs=15, batch_size=32, validation_data=(X_test, y_test), verbose=0)
    result = model.evaluate(X_test, y_test, mx.losses.CrossEntropy())
    assert result["accuracy"] > 0.95
    assert history["val_accuracy"][-1] == pytest.approx(result["accuracy"])
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} and history.epochs == 15
    assert history["loss"][-1] < history["loss"][0] / 5


def test_sigmoid_bce_at_lr_one_never_goes_nan():
    """The classic failure: sigmoid output + cross-entropy at a high learning rate. Fused
    from logits, thousands of steps stay finite even as the logits grow huge."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 10)) * 5
    y = (X[:, 0] + X[:, 1] > 0).astype(float)  # separable: logits grow without bound
    model = mx.Sequential(mx.Linear(10, 16), mx.Sigmoid(), mx.Linear(16, 1), mx.Sigmoid(), seed=0)
    history = model.fit(X, y, loss=mx.losses.BinaryCrossEntropy(), optimizer=mx.optim.SGD(lr=1.0),
                        epochs=100, batch_size=8, verbose=0)  # 3,200 steps
    assert all(np.isfinite(history["loss"]))
    assert np.all(np.isfinite(numpy_of(model.params)))
    assert history["accuracy"][-1] > 0.97
    probabilities = numpy_of(model.predict(X))
    # the float32 output saturated to exactly 0 or 1: log(1 - p) on probabilities would be log(0)
    assert np.any((probabilities == 1.0) | (probabilities == 0.0))


def test_regression_with_mse_and_huber():
    rng = np.random.default_rng(1)
    X = rng.uniform(-2, 2, size=(400, 1))
    y = np.sin(2 * X[:, 0])
    for loss in (mx.losses.MSE(), mx.losses.Huber(delta=0.5)):
        model = mx.Sequential(mx.Linear(1, 32), mx.Tanh(), mx.Linear(32, 1), seed=0)
        history = model.fit(X, y, loss=loss, optimizer=mx.optim.Adam(lr=1e-2), epochs=150, batch_size=32, verbose=0)
        assert set(history) == {"loss", "lr"}
        assert float(np.mean((numpy_of(model.predict(X)).ravel() - y) ** 2)) < 0.01


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_raises_non_finite_error_and_keeps_finite_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)) * 100
    y = rng.normal(size=64) * 1e3
    model = mx.Sequential(mx.Linear(4, 16), mx.ReLU(), mx.Linear(16, 1), seed=0)
    with pytest.raises(mx.NonFiniteError) as info:
        model.fit(X, y, loss=mx.losses.MSE(), optimizer=mx.optim.SGD(lr=10.0), epochs=50, batch_size=8, verbose=0)
    error = info.value
    assert error.epoch >= 1 and error.step >= 1
    assert f"epoch {error.epoch}, step {error.step}" in str(error)
    assert error.name in model.state_dict() or error.name == "loss"
    assert np.all(np.isfinite(numpy_of(model.params)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_error_names_overflowing_activation():
    model = mx.Sequential(mx.Linear(2, 2), mx.Softplus(), mx.Linear(2, 1), dtype="float32", seed=0)
    X = np.full((4, 2), 3e38, dtype=np.float32)  # finite input, overflows in the first product
    with pytest.raises(mx.NonFiniteError, match="forward pass overflowed.*layer 0"):
        model.fit(X, np.zeros(4), loss=mx.losses.MSE(), optimizer=mx.optim.SGD(lr=0.1), verbose=0)


def test_fit_twice_with_the_same_optimizer_equals_one_longer_fit():
    X, y = mx.datasets.load_digits()
    X = mx.datasets.standardize(X)[:300]
    y = y[:300]

    def make():
        return mx.Sequential(mx.Linear(64, 32), mx.ReLU(), mx.Dropout(0.1), mx.Linear(32, 10), seed=3)

    once, twice, optimizer = make(), make(), mx.optim.Adam(lr=1e-3)
    once.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(lr=1e-3), epochs=4, verbose=0)
    twice.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=2, verbose=0)
    twice.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=2, verbose=0)
    assert np.array_equal(numpy_of(once.params), numpy_of(twice.params))


def test_same_seed_same_training_and_shuffle_changes_order():
    X, y = mx.datasets.load_digits()
    X, y = mx.datasets.standardize(X)[:200], y[:200]

    def run(shuffle, seed=0):
        model = mx.Sequential(mx.Linear(64, 16), mx.ReLU(), mx.Linear(16, 10), seed=seed)
        model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(lr=0.1), epochs=2, batch_size=16,
                  shuffle=shuffle, verbose=0)
        return numpy_of(model.params)

    assert np.array_equal(run(True), run(True))
    assert not np.array_equal(run(True), run(False))


def test_early_stopping_restores_best_weights():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 5)), rng.integers(0, 2, size=60)
    Xv, yv = rng.normal(size=(60, 5)), rng.integers(0, 2, size=60)  # noise: val loss soon rises
    model = mx.Sequential(mx.Linear(5, 64), mx.ReLU(), mx.Linear(64, 2), seed=0)
    stopper = mx.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(lr=1e-2), epochs=200,
                        validation_data=(Xv, yv), callbacks=[stopper], verbose=0)
    assert history.epochs < 200 and stopper.stopped_epoch == history.epochs
    assert history.epochs == stopper.best_epoch + 3
    best = min(history["val_loss"])
    assert model.evaluate(Xv, yv, mx.losses.CrossEntropy())["loss"] == pytest.approx(best, rel=1e-6)


def test_early_stopping_needs_the_monitored_metric():
    model = mx.Sequential(mx.Linear(2, 2), seed=0)
    before = numpy_of(model.params)
    with pytest.raises(ValueError, match="pass validation_data"):
        model.fit(XOR_X, XOR_Y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(),
                  callbacks=[mx.callbacks.EarlyStopping()], verbose=0)
    assert np.array_equal(numpy_of(model.params), before)  # refused before the first step


def test_verbose_levels(capsys):
    model = mx.Sequential(mx.Linear(2, 2), seed=0)
    fit = lambda verbose: model.fit(XOR_X, XOR_Y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(),  # noqa
                                    epochs=3, verbose=verbose, validation_data=(XOR_X, XOR_Y))
    fit(2)
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3 - loss ") and "val_accuracy" in lines[0]
    assert "samples/s" in lines[0] and captured.err == ""
    fit(1)  # a tqdm bar per epoch on stderr, ending with the epoch's metrics
    captured = capsys.readouterr()
    assert captured.out == "" and "epoch 3/3" in captured.err and "val_loss" in captured.err
    fit("auto")  # not a terminal: silent
    assert capsys.readouterr() == ("", "")
    fit(0)
    assert capsys.readouterr() == ("", "")
    with pytest.raises(ValueError, match="verbose must be"):
        fit(3)


def test_predict_batches_and_returns_backend_arrays(exact_backend):
    model = mx.Sequential(mx.Linear(3, 5), mx.Tanh(), mx.Linear(5, 2), mx.Softmax(), backend=exact_backend,
                          dtype="float64")
    X = np.random.default_rng(0).normal(size=(37, 3))
    whole = model.predict(X, batch_size=1000)
    batched = model.predict(X, batch_size=8)
    assert type(whole) is type(model.params)
    assert np.array_equal(numpy_of(whole), numpy_of(batched)) or np.allclose(numpy_of(whole), numpy_of(batched),
                                                                             rtol=1e-15)
    assert tuple(whole.shape) == (37, 2)


def test_one_hot_targets_train_like_labels():
    X, y = mx.datasets.load_digits()
    X, y = mx.datasets.standardize(X)[:200], y[:200]

    def run(targets):
        model = mx.Sequential(mx.Linear(64, 16), mx.ReLU(), mx.Linear(16, 10), dtype="float64", seed=0)
        model.fit(X, targets, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(lr=0.1), epochs=2, verbose=0)
        return numpy_of(model.params)

    np.testing.assert_allclose(run(np.eye(10)[y]), run(y), rtol=1e-12)


def test_inputs_from_another_backend_are_converted():
    strict = pytest.importorskip("array_api_strict")
    model = mx.Sequential(mx.Linear(2, 2), dtype="float64", seed=0)
    from_numpy = numpy_of(model.predict(XOR_X))
    from_strict = model.predict(strict.asarray(XOR_X))
    assert isinstance(from_strict, np.ndarray)
    np.testing.assert_array_equal(from_strict, from_numpy)


def test_plots_to_a_file_leave_the_matplotlib_backend_alone(tmp_path):
    """A notebook keeps its inline plots: saving History and Comparison plots sets no backend and
    imports no pyplot."""
    import subprocess
    import sys

    pytest.importorskip("matplotlib")
    script = f"""
import sys, numpy as np, mlp_xp as mx
model = mx.Sequential(mx.Linear(2, 2), seed=0)
history = model.fit(np.ones((8, 2)), np.arange(8) % 2, mx.losses.CrossEntropy(), mx.optim.SGD(), verbose=0)
history.plot({str(tmp_path / "history.png")!r})
mx.compare(mx.Sequential(mx.Linear(2, 2), seed=0), np.ones((8, 2)), np.arange(8) % 2, mx.losses.CrossEntropy(),
           mx.optim.SGD(), configs=["numpy:float64", "numpy:float32"], epochs=1,
           batch_size=4).plot({str(tmp_path / "compare.png")!r})
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported (and with it a backend)"
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "history.png").stat().st_size > 0 and (tmp_path / "compare.png").stat().st_size > 0
