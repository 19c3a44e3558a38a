"""The training step (mlp_xp.train.step) and its Ops: no host round-trip per step, a device-side guard,
device Dropout masks, the JAX jit path, and CuPy's fused ops against the generic ones."""

import math

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp._backend import resolve_backend
from mlp_xp.tools.counting import count_array_work
from mlp_xp.ops import GenericOps
from mlp_xp.train.step import init_state, landed, make_train_step

from .conftest import _available, numpy_of

xps = pytest.importorskip("array_api_strict")
DEVICE1 = xps.Device("device1")


def _issue_model(device=None, backend="array_api_strict", widths=(784, 512, 512, 10)):
    """The issue's workload: ReLU MLP with two Dropout(0.1), Adam."""
    first, hidden, second, out = widths
    return mx.Sequential(mx.Linear(first, hidden), mx.ReLU(), mx.Dropout(0.1), mx.Linear(hidden, second), mx.ReLU(),
                         mx.Dropout(0.1), mx.Linear(second, out), backend=backend, device=device, seed=0)


def _count_fit(steps, widths=(64, 32, 32, 10), batch=16, **options):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch * steps, widths[0])).astype(np.float32)
    y = rng.integers(0, widths[-1], batch * steps)
    model = _issue_model(DEVICE1, widths=widths)
    x, t = model.backend.asarray(X), model.backend.asarray(y, dtype=model.backend.index_dtype)
    with count_array_work() as work:
        model.fit(x, t, mx.losses.CrossEntropy(), mx.optim.Adam(), epochs=1, batch_size=batch, verbose=0, **options)
    return work


def test_a_steady_state_step_has_no_host_sync_and_no_upload_on_a_device():
    short, long = _count_fit(3), _count_fit(9)
    assert (long.syncs - short.syncs, long.uploads - short.uploads) == (0, 0)
    # no Python number that changes per step reaches an array operation (learning rate, bias
    # corrections, Dropout keys are 0-d device arrays): a longer epoch hands over no new ones
    assert set(long.numbers) == set(short.numbers)
    per_step = (long.ops - short.ops) / 6
    assert per_step == int(per_step) and 30 < per_step < 120  # the count itself is a benchmark (BENCHMARKS.md)
    # and the whole epoch reads the device a handful of times, not once per step
    assert short.syncs <= 6


@pytest.mark.parametrize("make", [
    lambda: mx.optim.Adam(lr=mx.optim.schedules.warmup(mx.optim.schedules.cosine(1e-2, 40), 3)),
    lambda: mx.optim.AdamW(lr=mx.optim.schedules.step(1e-2, step_size=2), clip_norm=1.0),
    lambda: mx.optim.SGD(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-3),
    lambda: mx.optim.RMSprop(lr=1e-3, momentum=0.5, centered=True)])
def test_every_optimizer_and_schedule_takes_its_numbers_from_the_device(make):
    def numbers(steps):
        model = _issue_model(DEVICE1, widths=(6, 8, 8, 3))
        x = model.backend.asarray(np.ones((4 * steps, 6), np.float32))
        t = model.backend.asarray(np.arange(4 * steps) % 3, dtype=model.backend.index_dtype)
        with count_array_work() as work:
            model.fit(x, t, mx.losses.CrossEntropy(), make(), epochs=1, batch_size=4, verbose=0)
        return work

    short, long = numbers(3), numbers(7)
    assert set(long.numbers) == set(short.numbers)
    assert long.syncs == short.syncs and long.uploads == short.uploads


def test_a_host_number_per_step_is_what_the_count_finds():
    """The counter sees a per-step number: a plain function as the learning rate is evaluated
    on the host (one upload per step)."""
    def work(steps):
        model = _issue_model(DEVICE1, widths=(6, 8, 8, 3))
        x = model.backend.asarray(np.ones((4 * steps, 6), np.float32))
        t = model.backend.asarray(np.arange(4 * steps) % 3, dtype=model.backend.index_dtype)
        with count_array_work() as counted:
            model.fit(x, t, mx.losses.CrossEntropy(), mx.optim.SGD(lr=lambda count: 0.1 / (1 + count)), epochs=1,
                      batch_size=4, verbose=0)
        return counted

    short, long = work(3), work(7)
    assert long.uploads - short.uploads == 4


def test_sync_every_reads_at_that_interval():
    plain, every_2 = _count_fit(8), _count_fit(8, sync_every=2)
    assert every_2.syncs - plain.syncs == 3  # reads after steps 2, 4, 6 (step 8 is the epoch's end anyway)
    with pytest.raises(ValueError, match="sync_every"):
        _count_fit(1, sync_every=0)


def test_numpy_and_strict_on_a_device_train_bitwise_alike():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(96, 20)), rng.integers(0, 4, 96)
    results = []
    for backend, device in (("numpy", None), ("array_api_strict", DEVICE1)):
        model = _issue_model(device, backend, widths=(20, 16, 16, 4))
        history = model.fit(X, y, mx.losses.CrossEntropy(), mx.optim.Adam(lr=1e-2), epochs=3, batch_size=16,
                            verbose=0)
        results.append((numpy_of(model.params), history["loss"], history["accuracy"], model.dropout_step))
    assert np.array_equal(results[0][0], results[1][0])
    assert results[0][1:] == results[1][1:]


@pytest.mark.parametrize("sync_every", [None, 3])
@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_the_guard_names_the_failing_step_and_keeps_the_weights_before_it(backend, sync_every):
    """A NaN in the middle of an epoch, read only at the epoch's end on a device."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(80, 5)), rng.normal(size=80)
    y[45] = 1e30  # its square overflows float32: the batch of rows 40-49 is step 5 without shuffling
    device = DEVICE1 if backend == "array_api_strict" else None
    model = mx.Sequential(mx.Linear(5, 8), mx.Tanh(), mx.Linear(8, 1), backend=backend, device=device, seed=0)
    reference = mx.Sequential(mx.Linear(5, 8), mx.Tanh(), mx.Linear(8, 1), seed=0)
    reference.fit(X[:40], y[:40], mx.losses.MSE(), mx.optim.SGD(lr=0.01), batch_size=10, shuffle=False, verbose=0)
    with count_array_work() as work, pytest.raises(mx.NonFiniteError, match="epoch 1, step 5") as info:
        with np.errstate(over="ignore", invalid="ignore"):
            model.fit(X, y, mx.losses.MSE(), mx.optim.SGD(lr=0.01), batch_size=10, shuffle=False, verbose=0,
                      sync_every=sync_every)  # with 3: found at the read after step 6, else at the epoch's end
    assert info.value.step == 5 and info.value.epoch == 1
    # the steps after the bad one were frozen: the weights are those of the 4 clean steps before it
    assert "keeps its weights from before that step" in str(info.value)
    assert np.array_equal(numpy_of(model.params), numpy_of(reference.params))
    if backend == "array_api_strict":
        assert work.syncs < 20  # found at the epoch-end read, not by reading every step


def test_the_guard_in_a_hand_written_loop():
    model = mx.Sequential(mx.Linear(3, 2), backend="array_api_strict", device=DEVICE1, seed=0)
    optimizer = mx.optim.Adam()
    step = make_train_step(model, mx.losses.MSE(), optimizer)
    state = init_state(model, optimizer)
    x = model.backend.asarray(np.ones((4, 3), np.float32))
    good, bad = model.backend.asarray(np.zeros((4, 2), np.float32)), model.backend.asarray(np.full((4, 2), np.inf,
                                                                                                 np.float32))
    state, _ = step(state, x, good)
    kept = state.params
    for target in (bad, good, good):
        state, _ = step(state, x, target)
    assert not bool(state.guard.ok) and landed(state) == 1
    assert state.params is kept or bool(xps.all(state.params == kept))


def test_device_masks_are_the_same_on_every_backend_and_behave_like_dropout():
    masks = []
    for name in ("numpy", "array_api_strict", "torch", "jax"):
        if not _available(name):
            continue
        backend = resolve_backend(name, DEVICE1 if name == "array_api_strict" else None)
        masks.append(numpy_of(GenericOps(backend.xp, backend.device).dropout_keep(123456789, (500, 400), 0.3)))
    assert all(np.array_equal(masks[0], other) for other in masks[1:])
    keep = masks[0].astype(float)
    assert abs(keep.mean() - 0.7) < 0.003  # 200,000 draws: 4 standard deviations
    # neighbours (across columns and rows) are uncorrelated
    for a, b in ((keep[:, 1:], keep[:, :-1]), (keep[1:], keep[:-1])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01
    ops = GenericOps(np, None)
    other_step = numpy_of(ops.dropout_keep(987654321, (500, 400), 0.3)).astype(float)
    assert abs(np.corrcoef(keep.ravel(), other_step.ravel())[0, 1]) < 0.01


def test_masks_follow_the_seed_and_the_step_and_resume_exactly(tmp_path):
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(64, 10)), rng.integers(0, 3, 64)

    def model():
        return mx.Sequential(mx.Linear(10, 32), mx.ReLU(), mx.Dropout(0.5), mx.Linear(32, 3), seed=7)

    first, second = model(), model()
    assert np.array_equal(first.loss_and_grad(X, y, mx.losses.CrossEntropy(), train=True)[0],
                          second.loss_and_grad(X, y, mx.losses.CrossEntropy(), train=True)[0])
    assert first.dropout_step == 1  # the next call draws fresh masks
    a = first.loss_and_grad(X, y, mx.losses.CrossEntropy(), train=True)[0]
    b = first.loss_and_grad(X, y, mx.losses.CrossEntropy(), train=True)[0]
    assert a != b
    straight = model()
    straight.fit(X, y, mx.losses.CrossEntropy(), mx.optim.Adam(), epochs=4, batch_size=16, verbose=0)
    half, optimizer = model(), mx.optim.Adam()
    half.fit(X, y, mx.losses.CrossEntropy(), optimizer, epochs=2, batch_size=16, verbose=0)
    mx.save(half, tmp_path / "half.safetensors", optimizer=optimizer)
    resumed = model()
    resumed.fit(X, y, mx.losses.CrossEntropy(), mx.optim.Adam(), epochs=2, batch_size=16, verbose=0,
                resume_from=tmp_path / "half.safetensors")
    assert resumed.dropout_step == straight.dropout_step == 16
    assert np.array_equal(numpy_of(resumed.params), numpy_of(straight.params))


def test_host_masks_stay_available_for_exact_comparison():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(32, 6)), rng.integers(0, 2, 32)
    losses = []
    for masks in ("host", "device"):
        model = mx.Sequential(mx.Linear(6, 16), mx.ReLU(), mx.Dropout(0.5), mx.Linear(16, 2), seed=1)
        model.dropout_masks = masks
        losses.append(model.fit(X, y, mx.losses.CrossEntropy(), mx.optim.SGD(lr=0.1), epochs=2, verbose=0)["loss"])
    assert losses[0] != losses[1] and all(math.isfinite(v) for v in losses[0] + losses[1])
    with pytest.raises(ValueError, match="dropout_masks"):
        model.dropout_masks = "gpu"
    with pytest.raises(TypeError, match="optimizer"):
        make_train_step(model, mx.losses.CrossEntropy(), mx.optim.Adam)
    with pytest.raises(TypeError, match="loss"):
        make_train_step(model, mx.losses.CrossEntropy, mx.optim.Adam())


def test_jax_jit_trains_like_numpy():
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(128, 12)).astype(np.float32), rng.integers(0, 3, 128)
    results = {}
    jax = pytest.importorskip("jax")
    for backend in ("numpy", "jax"):
        model = _issue_model(None, backend, widths=(12, 32, 32, 3))
        with jax.default_matmul_precision("highest"):  # float32 products (GPUs default to TF32)
            history = model.fit(X, y, mx.losses.CrossEntropy(), mx.optim.Adam(lr=1e-2), epochs=3, batch_size=32,
                                verbose=0)
        results[backend] = (numpy_of(model.params), history["loss"], model.dropout_step)
    # the same masks and steps; float32 arithmetic in another order (XLA fuses) differs in rounding only
    assert results["jax"][2] == results["numpy"][2] == 12
    np.testing.assert_allclose(results["jax"][0], results["numpy"][0], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(results["jax"][1], results["numpy"][1], rtol=1e-4)


def test_jax_jit_step_compiles_once_and_keeps_the_guard():
    jax = pytest.importorskip("jax")
    from mlp_xp.train.step import jit_train_step

    model = _issue_model(None, "jax", widths=(6, 8, 8, 2))
    optimizer = mx.optim.Adam()
    step = jit_train_step(make_train_step(model, mx.losses.CrossEntropy(), optimizer))
    state = init_state(model, optimizer)
    x = jax.numpy.ones((4, 6))
    y = jax.numpy.asarray([0, 1, 0, 1])
    for _ in range(3):
        state, loss = step(state, x, y)
    compiled = step.jitted._cache_size()
    for _ in range(10):
        state, loss = step(state, x, y)
    assert step.jitted._cache_size() == compiled <= 3  # later steps reuse the compilation
    state, _ = step(state, x * np.nan, y)
    assert not bool(state.guard.ok) and landed(state) == 13


@pytest.mark.skipif(not _available("cupy"), reason="cupy needs a CUDA GPU")
def test_cupy_fused_ops_agree_with_the_generic_ops():
    import cupy

    from mlp_xp.ops.cupy_ops import CupyOps

    backend = resolve_backend("cupy")
    fused, generic = CupyOps(backend.xp), GenericOps(backend.xp)
    assert cupy.array_equal(fused.dropout_keep(2654435769, (300, 257), 0.1, 77),
                            generic.dropout_keep(2654435769, (300, 257), 0.1, 77))
    rng = np.random.default_rng(6)
    for dtype, tolerance in (("float32", 1e-6), ("float64", 1e-14)):
        x, dy = (cupy.asarray(rng.normal(size=(64, 33)).astype(dtype)) for _ in range(2))
        assert cupy.array_equal(fused.relu_backward(x, dy), generic.relu_backward(x, dy))
        optimizer = mx.optim.AdamW(lr=1e-2, weight_decay=0.1)
        params = cupy.asarray(rng.normal(size=1000).astype(dtype))
        current = [params.copy(), params.copy()]  # (the primitives write in place)
        states = [optimizer.init(current[0]), optimizer.init(current[1])]
        for _ in range(20):
            grad = cupy.asarray(rng.normal(size=1000).astype(dtype))
            for index, ops in enumerate((fused, generic)):
                current[index], states[index], ok = optimizer.apply(ops, grad, states[index], current[index],
                                                                    ops.true())
                assert bool(ok)
        assert int(states[0].count) == int(states[1].count) == 20
        assert float(cupy.max(cupy.abs(current[0] - current[1]))) <= tolerance * float(cupy.max(cupy.abs(current[1])))
        kept = [current[0].copy(), states[0].exp_avg.copy(), states[0].exp_avg_sq.copy()]
        huge = cupy.full(1000, 1e300 if dtype == "float64" else 1e30, dtype=dtype)
        frozen, state, ok = optimizer.apply(fused, huge, states[0], current[0], fused.true())
        assert not bool(ok) and int(state.count) == 20  # refused: nothing written, not counted
        assert all(cupy.array_equal(a, b) for a, b in zip((frozen, state.exp_avg, state.exp_avg_sq), kept))


def test_the_generic_ops_and_the_step_import_no_array_library():
    import ast
    import pathlib

    root = pathlib.Path(mx.__file__).resolve().parent
    for relative in ("ops/generic.py", "train/step.py", "nn/layers.py", "nn/losses.py", "optim/optimizers.py",
                     "optim/schedules.py"):
        tree = ast.parse((root / relative).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and not node.level}
        if relative == "train/step.py":  # numpy for finfo and the host zeros of numpy's Ops; jax for jax.jit
            assert not imported & {"cupy", "torch"}, relative
        else:
            assert not imported & {"numpy", "cupy", "torch", "jax"}, relative


@pytest.mark.parametrize("shuffle", [True, False])
def test_jax_jit_gathers_its_batches_like_numpy_including_a_last_short_batch(shuffle):
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(100, 6)).astype(np.float32), rng.integers(0, 3, 100)  # batches of 32, 32, 32, 4
    results = []
    for backend in ("numpy", "jax"):
        model = mx.Sequential(mx.Linear(6, 16), mx.Tanh(), mx.Dropout(0.2), mx.Linear(16, 3), backend=backend, seed=2)
        with jax.default_matmul_precision("highest"):
            history = model.fit(X, y, mx.losses.CrossEntropy(), mx.optim.SGD(lr=0.1), epochs=2, batch_size=32,
                                shuffle=shuffle, verbose=0)
        results.append((numpy_of(model.params), history["loss"], history["accuracy"]))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-5)
    assert results[1][2] == results[0][2]


def test_public_seams_give_what_fit_uses():
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(24, 5)), rng.integers(0, 3, 24)
    model = mx.Sequential(mx.Linear(5, 8), mx.ReLU(), mx.Linear(8, 3), mx.Softmax(), dtype="float64", seed=0)
    loss = mx.losses.CrossEntropy()
    x, t = model.backend.asarray(X), model.backend.asarray(y)
    logits = model.forward(x, loss=loss)  # the Softmax is folded into the loss
    np.testing.assert_allclose(numpy_of(model.predict(X)), np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    value, flat, output = model.value_and_grad(x, t, loss)
    host_value, grads = model.loss_and_grad(X, y, loss)
    assert float(value) == host_value and np.array_equal(numpy_of(output), numpy_of(logits))
    assert np.array_equal(np.concatenate([grads[key].ravel() for key in grads]), numpy_of(flat))
    assert model.layers_before_loss(loss) == 3 and model.layers_before_loss(mx.losses.MSE()) == 4
    with pytest.raises(ValueError, match="needs an optimizer"):
        model.train_state()
    optimizer = mx.optim.Adam()
    state = model.train_state(optimizer)
    state, _ = make_train_step(model, loss, optimizer)(state, x, t)
    model.set_train_state(state, optimizer)
    assert model.optimizer is optimizer and model.optimizer_state.count == 1 and model.dropout_step == 1
    assert np.array_equal(numpy_of(model.params), numpy_of(state.params))
    again = model.train_state()  # continues the held optimizer state
    assert again.opt_state.count == 1 and again.step == 1


def test_jax_compiled_steps_follow_changed_hyperparameters():
    pytest.importorskip("jax")
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 2, 64)
    results = []
    for backend in ("numpy", "jax"):
        model = mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Linear(8, 2), backend=backend, seed=0)
        optimizer, loss = mx.optim.Adam(lr=1e-2), mx.losses.CrossEntropy()
        model.fit(X, y, loss, optimizer, epochs=1, verbose=0)
        optimizer.betas = (0.5, 0.5)  # the same object, another rule: the compiled step must not be reused
        model.fit(X, y, loss, optimizer, epochs=1, verbose=0)
        results.append(numpy_of(model.params))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4, atol=1e-6)


def test_host_masks_are_the_masks_of_the_host_generator_in_layer_order():
    """dropout_masks="host" draws what 0.2 drew: one U[0, 1) array per Dropout layer per step, in
    forward order, from model.dropout_rng (so 0.2 runs can be reproduced)."""
    rng = np.random.default_rng(10)
    X, y = rng.normal(size=(32, 6)), rng.integers(0, 3, 32)
    model = mx.Sequential(mx.Linear(6, 8), mx.ReLU(), mx.Dropout(0.3), mx.Linear(8, 8), mx.Dropout(0.6),
                          mx.Linear(8, 3), dtype="float64", seed=1)
    model.dropout_masks = "host"
    replay = np.random.default_rng()
    replay.bit_generator.state = model.dropout_rng.bit_generator.state
    loss = mx.losses.CrossEntropy()
    value, _ = model.loss_and_grad(X, y, loss, train=True)
    first, second = replay.random((32, 8)) >= 0.3, replay.random((32, 8)) >= 0.6
    params = model.layer_params()
    h = np.maximum(X @ params[0]["weight"] + params[0]["bias"], 0) * first / 0.7
    h = (h @ params[3]["weight"] + params[3]["bias"]) * second / 0.4
    logits = h @ params[5]["weight"] + params[5]["bias"]
    expected = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(32), y])
    assert abs(value - expected) < 1e-12


def test_the_guard_names_the_failing_batch_of_streamed_data_on_a_device():
    rng = np.random.default_rng(11)
    X, y = rng.normal(size=(80, 5)), rng.normal(size=80)
    y[45] = 1e30
    model = mx.Sequential(mx.Linear(5, 8), mx.Tanh(), mx.Dropout(0.1), mx.Linear(8, 1), backend="array_api_strict",
                          device=DEVICE1, seed=0)
    with pytest.raises(mx.NonFiniteError, match="epoch 1, step 5") as info, np.errstate(over="ignore",
                                                                                        invalid="ignore"):
        model.fit(mx.datasets.Batches(X, y, 10), None, mx.losses.MSE(), mx.optim.SGD(lr=0.01), epochs=2,
                  shuffle=False, verbose=0)
    assert info.value.step == 5 and np.all(np.isfinite(numpy_of(model.params)))
