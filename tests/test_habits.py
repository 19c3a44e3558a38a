"""What people bring from PyTorch, Keras and scikit-learn works, or fails before any work with a
message that points the right way."""

import sys
import types

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import numpy_of

rng = np.random.default_rng(0)
X = rng.normal(size=(120, 4))
LABELS = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
TARGET = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 3.0


def _classifier(**options):
    return mx.Sequential(mx.Linear(4, 16), mx.ReLU(), mx.Linear(16, 3), mx.Softmax(), seed=0, **options)


def _fit(model, callbacks=(), **options):
    options = {"epochs": 2, "verbose": 0, **options}
    return model.fit(X, LABELS, loss=mx.losses.CrossEntropy(), optimizer=options.pop("optimizer", mx.optim.Adam()),
                     callbacks=list(callbacks), **options)


# ---------------------------------------------------------------- layers


def test_layernorm_takes_pytorchs_argument_order():
    assert mx.LayerNorm(64).normalized_shape == 64 and mx.LayerNorm(64).eps == 1e-5
    assert mx.LayerNorm((8,), 1e-3).eps == 1e-3
    model = mx.Sequential(mx.Linear(4, 8), mx.LayerNorm(8), mx.Linear(8, 2), seed=0)
    assert model.state_dict()["1.weight"].shape == (8,)
    with pytest.raises(mx.ShapeError, match=r"layer 1 .*normalizes 64 features but receives \(batch, 8\)"):
        mx.Sequential(mx.Linear(4, 8), mx.LayerNorm(64))


@pytest.mark.parametrize("make,message", [
    (lambda: mx.LayerNorm(eps=0), "eps must be a finite number > 0"),
    (lambda: mx.LayerNorm(eps=-1), "eps must be a finite number > 0"),
    (lambda: mx.LayerNorm(8, eps=float("nan")), "eps"),
    (lambda: mx.LayerNorm((3, 4)), "last dimension only"),
    (lambda: mx.LayerNorm(0), "normalized_shape must be a positive int"),
    (lambda: mx.LeakyReLU(float("nan")), "negative_slope"),
    (lambda: mx.ELU(float("inf")), "alpha"),
])
def test_bad_layer_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_numpy_integers_are_layer_widths():
    model = mx.Sequential(mx.Linear(np.int64(4), np.int32(6)), mx.ReLU(), mx.Linear(None, np.uint8(2)), seed=0)
    assert model.state_dict()["2.weight"].shape == (6, 2) and type(model.layers[0].out_features) is int
    with pytest.raises(ValueError, match="positive int"):
        mx.Linear(4, 2.0)


# ---------------------------------------------------------------- the model as a container


def test_model_call_len_index_and_summary_display():
    model = _classifier()
    assert np.array_equal(numpy_of(model(X)), numpy_of(model.predict(X)))
    assert len(model) == 4 and model[2] is model.layers[2] and model[-1] == mx.Softmax()
    assert model[1:3] == model.layers[1:3] and list(model) == list(model.layers)
    summary = model.summary()
    assert repr(summary) == str(summary) and summary.startswith("#   layer") and "\\n" not in repr(summary)
    printed = []
    summary._repr_pretty_(types.SimpleNamespace(text=printed.append), False)
    assert printed == [str(summary)]


def test_verbose_auto_shows_a_bar_in_a_notebook(monkeypatch):
    from mlp_xp.train import loop as training

    assert training._resolve_verbose("auto") == 0  # pytest captures stderr: not a terminal
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert training._resolve_verbose("auto") == 1


# ---------------------------------------------------------------- callbacks


class KerasStyle:
    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", logs))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch, logs))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, sorted(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", logs))


def test_keras_style_callbacks_are_called_as_written():
    callback = KerasStyle()
    _fit(_classifier(), [callback], epochs=2, batch_size=60)
    assert callback.calls == [
        ("train_begin", {}), ("epoch_begin", 1, {}), ("batch_end", 1, ["loss"]), ("batch_end", 2, ["loss"]),
        ("epoch_end", 1, ["accuracy", "loss", "lr"]), ("epoch_begin", 2, {}), ("batch_end", 1, ["loss"]),
        ("batch_end", 2, ["loss"]), ("epoch_end", 2, ["accuracy", "loss", "lr"]), ("train_end", {})]


def test_callbacks_with_our_own_and_other_signatures():
    seen = []

    class Ours:
        def on_epoch_end(self, epoch, logs, model):
            seen.append(("ours", epoch, model.num_parameters))

    class Short:
        def on_epoch_end(self, e):
            seen.append(("short", e))

    class Varargs:
        def on_epoch_end(self, *args):
            seen.append(("varargs", len(args)))

    _fit(_classifier(), [Ours(), Short(), Varargs()], epochs=1)
    assert seen == [("ours", 1, 4 * 16 + 16 + 16 * 3 + 3), ("short", 1), ("varargs", 3)]


def test_a_hook_that_cannot_be_called_fails_before_training():
    class Greedy:
        def on_epoch_end(self, epoch, logs, model, extra):
            pass

    model = _classifier()
    before = numpy_of(model.params)
    with pytest.raises(TypeError, match=r"cannot call on_epoch_end.*fit passes \(epoch, logs, model\)"):
        _fit(model, [Greedy()])
    with pytest.raises(TypeError, match="instances"):
        _fit(model, [mx.callbacks.CSVLogger])
    assert np.array_equal(numpy_of(model.params), before)


def test_learning_rate_scheduler_takes_a_function_of_the_epoch():
    scheduler = mx.callbacks.LearningRateScheduler(lambda epoch: 0.1 / epoch)
    history = _fit(_classifier(), [scheduler], epochs=3, optimizer=mx.optim.SGD(lr=1.0))
    assert history["lr"] == scheduler.history == [0.1, 0.05, 0.1 / 3]
    with pytest.raises(TypeError, match="per='epoch'"):
        mx.callbacks.LearningRateScheduler(mx.optim.schedules.step(0.1, 2))
    with pytest.raises(TypeError, match=r"\(epoch\) or \(epoch, lr\)"):
        mx.callbacks.LearningRateScheduler(lambda: 0.1)


@pytest.mark.parametrize("make,message", [
    (lambda tmp: mx.callbacks.EarlyStopping(monitor="val_acc"), "monitors 'val_acc', which fit will not log"),
    (lambda tmp: mx.callbacks.EarlyStopping(monitor="val_loss"), "pass validation_data or validation_split"),
    (lambda tmp: mx.callbacks.ModelCheckpoint(str(tmp / "m-{foo}.safetensors")), r"names \['foo'\]"),
    (lambda tmp: mx.callbacks.ModelCheckpoint(str(tmp / "m-{epoch:.2q}.safetensors")), "cannot be formatted"),
    (lambda tmp: mx.callbacks.ModelCheckpoint(str(tmp / "m.safetensors"), monitor="val_auc", save_best_only=True),
     "val_auc"),
    (lambda tmp: mx.callbacks.ModelCheckpoint(str(tmp / "missing" / "m.safetensors")), "does not exist"),
    (lambda tmp: mx.callbacks.CSVLogger(str(tmp / "missing" / "log.csv")), "does not exist"),
])
def test_callback_configuration_is_checked_before_the_first_epoch(make, message, tmp_path):
    model = _classifier()
    before = numpy_of(model.params)
    with pytest.raises(ValueError, match=message):
        _fit(model, [make(tmp_path)])
    assert np.array_equal(numpy_of(model.params), before) and list(tmp_path.iterdir()) == []


def test_checkpoint_path_may_use_any_logged_key(tmp_path):
    checkpoint = mx.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}-{val_top_2_accuracy:.2f}.safetensors"))
    _fit(_classifier(), [checkpoint], validation_split=0.25, metrics=["top_2_accuracy"])
    assert [p.split("/")[-1][:5] for p in checkpoint.saved] == ["m-01-", "m-02-"]


# ---------------------------------------------------------------- fit options


def test_validation_split_holds_out_a_seeded_stratified_part():
    model = _classifier()
    history = _fit(model, validation_split=0.25)
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    again = _fit(_classifier(), validation_split=0.25)
    assert history["val_loss"] == again["val_loss"]
    _, X_val, _, y_val = mx.datasets.train_test_split(X, LABELS, test_size=0.25, seed=0)
    expected = model.evaluate(X_val, y_val, mx.losses.CrossEntropy())
    assert history["val_loss"][-1] == pytest.approx(expected["loss"], rel=1e-6)


@pytest.mark.parametrize("options,message", [
    ({"validation_split": 1.5}, r"fraction in \(0, 1\)"),
    ({"validation_split": 0.2, "validation_data": (X, LABELS)}, "not both"),
    ({"validation_split": 0.001}, "leaves no train or no test"),
    ({"metrics": ["auc"]}, "unknown metric 'auc'"),
    ({"metrics": ["mae"]}, "metric 'mae' does not apply to CrossEntropy"),
])
def test_bad_fit_options(options, message):
    with pytest.raises(ValueError, match=message):
        _fit(_classifier(), **options)


def test_regression_metrics_match_their_definitions():
    model = mx.Sequential(mx.Linear(4, 8), mx.Tanh(), mx.Linear(8, 1), dtype="float64", seed=0)
    history = model.fit(X, TARGET, loss=mx.losses.MSE(), optimizer=mx.optim.Adam(1e-2), epochs=3, verbose=0,
                        metrics=["mae", "rmse", "r2", mx.metrics.MeanSquaredError()], validation_data=(X, TARGET))
    assert {"mae", "rmse", "r2", "mse", "val_mae", "val_r2"} <= set(history)
    result = model.evaluate(X, TARGET, mx.losses.MSE(), metrics=["mae", "r2", "rmse"], batch_size=50)
    prediction = numpy_of(model.predict(X)).ravel()
    residual = prediction - TARGET
    assert result["mae"] == pytest.approx(np.mean(np.abs(residual)), rel=1e-12)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean(residual ** 2)), rel=1e-12)
    r2 = 1 - np.sum(residual ** 2) / np.sum((TARGET - TARGET.mean()) ** 2)
    assert result["r2"] == pytest.approx(r2, rel=1e-10) and history["val_r2"][-1] == pytest.approx(r2, rel=1e-10)
    assert result["loss"] == pytest.approx(np.mean(residual ** 2), rel=1e-12)


def test_r2_of_several_outputs_is_their_average():
    targets = np.stack([TARGET, 1e4 + X[:, 1]], axis=1)  # a large offset must not cancel in float32
    model = mx.Sequential(mx.Linear(4, 2), dtype="float32", seed=0)
    got = model.evaluate(X, targets, mx.losses.MSE(), metrics=["r2"], batch_size=32)["r2"]
    prediction = numpy_of(model.predict(X)).astype(np.float64)
    scores = [1 - np.sum((prediction[:, j] - targets[:, j]) ** 2) / np.sum((targets[:, j] - targets[:, j].mean()) ** 2)
              for j in range(2)]
    assert got == pytest.approx(np.mean(scores), rel=1e-4)


def test_top_k_accuracy_matches_a_direct_count(backend):
    model = _classifier(**backend.options, dtype="float64")
    result = model.evaluate(X, LABELS, mx.losses.CrossEntropy(), metrics=["top_2_accuracy", "top_k_accuracy"],
                            batch_size=50)
    scores = numpy_of(model.predict(X))
    ranks = (scores > scores[np.arange(len(X)), LABELS][:, None]).sum(axis=1)
    assert result["top_2_accuracy"] == pytest.approx(np.mean(ranks < 2))
    assert result["top_5_accuracy"] == 1.0 and result["accuracy"] == pytest.approx(np.mean(ranks < 1))


def test_metrics_run_on_a_non_default_device():
    strict = pytest.importorskip("array_api_strict")
    model = _classifier(backend="array_api_strict", device=strict.Device("device1"))
    history = _fit(model, metrics=["top_2_accuracy"], validation_split=0.2)
    assert 0 <= history["val_top_2_accuracy"][-1] <= 1


def test_history_lr_follows_a_per_step_schedule():
    schedule = mx.optim.schedules.step(0.1, step_size=4, gamma=0.5)
    history = _fit(_classifier(), epochs=3, batch_size=30, optimizer=mx.optim.SGD(lr=schedule))  # 4 steps/epoch
    assert history["lr"] == [0.1, 0.05, 0.025]


def test_per_epoch_schedules_advance_once_an_epoch():
    optimizer = mx.optim.SGD(lr=mx.optim.schedules.step(0.1, step_size=1, gamma=0.5, per="epoch"))
    history = _fit(_classifier(), epochs=3, batch_size=32, optimizer=optimizer)  # 4 steps per epoch
    assert history["lr"] == [0.1, 0.05, 0.025] and optimizer.lr.steps_per_epoch == 4


def test_cosine_total_steps_is_inferred_from_fit():
    optimizer = mx.optim.SGD(lr=mx.optim.schedules.warmup(mx.optim.schedules.cosine(0.1, final_lr=0.01), 2))
    history = _fit(_classifier(), epochs=4, batch_size=40, optimizer=optimizer)  # 3 steps x 4 epochs
    assert optimizer.lr.base.total_steps == 10
    assert history["lr"][-1] == optimizer.lr(11) and optimizer.lr(12) == pytest.approx(0.01)  # decay ends after 12
    epochs = mx.optim.SGD(lr=mx.optim.schedules.cosine(0.1, per="epoch"))
    history = _fit(_classifier(), epochs=5, optimizer=epochs)
    assert epochs.lr.total_steps == 5 and history["lr"][0] == 0.1 and history["lr"][-1] < history["lr"][-2]


def test_an_unresolved_schedule_outside_fit_says_what_is_missing():
    with pytest.raises(ValueError, match="no total_steps"):
        mx.optim.schedules.cosine(0.1)(3)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        mx.optim.schedules.step(0.1, 2, per="epoch")(3)
    with pytest.raises(ValueError, match="per must be one of"):
        mx.optim.schedules.step(0.1, 2, per="batch")


def test_resolved_schedules_save_and_resume(tmp_path):
    optimizer = mx.optim.Adam(lr=mx.optim.schedules.cosine(1e-2, per="epoch"))
    model = _classifier()
    _fit(model, epochs=3, optimizer=optimizer)
    mx.save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    assert mx.load(tmp_path / "m.safetensors").optimizer.lr == optimizer.lr


# ---------------------------------------------------------------- messages that point the right way


def test_sparse_input_says_to_densify():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(ValueError, match=r"scipy.sparse matrix.*X.toarray\(\)"):
        _classifier().fit(sparse.csr_matrix(X), LABELS, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(),
                          verbose=0)


def test_pandas_nullable_columns_are_numbers_with_missing_values():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=list("abcd")).astype("Float64")
    labels = pd.Series(LABELS, dtype="Int64")
    history = _classifier().fit(frame, labels, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), verbose=0)
    assert np.isfinite(history["loss"][0])
    frame.iloc[7, 2] = pd.NA
    with pytest.raises(ValueError, match=r"X contains NaN or infinity: X\[7, 2\]"):
        _classifier().fit(frame, labels, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), verbose=0)
    labels.iloc[3] = pd.NA
    with pytest.raises(ValueError, match=r"y contains NaN or infinity: y\[3\]"):
        _classifier().fit(X, labels, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), verbose=0)


def test_masked_arrays_are_refused():
    masked = np.ma.masked_array(X, mask=np.zeros_like(X, dtype=bool))
    with pytest.raises(ValueError, match="masked array"):
        _classifier().predict(masked)


def test_text_labels_point_to_encode_labels():
    names = np.array(["low", "mid", "high"])[LABELS]
    with pytest.raises(ValueError, match=r"text labels \(e.g. '(low|mid|high)'\).*encode_labels"):
        _classifier().fit(X, names, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), verbose=0)
    codes, classes = mx.datasets.encode_labels(names)
    model = _classifier()
    model.fit(X, codes, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), verbose=0)
    assert set(classes[numpy_of(model(X)).argmax(axis=1)]) <= set(names)


def test_a_model_too_large_for_memory_fails_before_allocating():
    with pytest.raises(MemoryError, match=r"a model of 20,000,200,000 parameters needs .* GB of memory"):
        mx.Sequential(mx.Linear(100_000, 100_000), mx.Linear(100_000, 100_000))


# ---------------------------------------------------------------- what the model knows of its data


def test_model_data_is_saved_and_loaded(tmp_path):
    names = np.array(["low", "mid", "high"])
    model = _classifier()
    scaler = mx.datasets.Standardizer().fit(X)
    model.data = model.data._replace(scaler=scaler, classes=tuple(names), feature_names=("a", "b", "c", "d"),
                                     target_name="level")
    mx.save(model, tmp_path / "m.safetensors")
    loaded = mx.load(tmp_path / "m.safetensors", dtype="float64")
    assert loaded.data.classes == ("low", "mid", "high") and loaded.data.target_name == "level"
    assert np.array_equal(loaded.data.scaler.mean, scaler.mean) and np.array_equal(loaded.data.scaler.scale,
                                                                                   scaler.scale)
    assert loaded.data.feature_names == ("a", "b", "c", "d") and loaded.data.target_scaler is None
    assert model.to(backend="array_api_strict").data == model.data
    assert mx.load(tmp_path / "m.safetensors").data.classes == ("low", "mid", "high")


@pytest.mark.parametrize("data,message", [
    ('{"classes": ["a", "b"]}', "names 2 classes for 3 outputs"),
    ('{"scaler": {"mean": [0.0], "scale": [1.0]}}', "scaler has 1 features"),
    ('{"scaler": {"mean": [0, 0, 0, 0], "scale": [1, 1, 0, 1]}}', "scales > 0"),
    ('{"scaler": {"mean": [0, 0, 0, 0]}}', "malformed"),
    ('[1, 2]', "JSON object"),
])
def test_malformed_data_metadata_is_a_value_error(data, message, tmp_path):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    mx.save(_classifier(), path)
    with safe_open(str(path), framework="numpy") as file:
        metadata = dict(file.metadata())
    from mlp_xp.io import _checksum

    metadata["data"] = data
    tensors = load_file(str(path))
    metadata["checksum"] = _checksum(tensors, metadata)  # a well-formed file with bad contents
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=message):
        mx.load(path)
