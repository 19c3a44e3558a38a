"""Cases an independent review of the 0.4 training step found (each failed before its fix)."""

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp.train.step import init_state, make_train_step

from .conftest import numpy_of

rng = np.random.default_rng(0)
X, LABELS = rng.normal(size=(64, 6)), rng.integers(0, 3, size=64)


def test_float16_with_host_masks_lowers_the_loss_scale_instead_of_raising():
    """The step records whether its batch passed the checks before the update: a gradient that
    overflowed float16 halves the scale even when the masks cannot be drawn again."""
    data = np.random.default_rng(0)
    x, y = data.normal(size=(64, 8)), data.normal(size=(64, 2))  # (scale 1: an overflow the masks caused)
    model = mx.Sequential(mx.Linear(8, 64), mx.ReLU(), mx.Dropout(0.5), mx.Linear(64, 64), mx.ReLU(), mx.Dropout(0.5),
                          mx.Linear(64, 2), seed=1, precision="float16")
    model.dropout_masks = "host"
    history = model.fit(x, y, loss=mx.losses.MSE(), optimizer=mx.optim.Adam(lr=1e-3), epochs=2, batch_size=16,
                        verbose=0)
    assert sum(history["skipped_steps"]) > 0 and history["loss_scale"][-1] < 65536.0


@pytest.mark.parametrize("lr", [lambda count: 0.01 / (1 + count), mx.optim.schedules.warmup(lambda c: 0.01, 3)])
def test_a_learning_rate_function_trains_on_jax_as_on_numpy(lr):
    pytest.importorskip("jax")
    results = []
    for backend in ("numpy", "jax"):
        model = mx.Sequential(mx.Linear(6, 8), mx.ReLU(), mx.Linear(8, 3), seed=0, backend=backend)
        model.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.Adam(lr=lr), epochs=2, batch_size=16, verbose=0)
        results.append(numpy_of(model.params))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("value", [1, np.float32(0.1)])
def test_a_constant_schedule_of_any_real_number_trains(value, backend):
    model = mx.Sequential(mx.Linear(6, 3), seed=0, backend=backend, device=backend.device)
    history = model.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.SGD(lr=mx.optim.schedules.constant(value)),
                        epochs=1, batch_size=16, verbose=0)
    assert history["lr"] == [pytest.approx(float(value))]


def test_load_state_dict_in_a_callback_starts_a_fresh_optimizer_state():
    class Reload(mx.callbacks.Callback):
        def on_epoch_end(self, epoch, logs, model):
            if epoch == 1:
                model.load_state_dict(model.state_dict())  # drops the optimizer state
            return False

    model = mx.Sequential(mx.Linear(6, 16), mx.ReLU(), mx.Linear(16, 3), seed=1)
    optimizer = mx.optim.Adam(lr=1e-2)
    model.fit(X, LABELS, mx.losses.CrossEntropy(), optimizer, epochs=2, batch_size=16, verbose=0, callbacks=[Reload()])
    assert model.optimizer is optimizer and int(model.optimizer_state.count) == 4  # the second epoch's 4 updates


def test_an_optimizer_written_to_the_update_contract_is_honoured():
    class Frozen(mx.optim.SGD):  # overrides only the pure update
        def update(self, grads, state, params, xp=None):
            return params, state._replace(count=state.count + 1)

    class Sign(mx.optim.Optimizer):  # defines only init and update
        def init(self, params):
            return mx.optim.SGDState(0, None)

        def update(self, grads, state, params, xp=None):
            import array_api_compat

            xp = array_api_compat.array_namespace(params)
            return params - self.lr * xp.sign(grads), state._replace(count=state.count + 1)

    for optimizer, changes in ((Frozen(lr=0.5), False), (Sign(lr=0.01), True)):
        model = mx.Sequential(mx.Linear(6, 3), seed=0)
        before = numpy_of(model.params)
        model.fit(X, LABELS, mx.losses.CrossEntropy(), optimizer, epochs=1, batch_size=16, verbose=0)
        assert (not np.array_equal(before, numpy_of(model.params))) is changes
        assert int(model.optimizer_state.count) == 4


def test_an_update_from_a_host_count_works_on_every_namespace(backend):
    """A state read from a file or a pickle holds its count as an int."""
    be = mx.Sequential(mx.Linear(2, 2), backend=backend, device=backend.device).backend
    params, grads = be.asarray(np.ones(4, np.float32)), be.asarray(np.full(4, 0.5, np.float32))
    for optimizer in (mx.optim.SGD(momentum=0.9), mx.optim.AdamW(), mx.optim.RMSprop(centered=True)):
        state = optimizer.init(params)._replace(count=3)
        new_params, new_state = optimizer.update(grads, state, params)
        assert int(new_state.count) == 4 and np.all(np.isfinite(numpy_of(new_params)))


@pytest.mark.parametrize("precision", [None, "bfloat16"])
def test_data_parallel_mixed_precision_equals_one_process(precision):
    pytest.importorskip("ml_dtypes")

    class One(mx.distributed.Engine):
        rank, size = 0, 1

        def allreduce_sum(self, buffer, xp):
            return buffer

        def allgather(self, value):
            return [value]

    data = np.random.default_rng(0)
    x, t = data.normal(size=(16, 6)).astype(np.float32), data.integers(0, 3, 16)
    results = []
    for engine in (None, One()):
        model = mx.Sequential(mx.Linear(6, 16), mx.ReLU(), mx.Linear(16, 3), seed=1, precision=precision)
        optimizer = mx.optim.SGD(lr=0.1)
        step = make_train_step(model, mx.losses.CrossEntropy(), optimizer, engine=engine)
        state = init_state(model, optimizer)
        for _ in range(3):
            state, _ = step(state, x, t)
        results.append(numpy_of(state.params))
    assert np.array_equal(results[0], results[1])


def test_fit_keeps_no_gradient_buffer_in_the_model():
    model = mx.Sequential(mx.Linear(6, 16), mx.ReLU(), mx.Linear(16, 3), seed=1)
    model.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.Adam(), epochs=1, batch_size=16, verbose=0)
    assert model.record.buffer is None


def test_the_diagnosis_runs_the_update_an_update_contract_optimizer_gives():
    class NaNUpdate(mx.optim.SGD):
        def update(self, grads, state, params, xp=None):
            new_params, new_state = super().update(grads, state, params, xp)
            return new_params * float("nan"), new_state

    model = mx.Sequential(mx.Linear(6, 3), seed=0)
    before = numpy_of(model.params)
    with pytest.raises(mx.NonFiniteError, match="became non-finite in the update of this step"):
        model.fit(X, LABELS, mx.losses.CrossEntropy(), NaNUpdate(lr=0.1), epochs=1, batch_size=16, verbose=0)
    assert np.array_equal(numpy_of(model.params), before)


def test_a_mixins_update_is_honoured():
    calls = []

    class Counting:
        def update(self, grads, state, params, xp=None):
            calls.append(1)
            return super().update(grads, state, params, xp)

    class CountingAdam(Counting, mx.optim.Adam):
        pass

    model = mx.Sequential(mx.Linear(6, 3), seed=0)
    model.fit(X, LABELS, mx.losses.CrossEntropy(), CountingAdam(), epochs=1, batch_size=16, verbose=0)
    assert len(calls) == 4
