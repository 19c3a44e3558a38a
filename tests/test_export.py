"""Export: ONNX files (run with onnxruntime) and torch.nn.Sequential copies compute what predict does."""

import os
import re
import sys

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp import export

from .conftest import numpy_of

#: one instance of every layer type, as a hidden layer of width 6
HIDDEN = {
    "Linear": lambda: mx.Linear(6, 6), "Linear-nobias": lambda: mx.Linear(6, 6, bias=False), "ReLU": mx.ReLU,
    "LeakyReLU": lambda: mx.LeakyReLU(0.2), "Sigmoid": mx.Sigmoid, "Tanh": mx.Tanh, "GELU": mx.GELU, "SiLU": mx.SiLU,
    "ELU": lambda: mx.ELU(0.7), "Softplus": mx.Softplus, "Identity": mx.Identity, "Softmax": mx.Softmax,
    "Dropout": lambda: mx.Dropout(0.5), "LayerNorm": lambda: mx.LayerNorm(6),
    "LayerNorm-noaffine": lambda: mx.LayerNorm(6, eps=1e-3, elementwise_affine=False),
    "BatchNorm": lambda: mx.BatchNorm(6), "BatchNorm-momentum-None": lambda: mx.BatchNorm1d(6, momentum=None),
    "BatchNorm-noaffine": lambda: mx.BatchNorm(6, eps=1e-3, affine=False),
    "BatchNorm-untracked": lambda: mx.BatchNorm(6, eps=1e-3, momentum=0.3, track_running_stats=False),
}
#: the output kinds: probabilities of classes, of one binary label, and plain regression
OUTPUTS = {"softmax": (3, [mx.Softmax]), "sigmoid": (1, [mx.Sigmoid]), "linear": (2, [])}


def _randomized(model, seed):
    """``model`` with every parameter random (so biases and the norms' weights are not their initial
    zeros and ones), and BatchNorm's running statistics too: means normal, variances positive,
    ``num_batches_tracked`` a count."""
    rng = np.random.default_rng(seed)

    def random(key, shape):
        if key.endswith(".running_var"):
            return rng.uniform(0.2, 3.0, size=shape)
        if key.endswith(".num_batches_tracked"):
            return rng.integers(1, 100, size=shape)
        return rng.normal(size=shape)

    return model.load_state_dict({key: random(key, value.shape) for key, value in model.state_dict().items()})


def _model(hidden, output, dtype="float32", seed=0):
    """Linear(4, 6) -> the hidden layer -> Linear(6, k) -> the output, every weight and running
    statistic random."""
    features, last = OUTPUTS[output]
    model = mx.Sequential(mx.Linear(4, 6), HIDDEN[hidden](), mx.Linear(6, features), *(cls() for cls in last),
                          dtype=dtype, seed=seed)
    return _randomized(model, seed)


def _inputs(rows=9, dtype="float32"):
    return (np.random.default_rng(1).normal(size=(rows, 4)) * 3).astype(dtype)


def _run_onnx(path, X):
    ort = pytest.importorskip("onnxruntime", reason="the ONNX tests run the files with onnxruntime")
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"input": X})
    return output


@pytest.fixture
def onnx():
    return pytest.importorskip("onnx", reason="exporting to ONNX needs onnx (pip install 'mlp_xp[onnx]')")


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="to_torch needs torch")


# ---------------------------------------------------------------- ONNX


@pytest.mark.parametrize("output", sorted(OUTPUTS))
@pytest.mark.parametrize("hidden", sorted(HIDDEN))
def test_onnx_file_computes_predict_float32(onnx, tmp_path, hidden, output):
    model = _model(hidden, output)
    path = tmp_path / "model.onnx"
    model.export_onnx(path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    X = _inputs()
    expected = numpy_of(model.predict(X))
    got = _run_onnx(path, X)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_onnx_float64_graph_of_every_layer(onnx, tmp_path, output):
    layers = [mx.Linear(4, 6)] + [make() for make in HIDDEN.values()]
    features, last = OUTPUTS[output]
    model = _randomized(mx.Sequential(*layers, mx.Linear(6, features), *(cls() for cls in last), dtype="float64",
                                      seed=2), 2)
    path = tmp_path / "model.onnx"
    export.export_onnx(model, path)
    proto = onnx.load(path)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert {init.data_type for init in proto.graph.initializer} == {onnx.TensorProto.DOUBLE}
    X = _inputs(dtype="float64")
    got = _run_onnx(path, X)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, numpy_of(model.predict(X)), rtol=1e-12, atol=1e-13)


def test_onnx_batch_dimension_is_dynamic(onnx, tmp_path):
    model = _model("GELU", "softmax")
    path = tmp_path / "model.onnx"
    model.export_onnx(path)
    graph = onnx.load(path).graph
    for value in (graph.input[0], graph.output[0]):
        batch, features = value.type.tensor_type.shape.dim
        assert batch.dim_param == "batch" and not batch.HasField("dim_value")
    assert graph.input[0].type.tensor_type.shape.dim[1].dim_value == 4
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == 3
    for rows in (1, 2, 57):
        X = _inputs(rows)
        np.testing.assert_allclose(_run_onnx(path, X), numpy_of(model.predict(X)), rtol=1e-5, atol=1e-5)


def test_onnx_activations_stay_finite_and_exact_at_extreme_inputs(onnx, tmp_path):
    """Softplus, ELU, Sigmoid and Softmax at pre-activations of +-1e3 (exp would overflow)."""
    X = np.array([[-1000.0], [-80.0], [-1e-9], [0.0], [1e-9], [30.0], [80.0], [1000.0]])
    for layer in (mx.Softplus(), mx.ELU(), mx.Sigmoid(), mx.SiLU(), mx.GELU(), mx.LeakyReLU(0.3)):
        model = mx.Sequential(mx.Linear(1, 2), layer, dtype="float64")
        model.load_state_dict({"0.weight": np.array([[1.0, -1.0]]), "0.bias": np.zeros(2)})
        path = tmp_path / f"{type(layer).__name__}.onnx"
        model.export_onnx(path)
        got = _run_onnx(path, X)
        assert np.all(np.isfinite(got)), type(layer).__name__
        np.testing.assert_allclose(got, numpy_of(model.predict(X)), rtol=1e-14, atol=1e-14,
                                   err_msg=type(layer).__name__)


@pytest.mark.parametrize("dtype, mean, tolerance", [("float32", 1e3, 1e-3), ("float64", 1e6, 1e-8)])
def test_onnx_layer_norm_of_rows_with_a_large_mean(onnx, tmp_path, dtype, mean, tolerance):
    """Rows of a large mean and a spread ~1: as accurate as the rows' own rounding allows."""
    model = mx.Sequential(mx.Linear(4, 6), mx.LayerNorm(6), mx.Linear(6, 2), dtype=dtype, seed=0)
    model.load_state_dict(dict(model.state_dict(), **{"0.bias": np.full(6, mean)}))
    X = _inputs(dtype=dtype)
    model.export_onnx(tmp_path / "model.onnx")
    np.testing.assert_allclose(_run_onnx(tmp_path / "model.onnx", X), numpy_of(model.predict(X)),
                               rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("affine", [True, False])
def test_onnx_layer_norm_eps_is_float64_in_a_float64_graph(onnx, tmp_path, affine):
    """ONNX's LayerNormalization takes epsilon as a float32 attribute (1e-3 would be 1.00000005e-3,
    3e-11 off here): the graph adds a constant of the model's dtype."""
    model = mx.Sequential(mx.Linear(4, 6), mx.LayerNorm(6, eps=1e-3, elementwise_affine=affine), dtype="float64")
    model.load_state_dict({key: value * 1e-2 for key, value in model.state_dict().items()})  # (var ~ eps)
    X = _inputs(dtype="float64")
    model.export_onnx(tmp_path / "model.onnx")
    np.testing.assert_allclose(_run_onnx(tmp_path / "model.onnx", X), numpy_of(model.predict(X)),
                               rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("hidden", ["BatchNorm", "BatchNorm-momentum-None", "BatchNorm-noaffine"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnx_batch_norm_computes_predict_s_numbers(onnx, tmp_path, hidden, dtype):
    """With running statistics every operation is elementwise, in mlp_xp's order: the same numbers.
    eps=1e-3 is a constant of the model's dtype (BatchNormalization's float32 attribute would be
    1.00000005e-3), and the variances are ~eps, where that would show."""
    model = _randomized(mx.Sequential(mx.Linear(6, 6), HIDDEN[hidden](), dtype=dtype), 5)
    model.load_state_dict(dict(model.state_dict(), **{"0.weight": np.eye(6), "0.bias": np.zeros(6)}))  # (exact)
    model.running = model.backend.asarray(numpy_of(model.running) * 1e-3, dtype=model.dtype)
    X = np.random.default_rng(5).normal(size=(9, 6)).astype(dtype)
    model.export_onnx(tmp_path / "model.onnx")
    proto = onnx.load(tmp_path / "model.onnx")
    assert "BatchNormalization" not in {node.op_type for node in proto.graph.node}
    assert {"1.running_mean", "1.running_var"} <= {init.name for init in proto.graph.initializer}
    expected = numpy_of(model.predict(X))
    np.testing.assert_allclose(_run_onnx(tmp_path / "model.onnx", X), expected, rtol=1e-15 if dtype == "float64"
                               else 1e-6, atol=1e-15 if dtype == "float64" else 1e-6)


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("float64", 1e-13)])
def test_onnx_untracked_batch_norm_normalises_each_batch_over_its_rows(onnx, tmp_path, dtype, tolerance):
    """track_running_stats=False: the statistics of the batch given, of each feature (axis 0),
    so a row's output depends on the rest of its batch, as predict's does."""
    layer = mx.BatchNorm(6, eps=1e-3, affine=False, track_running_stats=False)
    model = _randomized(mx.Sequential(mx.Linear(4, 6), layer, dtype=dtype), 6)
    model.export_onnx(tmp_path / "model.onnx")
    X = _inputs(rows=40, dtype=dtype) + np.arange(4, dtype=dtype) * 10
    state = {key: numpy_of(value) for key, value in model.state_dict().items()}
    for batch in (X[:2], X[:7], X):
        got = _run_onnx(tmp_path / "model.onnx", batch)
        np.testing.assert_allclose(got, numpy_of(model.predict(batch)), rtol=tolerance, atol=tolerance)
        variance = (batch.astype(np.float64) @ state["0.weight"] + state["0.bias"]).var(axis=0)  # (per feature)
        np.testing.assert_allclose(got.mean(axis=0), 0, atol=tolerance * 10)
        np.testing.assert_allclose(got.var(axis=0), variance / (variance + 1e-3), rtol=tolerance * 10)
    assert not np.allclose(_run_onnx(tmp_path / "model.onnx", X)[:2], _run_onnx(tmp_path / "model.onnx", X[:2]))


def test_a_fitted_batch_norm_model_exports_its_running_statistics(onnx, torch, tmp_path):
    """After fit the running statistics are the data's (not the initial zeros and ones): both exports use them."""
    rng = np.random.default_rng(7)
    X = (rng.normal(size=(96, 4)) * [1.0, 5.0, 0.1, 2.0] + [3.0, -2.0, 0.5, 10.0]).astype(np.float32)
    y = (X[:, 0] > 3).astype(np.int64)
    model = mx.Sequential(mx.Linear(4, 8), mx.BatchNorm(8, momentum=0.5), mx.ReLU(), mx.BatchNorm1d(8, momentum=None),
                          mx.Linear(8, 2), mx.Softmax(), seed=7)
    model.fit(X, y, mx.losses.CrossEntropy(), mx.optim.Adam(), epochs=2, batch_size=16, verbose=0)
    state = {key: numpy_of(value) for key, value in model.state_dict().items()}
    assert np.all(state["1.running_mean"] != 0) and np.all(state["1.running_var"] != 1)
    assert state["3.num_batches_tracked"] == 12
    model.export_onnx(tmp_path / "model.onnx")
    np.testing.assert_allclose(_run_onnx(tmp_path / "model.onnx", X), numpy_of(model.predict(X)), rtol=1e-5,
                               atol=1e-5)
    model = model.to(dtype="float64")
    net = model.to_torch()
    assert net[3].num_batches_tracked.item() == 12 and net[1].momentum == 0.5 and net[3].momentum is None
    with torch.no_grad():
        got = net(torch.from_numpy(X.astype(np.float64))).numpy()
    np.testing.assert_allclose(got, numpy_of(model.predict(X.astype(np.float64))), rtol=1e-14, atol=1e-15)


def test_onnx_scaler_is_left_out_as_predict_leaves_it_out(onnx, tmp_path):
    X = _inputs() * 10 + 5
    model = _model("ReLU", "softmax")
    model.data = model.data._replace(scaler=mx.datasets.Standardizer().fit(X))
    model.export_onnx(tmp_path / "plain.onnx")
    np.testing.assert_allclose(_run_onnx(tmp_path / "plain.onnx", X), numpy_of(model.predict(X)),
                               rtol=1e-5, atol=1e-5)
    props = {prop.key: prop.value for prop in onnx.load(tmp_path / "plain.onnx").metadata_props}
    assert props["scaler_included"] == "false"


def test_onnx_include_scaler_takes_raw_features(onnx, tmp_path):
    raw = _inputs() * np.array([1.0, 100.0, 1e-3, 7.0], dtype=np.float32) + 50
    model = _model("Tanh", "sigmoid")
    scaler = mx.datasets.Standardizer().fit(raw)
    model.data = model.data._replace(scaler=scaler, feature_names=("a", "b", "c", "d"), classes=(0, 1),
                                     target_name="label")
    path = tmp_path / "model.onnx"
    model.export_onnx(path, include_scaler=True)
    expected = numpy_of(model.predict(scaler.transform(raw)))
    np.testing.assert_allclose(_run_onnx(path, raw), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(numpy_of(model.predict(raw)), expected, atol=1e-3)  # (the scaler matters here)
    props = {prop.key: prop.value for prop in onnx.load(path).metadata_props}
    assert props == {"feature_names": '["a", "b", "c", "d"]', "classes": "[0, 1]", "target_name": '"label"',
                     "scaler_included": "true"}


def test_onnx_include_scaler_needs_a_fitted_scaler_of_the_right_width(onnx, tmp_path):
    model = _model("ReLU", "linear")
    path = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match=r"no fitted scaler \(model.data.scaler\)"):
        model.export_onnx(path, include_scaler=True)
    with pytest.raises(ValueError, match="include_scaler must be True or False, got 'yes'"):
        model.export_onnx(path, include_scaler="yes")
    model.data = model.data._replace(scaler=mx.datasets.Standardizer().fit(np.ones((3, 5))))
    with pytest.raises(ValueError, match="the scaler has 5 features but the model takes 4"):
        model.export_onnx(path, include_scaler=True)
    assert not path.exists()


@pytest.mark.parametrize("hidden", ["LayerNorm", "BatchNorm", "BatchNorm-untracked"])  # (ReduceMean changed at 18)
@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_onnx_opsets(onnx, tmp_path, opset, hidden):
    if opset > onnx.defs.onnx_opset_version():
        pytest.skip(f"onnx {onnx.__version__} does not know opset {opset}")
    model = _model(hidden, "softmax")
    path = tmp_path / "model.onnx"
    model.export_onnx(path, opset=opset)
    proto = onnx.load(path)
    assert [(entry.domain, entry.version) for entry in proto.opset_import] == [("", opset)]
    X = _inputs()
    np.testing.assert_allclose(_run_onnx(path, X), numpy_of(model.predict(X)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [12, 0, "17", 17.0, True, 10_000])
def test_onnx_bad_opset_is_refused(onnx, tmp_path, opset):
    with pytest.raises(ValueError, match=r"opset must be an int from 13 to \d+"):
        _model("ReLU", "linear").export_onnx(tmp_path / "model.onnx", opset=opset)
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize("hidden", ["LayerNorm", "BatchNorm-momentum-None"])
def test_the_same_file_from_every_backend(onnx, tmp_path, backend, hidden):
    reference = _model(hidden, "softmax", dtype="float64")
    reference.export_onnx(tmp_path / "numpy.onnx")
    model = reference.to(**backend.options)
    export.export_onnx(model, tmp_path / "other.onnx")
    assert (tmp_path / "other.onnx").read_bytes() == (tmp_path / "numpy.onnx").read_bytes()


def test_mixed_precision_model_exports_its_float32_weights(onnx, tmp_path):
    model = _model("GELU", "softmax")
    mixed = model.to(precision="bfloat16")
    mixed.export_onnx(tmp_path / "mixed.onnx")
    model.export_onnx(tmp_path / "plain.onnx")
    assert (tmp_path / "mixed.onnx").read_bytes() == (tmp_path / "plain.onnx").read_bytes()


# ---------------------------------------------------------------- ONNX: writing and refusing


class Square(mx.layers.Layer):
    """A layer of the user's own: no exporter knows it."""

    def forward(self, params, x, ctx):
        return x * x, lambda dy, need_input_grad=True, out=None: (2 * x * dy, {})


class SubclassedReLU(mx.ReLU):
    """A subclass may compute something else: refused too."""


@pytest.mark.parametrize("layer", [Square(), SubclassedReLU()])
def test_an_unknown_layer_is_refused_by_name_before_any_work(tmp_path, monkeypatch, layer):
    model = mx.Sequential(mx.Linear(3, 3), mx.ReLU(), layer, mx.Linear(3, 2))
    monkeypatch.setitem(sys.modules, "onnx", None)  # (refused before onnx or torch is needed)
    monkeypatch.setitem(sys.modules, "torch", None)
    name = type(layer).__name__
    for call in (lambda: model.export_onnx(tmp_path / "model.onnx"), model.to_torch):
        with pytest.raises(ValueError, match=rf"cannot export layer 2 \({name}\(\)\): {name} is not one of"):
            call()
    assert not (tmp_path / "model.onnx").exists()


def test_not_a_model_is_refused(tmp_path):
    with pytest.raises(TypeError, match="needs an mlp_xp Sequential model, got list"):
        export.export_onnx([mx.Linear(2, 2)], tmp_path / "model.onnx")
    with pytest.raises(TypeError, match="needs an mlp_xp Sequential model, got str"):
        export.to_torch("model")


def test_an_unwritable_path_is_refused(tmp_path):
    model = _model("ReLU", "linear")
    with pytest.raises(ValueError, match="does not exist"):
        model.export_onnx(tmp_path / "missing" / "model.onnx")
    with pytest.raises(ValueError, match="is a folder"):
        model.export_onnx(tmp_path)


def test_missing_packages_are_named(tmp_path, monkeypatch):
    model = _model("ReLU", "linear")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=re.escape('export_onnx needs onnx, which is not installed: '
                                                    'pip install "mlp_xp[onnx]"')):
        model.export_onnx(tmp_path / "model.onnx")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="to_torch needs torch, which is not installed: pip install torch"):
        model.to_torch()


def test_the_file_is_replaced_atomically(onnx, tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    first, second = _model("ReLU", "linear", seed=0), _model("ReLU", "linear", seed=1)
    first.export_onnx(path)
    before = path.read_bytes()

    def crash(proto, target):
        with open(target, "wb") as file:
            file.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", crash)
    with pytest.raises(OSError, match="No space left"):
        second.export_onnx(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]  # (no temporary left)
    monkeypatch.undo()
    second.export_onnx(path)
    X = _inputs()
    np.testing.assert_allclose(_run_onnx(path, X), numpy_of(second.predict(X)), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- PyTorch


@pytest.mark.parametrize("output", sorted(OUTPUTS))
@pytest.mark.parametrize("hidden", sorted(HIDDEN))
def test_to_torch_computes_predict_float64(torch, hidden, output):
    model = _model(hidden, output, dtype="float64")
    net = model.to_torch()
    assert isinstance(net, torch.nn.Sequential) and not net.training and len(net) == len(model)
    X = _inputs(dtype="float64")
    with torch.no_grad():
        got = net(torch.from_numpy(X)).numpy()
    assert got.dtype == np.float64
    expected = numpy_of(model.predict(X))
    # (an output near 0 is a difference of terms near the largest: rounding there is relative to those)
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-14 * np.abs(expected).max())


def test_to_torch_modules_and_state_dict_are_pytorch_s(torch):
    """The modules PyTorch users would write, and the state_dict keys of mx.save's files, W transposed."""
    layers = [mx.Linear(4, 6)] + [make() for make in HIDDEN.values()] + [mx.Linear(6, 2)]
    model = _randomized(mx.Sequential(*layers, dtype="float64", seed=3), 3)
    net = model.to_torch()
    nn = torch.nn
    expected = [nn.Linear, nn.Linear, nn.Linear, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU,
                nn.ELU, nn.Softplus, nn.Identity, nn.Softmax, nn.Dropout, nn.LayerNorm, nn.LayerNorm,
                nn.BatchNorm1d, nn.BatchNorm1d, nn.BatchNorm1d, nn.BatchNorm1d, nn.Linear]
    assert [type(module) for module in net] == expected
    assert net[4].negative_slope == 0.2 and net[9].alpha == 0.7 and net[7].approximate == "tanh"
    assert net[12].dim == -1 and net[13].p == 0.5 and net[15].eps == 1e-3 and net[15].weight is None
    batch_norms = [(net[i].eps, net[i].momentum, net[i].affine, net[i].track_running_stats) for i in range(16, 20)]
    assert batch_norms == [(1e-5, 0.1, True, True), (1e-5, None, True, True), (1e-3, 0.1, False, True),
                           (1e-3, 0.3, True, False)]
    assert net[18].weight is None and net[19].running_mean is None and net[19].running_var is None
    assert [net[i].running_mean.dtype for i in (16, 17, 18)] == [torch.float64] * 3
    assert [net[i].num_batches_tracked.dtype for i in (16, 17, 18)] == [torch.int64] * 3
    assert net[16].num_batches_tracked.item() == 0  # (the model keeps no count with a momentum)
    ours = model.state_dict()
    theirs = net.state_dict()
    # (BatchNorm1d always keeps num_batches_tracked when it tracks statistics; the model with momentum=None)
    assert sorted(theirs) == sorted([*ours, "16.num_batches_tracked", "18.num_batches_tracked"])
    assert numpy_of(ours["17.num_batches_tracked"]) >= 1  # (random: not the initial count)
    for key, value in ours.items():
        value = numpy_of(value)
        np.testing.assert_array_equal(theirs[key].numpy(), value.T if value.ndim == 2 else value, err_msg=key)


def test_to_torch_float32_keeps_the_dtype(torch):
    model = _model("LayerNorm", "softmax")
    net = model.to_torch()
    assert {parameter.dtype for parameter in net.parameters()} == {torch.float32}
    X = _inputs()
    with torch.no_grad():
        got = net(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(got, numpy_of(model.predict(X)), rtol=1e-6, atol=1e-6)


def test_to_torch_softplus_equals_the_stable_form_at_any_input(torch):
    """PyTorch's default threshold (20) would be 2e-9 off at 20 < x < 37: to_torch's is not."""
    model = mx.Sequential(mx.Linear(1, 1), mx.Softplus(), dtype="float64")
    model.load_state_dict({"0.weight": np.ones((1, 1)), "0.bias": np.zeros(1)})
    X = np.array([[-1000.0], [-40.0], [-1e-12], [0.0], [21.0], [30.0], [36.0], [39.5], [41.0], [1000.0]])
    with torch.no_grad():
        got = model.to_torch()(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(got, numpy_of(model.predict(X)), rtol=1e-15, atol=0)


def test_to_torch_is_a_copy(torch):
    model = _model("LayerNorm", "linear", dtype="float64")
    before = numpy_of(model.params).copy()
    net = model.to_torch()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(1.0)
    np.testing.assert_array_equal(numpy_of(model.params), before)


def test_to_torch_from_every_backend(torch, backend):
    reference = _model("GELU", "softmax", dtype="float64")
    model = reference.to(**backend.options)
    X = _inputs(dtype="float64")
    with torch.no_grad():
        got = model.to_torch()(torch.from_numpy(X)).numpy()
        expected = reference.to_torch()(torch.from_numpy(X)).numpy()
    np.testing.assert_array_equal(got, expected)


def test_to_torch_trains_like_the_model_s_gradient(torch):
    """The copy is a working PyTorch module: its gradient of a loss equals mlp_xp's."""
    model = _model("Tanh", "softmax", dtype="float64")
    X = _inputs(dtype="float64")
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    loss = mx.losses.CrossEntropy()
    _, grad, _ = model.value_and_grad(model.backend.asarray(X), model.backend.asarray(y), loss)
    net = model.to_torch()
    logits = net[:-1](torch.from_numpy(X))  # (CrossEntropy takes the logits before Softmax)
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).backward()
    grad = numpy_of(grad)
    for spec in model.param_specs:
        ours = grad[spec.offset:spec.offset + spec.size].reshape(spec.shape)
        theirs = net.get_parameter(spec.key).grad.numpy()
        np.testing.assert_allclose(theirs, ours.T if ours.ndim == 2 else ours, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- the documented example


def test_the_module_example_runs(onnx, torch, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the example runs the file with onnxruntime")
    example = export.__doc__.split("Example (needs onnx, onnxruntime and torch)::", 1)[1]
    code = "\n".join(line[4:] for line in example.splitlines())
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "mlp_xp.export example", "exec"), {})
    assert (tmp_path / "model.onnx").is_file()


def _with_fused_activations(dtype):
    """Linear(..., activation=...) where this mlp_xp's Linear takes one (else the test skips)."""
    try:
        layers = [mx.Linear(4, 6, activation="elu"), mx.Linear(6, 6, activation="leaky_relu"),
                  mx.Linear(6, 6, activation="gelu", bias=False), mx.Linear(6, 3), mx.Softmax()]
    except TypeError:
        pytest.skip("this Linear has no activation argument")
    return _randomized(mx.Sequential(*layers, dtype=dtype, seed=4), 4)


def test_linear_with_an_activation_exports_it(onnx, tmp_path):
    model = _with_fused_activations("float32")
    model.export_onnx(tmp_path / "model.onnx")
    X = _inputs()
    expected = numpy_of(model.predict(X))
    plain = mx.Sequential(mx.Linear(4, 6), mx.Linear(6, 6), mx.Linear(6, 6, bias=False), mx.Linear(6, 3), mx.Softmax())
    plain.load_state_dict(model.state_dict())
    assert not np.allclose(expected, numpy_of(plain.predict(X)), atol=1e-3)  # (the activations matter)
    np.testing.assert_allclose(_run_onnx(tmp_path / "model.onnx", X), expected, rtol=1e-5, atol=1e-5)


def test_linear_with_an_activation_to_torch(torch):
    model = _with_fused_activations("float64")
    net = model.to_torch()
    assert [type(module).__name__ for module in net] == ["Linear", "ELU", "Linear", "LeakyReLU", "Linear", "GELU",
                                                          "Linear", "Softmax"]
    X = _inputs(dtype="float64")
    with torch.no_grad():
        got = net(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(got, numpy_of(model.predict(X)), rtol=1e-14, atol=1e-15)
