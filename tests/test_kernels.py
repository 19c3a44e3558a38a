"""The fast Ops (mlp_xp.ops.numpy_ops, numba_ops) give bitwise the same training as the generic reference ops."""

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp._backend import resolve_backend
from mlp_xp.ops import GenericOps, for_model
from mlp_xp.ops.numpy_ops import UfuncOps

from .conftest import numpy_of


def _numba_kernels():
    numba_cpu = pytest.importorskip("mlp_xp.ops.numba_ops", reason="numba is not installed")
    return numba_cpu.NumbaOps()


KERNELS = {"ufunc": lambda: UfuncOps(np), "numba": _numba_kernels}

OPTIMIZERS = {
    "sgd": lambda: mx.optim.SGD(lr=0.05),
    "sgd-momentum": lambda: mx.optim.SGD(lr=0.05, momentum=0.9),
    "sgd-nesterov-wd": lambda: mx.optim.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3),
    "sgd-schedule-clip": lambda: mx.optim.SGD(lr=mx.optim.schedules.cosine(0.1, 40), momentum=0.5, clip_norm=0.5),
    "adam": lambda: mx.optim.Adam(lr=3e-3),
    "adam-l2-clip": lambda: mx.optim.Adam(lr=3e-3, betas=(0.8, 0.95), weight_decay=1e-2, clip_norm=1.0),
    "adamw": lambda: mx.optim.AdamW(lr=3e-3, weight_decay=0.05),
    "rmsprop (generic update)": lambda: mx.optim.RMSprop(lr=1e-3, momentum=0.5),
}


def _train(kernels, make_optimizer, dtype, epochs=3):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(150, 12)), rng.integers(0, 5, size=150)
    model = mx.Sequential(mx.Linear(12, 24), mx.ReLU(), mx.Dropout(0.1), mx.Linear(24, 16), mx.Tanh(),
                          mx.LayerNorm(), mx.Linear(16, 5), mx.Softmax(), dtype=dtype, seed=5)
    model.ops = kernels
    history = model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=make_optimizer(), epochs=epochs,
                        batch_size=16, validation_data=(X[:30], y[:30]), verbose=0)
    return numpy_of(model.params), history


@pytest.mark.parametrize("kernel_name", sorted(KERNELS))
@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_path_is_bitwise_identical_to_generic(kernel_name, optimizer_name, dtype):
    kernels = KERNELS[kernel_name]()
    reference, reference_history = _train(None, OPTIMIZERS[optimizer_name], dtype)
    fast, fast_history = _train(kernels, OPTIMIZERS[optimizer_name], dtype)
    assert np.array_equal(fast, reference)
    assert fast_history == reference_history


@pytest.mark.parametrize("kernel_name", sorted(KERNELS))
def test_fast_update_matches_generic_update_directly(kernel_name):
    """Each optimizer's primitive on the fast Ops (state in place, new parameters into the
    used-up gradient as the undo array) equals the pure generic update, bitwise, step after step."""
    kernels = KERNELS[kernel_name]()
    rng = np.random.default_rng(1)
    params, grads = rng.normal(size=1000).astype(np.float32), rng.normal(size=1000).astype(np.float32)
    for make in OPTIMIZERS.values():
        optimizer = make()
        generic_params, generic_state = params, optimizer.init(params)
        fast_params, fast_state = params.copy(), optimizer.init(params)
        fast_state = fast_state._replace(count=kernels.counter(fast_state.count))
        for _ in range(4):
            generic_params, generic_state = optimizer.update(grads, generic_state, generic_params)
            used_up = grads.copy()  # (the step's gradient buffer: used up by the update)
            fast_params, fast_state, ok = optimizer.apply(kernels, used_up, fast_state, fast_params, True,
                                                          undo=used_up)
            assert ok is True
        assert np.array_equal(generic_params, fast_params), optimizer
        assert int(generic_state.count) == fast_state.count == 4
        for field in generic_state._fields[1:]:
            if getattr(generic_state, field) is not None:
                assert np.array_equal(getattr(generic_state, field), getattr(fast_state, field)), (optimizer, field)


def test_numpy_models_use_fast_paths_and_others_do_not():
    assert for_model(resolve_backend("numpy"), "float32").mutable
    assert for_model(resolve_backend("numpy"), "float64", use_numba=False).name == "ufunc"
    assert type(for_model(resolve_backend("array_api_strict"), "float32")) is GenericOps
    assert type(mx.Sequential(mx.Linear(2, 2), backend="array_api_strict").ops) is GenericOps


def test_torch_models_use_the_generic_ops():
    pytest.importorskip("torch", reason="torch is optional (not in the [test] extra)")
    assert type(for_model(resolve_backend("torch"), "float32")) is GenericOps


@pytest.mark.parametrize("kernel_name", sorted(KERNELS))
def test_a_subclassed_optimizer_keeps_the_fast_primitive(kernel_name):
    """The Ops never test an optimizer's type: a subclass that keeps the rule gets the fused
    primitive, and one with its own ``apply`` gets its own math."""
    kernels = KERNELS[kernel_name]()
    calls = []
    fused_adam = kernels.adam

    def spy(*args, **kwargs):
        calls.append(kwargs.get("undo") is not None)
        return fused_adam(*args, **kwargs)

    kernels.adam = spy

    class Logged(mx.optim.Adam):
        pass

    class Halved(mx.optim.Adam):
        def apply(self, ops, grads, state, params, ok, undo=None):
            return super().apply(ops, grads * 0.5, state, params, ok)

    X, y = np.eye(3), [0, 1, 0]
    for optimizer in (Logged(lr=0.1), Halved(lr=0.1)):
        model = mx.Sequential(mx.Linear(3, 4), mx.ReLU(), mx.Linear(4, 2), seed=0)
        model.ops = kernels
        model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=2, batch_size=1, verbose=0)
    assert calls == [True] * 6 + [False] * 6  # Halved passes no undo array: the generic in-place update
    reference = mx.Sequential(mx.Linear(3, 4), mx.ReLU(), mx.Linear(4, 2), seed=0)
    reference.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(lr=0.1), epochs=2, batch_size=1,
                  verbose=0)
    assert not np.array_equal(numpy_of(model.params), numpy_of(reference.params))


@pytest.mark.parametrize("kernel_name", sorted(KERNELS))
def test_fit_trains_the_models_own_array_in_place(kernel_name):
    """No copy of the parameters: the array the model held before fit is the one trained."""
    model = mx.Sequential(mx.Linear(3, 4), mx.ReLU(), mx.Linear(4, 2), seed=0)
    model.ops = KERNELS[kernel_name]()
    held = model.params
    snapshot = held.copy()
    for steps in (3, 2):  # an odd number of steps, then an even one
        model.fit(np.eye(3)[:steps], [0, 1, 0][:steps], loss=mx.losses.CrossEntropy(),
                  optimizer=mx.optim.Adam(lr=0.1), epochs=1, batch_size=1, verbose=0)
        assert model.params is held
    assert not np.array_equal(held, snapshot)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kernel_name", [None, "ufunc", "numba"])
def test_an_update_that_would_overflow_a_parameter_is_refused(kernel_name):
    """An update that would make a parameter infinite never lands, whichever path computes it."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 3)) * 1000, rng.normal(size=32) * 1000  # gradients ~1e6
    model = mx.Sequential(mx.Linear(3, 1), dtype="float32", seed=0)
    model.ops = KERNELS[kernel_name]() if kernel_name else None
    before = numpy_of(model.params)
    with pytest.raises(mx.NonFiniteError) as info:  # lr * grad overflows float32 in the first update
        model.fit(X, y, loss=mx.losses.MSE(), optimizer=mx.optim.SGD(lr=1e37), epochs=3, batch_size=8, verbose=0)
    assert info.value.name in ("0.weight", "0.bias")
    assert "became non-finite in the update of this step" in str(info.value)
    assert info.value.step == 1 and np.array_equal(numpy_of(model.params), before)
    assert model.optimizer_state is None


@pytest.mark.parametrize("kernel_name", [None, "ufunc", "numba"])
@pytest.mark.parametrize("make", [lambda: mx.optim.Adam(clip_norm=1.0), lambda: mx.optim.AdamW(),
                                  lambda: mx.optim.SGD(momentum=0.9, nesterov=True, weight_decay=0.1),
                                  lambda: mx.optim.RMSprop(momentum=0.9, centered=True)])
def test_float32_stays_float32_end_to_end(kernel_name, make):
    """No silent float64 promotion: parameters, gradients and optimizer state keep the dtype."""
    X, y = np.random.default_rng(0).normal(size=(40, 6)), np.arange(40) % 3  # float64 and int64 inputs
    model = mx.Sequential(mx.Linear(6, 8), mx.ReLU(), mx.LayerNorm(), mx.Linear(8, 3), mx.Softmax(), seed=0)
    model.ops = KERNELS[kernel_name]() if kernel_name else None
    model.fit(X, y, loss=mx.losses.CrossEntropy(label_smoothing=0.1), optimizer=make(), epochs=2, batch_size=8,
              verbose=0)
    assert model.params.dtype == np.float32
    for value in model.optimizer_state[1:]:
        assert value is None or value.dtype == np.float32
    _, grads = model.loss_and_grad(X, y, mx.losses.CrossEntropy())
    assert all(g.dtype == np.float32 for g in grads.values())
    assert model.predict(X).dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_relu_backward_is_bitwise_the_generic_where(dtype):
    """NaN, inf and -0 of open units kept, +0 for closed ones, on every fast path."""
    rng = np.random.default_rng(0)
    x, dy = rng.normal(size=(40, 30)).astype(dtype), rng.normal(size=(40, 30)).astype(dtype)
    dy[0, :6], x[0, :6] = [np.nan, -0.0, np.inf, -np.inf, 0.0, np.nan], [1, 1, -1, 1, -1, -1]
    reference = GenericOps(np).relu_backward(x, dy)
    for make in KERNELS.values():
        fast = make().relu_backward(x, dy)
        assert fast.dtype == dtype and np.array_equal(fast.view(np.uint8), reference.view(np.uint8))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kernel_name", sorted(KERNELS))
def test_the_fast_guard_decides_as_the_generic_one_near_the_dtype_limit(kernel_name):
    """Parameters and second moments near float32's largest value: the update lands exactly
    where the generic check (their sum is finite) says it does."""
    for scale in (1e37, 1.2e38, 1.8e38):
        params = np.full(8, scale, np.float32)
        params[::2] *= -1
        grads = np.full(8, 1e-3, np.float32)
        results = []
        for ops in (GenericOps(np), KERNELS[kernel_name]()):
            optimizer = mx.optim.Adam()
            state = optimizer.init(params)
            state = state._replace(count=ops.counter(state.count), exp_avg_sq=np.full(8, scale, np.float32))
            used = grads.copy()
            new, state, ok = optimizer.apply(ops, used, state, params.copy(), ops.true(), undo=used)
            results.append((bool(ok), new.copy()))
        assert results[0][0] == results[1][0] and np.array_equal(results[0][1], results[1][1]), scale
