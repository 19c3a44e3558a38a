"""Keras habits: callbacks that get ``self.model`` and stop with ``model.stop_training``, Keras's
hook names, LambdaCallback, ReduceLROnPlateau (rate for rate as torch's), and names for losses,
optimizers and a Linear layer's activation."""

import pickle
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlp_xp as mx
from mlp_xp.nn import layers as layers_module
from mlp_xp.nn import losses as losses_module
from mlp_xp.optim import optimizers as optimizers_module
from mlp_xp.train import loop

from .conftest import numpy_of

rng = np.random.default_rng(0)
X = rng.normal(size=(40, 4))
LABELS = (X[:, 0] + X[:, 1] > 0).astype(int)
TARGET = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.5


def _classifier(**options):
    return mx.Sequential(mx.Linear(4, 8), mx.Tanh(), mx.Linear(8, 2), seed=0, **options)


def _fit(model, callbacks=(), **options):
    options = {"epochs": 3, "verbose": 0, "batch_size": 10, "loss": mx.losses.CrossEntropy(),
               "optimizer": mx.optim.SGD(lr=0.1), **options}
    return model.fit(X, LABELS, callbacks=list(callbacks), **options)


# ---------------------------------------------------------------- self.model, stop_training, hook names


def test_callbacks_get_the_model_before_train_begin():
    seen = []

    class KerasStyle:  # a plain object, as a Keras callback written without a base class
        def on_train_begin(self, logs=None):
            seen.append(("attribute", self.model))

    class WithSetModel:
        def set_model(self, model):
            seen.append(("set_model", model))

        def on_epoch_end(self, epoch, logs=None):
            pass

    class Ours(mx.callbacks.Callback):
        def on_train_begin(self, model):
            seen.append(("base", self.model))

    model = _classifier()
    _fit(model, [KerasStyle(), WithSetModel(), Ours()], epochs=1)
    assert seen == [("set_model", model), ("attribute", model), ("base", model)]  # every one before any hook


@pytest.mark.parametrize("hook,updates", [("on_epoch_end", 2 * 4), ("on_epoch_begin", 4 + 1)])
def test_stop_training_in_an_epoch_hook(hook, updates):
    """As Keras: the flag is read after each batch and each epoch, so set in on_epoch_end it stops
    after that epoch, in on_epoch_begin after the epoch's first batch (4 batches an epoch here)."""
    class StopAtTwo:
        def stop(self, epoch, logs=None):
            if epoch == 2:
                self.model.stop_training = True

    callback = StopAtTwo()
    setattr(callback, hook, callback.stop)
    model = _classifier()
    history = _fit(model, [callback], epochs=5)
    assert history.epochs == 2 and model.epoch == 2
    assert int(model.optimizer_state.count) == updates
    assert _fit(model, epochs=3).epochs == 3  # the next fit starts with stop_training False


def test_stop_training_in_a_batch_hook_stops_after_that_batch(backend):
    calls = []

    class StopAtThirdBatch:
        def on_train_batch_begin(self, batch, logs=None):
            calls.append(("begin", batch))

        def on_train_batch_end(self, batch, logs=None):
            calls.append(("end", batch, sorted(logs)))
            if batch == 3:
                self.model.stop_training = True

    model = _classifier(**backend.options)
    history = _fit(model, [StopAtThirdBatch()], epochs=5)
    assert history.epochs == 1 and int(model.optimizer_state.count) == 3
    assert calls == [item for batch in (1, 2, 3) for item in (("begin", batch), ("end", batch, ["loss"]))]
    assert np.isfinite(history["loss"][0])  # the logs of the three batches that ran


def test_keras_hook_names_and_signatures_are_called_in_order():
    calls = []

    class Recorder:
        def on_train_begin(self, logs=None):
            calls.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            calls.append(f"epoch_begin {epoch}")

        def on_train_batch_begin(self, batch, logs=None):
            calls.append(f"batch_begin {batch}")

        def on_train_batch_end(self, batch, logs=None):
            calls.append(f"batch_end {batch} {isinstance(logs['loss'], float)}")

        def on_epoch_end(self, epoch, logs=None):
            calls.append(f"epoch_end {epoch} {sorted(logs)}")

        def on_train_end(self, logs=None):
            calls.append("train_end")

    model = mx.Sequential(mx.Linear(4, 2), seed=0)
    model.fit(X[:20], LABELS[:20], loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(lr=0.1), epochs=2,
              batch_size=10, callbacks=[Recorder()], verbose=0)
    epoch = ["batch_begin 1", "batch_end 1 True", "batch_begin 2", "batch_end 2 True"]
    assert calls == (["train_begin", "epoch_begin 1", *epoch, "epoch_end 1 ['accuracy', 'loss', 'lr']",
                      "epoch_begin 2", *epoch, "epoch_end 2 ['accuracy', 'loss', 'lr']", "train_end"])


def test_a_callback_with_no_known_hook_is_a_type_error_before_training():
    class Typo:
        def on_epoch_ends(self, epoch, logs=None):
            pass

    model = _classifier()
    before = numpy_of(model.params)
    with pytest.raises(TypeError, match=r"callback <object object at .*> has none of the hooks fit calls"):
        _fit(model, [object()])
    with pytest.raises(TypeError, match=r"has none of the hooks.*\['on_epoch_ends'\], which fit does not call"):
        _fit(model, [Typo()])
    assert np.array_equal(numpy_of(model.params), before)


def test_lambda_callback_calls_each_function_with_keras_arguments():
    calls = []
    callback = mx.callbacks.LambdaCallback(
        on_train_begin=lambda logs: calls.append(("train_begin", logs)),
        on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch, logs)),
        on_train_batch_begin=lambda batch, logs: calls.append(("batch_begin", batch)),
        on_train_batch_end=lambda batch, logs: calls.append(("batch_end", batch, sorted(logs))),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, sorted(logs))) or True,  # ignored
        on_train_end=lambda logs: calls.append(("train_end", logs)))
    model = mx.Sequential(mx.Linear(4, 2), seed=0)
    history = model.fit(X[:20], LABELS[:20], loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(lr=0.1),
                        epochs=2, batch_size=10, callbacks=[callback], verbose=0)
    assert history.epochs == 2 and callback.model is model
    epoch = [("batch_begin", 1), ("batch_end", 1, ["loss"]), ("batch_begin", 2), ("batch_end", 2, ["loss"])]
    assert calls == [("train_begin", {}), ("epoch_begin", 1, {}), *epoch, ("epoch_end", 1, ["accuracy", "loss", "lr"]),
                     ("epoch_begin", 2, {}), *epoch, ("epoch_end", 2, ["accuracy", "loss", "lr"]),
                     ("train_end", {})]
    with pytest.raises(TypeError, match="on_epoch_end must be a function"):
        mx.callbacks.LambdaCallback(on_epoch_end=3)


def test_a_lambda_callback_without_batch_functions_binds_no_batch_hook():
    hooks = mx.callbacks.Hooks([mx.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: None)])
    assert hooks.has("on_epoch_end") and not hooks.has("on_batch_end") and not hooks.has("on_train_batch_begin")


# ---------------------------------------------------------------- ReduceLROnPlateau


def _torch_plateau_rates(values, mode, factor, patience, min_delta, cooldown, min_lr, lr=1.0):
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience,
                                                           threshold=min_delta, threshold_mode="abs",
                                                           cooldown=cooldown, min_lr=min_lr)
    rates = []
    for value in values:
        scheduler.step(value)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def _our_plateau_rates(values, mode, factor, patience, min_delta, cooldown, min_lr, lr=1.0):
    callback = mx.callbacks.ReduceLROnPlateau(monitor="val_loss", mode=mode, factor=factor, patience=patience,
                                              min_delta=min_delta, cooldown=cooldown, min_lr=min_lr)
    model = types.SimpleNamespace(optimizer=mx.optim.SGD(lr=lr))
    callback.on_train_begin(model)
    rates = []
    for epoch, value in enumerate(values, start=1):
        callback.on_epoch_end(epoch, {"val_loss": value}, model)
        rates.append(model.optimizer.lr)
    return rates


@pytest.mark.parametrize("mode,factor,patience,min_delta,cooldown,min_lr", [
    ("min", 0.1, 10, 1e-4, 0, 0.0),  # the defaults
    ("min", 0.5, 0, 0.0, 0, 0.0),
    ("min", 0.5, 2, 0.05, 1, 0.1),
    ("max", 0.3, 1, 0.01, 2, 1e-3),
    ("min", 0.0, 1, 0.0, 0, 0.0),
])
def test_reduce_lr_on_plateau_matches_torch_on_a_plateau(mode, factor, patience, min_delta, cooldown, min_lr):
    values = [1.0, 0.9, 0.9, 0.95, 0.89, 0.9, 0.91, 0.9, 0.92, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5] + [0.6] * 14
    values = values if mode == "min" else [-value for value in values]
    args = (values, mode, factor, patience, min_delta, cooldown, min_lr)
    ours = _our_plateau_rates(*args)
    assert ours == _torch_plateau_rates(*args)
    assert ours[-1] < 1.0  # (the sequence reduces the rate in every configuration)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0, 1.2, float("nan")]), max_size=40),
       mode=st.sampled_from(["min", "max"]), factor=st.sampled_from([0.0, 0.1, 0.5, 0.9]),
       patience=st.integers(0, 4), min_delta=st.sampled_from([0.0, 0.05, 0.3]), cooldown=st.integers(0, 3),
       min_lr=st.sampled_from([0.0, 1e-3, 0.2]))
def test_reduce_lr_on_plateau_matches_torch_on_any_sequence(values, mode, factor, patience, min_delta, cooldown,
                                                            min_lr):
    args = (values, mode, factor, patience, min_delta, cooldown, min_lr)
    assert _our_plateau_rates(*args) == _torch_plateau_rates(*args)


def test_reduce_lr_on_plateau_mode_auto_and_bad_arguments():
    assert mx.callbacks.ReduceLROnPlateau(monitor="val_accuracy").mode == "max"
    assert mx.callbacks.ReduceLROnPlateau().mode == "min"
    for options, message in [({"factor": 1.0}, "factor must be a number in"), ({"patience": -1}, "patience"),
                             ({"cooldown": 1.5}, "cooldown"), ({"min_lr": -1}, "min_lr"),
                             ({"min_delta": float("nan")}, "min_delta"), ({"mode": "up"}, "mode must be")]:
        with pytest.raises(ValueError, match=message):
            mx.callbacks.ReduceLROnPlateau(**options)
    with pytest.raises(ValueError, match="monitors 'val_loss'.*pass validation_data"):
        _fit(_classifier(), [mx.callbacks.ReduceLROnPlateau()])
    scheduled = mx.optim.SGD(lr=mx.optim.schedules.step(0.1, 2))
    with pytest.raises(ValueError, match="already a schedule"):
        _fit(_classifier(), [mx.callbacks.ReduceLROnPlateau(monitor="loss")], optimizer=scheduled)


def test_reduce_lr_on_plateau_in_fit_follows_torch_on_the_logged_losses():
    plateau = mx.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=0.05, cooldown=1)
    history = _fit(_classifier(), [plateau], epochs=12, optimizer=mx.optim.SGD(lr=0.05))
    torch_rates = _torch_plateau_rates(history["loss"], "min", 0.5, 0, 0.05, 1, 0.0, lr=0.05)
    assert history["lr"][1:] == torch_rates[:-1]  # each epoch runs with the rate set after the one before
    assert len([epoch for epoch, _ in plateau.reductions if epoch < 11]) >= 2  # (the rule is exercised)


def test_a_reduced_rate_takes_effect_on_every_backend_and_rebuilds_only_jaxs_step(backend, monkeypatch):
    """Two epochs at 0.1 then two at 0.05 (ReduceLROnPlateau halving after epoch 2) train exactly as
    two fits of two epochs; JAX's compiled step is made again for the new rate, no other step is."""
    builds = []
    make = loop._Run._train_step
    monkeypatch.setattr(loop._Run, "_train_step", lambda run, *args: builds.append(1) or make(run, *args))
    plateau = mx.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=1e9, cooldown=5)
    model = _classifier(**backend.options)
    history = _fit(model, [plateau], epochs=4, optimizer=mx.optim.SGD(lr=0.1))
    assert history["lr"] == [0.1, 0.1, 0.05, 0.05] and plateau.reductions[0] == (2, 0.05)
    assert len(builds) == (2 if backend == "jax" else 1)

    twice = _classifier(**backend.options)
    optimizer = mx.optim.SGD(lr=0.1)
    _fit(twice, epochs=2, optimizer=optimizer)
    optimizer.lr = 0.05
    _fit(twice, epochs=2, optimizer=optimizer)
    np.testing.assert_allclose(numpy_of(model.params), numpy_of(twice.params), rtol=1e-6, atol=1e-7)


def test_learning_rate_scheduler_takes_effect_in_jaxs_compiled_step():
    pytest.importorskip("jax")
    frozen = _classifier(backend="jax")
    _fit(frozen, [mx.callbacks.LearningRateScheduler(lambda epoch: 0.1 if epoch == 1 else 0.0)])
    one_epoch = _classifier(backend="jax")
    _fit(one_epoch, epochs=1)
    assert np.array_equal(numpy_of(frozen.params), numpy_of(one_epoch.params))


# ---------------------------------------------------------------- names: losses, optimizers, activations


@pytest.mark.parametrize("name,loss,target", [
    ("cross_entropy", mx.losses.CrossEntropy(), LABELS), ("CrossEntropy", mx.losses.CrossEntropy(), LABELS),
    ("mse", mx.losses.MSE(), TARGET), ("huber", mx.losses.Huber(), TARGET),
    ("binary_cross_entropy", mx.losses.BinaryCrossEntropy(), LABELS),
    ("binary_crossentropy", mx.losses.BinaryCrossEntropy(), LABELS),  # Keras's spelling
])
def test_a_loss_by_name_trains_as_its_object(name, loss, target):
    def run(loss):
        model = mx.Sequential(mx.Linear(4, 8), mx.Tanh(), mx.Linear(8, 2 if target is LABELS and "binary" not in
                                                                         name else 1), seed=0)
        history = model.fit(X, target, loss=loss, optimizer=mx.optim.Adam(), epochs=2, verbose=0)
        return numpy_of(model.params), history

    (by_name, history), (by_object, expected) = run(name), run(loss)
    assert np.array_equal(by_name, by_object) and history == expected


@pytest.mark.parametrize("name", ["adam", "sgd", "rmsprop", "adamw", "AdamW"])
def test_an_optimizer_by_name_has_its_default_hyperparameters(name):
    model = _classifier()
    _fit(model, optimizer=name, epochs=2)
    cls = {key.lower(): value for key, value in mx.optim.OPTIMIZER_TYPES.items()}[name.lower()]
    assert type(model.optimizer) is cls and repr(model.optimizer) == repr(cls())
    explicit = _classifier()
    _fit(explicit, optimizer=cls(), epochs=2)
    assert np.array_equal(numpy_of(model.params), numpy_of(explicit.params))


def test_unknown_names_list_the_valid_ones_before_any_work():
    model = _classifier()
    before = numpy_of(model.params)
    with pytest.raises(ValueError, match=r"unknown loss 'cross_entropi': use one of \[.*'cross_entropy'.*'mse'"):
        _fit(model, loss="cross_entropi")
    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm': use one of \['adam', 'adamw', 'rmsprop', 'sgd'"):
        _fit(model, optimizer="adamm")
    assert np.array_equal(numpy_of(model.params), before)


def test_names_are_looked_up_when_fit_runs(monkeypatch):
    """A loss or optimizer added to its registry later has a name at once (snake_case of the class)."""

    class MeanAbsoluteErrorLoss(mx.losses.MSE):
        pass

    class AdamLike(mx.optim.Adam):
        pass

    monkeypatch.setitem(losses_module.LOSS_TYPES, "MeanAbsoluteErrorLoss", MeanAbsoluteErrorLoss)
    monkeypatch.setitem(optimizers_module.OPTIMIZER_TYPES, "AdamLike", AdamLike)
    model = mx.Sequential(mx.Linear(4, 1), seed=0)
    model.fit(X, TARGET, loss="mean_absolute_error_loss", optimizer="adamlike", epochs=1, verbose=0)
    assert type(model.optimizer) is AdamLike


# ---------------------------------------------------------------- Linear(activation=...)


def _pair(name, **options):
    """The same network written with activation= and with an activation layer."""
    short = mx.Sequential(mx.Linear(4, 6, activation=name), mx.Linear(6, 2), seed=3, **options)
    long = mx.Sequential(mx.Linear(4, 6), layers_module.ACTIVATIONS[name](), mx.Linear(6, 2), seed=3, **options)
    return short, long


def _renamed(state):
    """The long form's parameters under the short form's keys (layer 2 is layer 1 there)."""
    return {key.replace("2.", "1.", 1): value for key, value in state.items()}


@pytest.mark.parametrize("name", sorted(layers_module.ACTIVATIONS))
def test_linear_activation_computes_linear_then_the_activation(name):
    short, long = _pair(name, dtype="float64")
    assert {key: numpy_of(value).tolist() for key, value in short.state_dict().items()} == \
        {key: numpy_of(value).tolist() for key, value in _renamed(long.state_dict()).items()}  # same init family
    np.testing.assert_allclose(numpy_of(short.predict(X)), numpy_of(long.predict(X)), rtol=1e-12, atol=1e-12)
    assert mx.check_gradients(short, X[:6], LABELS[:6], mx.losses.CrossEntropy()).ok


@pytest.mark.parametrize("name,torch_name,kwargs", [
    ("relu", "relu", {}), ("leaky_relu", "leaky_relu", {"negative_slope": 0.01}), ("tanh", "tanh", {}),
    ("sigmoid", "sigmoid", {}), ("gelu", "gelu", {"approximate": "tanh"}), ("silu", "silu", {}),
    ("elu", "elu", {}), ("softplus", "softplus", {}),
])
def test_linear_activation_matches_torch(name, torch_name, kwargs):
    torch = pytest.importorskip("torch")
    model = mx.Sequential(mx.Linear(4, 5, activation=name), dtype="float64", seed=1)
    state = {key: numpy_of(value) for key, value in model.state_dict().items()}
    x = X[:8] * 2.0
    target = rng.normal(size=(8, 5))
    value, grad, output = model.value_and_grad(x, target, mx.losses.MSE())

    weight = torch.tensor(state["0.weight"], requires_grad=True)
    bias = torch.tensor(state["0.bias"], requires_grad=True)
    out = getattr(torch.nn.functional, torch_name)(torch.tensor(x) @ weight + bias, **kwargs)
    torch_loss = torch.nn.functional.mse_loss(out, torch.tensor(target))
    torch_loss.backward()
    np.testing.assert_allclose(numpy_of(output), out.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert float(value) == pytest.approx(torch_loss.item(), rel=1e-12)
    np.testing.assert_allclose(numpy_of(grad), np.concatenate([weight.grad.numpy().ravel(), bias.grad.numpy()]),
                               rtol=1e-10, atol=1e-14)


def test_linear_activation_trains_as_the_long_form(backend):
    short, long = _pair("relu", **backend.options)
    for model in (short, long):
        model.fit(X, LABELS, loss="cross_entropy", optimizer=mx.optim.SGD(lr=0.1), epochs=2, verbose=0)
    expected = {key: numpy_of(value) for key, value in _renamed(long.state_dict()).items()}
    for key, value in short.state_dict().items():
        np.testing.assert_allclose(numpy_of(value), expected[key], rtol=1e-5, atol=1e-6)


def test_linear_activation_is_saved_and_loaded(tmp_path):
    model = mx.Sequential(mx.Linear(4, 6, activation="gelu"), mx.Linear(6, 2), seed=0)
    path = tmp_path / "model.safetensors"
    mx.save(model, path)
    for loaded in (mx.load(path), pickle.loads(pickle.dumps(model))):
        assert loaded.layers[0].activation == "gelu" and loaded.layers == model.layers
        assert np.array_equal(numpy_of(loaded.predict(X)), numpy_of(model.predict(X)))
    assert mx.Linear(4, 6, activation="linear").config() == mx.Linear(4, 6).config()  # no key without one
    assert "activation" not in repr(mx.Linear(4, 6)) and mx.Linear(4, 6, activation="relu") != mx.Linear(4, 6)


def test_bad_linear_activations_and_a_sigmoid_before_a_cross_entropy():
    with pytest.raises(ValueError, match=r"unknown Linear activation 'rellu': use one of \[.*'relu'"):
        mx.Linear(4, 6, activation="rellu")
    with pytest.raises(ValueError, match="mx.Softmax()"):
        mx.Linear(4, 6, activation="softmax")
    with pytest.raises(ValueError, match="must be a name"):
        mx.Linear(4, 6, activation=mx.ReLU())
    model = mx.Sequential(mx.Linear(4, 6, activation="relu"), mx.Linear(6, 1, activation="sigmoid"), seed=0)
    before = numpy_of(model.params)
    with pytest.raises(ValueError, match="applies sigmoid, but BinaryCrossEntropy takes logits"):
        model.fit(X, LABELS, loss="binary_cross_entropy", optimizer="adam", verbose=0)
    assert np.array_equal(numpy_of(model.params), before)


def test_evaluate_takes_a_loss_by_name_too():
    import numpy as np

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, size=20)
    model = mx.Sequential(mx.Linear(3, 2), seed=0)
    assert model.evaluate(X, y, "cross_entropy") == model.evaluate(X, y, mx.losses.CrossEntropy())
    with pytest.raises(ValueError, match=r"unknown loss 'cross_entropi': use one of \[.*'cross_entropy'"):
        model.evaluate(X, y, "cross_entropi")


def test_the_summary_shows_a_linear_layers_activation():
    summary = str(mx.Sequential(mx.Linear(4, 8, activation="relu"), mx.Linear(8, 2), seed=0).summary())
    assert "Linear(4 -> 8, relu)" in summary and "Linear(8 -> 2)" in summary
