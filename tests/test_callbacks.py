"""Callbacks, non-finite handling modes, progress-independent history, and History.plot."""

import csv

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import numpy_of

rng = np.random.default_rng(0)
X = rng.normal(size=(64, 5))
Y = (X[:, 0] > 0).astype(int)


def _model():
    return mx.Sequential(mx.Linear(5, 8), mx.Tanh(), mx.Linear(8, 2), seed=0)


def test_learning_rate_scheduler_sets_each_epoch():
    scheduler = mx.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 * 0.5 ** (epoch - 1))  # epochs from 1
    optimizer = mx.optim.SGD(lr=1.0)
    history = _model().fit(X, Y, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=3,
                           callbacks=[scheduler], verbose=0)
    assert scheduler.history == [0.1, 0.05, 0.025] == history["lr"] and optimizer.lr == 0.025


def test_learning_rate_scheduler_changes_training():
    def run(callbacks):
        model = _model()
        model.fit(X, Y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(lr=0.1), epochs=2,
                  callbacks=callbacks, verbose=0)
        return numpy_of(model.params)

    constant = mx.callbacks.LearningRateScheduler(lambda epoch, lr: lr)
    assert np.array_equal(run([constant]), run([]))
    assert not np.array_equal(run([mx.callbacks.LearningRateScheduler(lambda e, lr: 0.01)]), run([]))


def test_csv_logger(tmp_path):
    path = tmp_path / "log.csv"
    history = _model().fit(X, Y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), epochs=3, verbose=0,
                           validation_data=(X, Y), callbacks=[mx.callbacks.CSVLogger(path)])
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(history["val_loss"])
    _model().fit(X, Y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), epochs=2, verbose=0,
                 validation_data=(X, Y), callbacks=[mx.callbacks.CSVLogger(path, append=True)])
    assert len(list(csv.DictReader(path.open()))) == 5


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_on_nonfinite_skip_batch_drops_only_bad_batches():
    targets = X[:, 1].copy()
    targets[10] = 3e38  # finite in float32, but its squared error overflows: one bad batch per epoch

    def run(y, mode):
        model = mx.Sequential(mx.Linear(5, 8), mx.Tanh(), mx.Linear(8, 1), seed=0)
        history = model.fit(X, y, loss=mx.losses.MSE(), optimizer=mx.optim.Adam(lr=1e-2), epochs=3, batch_size=8,
                            shuffle=False, on_nonfinite=mode, verbose=0)
        return model, history

    model, history = run(targets, "skip_batch")
    assert history["skipped_batches"] == [1, 1, 1]
    assert np.all(np.isfinite(numpy_of(model.params))) and all(np.isfinite(history["loss"]))
    with pytest.raises(mx.NonFiniteError, match="epoch 1, step 2"):
        run(targets, "raise")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_on_nonfinite_stop_keeps_finite_weights_and_says_why():
    data = rng.normal(size=(64, 5)) * 1000
    model = mx.Sequential(mx.Linear(5, 1), seed=0)
    history = model.fit(data, rng.normal(size=64) * 1000, loss=mx.losses.MSE(), optimizer=mx.optim.SGD(lr=1e37),
                        epochs=5, batch_size=8, on_nonfinite="stop", verbose=0)
    assert history.stop_reason.startswith("non-finite parameter at epoch 1, step 1: ")  # the update was refused
    assert np.all(np.isfinite(numpy_of(model.params)))
    assert history.epochs == 1


def test_bad_on_nonfinite():
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        _model().fit(X, Y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(), on_nonfinite="ignore")


def test_history_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    history = _model().fit(X, Y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), epochs=3,
                           validation_data=(X, Y), verbose=0)
    figure = history.plot(tmp_path / "history.png")
    assert (tmp_path / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(figure.axes) == 2
    assert sorted(line.get_label() for line in figure.axes[0].lines) == ["loss", "val_loss"]
    with pytest.raises(ValueError, match="nothing to plot"):
        mx.History(lr=[0.1]).plot(tmp_path / "x.png")


def test_summary_and_layer_statistics():
    model = mx.Sequential(mx.Linear(5, 8), mx.ReLU(), mx.Dropout(0.5), mx.Linear(8, 2), mx.Softmax(), seed=0)
    text = model.summary()
    assert "Linear(5 -> 8)" in text and "(batch, 8)" in text and text.endswith("total parameters: 66 (numpy, float32)")
    stats = mx.layer_statistics(model, X, Y, mx.losses.CrossEntropy())
    assert [row["index"] for row in stats] == [0, 1, 2, 3, 4]
    relu = stats[1]
    hidden = numpy_of(model.predict(X))  # noqa: F841 (the model runs)
    activations = np.maximum(X @ numpy_of(model.state_dict()["0.weight"]) + numpy_of(model.state_dict()["0.bias"]), 0)
    assert relu["mean"] == pytest.approx(activations.mean(), rel=1e-5)
    assert relu["dead_fraction"] == pytest.approx((activations <= 0).all(axis=0).mean())
    assert stats[4]["grad_std"] is None  # fused with the loss: the gradient starts at the logits
    assert stats[3]["grad_std"] > 0
    table = mx.diagnostics.format_statistics(stats)
    assert table.count("\n") == 5 and "ReLU()" in table


def test_dead_relu_units_are_reported():
    model = mx.Sequential(mx.Linear(5, 4), mx.ReLU(), mx.Linear(4, 2), seed=0)
    state = model.state_dict()
    state["0.bias"] = np.array([-100.0, 0.0, -100.0, 0.0], dtype=np.float32)  # two units never fire
    model.load_state_dict(state)
    assert mx.layer_statistics(model, X)[1]["dead_fraction"] == 0.5
