"""TF32, float16 and bfloat16: accuracy against float32, dynamic loss scaling, saving and resuming."""

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp.train.precision import Precision, round_to_tf32

from .conftest import _available, numpy_of

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # float16 overflow is what scaling handles


@pytest.fixture(scope="module")
def digits():
    X, y = mx.datasets.load_digits()
    X_train, X_test, y_train, y_test = mx.datasets.train_test_split(X, y, seed=0)
    return (*mx.datasets.standardize(X_train, X_test), y_train, y_test)


def _accuracy(digits, backend="numpy", precision=None, epochs=10):
    X_train, X_test, y_train, y_test = digits
    model = mx.Sequential(mx.Linear(64, 128), mx.ReLU(), mx.Linear(128, 10), mx.Softmax(), backend=backend,
                          precision=precision, seed=0)
    history = model.fit(X_train, y_train, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(1e-3),
                        epochs=epochs, verbose=0)
    return model.evaluate(X_test, y_test, mx.losses.CrossEntropy())["accuracy"], history


@pytest.mark.parametrize("backend,precision", [("numpy", "tf32"), ("numpy", "float16"), ("numpy", "bfloat16"),
                                               ("torch", "bfloat16"), ("torch", "float16"), ("jax", "bfloat16")])
def test_each_precision_trains_digits_as_well_as_float32(digits, backend, precision):
    if not _available(backend):
        pytest.skip(f"{backend} is not installed")
    reference, _ = _accuracy(digits)
    accuracy, history = _accuracy(digits, backend, precision)
    assert accuracy > 0.95 and abs(accuracy - reference) <= 0.01
    assert np.isfinite(history["loss"][-1])


def test_narrow_precisions_really_compute_narrow(digits):
    X_train = digits[0][:64]
    outputs = {}
    for precision in (None, "tf32", "bfloat16", "float16"):
        model = mx.Sequential(mx.Linear(64, 32), mx.Tanh(), mx.Linear(32, 10), precision=precision, seed=0)
        outputs[precision] = numpy_of(model.predict(X_train))
        assert model.predict(X_train).dtype == np.float32  # outputs come back in the master dtype
    for precision, unit in (("tf32", 2.0 ** -11), ("bfloat16", 2.0 ** -8), ("float16", 2.0 ** -11)):
        error = np.max(np.abs(outputs[precision] - outputs[None])) / np.max(np.abs(outputs[None]))
        assert unit / 100 < error < unit * 30, (precision, error)


def test_tf32_rounding_with_bits_equals_the_array_api_version():
    from mlp_xp.ops.numpy_ops import round_to_tf32_bits

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=10000), rng.normal(size=1000) * 1e30, rng.normal(size=1000) * 1e-30,
                             [0.0, -0.0, 1.0, -2.0, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -126, 3e38, np.inf,
                              -np.inf]]).astype(np.float32)
    ties = np.float32(1.0) + np.arange(64, dtype=np.float32) * np.float32(2 ** -11)  # exact halfway cases
    values = np.concatenate([values, ties, -ties])
    import array_api_compat.numpy as xp

    generic = np.asarray(round_to_tf32(xp, values))
    fast = round_to_tf32_bits(values)
    assert np.array_equal(generic.view(np.uint32), fast.view(np.uint32))
    mantissa = fast[np.isfinite(fast)].view(np.uint32) & 0x1FFF
    assert not mantissa.any()  # 10 mantissa bits left
    assert round_to_tf32_bits(np.array([np.nan], dtype=np.float32))[0] != round_to_tf32_bits(
        np.array([np.nan], dtype=np.float32))[0]  # NaN stays NaN


def test_tf32_rounding_on_the_strict_device():
    strict = pytest.importorskip("array_api_strict")
    values = np.random.default_rng(1).normal(size=257).astype(np.float32)
    device = strict.Device("device1")
    rounded = round_to_tf32(strict, strict.asarray(values, device=device))
    import array_api_compat.numpy as xp

    assert rounded.device == device and np.array_equal(numpy_of(rounded), np.asarray(round_to_tf32(xp, values)))


def test_float16_without_scaling_stalls_where_scaling_trains():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4096, 16))
    y = (X @ rng.normal(size=16)) * 1e-4  # small targets: the float16 gradients of MSE underflow
    final = {}
    for name, precision in (("float32", None), ("unscaled", Precision("float16", loss_scale=None)),
                            ("scaled", "float16")):
        model = mx.Sequential(mx.Linear(16, 1, init="zeros"), precision=precision, seed=0)
        history = model.fit(X, y, loss=mx.losses.MSE(), optimizer=mx.optim.SGD(lr=0.1), epochs=60,
                            batch_size=4096, verbose=0)
        final[name] = history["loss"][-1]
    assert final["scaled"] < 1e-3 * final["unscaled"]  # scaling keeps learning; without it float16 stalls
    assert final["unscaled"] > 1e-3 * 2.0e-7  # no better than a thousandth of where it started


def test_an_overflowing_step_is_skipped_and_the_scale_halves(digits):
    X_train, _, y_train, _ = digits
    model = mx.Sequential(mx.Linear(64, 32), mx.ReLU(), mx.Linear(32, 10), mx.Softmax(), seed=0,
                          precision=Precision("float16", init_scale=2.0 ** 40))
    before = numpy_of(model.params)
    seen = []

    class Record:
        def on_batch_end(self, step, loss, model):
            seen.append(step)

    history = model.fit(X_train, y_train, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(lr=0.01),
                        epochs=1, batch_size=32, verbose=0, callbacks=[Record()])
    skipped = history["skipped_steps"][0]
    assert skipped >= 1 and history["loss_scale"][0] == 2.0 ** (40 - skipped)  # halved once per skipped step
    assert 20 <= seen[0] - 1 <= skipped  # 2**40 needs about 20 halvings before the first update can land
    assert len(seen) + skipped == -(-len(X_train) // 32)  # every step either updated or was skipped
    assert not np.array_equal(numpy_of(model.params), before) and np.all(np.isfinite(numpy_of(model.params)))
    assert model.optimizer._config_keys and model.optimizer_state.count == len(seen)


def test_the_scale_grows_after_good_steps(digits):
    X_train, _, y_train, _ = digits
    model = mx.Sequential(mx.Linear(64, 10), mx.Softmax(), seed=0,
                          precision=Precision("float16", init_scale=4.0, growth_interval=10))
    history = model.fit(X_train[:320], y_train[:320], loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(),
                        epochs=2, batch_size=32, verbose=0)
    assert history["loss_scale"] == [8.0, 16.0] and history["skipped_steps"] == [0, 0]


def test_precision_and_loss_scale_are_saved_and_resumed_exactly(digits, tmp_path):
    X_train, _, y_train, _ = digits

    def run(model, optimizer, epochs, **options):
        return model.fit(X_train, y_train, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=epochs,
                         batch_size=64, verbose=0, **options)

    def fresh():
        return mx.Sequential(mx.Linear(64, 32), mx.ReLU(), mx.Dropout(0.1), mx.Linear(32, 10), mx.Softmax(), seed=0,
                             precision=Precision("float16", init_scale=2.0 ** 20, growth_interval=7))

    straight = fresh()
    run(straight, mx.optim.Adam(), 4)
    halfway, optimizer = fresh(), mx.optim.Adam()
    run(halfway, optimizer, 2)
    path = tmp_path / "half.safetensors"
    mx.save(halfway, path, optimizer=optimizer)
    loaded = mx.load(path)
    assert loaded.precision == halfway.precision and loaded._loss_scale == halfway._loss_scale
    run(loaded, loaded.optimizer, 2)
    assert np.array_equal(numpy_of(loaded.params), numpy_of(straight.params))
    assert loaded._loss_scale == straight._loss_scale
    plain = mx.load(path, dtype="float64")  # another master dtype: a plain float64 model
    assert plain.precision.compute == "float64"


@pytest.mark.parametrize("options,message", [
    ({"precision": "float16", "dtype": "float64"}, "keeps float32 master weights"),
    ({"precision": "float64"}, "give dtype='float64' instead"),
    ({"precision": "int8"}, "precision must be one of"),
    ({"precision": lambda: Precision("float16", loss_scale=-1.0)}, "loss_scale must be"),
    ({"precision": "float16", "backend": "array_api_strict"}, "has no float16"),
])
def test_bad_precisions(options, message):
    with pytest.raises(ValueError, match=message):
        if callable(options["precision"]):
            options = dict(options, precision=options["precision"]())
        mx.Sequential(mx.Linear(2, 2), **options)


def test_compare_reports_each_precision(digits):
    X_train, X_test, y_train, y_test = digits
    model = mx.Sequential(mx.Linear(64, 32), mx.ReLU(), mx.Linear(32, 10), mx.Softmax(), dtype="float64", seed=0)
    result = mx.compare(model, X_train[:512], y_train[:512], mx.losses.CrossEntropy(), mx.optim.Adam(), epochs=2,
                        configs=["numpy:float64", "numpy:float32", "numpy:tf32", "numpy:bfloat16", "numpy:float16",
                                 "array_api_strict:float16"], validation_data=(X_test, y_test))
    rows = {row["config"]: row for row in result.rows}
    assert rows["numpy:float32"]["max_divergence"] < rows["numpy:tf32"]["max_divergence"] < 0.1
    assert rows["numpy:bfloat16"]["final_param_rel_error"] > rows["numpy:float32"]["final_param_rel_error"]
    assert all(abs(row["accuracy"] - rows["numpy:float64"]["accuracy"]) < 0.02 for row in rows.values())
    assert "has no float16" in result.skipped["array_api_strict:float16"]


def test_mixed_precision_models_pickle_and_move(digits):
    import pickle

    X_train = digits[0][:32]
    model = mx.Sequential(mx.Linear(64, 16), mx.ReLU(), mx.Linear(16, 10), precision="bfloat16", seed=0)
    again = pickle.loads(pickle.dumps(model))
    assert again.precision == model.precision
    assert np.array_equal(numpy_of(again.predict(X_train)), numpy_of(model.predict(X_train)))
    with pytest.raises(ValueError, match="has no bfloat16"):
        model.to(backend="array_api_strict")  # a backend without the type says so
    assert model.to(dtype="float64").precision.compute == "float64"  # another dtype: a plain model


@pytest.mark.parametrize("precision", [Precision("float16", init_scale=1.0), Precision("float16", loss_scale=8.0)])
def test_gradients_that_overflow_without_any_scale_are_an_error_not_endless_skipping(precision):
    X = np.random.default_rng(0).normal(size=(64, 4))
    y = np.full(64, 1e6)  # float32 loss ~1e12 is finite; its float16 gradient 2.5e5 is not
    model = mx.Sequential(mx.Linear(4, 1), precision=precision, seed=0)
    with pytest.raises(mx.NonFiniteError, match="non-finite gradient at epoch 1, step 1: the loss is finite but its "
                                                "gradient overflowed float16") as info:
        model.fit(X, y, loss=mx.losses.MSE(), optimizer=mx.optim.SGD(lr=1e-3), epochs=2, batch_size=8, verbose=0)
    assert info.value.name == "gradient"
