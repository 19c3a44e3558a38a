"""Generated bad input thrown at fit, predict, evaluate, load and the CLI.

Every case must either work (and leave a finite model) or raise a documented exception with a
message: ValueError (ShapeError included), TypeError, FileNotFoundError or NonFiniteError; the
CLI must exit with status 0 or 2 and never print a traceback. Nothing may crash with another
exception type, hang (a deadline per case) or leave NaN in the model. Each test's
max_examples is fixed, so the number of cases is known: see CASES.
"""

import contextlib
import io
import json
import struct
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlp_xp as mx
from mlp_xp import cli

from .conftest import numpy_of

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow in generated data is the point

DOCUMENTED = (ValueError, TypeError, mx.NonFiniteError)
CASES = {"fit": 250, "predict": 150, "evaluate": 150, "load": 100, "cli": 80, "metadata": 300, "state": 100,
         "hyperparameters": 150}
FEATURES, CLASSES = 3, 4


def _settings(name):
    return settings(max_examples=CASES[name], deadline=timedelta(seconds=10), derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


special_values = st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e300, -1e300, 3e38, 1e-320, 7.5])
real_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), special_values)


@st.composite
def arrays(draw, rows=None, columns=None):
    """Numeric arrays of odd shapes, dtypes and values, and non-numeric or ragged look-alikes."""
    kind = draw(st.sampled_from(["float", "float", "float", "int", "bool", "complex", "string", "object", "ragged",
                                 "scalar", "nested", "none", "strict", "torch"]))
    if kind == "none":
        return None
    if kind == "scalar":
        return draw(real_values)
    if kind == "ragged":
        lengths = draw(st.lists(st.integers(0, 5), min_size=2, max_size=5))
        return [[draw(real_values) for _ in range(length)] for length in lengths]
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.integers(0, 6)) for _ in range(ndim))
    if rows is not None and ndim >= 1 and draw(st.booleans()):
        shape = (rows,) + shape[1:]
    if columns is not None and ndim == 2 and draw(st.booleans()):
        shape = (shape[0], columns)
    size = int(np.prod(shape)) if shape else 1
    values = np.array([draw(real_values) for _ in range(size)], dtype=np.float64).reshape(shape)
    if kind == "int":
        values = np.nan_to_num(values, nan=0, posinf=5, neginf=-5).clip(-1e6, 1e6).astype(np.int64)
    elif kind == "bool":
        values = values > 0
    elif kind == "complex":
        values = values + 1j
    elif kind == "string":
        values = values.astype(str)
    elif kind == "object":
        values = values.astype(object)
    elif kind == "nested":
        return values.tolist()
    elif kind == "strict":
        import array_api_strict

        return array_api_strict.asarray(np.nan_to_num(values) if values.dtype.kind == "f" else values)
    elif kind == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy(np.ascontiguousarray(values))
    return values


@st.composite
def labels(draw, rows):
    """Targets: mostly the right length, with out-of-range, fractional, NaN or mistyped labels."""
    choice = draw(st.sampled_from(["labels", "labels", "onehot", "any"]))
    if choice == "any":
        return draw(arrays(rows=rows))
    count = rows if draw(st.integers(0, 4)) else draw(st.integers(0, 8))
    if choice == "onehot":
        values = np.array([draw(real_values) for _ in range(count * CLASSES)]).reshape(count, CLASSES)
        return np.abs(values) if draw(st.booleans()) else values
    pool = st.one_of(st.integers(-3, CLASSES + 2), st.sampled_from([0.5, np.nan, 1e20, -0.0, 2.0]))
    return np.array([draw(pool) for _ in range(count)])


def _rows(X):
    try:
        return len(X)
    except TypeError:  # None, scalars, 0-d arrays
        return 0


def _model(backend="numpy"):
    return mx.Sequential(mx.Linear(FEATURES, 5), mx.ReLU(), mx.Linear(5, CLASSES), mx.Softmax(),
                         backend=backend, seed=0)


def _assert_finite_model(model):
    assert np.all(np.isfinite(numpy_of(model.params)))


def _documented(call):
    try:
        return call()
    except DOCUMENTED as error:
        assert str(error).strip(), f"{type(error).__name__} without a message"
        return error


@pytest.fixture(scope="module", autouse=True)
def _warm_up():
    """Compile the fast paths once so their first call does not count against a case's deadline."""
    _model().fit(np.zeros((2, FEATURES)), [0, 1], loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), verbose=0)


@st.composite
def mostly_valid_inputs(draw):
    """Well-formed X with one value that may be special (NaN, inf, huge, tiny): so that checks
    past the shape and dtype of X are exercised too."""
    rows = draw(st.integers(1, 6))
    X = np.random.default_rng(draw(st.integers(0, 100))).normal(size=(rows, FEATURES))
    if draw(st.booleans()):
        X[draw(st.integers(0, rows - 1)), draw(st.integers(0, FEATURES - 1))] = draw(real_values)
    with np.errstate(all="ignore"):
        return X.astype(draw(st.sampled_from([np.float64, np.float32, np.int64])))


def _draw_data(data, min_rows):
    X = data.draw(st.one_of(mostly_valid_inputs(), arrays(rows=data.draw(st.integers(min_rows, 6)),
                                                           columns=FEATURES)), label="X")
    return X, data.draw(labels(_rows(X)), label="y")


@_settings("fit")
@given(data=st.data())
def test_fit_with_bad_input(data):
    X, y = _draw_data(data, 0)
    loss = data.draw(st.sampled_from([mx.losses.CrossEntropy(), mx.losses.CrossEntropy(label_smoothing=0.1),
                                      mx.losses.MSE(), mx.losses.Huber()]), label="loss")
    kwargs = data.draw(st.fixed_dictionaries({}, optional={
        "batch_size": st.sampled_from([0, -1, 1, 2, 1000, 2.5, "8", None]),
        "epochs": st.sampled_from([0, 1, 2, -1, 1.5, None]),
        "validation_data": st.one_of(st.none(), st.tuples(arrays(columns=FEATURES), labels(3)), arrays()),
        "on_nonfinite": st.sampled_from(["raise", "skip_batch", "stop", "ignore"]),
    }), label="kwargs")
    model = _model()
    _documented(lambda: model.fit(X, y, loss=loss, optimizer=mx.optim.Adam(lr=1.0), verbose=0, **kwargs))
    _assert_finite_model(model)


@_settings("predict")
@given(X=arrays(columns=FEATURES), backend=st.sampled_from(["numpy", "array_api_strict"]),
       batch_size=st.sampled_from([1, 3, 1024, 0, -2, 1.5]))
def test_predict_with_bad_input(X, backend, batch_size):
    model = _model(backend)
    result = _documented(lambda: model.predict(X, batch_size=batch_size))
    if not isinstance(result, Exception):
        values = numpy_of(result)
        assert values.shape[1] == CLASSES and np.all(np.isfinite(values))
        np.testing.assert_allclose(values.sum(axis=1), 1.0, rtol=1e-5)


@_settings("evaluate")
@given(data=st.data())
def test_evaluate_with_bad_input(data):
    X, y = _draw_data(data, 1)
    loss = data.draw(st.sampled_from([mx.losses.CrossEntropy(), mx.losses.BinaryCrossEntropy(), mx.losses.Huber(),
                                      mx.losses.MSE, "mse", None]), label="loss")
    result = _documented(lambda: _model().evaluate(X, y, loss=loss))
    if not isinstance(result, Exception):
        assert all(np.isfinite(value) for value in result.values())


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    model = _model()
    optimizer = mx.optim.Adam()
    model.fit(np.eye(FEATURES), [0, 1, 2], loss=mx.losses.CrossEntropy(), optimizer=optimizer, verbose=0)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    mx.save(model, path, optimizer=optimizer)
    return path.read_bytes()


@_settings("load")
@given(data=st.data())
def test_load_with_bad_files(data, checkpoint_bytes, tmp_path_factory):
    blob = checkpoint_bytes
    header_length = struct.unpack("<Q", blob[:8])[0]
    mode = data.draw(st.sampled_from(["truncate", "flip", "random", "metadata", "header"]), label="mode")
    if mode == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    elif mode == "flip":
        position = data.draw(st.integers(0, len(blob) - 1))
        blob = blob[:position] + bytes([blob[position] ^ data.draw(st.integers(1, 255))]) + blob[position + 1:]
    elif mode == "random":
        blob = data.draw(st.binary(max_size=200))
    else:
        header = json.loads(blob[8:8 + header_length])
        if mode == "metadata":
            key = data.draw(st.sampled_from(sorted(header["__metadata__"])))
            header["__metadata__"][key] = data.draw(st.sampled_from(["", "[]", "{}", "null", "[1, 2]", "abc",
                                                                     '[{"type": "Linear", "config": {}}]']))
        else:
            key = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
            header[key]["shape"] = data.draw(st.lists(st.integers(0, 5), max_size=3))
        encoded = json.dumps(header).encode()
        blob = struct.pack("<Q", len(encoded)) + encoded + blob[8 + header_length:]
    path = tmp_path_factory.mktemp("bad") / "model.safetensors"
    path.write_bytes(blob)
    _load_or_value_error(path)


def _load_or_value_error(path):
    """Loading a hostile file gives a finite model or a ValueError with a message, nothing else."""
    try:
        model = mx.load(path)
    except ValueError as error:
        assert str(error).strip()
        return None
    _assert_finite_model(model)
    state = model.optimizer_state
    if state is not None:
        for value in state[1:]:
            assert value is None or np.all(np.isfinite(numpy_of(value)))
    return model


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=6), st.sampled_from([0, 1, -1, 2 ** 64, 1e400, "Linear", "float32", "cosine"])),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children,
                                                                                 max_size=3)),
    max_leaves=8)


def _paths(value, prefix=()):
    """Every place in a JSON value: (path of keys/indices)."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, prefix + (index,))


def _replaced(value, path, new):
    if not path:
        return new
    value = value.copy()
    value[path[0]] = _replaced(value[path[0]], path[1:], new)
    return value


@_settings("metadata")
@given(data=st.data())
def test_load_with_hostile_metadata(data, checkpoint_bytes, tmp_path_factory):
    """Any JSON value anywhere in any metadata field, in a file whose checksum is recomputed (as a
    crafted file's would be): a ValueError at load or a finite model, never another exception."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from mlp_xp.io import _checksum

    path = tmp_path_factory.mktemp("meta") / "model.safetensors"
    path.write_bytes(checkpoint_bytes)
    with safe_open(str(path), framework="numpy") as file:
        metadata = dict(file.metadata())
    key = data.draw(st.sampled_from(sorted(key for key in metadata if key not in ("format", "format_version",
                                                                                   "checksum"))), label="key")
    try:
        value = json.loads(metadata[key])
    except ValueError:
        value = metadata[key]
    place = data.draw(st.sampled_from(list(_paths(value))), label="place")
    new = data.draw(json_values, label="new")
    changed = _replaced(value, place, new)
    metadata[key] = changed if isinstance(changed, str) and not isinstance(value, (dict, list)) and key in (
        "seed", "dtype") else json.dumps(changed)
    tensors = load_file(str(path))
    metadata["checksum"] = _checksum(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)
    _load_or_value_error(path)


@_settings("state")
@given(data=st.data())
def test_load_with_extreme_optimizer_state(data, checkpoint_bytes, tmp_path_factory):
    """Extreme values in the saved optimizer state: refused at load, or a model that trains on
    (a step either works or raises NonFiniteError, never a silent NaN)."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from mlp_xp.io import _checksum

    path = tmp_path_factory.mktemp("state") / "model.safetensors"
    path.write_bytes(checkpoint_bytes)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="numpy") as file:
        metadata = dict(file.metadata())
    key = data.draw(st.sampled_from(sorted(key for key in tensors if key.startswith("optimizer."))), label="key")
    index = data.draw(st.integers(0, tensors[key].size - 1), label="index")
    tensors[key][index] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 3e38, -3e38, 1e-45, 1e20]))
    metadata["checksum"] = _checksum(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)
    model = _load_or_value_error(path)
    if model is not None:
        result = _documented(lambda: model.fit(np.eye(FEATURES), [0, 1, 2], loss=mx.losses.CrossEntropy(),
                                               optimizer=model.optimizer, verbose=0))
        assert not isinstance(result, TypeError)
        _assert_finite_model(model)


extreme_numbers = st.sampled_from([0, 0.0, -0.0, 1e-300, 1e-45, 1e-8, 0.5, 0.9, 0.999, 1.0, 2.0, 1e3, 1e38, 1e300,
                                   -1.0, -1e-8, np.nan, np.inf, -np.inf, True, None, "0.1", np.float32(0.1),
                                   np.int64(1)])


@_settings("hyperparameters")
@given(data=st.data())
def test_fit_with_extreme_hyperparameters(data):
    """Any optimizer with extreme hyperparameters: a ValueError when it is made (or when a schedule
    gives a bad rate), else fit ends finite or raises NonFiniteError."""
    make = data.draw(st.sampled_from([mx.optim.SGD, mx.optim.Adam, mx.optim.AdamW, mx.optim.RMSprop]), label="make")
    names = {mx.optim.SGD: ["lr", "momentum", "weight_decay", "clip_norm"],
             mx.optim.Adam: ["lr", "eps", "weight_decay", "clip_norm", "betas"],
             mx.optim.AdamW: ["lr", "eps", "weight_decay", "clip_norm", "betas"],
             mx.optim.RMSprop: ["lr", "alpha", "eps", "momentum", "weight_decay", "clip_norm"]}[make]
    options = {}
    for name in data.draw(st.lists(st.sampled_from(names), max_size=3, unique=True), label="names"):
        if name == "betas":
            options[name] = data.draw(st.one_of(st.tuples(extreme_numbers, extreme_numbers),
                                                st.tuples(extreme_numbers)), label=name)
        else:
            options[name] = data.draw(extreme_numbers, label=name)
    try:
        optimizer = make(**options)
    except ValueError as error:
        assert str(error).strip()
        return
    model = _model()
    X = np.random.default_rng(0).normal(size=(8, FEATURES)) * data.draw(st.sampled_from([1.0, 1e10, 1e30]))
    result = _documented(lambda: model.fit(X, np.arange(8) % CLASSES, loss=mx.losses.CrossEntropy(),
                                           optimizer=optimizer, epochs=2, batch_size=4, verbose=0))
    assert not isinstance(result, TypeError), result
    _assert_finite_model(model)
    state = model.optimizer_state
    if state is not None:
        for value in state[1:]:
            assert value is None or np.all(np.isfinite(numpy_of(value)))


FLAGS = ["--layers", "--activation", "--epochs", "--batch-size", "--lr", "--optimizer", "--backend", "--dtype",
         "--dropout", "--seed", "--test-size", "--quiet", "--bogus", "train", "-h"]
VALUES = ["", "0", "1", "2", "-1", "1e-3", "nan", "inf", "relu", "tanh", "adam", "float16", "float64", "numpy",
          "array_api_strict", "tensorflow", "8,x", "16,16", ",", "0.5", "1.5", "x"]


@_settings("cli")
@given(argv=st.lists(st.one_of(st.sampled_from(FLAGS), st.sampled_from(VALUES)), max_size=8))
def test_cli_with_bad_arguments(argv):
    # keep valid runs short: at most 2 epochs
    argv = ["train", "--epochs", "1", "--quiet"] + argv
    if any(value in argv for value in ("2",)):
        argv = [value if value != "2" else "1" for value in argv]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv)
        except SystemExit as exit_:
            status = exit_.code
    assert status in (0, 2), (argv, status, err.getvalue())
    assert "Traceback" not in err.getvalue()
    if status == 2:
        assert "error" in err.getvalue()
    elif "-h" not in argv:
        assert out.getvalue().strip().splitlines()[-1].startswith("test accuracy")
