"""BatchNorm: equal to torch.nn.BatchNorm1d in float64 (outputs, gradients, running statistics)
on every backend, its running statistics kept in the training state (under the step's guard,
saved, resumed, carried by ``to``, pickling and the jitted JAX step), and its errors."""

import pickle

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp._backend import resolve_backend
from mlp_xp.nn.layers import ForwardContext
from mlp_xp.tools.counting import count_array_work
from mlp_xp.train.step import init_state, make_train_step

from .conftest import numpy_of

CONFIGS = [dict(), dict(momentum=0.3, eps=1e-3), dict(momentum=None), dict(affine=False),
           dict(track_running_stats=False), dict(momentum=0.0), dict(momentum=1.0)]
CONFIG_IDS = ["default", "momentum0.3-eps1e-3", "momentum-None", "no-affine", "untracked", "momentum0", "momentum1"]


def _torch_bn(torch, features, **config):
    return torch.nn.BatchNorm1d(features, dtype=torch.float64, **config)


def _layer_run(layer, backend, x_host, params_host, running_host, dy_host, train):
    """forward + backward of ``layer`` alone; returns host arrays (y, dx, grads, updates)."""
    be = resolve_backend(backend, getattr(backend, "device", None))
    f64 = be.xp.float64
    params = {name: be.asarray(value, dtype=f64) for name, value in {**params_host, **running_host}.items()}
    ctx = ForwardContext(be.xp, train, updates=[])
    y, backward = layer.forward(params, be.asarray(x_host, dtype=f64), ctx)
    dx, grads = backward(be.asarray(dy_host, dtype=f64))
    updates = {name: numpy_of(value) for update in ctx.updates for name, value in update.items()}
    return numpy_of(y), numpy_of(dx), {name: numpy_of(grad) for name, grad in grads.items()}, updates


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_the_layer_equals_torch_batchnorm1d_in_float64(config, train, backend):
    """torch.nn.BatchNorm1d, float64, from the same weight, bias and running statistics (after a
    few batches, so none is at its initial value): output, input gradient, weight and bias
    gradients, and (training) the updated running statistics."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    features, rows = 6, 9
    layer = mx.BatchNorm(features, **config)
    reference = _torch_bn(torch, features, **config)
    with torch.no_grad():
        if reference.affine:
            reference.weight.copy_(torch.tensor(rng.uniform(0.5, 2.0, features)))
            reference.bias.copy_(torch.tensor(rng.normal(size=features)))
        for _ in range(3):  # running statistics away from zeros and ones (and a count for momentum=None)
            reference(torch.tensor(rng.normal(2.0, 3.0, size=(rows, features))))
    params = {name: getattr(reference, name).detach().numpy().copy() for name in layer.param_shapes(features)}
    running = {name: np.asarray(getattr(reference, name).numpy(), dtype=np.float64)
               for name in layer.running_shapes(features)}
    assert set(running) == ({"running_mean", "running_var"} | ({"num_batches_tracked"} if config.get(
        "momentum", 0.1) is None else set()) if layer.track_running_stats else set())
    x = rng.normal(1.0, 4.0, size=(rows, features))
    dy = rng.normal(size=(rows, features))
    y, dx, grads, updates = _layer_run(layer, backend, x, params, running, dy, train)

    reference.train(train)
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = reference(x_torch)
    y_torch.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-12, atol=1e-13)
    assert set(grads) == set(params)
    for name in params:
        np.testing.assert_allclose(grads[name], getattr(reference, name).grad.numpy(), rtol=1e-12, atol=1e-13)
    if train and layer.track_running_stats:
        assert set(updates) == set(running)
        for name, value in updates.items():
            np.testing.assert_allclose(value, getattr(reference, name).numpy(), rtol=1e-14, atol=1e-15, err_msg=name)
    else:
        assert updates == {}


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_gradients_by_central_differences_in_float64(train):
    """The input, weight and bias gradients of sum(y * dy), in training (batch statistics: every
    row's output depends on every row) and in evaluation."""
    rng = np.random.default_rng(1)
    layer = mx.BatchNorm(4, momentum=None)
    x = rng.normal(0.5, 2.0, size=(5, 4))
    dy = rng.normal(size=(5, 4))
    params = {"weight": rng.uniform(0.5, 2.0, 4), "bias": rng.normal(size=4)}
    running = {"running_mean": rng.normal(size=4), "running_var": rng.uniform(0.5, 2.0, 4),
               "num_batches_tracked": np.asarray(3.0)}
    _, dx, grads, _ = _layer_run(layer, "numpy", x, params, running, dy, train)

    def objective():
        y, _, _, _ = _layer_run(layer, "numpy", x, params, running, dy, train)
        return float(np.sum(y * dy))

    eps = 1e-6
    for values, analytic in [(x, dx), (params["weight"], grads["weight"]), (params["bias"], grads["bias"])]:
        numeric = np.empty(values.shape)
        for index in np.ndindex(values.shape):
            original = values[index]
            values[index] = original + eps
            plus = objective()
            values[index] = original - eps
            minus = objective()
            values[index] = original
            numeric[index] = (plus - minus) / (2 * eps)
        assert np.max(np.abs(analytic - numeric)) / np.max(np.abs(numeric)) < 1e-7


def _data(rows=48, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(1.0, 3.0, size=(rows, features)), rng.integers(0, classes, rows)


def _model(backend="numpy", dtype="float64", device=None, **config):
    """Linear layers before a BatchNorm without bias, as usual: its gradient would be 0 up to
    rounding, which Adam turns into steps of ~1e-10 that differ between libraries."""
    return mx.Sequential(mx.Linear(5, 8, bias=False), mx.BatchNorm(8, **config), mx.ReLU(),
                         mx.Linear(8, 8, bias=False), mx.BatchNorm(8, **config), mx.Tanh(), mx.Linear(8, 3),
                         backend=backend, device=device, dtype=dtype, seed=1)


def _torch_twin(torch, model):
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 8, bias=False), _torch_bn(torch, 8, momentum=model.layers[1].momentum), torch.nn.ReLU(),
        torch.nn.Linear(8, 8, bias=False), _torch_bn(torch, 8, momentum=model.layers[1].momentum), torch.nn.Tanh(),
        torch.nn.Linear(8, 3)).double()
    weights = {key: numpy_of(value) for key, value in model.state_dict().items()}
    with torch.no_grad():
        for key, value in weights.items():
            index, name = key.split(".")
            getattr(net[int(index)], name).copy_(torch.tensor(value.T if name == "weight" and value.ndim == 2
                                                              else value))
    return net


@pytest.mark.parametrize("momentum", [0.1, None])
def test_training_equals_torch_on_every_backend(backend, momentum):
    """Three epochs of Adam in batches of 16 (the last one 8 rows) against torch.optim.Adam and
    BatchNorm1d from the same weights: parameters, running statistics and evaluation outputs
    agree to ~1e-12 on every backend (JAX: the jitted step)."""
    torch = pytest.importorskip("torch")
    X, y = _data(40)
    model = _model(momentum=momentum, **backend.options)
    net = _torch_twin(torch, _model(momentum=momentum))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        for start in range(0, 40, 16):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(torch.tensor(X[start:start + 16])),
                                              torch.tensor(y[start:start + 16])).backward()
            optimizer.step()
    model.fit(X, y, mx.losses.CrossEntropy(), mx.optim.Adam(lr=1e-2), epochs=3, batch_size=16, shuffle=False,
              verbose=0)
    trained = {key: numpy_of(value) for key, value in model.state_dict().items()}
    expected = {f"{index}.{name}": value.detach().numpy() for index, module in enumerate(net)
                for name, value in list(module.named_parameters()) + list(module.named_buffers())
                if name != "num_batches_tracked" or momentum is None}
    assert set(trained) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(trained[key], value.T if value.ndim == 2 else value, rtol=1e-11, atol=1e-12,
                                   err_msg=key)
    assert not np.allclose(trained["1.running_var"], 1.0) and trained["1.running_mean"].any()
    net.eval()
    with torch.no_grad():
        np.testing.assert_allclose(numpy_of(model.predict(X)), net(torch.tensor(X)).numpy(), rtol=1e-11, atol=1e-12)


def test_evaluation_uses_the_running_statistics_and_training_the_batch_s():
    X, y = _data()
    model = _model()
    model.fit(X, y, "cross_entropy", "adam", epochs=2, batch_size=16, verbose=0)
    row = numpy_of(model.predict(X[:1]))
    np.testing.assert_allclose(numpy_of(model.predict(X))[:1], row, rtol=1e-12)  # a row's output is its own
    untracked = _model(track_running_stats=False)
    assert untracked.running is None and untracked.num_running == 0
    untracked.fit(X, y, "cross_entropy", "adam", epochs=2, batch_size=16, verbose=0)
    assert not np.allclose(numpy_of(untracked.predict(X[:8]))[:2], numpy_of(untracked.predict(X[:2])))
    # the gradient of a training batch is the batch statistics' (loss_and_grad(train=True) leaves
    # the running statistics as they are)
    before = numpy_of(model.running)
    loss_train, _ = model.loss_and_grad(X, y, mx.losses.CrossEntropy(), train=True)
    loss_eval, _ = model.loss_and_grad(X, y, mx.losses.CrossEntropy())
    assert loss_train != loss_eval and np.array_equal(numpy_of(model.running), before)


def test_check_gradients_with_running_statistics():
    X, y = _data(12)
    model = _model(dtype="float32")
    model.fit(X, y, "cross_entropy", "adam", epochs=3, batch_size=4, verbose=0)
    result = mx.check_gradients(model, X, y, mx.losses.CrossEntropy())
    assert result.ok and result.max_rel_error < 1e-7 and "1.weight" in result.errors


def test_a_failed_step_changes_neither_weights_nor_running_statistics(exact_backend):
    """The guard covers the running statistics: a step whose loss is NaN leaves them as they were."""
    model = _model(exact_backend)
    optimizer = mx.optim.SGD(lr=0.1)
    step = make_train_step(model, mx.losses.MSE(), optimizer)
    state = init_state(model, optimizer)
    X = model.backend.asarray(_data()[0][:8])
    good = model.backend.asarray(np.zeros((8, 3)))
    state, _ = step(state, X, good)
    assert bool(state.guard.ok)
    params, running = numpy_of(state.params), numpy_of(state.running)
    assert not np.array_equal(running, numpy_of(model.running))  # (the step moved them)
    state, _ = step(state, X, model.backend.asarray(np.full((8, 3), np.nan)))
    assert not bool(state.guard.ok)
    np.testing.assert_array_equal(numpy_of(state.params), params)
    np.testing.assert_array_equal(numpy_of(state.running), running)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (the overflow itself)
def test_fit_stopped_by_a_non_finite_step_keeps_finite_running_statistics():
    X, y = _data()
    model = _model()
    with pytest.raises(mx.NonFiniteError):
        model.fit(X, y, mx.losses.CrossEntropy(), mx.optim.SGD(lr=1e300), epochs=3, batch_size=16, verbose=0)
    assert np.all(np.isfinite(numpy_of(model.running))) and np.all(np.isfinite(numpy_of(model.params)))


@pytest.mark.parametrize("momentum", [0.1, None])  # (None: num_batches_tracked, a 0-d tensor in the file)
def test_save_load_and_resume_exactly(tmp_path, momentum):
    X, y = _data()
    whole = _model(momentum=momentum)
    whole.fit(X, y, "cross_entropy", mx.optim.Adam(lr=1e-2), epochs=4, batch_size=16, verbose=0)
    first = _model(momentum=momentum)
    optimizer = mx.optim.Adam(lr=1e-2)
    first.fit(X, y, "cross_entropy", optimizer, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "half.safetensors"
    mx.save(first, path, optimizer)
    loaded = mx.load(path)
    np.testing.assert_array_equal(numpy_of(loaded.running), numpy_of(first.running))
    np.testing.assert_array_equal(numpy_of(loaded.predict(X)), numpy_of(first.predict(X)))
    resumed = _model(momentum=momentum)
    resumed.fit(X, y, "cross_entropy", mx.optim.Adam(lr=1e-2), epochs=2, batch_size=16, verbose=0,
                resume_from=path)
    np.testing.assert_array_equal(numpy_of(resumed.params), numpy_of(whole.params))
    np.testing.assert_array_equal(numpy_of(resumed.running), numpy_of(whole.running))


def test_a_file_without_the_running_statistics_is_refused(tmp_path):
    from mlp_xp import io

    model = _model()
    path = tmp_path / "model.safetensors"
    mx.save(model, path)
    with io.open_record(path) as record:
        tensors, metadata = record.tensors(), record.metadata
    del tensors["1.running_var"]
    io.write(path, tensors, metadata)
    with pytest.raises(ValueError, match=r"missing \['1.running_var'\]"):
        mx.load(path)


def test_to_pickle_and_state_dict_carry_the_running_statistics(backend):
    X, y = _data()
    model = _model()
    model.fit(X, y, "cross_entropy", "adam", epochs=1, batch_size=16, verbose=0)
    expected = numpy_of(model.predict(X))
    moved = model.to(**backend.options)
    np.testing.assert_array_equal(numpy_of(moved.running), numpy_of(model.running))
    np.testing.assert_allclose(numpy_of(moved.predict(X)), expected, rtol=1e-12)
    again = pickle.loads(pickle.dumps(moved))
    np.testing.assert_array_equal(numpy_of(again.running), numpy_of(model.running))
    fresh = _model(**backend.options)
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_allclose(numpy_of(fresh.predict(X)), expected, rtol=1e-12)
    assert list(model.state_dict())[:5] == ["0.weight", "1.weight", "1.bias", "1.running_mean",
                                            "1.running_var"]  # (layer by layer, as torch's)


def test_load_state_dict_checks_the_running_statistics():
    model = _model()
    weights = model.state_dict()
    with pytest.raises(ValueError, match="must be >= 0"):
        model.load_state_dict({**weights, "1.running_var": -np.ones(8)})
    with pytest.raises(ValueError, match="finite"):
        model.load_state_dict({**weights, "4.running_mean": np.full(8, np.nan)})
    with pytest.raises(mx.ShapeError, match="running_mean"):
        model.load_state_dict({**weights, "1.running_mean": np.zeros(7)})
    with pytest.raises(ValueError, match=r"missing \['1.running_mean'\]"):
        model.load_state_dict({key: value for key, value in weights.items() if key != "1.running_mean"})


def test_early_stopping_restores_the_best_epoch_s_running_statistics():
    X, y = _data(64)
    X_val, y_val = _data(32, seed=1)
    seen = {}
    model = _model()
    stopper = mx.callbacks.EarlyStopping(patience=20, restore_best_weights=True)
    keep = mx.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.update({epoch: numpy_of(model.running)}))
    model.fit(X, y, "cross_entropy", mx.optim.SGD(lr=1.0), epochs=8, batch_size=16, verbose=0,
              validation_data=(X_val, y_val), callbacks=[keep, stopper])
    assert 1 <= stopper.best_epoch < 8  # (the best epoch is not the last: a restore to check)
    np.testing.assert_array_equal(numpy_of(model.running), seen[stopper.best_epoch])


def test_batches_of_one_row_are_refused_before_any_step():
    X, y = _data(33)
    model = _model()
    before = numpy_of(model.params), numpy_of(model.running)
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm.*1 row \(33 rows, batch_size=16\).*batch_size=17"):
        model.fit(X, y, "cross_entropy", "adam", epochs=1, batch_size=16, verbose=0)
    with pytest.raises(ValueError, match="batch_size=1"):
        model.fit(X, y, "cross_entropy", "adam", epochs=1, batch_size=1, verbose=0)
    batches = mx.datasets.Batches(X, y, batch_size=32)
    with pytest.raises(ValueError, match="33 rows, batch_size=32"):
        model.fit(batches, None, "cross_entropy", "adam", epochs=1, verbose=0)
    assert np.array_equal(numpy_of(model.params), before[0]) and np.array_equal(numpy_of(model.running), before[1])
    model.fit(X, y, "cross_entropy", "adam", epochs=1, batch_size=17, verbose=0)  # what the error suggests
    with pytest.raises(ValueError, match="more than 1 row per batch"):  # the layer itself, as torch
        mx.BatchNorm(4).forward({"weight": np.ones(4), "bias": np.zeros(4)}, np.ones((1, 4)),
                                ForwardContext(np, True))


def test_data_parallel_training_is_refused_before_any_step():
    class Fake(mx.distributed.Engine):
        size = 2

        def allreduce_sum(self, buffer, xp):
            return buffer

        def allgather(self, value):
            return [value]

    X, y = _data()
    model = _model()
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm.*data-parallel.*LayerNorm"):
        model.fit(X, y, "cross_entropy", "adam", epochs=1, batch_size=16, verbose=0, distributed=Fake())
    with pytest.raises(ValueError, match="data-parallel"):
        make_train_step(model, mx.losses.CrossEntropy(), mx.optim.Adam(), engine=Fake())


@pytest.mark.parametrize("bad, match", [
    (dict(momentum=0.99 + 1), "momentum must be in"), (dict(momentum=-0.1), "momentum"), (dict(eps=0.0), "eps"),
    (dict(momentum="fast"), "momentum"), (dict(num_features=0), "num_features")])
def test_bad_arguments_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        mx.BatchNorm(**{"num_features": 4, **bad})


def test_a_wrong_width_is_a_shape_error_and_the_alias_is_the_class():
    with pytest.raises(mx.ShapeError, match=r"layer 1 \(BatchNorm.*normalizes 6 features but receives \(batch, 8\)"):
        mx.Sequential(mx.Linear(3, 8), mx.BatchNorm(6))
    assert mx.BatchNorm1d is mx.BatchNorm
    model = mx.Sequential(mx.Linear(3, 8), mx.BatchNorm1d(), mx.ReLU(), mx.Linear(8, 2))
    assert model.running_specs[0].key == "1.running_mean" and model.num_running == 16
    assert "BatchNorm(num_features=None" in model.summary()


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_mixed_precision_keeps_float32_running_statistics(precision):
    X, y = _data(64)
    reference = _model(dtype="float32")
    reference.fit(X, y, "cross_entropy", mx.optim.Adam(lr=1e-2), epochs=2, batch_size=16, verbose=0)
    model = mx.Sequential(*reference.layers, dtype="float32", precision=precision, seed=1)
    model.fit(X, y, "cross_entropy", mx.optim.Adam(lr=1e-2), epochs=2, batch_size=16, verbose=0)
    assert model.running.dtype == np.float32
    np.testing.assert_allclose(numpy_of(model.running), numpy_of(reference.running), rtol=0.1, atol=0.05)


def test_the_jitted_jax_step_carries_the_running_statistics():
    jax = pytest.importorskip("jax")
    from mlp_xp.train.step import jit_train_step

    model = _model("jax", dtype="float32")
    optimizer = mx.optim.Adam()
    step = jit_train_step(make_train_step(model, mx.losses.CrossEntropy(), optimizer))
    state = init_state(model, optimizer)
    X, y = _data(8)
    x, t = jax.numpy.asarray(X, dtype=jax.numpy.float32), jax.numpy.asarray(y)
    states = []
    for _ in range(3):
        state, _ = step(state, x, t)
        states.append(numpy_of(state.running))
    compiled = step.jitted._cache_size()
    state, _ = step(state, x, t)
    assert step.jitted._cache_size() == compiled  # (the statistics are traced, not compiled in)
    assert not np.array_equal(states[0], states[1]) and not np.array_equal(states[1], states[2])
    assert not np.array_equal(states[2], numpy_of(state.running))
    reference = _model(dtype="float32")
    reference.fit(np.concatenate([X] * 3), np.concatenate([y] * 3), mx.losses.CrossEntropy(), mx.optim.Adam(),
                  epochs=1, batch_size=8, shuffle=False, verbose=0)
    reference.fit(X, y, mx.losses.CrossEntropy(), mx.optim.Adam(), epochs=1, batch_size=8, verbose=0)
    np.testing.assert_allclose(numpy_of(state.running), numpy_of(reference.running), rtol=1e-5, atol=1e-6)


def test_a_step_on_a_device_reads_and_uploads_nothing_per_step():
    xps = pytest.importorskip("array_api_strict")

    def work(steps):
        model = _model("array_api_strict", dtype="float32", device=xps.Device("device1"))
        X, y = _data(8 * steps)
        x, t = model.backend.asarray(X, dtype=model.dtype), model.backend.asarray(y, dtype=model.backend.index_dtype)
        with count_array_work() as counted:
            model.fit(x, t, mx.losses.CrossEntropy(), mx.optim.Adam(), epochs=1, batch_size=8, verbose=0)
        return counted

    short, long = work(3), work(9)
    assert (long.syncs - short.syncs, long.uploads - short.uploads) == (0, 0)
    assert set(long.numbers) == set(short.numbers)


def test_layer_statistics_runs_batchnorm_in_evaluation_and_counts_dead_units_of_a_relu_linear():
    X, y = _data()
    model = mx.Sequential(mx.Linear(5, 8, activation="relu"), mx.BatchNorm(8), mx.Linear(8, 3), seed=0)
    model.fit(X, y, "cross_entropy", "adam", epochs=1, batch_size=16, verbose=0)
    rows = mx.layer_statistics(model, X, y, mx.losses.CrossEntropy())
    assert rows[0]["dead_fraction"] is not None and 0.0 <= rows[0]["dead_fraction"] <= 1.0
    normalized = numpy_of(model.forward(model.backend.asarray(X, dtype=model.dtype), stop=2))
    assert rows[1]["mean"] == pytest.approx(float(normalized.mean()), rel=1e-6)
    assert rows[1]["dead_fraction"] is None


def test_inputs_too_large_for_the_running_statistics_stop_with_the_statistic_named():
    X, y = _data()
    model = _model(dtype="float32")
    with pytest.raises(mx.NonFiniteError, match=r"'1.running_var' overflowed float32.*Scale the inputs"):
        model.fit(X * 1e20, y, "cross_entropy", "adam", epochs=1, batch_size=16, verbose=0)
    assert np.all(np.isfinite(numpy_of(model.running)))  # (the statistics before the refused step: saveable)
    model.load_state_dict(model.state_dict())


def test_untracked_statistics_in_predict_take_a_last_row_with_the_chunk_before(exact_backend):
    X, y = _data(65)
    model = _model(exact_backend, track_running_stats=False)
    model.fit(X[:64], y[:64], "cross_entropy", "adam", epochs=1, batch_size=16, verbose=0,
              validation_data=(X, y))  # (validation in chunks of 1024 and a last one of 1: 65 rows)
    whole = numpy_of(model.predict(X, batch_size=32))
    np.testing.assert_allclose(whole[32:], numpy_of(model.predict(X[32:], batch_size=33)), rtol=1e-12)
    assert np.isfinite(model.evaluate(X, y, "cross_entropy", batch_size=16)["loss"])
    with pytest.raises(ValueError, match=r"BatchNorm\(num_features=8.*needs more than 1 row"):
        model.predict(X[:1])


@pytest.mark.parametrize("backend_name", ["numpy", "jax"])
def test_a_batch_hook_that_puts_in_running_statistics_has_them_kept(backend_name):
    if backend_name == "jax":
        pytest.importorskip("jax")
    X, y = _data(32)
    model = _model(backend_name, dtype="float32")
    marker = model.backend.asarray(np.full(model.num_running, 2.0), dtype=model.dtype)

    class Put(mx.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model.running = marker

    model.fit(X, y, "cross_entropy", "adam", epochs=1, batch_size=16, verbose=0, callbacks=[Put()])
    np.testing.assert_array_equal(numpy_of(model.running), 2.0)  # (the last batch's: no step after it)
