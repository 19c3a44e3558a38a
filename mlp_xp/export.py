"""A trained model for other runtimes: an ONNX file (:func:`export_onnx`) and an equivalent
``torch.nn.Sequential`` (:func:`to_torch`).

Both compute exactly what ``model.predict`` computes, in evaluation mode: Dropout is the
identity, a Softmax or Sigmoid output gives probabilities. ``predict`` does not apply
``model.data.scaler`` (the input standardisation ``mx.save`` keeps with a model), so neither does
the export by default; ``export_onnx(..., include_scaler=True)`` puts it in front of the graph, so
that the file takes raw features. Every layer type of :mod:`mlp_xp.nn.layers` is exported:

- Linear: ONNX Gemm (MatMul without bias); torch Linear, its weight transposed. A Linear with an
  ``activation`` ("relu", ...) is followed by that activation's graph, or module.
- ReLU, Sigmoid, Tanh, Identity: Relu, Sigmoid, Tanh, Identity; torch's modules of those names.
- LeakyReLU: ``Where(x > 0, x, slope * x)``; torch LeakyReLU(negative_slope).
- GELU: its tanh form ``0.5 x (1 + tanh(c (x + 0.044715 x^3)))`` in Mul / Add / Tanh; torch
  GELU(approximate="tanh").
- SiLU: ``x * Sigmoid(x)``; torch SiLU.
- ELU: ``Where(x > 0, x, alpha * (Exp(Min(x, 0)) - 1))``; torch ELU(alpha).
- Softplus: ``Max(x, 0) + Log(1 + Exp(-|x|))``; torch Softplus(threshold=40).
- Softmax: Softmax(axis=-1); torch Softmax(dim=-1).
- Dropout: nothing in the graph (the identity at inference); torch Dropout(p), in eval mode.
- LayerNorm: ``c = x - ReduceMean(x)``, ``c / Sqrt(ReduceMean(c * c) + eps) * weight + bias``; torch
  LayerNorm(features, eps, elementwise_affine).
- BatchNorm (BatchNorm1d): ``(x - running_mean) * Reciprocal(Sqrt(running_var + eps)) * weight + bias``,
  the running statistics initializers of their state_dict keys; with ``track_running_stats=False``
  the batch's own statistics, ``c = x - ReduceMean(x, axis 0)``, ``c * Reciprocal(Sqrt(ReduceMean(c * c,
  axis 0) + eps)) * weight + bias`` (a batch of one row, which ``predict`` refuses, gives ``bias``);
  torch BatchNorm1d(features, eps, momentum, affine, track_running_stats), in eval mode, its buffers
  the running statistics.

The parameterised activations are written with constants of the model's dtype (ONNX's own
LeakyRelu and Elu take a float32 attribute, and onnxruntime has no float64 Elu or Softplus), so a
float64 model exports to a float64 graph that onnxruntime runs. LayerNorm is written out as
mlp_xp computes it rather than as ONNX's LayerNormalization, whose epsilon is a float32
attribute too (a float64 model's 1e-3 would become 1.00000005e-3) and which needs opset 17;
BatchNorm likewise rather than as BatchNormalization (a float32 epsilon, and no batch statistics
at inference).
PyTorch's Softplus returns ``x`` above its ``threshold``; at 40, ``log(1 + exp(-x))`` is below
float64's resolution of ``x`` there, so it equals mlp_xp's stable form. A layer of a type not
listed (a subclass of ``Layer`` of your own) is refused with an error naming it, before any work.
The graph computes in the model's dtype: a mixed-precision model (``precision="float16"``)
exports its float32 master weights.

The ONNX graph has one input, ``"input"`` of shape (batch, in_features), and one output,
``"output"`` of shape (batch, out_features); the batch dimension is dynamic. What the model knows
of its data (``feature_names``, ``classes``, ``target_name``), and ``scaler_included``, are
written into the file's metadata_props as JSON. ``onnx`` (to export) and ``onnxruntime`` (to run
the file) come with ``pip install "mlp_xp[onnx]"``; ``torch`` is needed for :func:`to_torch`.
None of them is imported before it is needed.

Example (needs onnx, onnxruntime and torch)::

    import numpy as np, onnxruntime, torch, mlp_xp as mx

    model = mx.Sequential(mx.Linear(4, 16), mx.ReLU(), mx.Dropout(0.2), mx.LayerNorm(16),
                          mx.Linear(16, 3), mx.Softmax(), seed=0)
    X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)

    model.export_onnx("model.onnx")              # or mlp_xp.export.export_onnx(model, "model.onnx")
    session = onnxruntime.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"input": X})
    np.testing.assert_allclose(probabilities, mx.to_numpy(model.predict(X)), atol=1e-5)

    net = model.to_torch()                       # torch.nn.Sequential, in eval mode
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(X)).numpy(), mx.to_numpy(model.predict(X)), atol=1e-6)
"""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from . import io
from ._backend import to_numpy
from .nn.layers import (ACTIVATIONS, ELU, GELU, BatchNorm, Dropout, Identity, LayerNorm, LeakyReLU, Linear, ReLU,
                        Sigmoid, SiLU, Softmax, Softplus, Tanh)

if TYPE_CHECKING:
    from ._types import PathLike
    from .model import Sequential

__all__ = ["export_onnx", "to_torch", "DEFAULT_OPSET", "MIN_OPSET"]

#: the ONNX opset written when none is asked for (onnxruntime >= 1.12 runs it)
DEFAULT_OPSET = 17
#: the oldest opset the graph can be written in (Softmax over one axis is opset 13's)
MIN_OPSET = 13

#: the layer types each exporter knows (exact types: a subclass may compute something else)
_SUPPORTED = (Linear, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, ELU, Softplus, Identity, Softmax, Dropout,
              LayerNorm, BatchNorm)
#: PyTorch's Softplus threshold: above it torch returns x, equal in float64 to x + log1p(exp(-x))
_TORCH_SOFTPLUS_THRESHOLD = 40.0
#: what the exporters read of a Sequential
_MODEL_ATTRIBUTES = ("layers", "params", "state_dict", "features", "in_features", "out_features", "dtype_name", "data")
_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def _check_model(model, what):
    """The steps of the model, ``[(layer index, layer)]`` (a Linear with an ``activation`` is two:
    the Linear and its activation layer), and its host weights (numpy, by state_dict key); or a
    clear error: not a model, no weights, or a layer this exporter does not know."""
    # (duck-typed: mlp_xp.model sits above this module in the package's import stack)
    if not all(hasattr(model, name) for name in _MODEL_ATTRIBUTES):
        raise TypeError(f"{what} needs an mlp_xp Sequential model, got {type(model).__name__}")
    if model.params is None:
        raise ValueError(f"{what}: the model has no weights")
    steps = []
    for index, layer in enumerate(model.layers):
        if type(layer) not in _SUPPORTED:
            raise ValueError(f"{what} cannot export layer {index} ({layer!r}): {type(layer).__name__} is not one "
                             f"of mlp_xp's layer types ({', '.join(cls.__name__ for cls in _SUPPORTED)})")
        steps.append((index, layer))
        activation = getattr(layer, "activation", None) if isinstance(layer, Linear) else None
        if activation is not None:  # (Linear(..., activation="relu"): the activation follows)
            if activation not in ACTIVATIONS:
                raise ValueError(f"{what} cannot export layer {index} ({layer!r}): unknown activation {activation!r}")
            steps.append((index, ACTIVATIONS[activation]()))
    return steps, {key: np.asarray(to_numpy(value)) for key, value in model.state_dict().items()}


def _check_opset(opset):
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return min(DEFAULT_OPSET, newest)
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an int from {MIN_OPSET} to {newest} (the newest this onnx "
                         f"{onnx.__version__} knows), got {opset!r}")
    return int(opset)


def _import(name, what):
    try:
        return __import__(name)
    except ImportError:
        command = 'pip install "mlp_xp[onnx]"' if name == "onnx" else f"pip install {name}"
        raise ImportError(f"{what} needs {name}, which is not installed: {command}") from None


class _GraphBuilder:
    """The nodes and initializers (constants) of one ONNX graph, in one floating dtype."""

    def __init__(self, onnx, dtype, opset):
        self.onnx, self.dtype, self.opset = onnx, np.dtype(dtype), opset
        self.nodes, self.initializers, self._constants, self._count = [], [], {}, 0

    def name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def tensor(self, name, value):
        """An initializer (a weight or a constant) of the graph's dtype."""
        value = np.ascontiguousarray(np.asarray(value, dtype=self.dtype))
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def constant(self, value):
        """A scalar constant of the graph's dtype (each distinct value written once)."""
        value = float(value)
        if value not in self._constants:
            self._constants[value] = self.tensor(f"const_{len(self._constants)}", value)
        return self._constants[value]

    def mean(self, x, axis=-1):
        """The mean of ``x`` (batch, features) over ``axis``, its dimension kept: of each row as
        (batch, 1) by default, of each feature as (1, features) with ``axis=0``. ReduceMean takes
        its axes as an attribute up to opset 17, as an input from 18."""
        if self.opset < 18:
            return self.node("ReduceMean", [x], axes=[axis], keepdims=1)
        name = "axes_last" if axis == -1 else f"axes_{axis}"
        if name not in self._constants:
            self.initializers.append(self.onnx.numpy_helper.from_array(np.array([axis], dtype=np.int64), name))
            self._constants[name] = name
        return self.node("ReduceMean", [x, name], keepdims=1)

    def node(self, op, inputs, hint=None, **attributes):
        output = self.name(hint or op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [output], name=output, **attributes))
        return output


def _onnx_layer(graph, index, layer, x, weights):
    """The output of ``layer`` (at ``index``) on graph value ``x``."""
    g = graph
    if isinstance(layer, Linear):
        weight = g.tensor(f"{index}.weight", weights[f"{index}.weight"])
        if layer.bias:
            return g.node("Gemm", [x, weight, g.tensor(f"{index}.bias", weights[f"{index}.bias"])], f"linear{index}")
        return g.node("MatMul", [x, weight], f"linear{index}")
    if isinstance(layer, ReLU):
        return g.node("Relu", [x], f"relu{index}")
    if isinstance(layer, LeakyReLU):
        positive = g.node("Greater", [x, g.constant(0.0)])
        return g.node("Where", [positive, x, g.node("Mul", [x, g.constant(layer.negative_slope)])],
                      f"leaky_relu{index}")
    if isinstance(layer, Sigmoid):
        return g.node("Sigmoid", [x], f"sigmoid{index}")
    if isinstance(layer, Tanh):
        return g.node("Tanh", [x], f"tanh{index}")
    if isinstance(layer, GELU):  # 0.5 x (1 + tanh(c (x + a x^3))), as mlp_xp computes it
        cube = g.node("Mul", [g.node("Mul", [x, x]), x])
        inner = g.node("Mul", [g.constant(_GELU_C), g.node("Add", [x, g.node("Mul", [g.constant(_GELU_A), cube])])])
        one_plus = g.node("Add", [g.constant(1.0), g.node("Tanh", [inner])])
        return g.node("Mul", [g.node("Mul", [g.constant(0.5), x]), one_plus], f"gelu{index}")
    if isinstance(layer, SiLU):
        return g.node("Mul", [x, g.node("Sigmoid", [x])], f"silu{index}")
    if isinstance(layer, ELU):
        negative = g.node("Sub", [g.node("Exp", [g.node("Min", [x, g.constant(0.0)])]), g.constant(1.0)])
        positive = g.node("Greater", [x, g.constant(0.0)])
        return g.node("Where", [positive, x, g.node("Mul", [g.constant(layer.alpha), negative])], f"elu{index}")
    if isinstance(layer, Softplus):  # max(x, 0) + log(1 + exp(-|x|)): finite for any finite x
        tail = g.node("Log", [g.node("Add", [g.constant(1.0), g.node("Exp", [g.node("Neg", [g.node("Abs", [x])])])])])
        return g.node("Add", [g.node("Max", [x, g.constant(0.0)]), tail], f"softplus{index}")
    if isinstance(layer, Identity):
        return g.node("Identity", [x], f"identity{index}")
    if isinstance(layer, Softmax):
        return g.node("Softmax", [x], f"softmax{index}", axis=-1)
    if isinstance(layer, Dropout):
        return x
    if isinstance(layer, LayerNorm):  # two passes, as mlp_xp computes it (see the module's description)
        centered = g.node("Sub", [x, g.mean(x)])
        return _normalized(g, centered, g.mean(g.node("Mul", [centered, centered])), layer.eps,
                           layer.elementwise_affine, index, weights, f"layer_norm{index}")
    if isinstance(layer, BatchNorm):  # as mlp_xp computes it in evaluation (see the module's description)
        if layer.track_running_stats:
            centered = g.node("Sub", [x, g.tensor(f"{index}.running_mean", weights[f"{index}.running_mean"])])
            variance = g.tensor(f"{index}.running_var", weights[f"{index}.running_var"])
        else:  # the batch's own statistics: of each feature, over the rows (the variance biased)
            centered = g.node("Sub", [x, g.mean(x, axis=0)])
            variance = g.mean(g.node("Mul", [centered, centered]), axis=0)
        return _normalized(g, centered, variance, layer.eps, layer.affine, index, weights, f"batch_norm{index}")
    raise AssertionError(f"unhandled layer {layer!r}")  # (_check_model refused it)


def _normalized(g, centered, variance, eps, affine, index, weights, hint):
    """``centered * (1 / sqrt(variance + eps))``, then ``* weight + bias`` when ``affine``: the
    normalisation's operations in mlp_xp's order (``eps`` a constant of the graph's dtype)."""
    inv_std = g.node("Reciprocal", [g.node("Sqrt", [g.node("Add", [variance, g.constant(eps)])])])
    if not affine:
        return g.node("Mul", [centered, inv_std], hint)
    weight = g.tensor(f"{index}.weight", weights[f"{index}.weight"])
    scaled = g.node("Mul", [g.node("Mul", [centered, inv_std]), weight])
    return g.node("Add", [scaled, g.tensor(f"{index}.bias", weights[f"{index}.bias"])], hint)


def _onnx_graph(onnx, model, steps, weights, opset, include_scaler):
    """The checked ModelProto of ``model``."""
    helper = onnx.helper
    graph = _GraphBuilder(onnx, model.dtype_name, opset)
    x = "input"
    if include_scaler:  # in float64, as Standardizer.transform computes, then in the model's dtype
        scaler = model.data.scaler
        mean = onnx.numpy_helper.from_array(np.asarray(scaler.mean, dtype=np.float64), "scaler.mean")
        scale = onnx.numpy_helper.from_array(np.asarray(scaler.scale, dtype=np.float64), "scaler.scale")
        graph.initializers += [mean, scale]
        if model.dtype_name != "float64":
            x = graph.node("Cast", [x], to=onnx.TensorProto.DOUBLE)
        x = graph.node("Div", [graph.node("Sub", [x, "scaler.mean"]), "scaler.scale"], "standardized")
        if model.dtype_name != "float64":
            x = graph.node("Cast", [x], to=helper.np_dtype_to_tensor_dtype(np.dtype(model.dtype_name)))
    for index, layer in steps:
        x = _onnx_layer(graph, index, layer, x, weights)
    if x == "input":  # (only layers that are the identity at inference: the output must be a node's)
        x = graph.node("Identity", [x])
    graph.nodes[-1].output[0] = "output"  # (x is always the last node's output)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(model.dtype_name))
    body = helper.make_graph(graph.nodes, "mlp_xp",
                             [helper.make_tensor_value_info("input", elem, ["batch", model.in_features])],
                             [helper.make_tensor_value_info("output", elem, ["batch", model.out_features])],
                             initializer=graph.initializers)
    proto = helper.make_model(body, opset_imports=[helper.make_opsetid("", opset)], producer_name="mlp_xp",
                              producer_version=_version())
    proto.ir_version = min(proto.ir_version, _ir_version(onnx, opset))
    info = {"feature_names": model.data.feature_names, "classes": model.data.classes,
            "target_name": model.data.target_name}
    metadata = {key: json.dumps(list(value) if isinstance(value, (tuple, list, np.ndarray)) else value,
                                default=_json_scalar)
                for key, value in info.items() if value is not None}
    metadata["scaler_included"] = json.dumps(bool(include_scaler))
    helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _version():
    """The installed mlp_xp's version ("" if it is not installed as a distribution)."""
    from importlib import metadata

    try:
        return metadata.version("mlp_xp")
    except metadata.PackageNotFoundError:
        return ""


def _json_scalar(value):
    """numpy scalars (class labels read from data) as JSON."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _ir_version(onnx, opset):
    """The IR version of ``opset``'s release: a file a runtime of that time can read (a newer onnx
    would write its own newest IR version, which older onnxruntimes refuse)."""
    for entry in onnx.helper.VERSION_TABLE:  # (release, ir_version, ai.onnx opset, ...)
        if entry[2] == opset:
            return entry[1]
    return onnx.IR_VERSION


def export_onnx(model: Sequential, path: PathLike, opset: int | None = None,
                include_scaler: bool = False) -> None:
    """Write ``model`` to an ONNX file that computes what ``model.predict`` does.

    The graph's input is ``"input"`` (batch, in_features) and its output ``"output"`` (batch,
    out_features), of the model's dtype (float32 or float64), with a dynamic batch dimension.
    The file is checked with ``onnx.checker`` and replaced atomically (a crash leaves the old
    file intact), as ``mx.save`` writes. See the module's description for the layers' graphs.

    Args:
        model: a :class:`~mlp_xp.Sequential`, on any backend.
        path: the file to write (conventionally ``*.onnx``).
        opset: the ONNX opset (an int from 13 up to the newest the installed onnx knows); None
            writes opset 17.
        include_scaler: put ``model.data.scaler`` in front of the graph, ``(x - mean) / scale``
            in float64 as ``Standardizer.transform`` computes it, so that the file takes raw
            features (``predict`` takes standardized ones).

    Returns:
        None.

    Raises:
        TypeError: ``model`` is not a Sequential.
        ValueError: a layer that cannot be exported (named with its index), an opset out of
            range, ``include_scaler`` without a fitted scaler, or a path that cannot be written.
        ImportError: onnx is not installed.

    Example:
        >>> import mlp_xp as mx
        >>> from mlp_xp.export import export_onnx
        >>> class Square(mx.layers.Layer):
        ...     def forward(self, params, x, ctx):
        ...         return x * x, lambda dy, need_input_grad=True, out=None: (2 * x * dy, {})
        >>> export_onnx(mx.Sequential(mx.Linear(2, 2), Square()), "never-written.onnx")
        Traceback (most recent call last):
        ...
        ValueError: export_onnx cannot export layer 1 (Square()): Square is not one of mlp_xp's layer types (...)
    """
    steps, weights = _check_model(model, "export_onnx")
    if not isinstance(include_scaler, (bool, np.bool_)):
        raise ValueError(f"export_onnx: include_scaler must be True or False, got {include_scaler!r}")
    if include_scaler:
        scaler = model.data.scaler
        if scaler is None or getattr(scaler, "mean", None) is None:
            raise ValueError("export_onnx(include_scaler=True): the model has no fitted scaler (model.data.scaler)")
        if scaler.mean.shape != (model.in_features,):
            raise ValueError(f"export_onnx(include_scaler=True): the scaler has {scaler.mean.size} features but "
                             f"the model takes {model.in_features}")
    path = os.fspath(path)
    io.check_writable(path, "export_onnx: the file")
    onnx = _import("onnx", "export_onnx")
    opset = _check_opset(opset)
    proto = _onnx_graph(onnx, model, steps, weights, opset, include_scaler)
    io._write_atomically(path, lambda temporary: onnx.save_model(proto, temporary))


def to_torch(model: Sequential) -> Any:
    """An equivalent ``torch.nn.Sequential``: the same layers and weights, in the model's dtype,
    on the CPU, in evaluation mode, computing what ``model.predict`` does (float64: equal to
    about 1e-15).

    Linear weights are transposed (mlp_xp stores (in, out), PyTorch (out, in)); the module is a
    copy, so training it leaves the model unchanged. A BatchNorm's running statistics are its
    BatchNorm1d's buffers (``num_batches_tracked`` an int64 count), so that ``train()`` goes on
    updating them as PyTorch does. See the module's description for the layers' equivalents.

    Args:
        model: a :class:`~mlp_xp.Sequential`, on any backend.

    Returns:
        A ``torch.nn.Sequential`` with one module per layer, so that its state_dict has the
        model's keys (a Linear with an ``activation`` adds a module after it, which shifts the
        indices after it), and one more: BatchNorm1d always keeps ``"<index>.num_batches_tracked"``
        when it tracks running statistics, which the model keeps only with ``momentum=None``
        (else it is 0 here: PyTorch reads it only then). Dropout is included: the identity in
        ``eval()`` mode, which the module is in (``train()`` activates it, and BatchNorm's batch
        statistics).

    Raises:
        TypeError: ``model`` is not a Sequential.
        ValueError: a layer without a PyTorch equivalent, named with its index.
        ImportError: torch is not installed.
    """
    steps, weights = _check_model(model, "to_torch")
    torch = _import("torch", "to_torch")
    nn = torch.nn
    dtype = getattr(torch, model.dtype_name)

    def parameter(key):
        return nn.Parameter(torch.tensor(weights[key], dtype=dtype))

    modules = []
    for index, layer in steps:
        features = model.features[index]
        if isinstance(layer, Linear):
            module = nn.Linear(features, layer.out_features, bias=layer.bias, dtype=dtype)
            module.weight = nn.Parameter(torch.tensor(weights[f"{index}.weight"].T, dtype=dtype))  # (out, in)
            if layer.bias:
                module.bias = parameter(f"{index}.bias")
        elif isinstance(layer, LayerNorm):
            module = nn.LayerNorm(features, eps=layer.eps, elementwise_affine=layer.elementwise_affine, dtype=dtype)
            if layer.elementwise_affine:
                module.weight, module.bias = parameter(f"{index}.weight"), parameter(f"{index}.bias")
        elif isinstance(layer, BatchNorm):
            module = nn.BatchNorm1d(features, eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
                                    track_running_stats=layer.track_running_stats, dtype=dtype)
            if layer.affine:
                module.weight, module.bias = parameter(f"{index}.weight"), parameter(f"{index}.bias")
            with torch.no_grad():  # (the buffers it registered: kept, so that train() updates them)
                for name, buffer in module.named_buffers():
                    key = f"{index}.{name}"
                    if key in weights:
                        buffer.copy_(torch.tensor(weights[key]).to(buffer.dtype))
        elif isinstance(layer, LeakyReLU):
            module = nn.LeakyReLU(layer.negative_slope)
        elif isinstance(layer, ELU):
            module = nn.ELU(layer.alpha)
        elif isinstance(layer, GELU):
            module = nn.GELU(approximate="tanh")
        elif isinstance(layer, Softplus):
            module = nn.Softplus(threshold=_TORCH_SOFTPLUS_THRESHOLD)
        elif isinstance(layer, Softmax):
            module = nn.Softmax(dim=-1)
        elif isinstance(layer, Dropout):
            module = nn.Dropout(layer.p)
        else:
            module = {ReLU: nn.ReLU, Sigmoid: nn.Sigmoid, Tanh: nn.Tanh, SiLU: nn.SiLU, Identity: nn.Identity}[
                type(layer)]()
        modules.append(module)
    return nn.Sequential(*modules).eval()
