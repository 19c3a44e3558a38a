"""Sequential: a stack of layers over one flat parameter vector.

The model checks every layer's input size when it is built, draws initial weights on the
host from its seed, and keeps all parameters in one vector on its backend; each layer sees
reshaped slices of it. ``forward`` and ``value_and_grad`` are the device-level seams a
training step (:mod:`mlp_xp.train.step`) is built on; ``fit``, ``evaluate`` and ``predict`` live in
:mod:`mlp_xp.train.loop`, and :func:`load` rebuilds a model saved by :func:`mlp_xp.save`.
"""

from __future__ import annotations

import copy
import math
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, NamedTuple, Sequence

import numpy as np

from . import checkpoint, io
from .data import checks
from .train import loop
from .train import precision as precisions
from ._backend import Backend, check_memory, resolve_backend, resolve_dtype_name, to_numpy
from ._errors import ShapeError
from .nn.layers import Dropout, ForwardContext, Layer, Linear, Sigmoid, Softmax
from .nn.losses import Loss
from ._types import ArrayLike, PathLike
from .optim.optimizers import Optimizer
from .train.loop import History
from .train.metrics import Metric
from .train.step import TrainState

__all__ = ["Sequential", "ParamSpec", "DataInfo"]

# for type checkers: a ``backend`` (a name, "numpy", "torch", ..., or a namespace module); a ``dtype`` ("float32",
# "float64", or a dtype object of any backend); the ``metrics`` of fit and evaluate (names or metric objects)
BackendLike = str | ModuleType | Backend
DTypeLike = Any
Metrics = str | Metric | Sequence[str | Metric]


class ParamSpec(NamedTuple):
    """Where one parameter tensor lives in the flat vector.

    Attributes:
        key: state_dict key, "<layer index>.<name>".
        layer_index: index of the layer in the model.
        name: parameter name within the layer ("weight", "bias").
        offset: start in the flat vector.
        shape: the tensor's shape.
        size: the number of elements (stored: it is read on every step).
    """

    key: str
    layer_index: int
    name: str
    offset: int
    shape: tuple
    size: int


class DataInfo(NamedTuple):
    """What a model knows of the data it was trained on, saved and loaded with it by
    ``mx.save`` / ``mx.load`` (and used by ``mlp-xp predict`` / ``evaluate``). ``predict``
    does not apply it: transform inputs with ``scaler`` and map outputs back yourself.

    Attributes:
        scaler: a :class:`mlp_xp.data.datasets.Standardizer` for the inputs, or None.
        target_scaler: a Standardizer for regression targets, or None.
        classes: the original class labels (output ``i`` is ``classes[i]``), or None.
        feature_names: the input columns, in order, or None.
        target_name: the target column, or None.
        table: a :class:`mlp_xp.data.tables.TableInfo` for a model trained on a CSV table by
            ``mlp-xp train``: how its columns become the features (one-hot categories, fill values,
            True/False), which ``mlp-xp predict`` / ``evaluate`` apply; or None.

    Example:
        >>> import numpy as np, mlp_xp as mx
        >>> model = mx.Sequential(mx.Linear(2, 3), mx.Softmax(), seed=0)
        >>> model.data = model.data._replace(classes=("cat", "dog", "owl"), feature_names=("weight", "height"))
        >>> model.data.classes[int(np.argmax(mx.to_numpy(model.predict([[0.1, 0.2]]))))] in model.data.classes
        True
    """

    scaler: Any = None
    target_scaler: Any = None
    classes: Any = None
    feature_names: Any = None
    target_name: Any = None
    table: Any = None


class Summary(str):
    """The text of ``Sequential.summary()``; its repr is the text itself, so a notebook cell or
    REPL line ending in ``model.summary()`` shows the table rather than a quoted string."""

    def __repr__(self):
        return str(self)

    def _repr_pretty_(self, printer, cycle):  # IPython / Jupyter
        printer.text(str(self))


class Sequential:
    """A feed-forward stack of layers, trained with exact backpropagation.

    Args:
        *layers: the layers, first to last (a single list or tuple is accepted too).
        backend: "numpy", "array_api_strict", "cupy", "torch", "jax", or a namespace module.
        device: the backend's device; None for its default.
        dtype: "float32" or "float64": the master weights and optimizer state.
        precision: what forward and backward passes compute in (see :mod:`mlp_xp.train.precision`):
            None (the dtype), "tf32" (float32 with TF32-rounded matrix products), "float16"
            (mixed, with dynamic loss scaling) or "bfloat16" (mixed); or an
            ``mx.precision.Precision``. The narrow ones keep float32 master weights.
        seed: fixes the initial weights, the batch order and the dropout masks, the same
            on every backend.

    Raises:
        ShapeError: a layer cannot take the output of the one before it; the message
            names the layer index, the layer and both shapes.

    Example:
        >>> import mlp_xp as mx
        >>> model = mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Linear(8, 3), mx.Softmax(), seed=1)
        >>> sorted(model.state_dict())
        ['0.bias', '0.weight', '2.bias', '2.weight']
        >>> model.state_dict()["0.weight"].shape
        (4, 8)
    """

    def __init__(self, *layers: Layer | Sequence[Layer], backend: BackendLike = "numpy", device: Any = None,
                 dtype: DTypeLike = "float32", seed: int = 0,
                 precision: str | precisions.Precision | None = None) -> None:
        self._setup(layers, resolve_backend(backend, device), dtype, seed, precision)
        # weights are drawn on the host in float64 one layer at a time, into a vector of the model's
        # dtype: the peak is that vector plus the largest layer in float64, checked before allocating
        largest = max((spec.size for spec in self.param_specs), default=0)
        check_memory(self.num_parameters * self.backend.dtype_itemsize(self.dtype_name) + 8 * largest,
                     f"a model of {self.num_parameters:,} parameters")
        init_rng, shuffle_rng, dropout_rng = (np.random.default_rng(s)
                                              for s in np.random.SeedSequence(self.seed).spawn(3))
        self.params = self.backend.asarray(self._initial_host_params(init_rng), dtype=self.dtype)
        self.running = self._initial_running()
        self.shuffle_rng = shuffle_rng
        self.dropout_rng = dropout_rng

    # ------------------------------------------------------------------ building

    @classmethod
    def _skeleton(cls, layers, backend, dtype, seed, precision=None) -> "Sequential":
        """A model with its layout checked but no parameters yet (``params`` is None): for
        ``to`` and ``mx.load``, which bring their own weights and need not draw any."""
        model = object.__new__(cls)
        model._setup(tuple(layers), backend if isinstance(backend, Backend) else resolve_backend(backend),
                     dtype, seed, precision)
        model.params = None
        model.shuffle_rng, model.dropout_rng = (np.random.default_rng(s)
                                                for s in np.random.SeedSequence(model.seed).spawn(3)[1:])
        return model

    def _setup(self, layers, backend: Backend, dtype, seed, precision=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for index, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                hint = " (did you pass the class instead of an instance?)" if isinstance(layer, type) else ""
                raise TypeError(f"layer {index} must be an mlp_xp layer, got {layer!r}{hint}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.layers = tuple(layers)
        self.backend = backend
        self.dtype_name = resolve_dtype_name(dtype)
        if backend.name == "jax" and self.dtype_name == "float64":
            import jax

            if not jax.config.jax_enable_x64:  # JAX would silently compute in float32
                raise ValueError("JAX runs float64 only in 64-bit mode: call jax.config.update('jax_enable_x64', "
                                 "True) first, or use dtype='float32'")
        self.dtype = backend.dtype(self.dtype_name)
        self.precision = precisions.resolve(precision, self.dtype_name)
        # the narrow type layers compute in under mixed precision (None: the dtype itself)
        self._compute_dtype = (precisions.compute_dtype(backend, self.precision.compute) if self.precision.mixed
                               else None)
        self._loss_scale = precisions.LossScale(self.precision.initial_scale(), 0)
        self.seed = int(seed)
        #: the number of the last epoch ``fit`` completed (0: none); saved with the model, and a fit
        #: resumed from a file numbers its epochs after it
        self.epoch = 0
        self._optimizer = None
        #: the one record of training state (mlp_xp.train.step.TrainState): parameters, optimizer
        #: state, step count, and during a fit the guard and sums; see params, optimizer_state,
        #: dropout_step, set_train_state
        self._state = TrainState(None, None, 0, None, None, ())
        self._ops = None  # resolved on first use: importing numba is not free
        self._contexts = {}  # the plain forward contexts, by training mode
        self._random = sum(isinstance(layer, Dropout) and layer.p > 0 for layer in self.layers)  # masks to draw
        self._views = {}  # per-layer views of reused buffers (mutable Ops), by buffer identity
        self._compiled_steps = {}  # see compiled_step
        self._dropout_masks = "device"
        #: the 32-bit key of the device masks (from the seed)
        self.dropout_key = int(np.random.SeedSequence(self.seed).generate_state(1, np.uint32)[0])
        self.data = DataInfo()
        self._build_layout()

    def _build_layout(self):
        first_linear = next((layer for layer in self.layers if isinstance(layer, Linear)), None)
        if first_linear is None or first_linear.in_features is None:
            raise ValueError("cannot infer the input size: give the first Linear layer its in_features")
        features = first_linear.in_features
        self.in_features = features
        self.features = []  # input features of each layer
        self.param_specs: list[ParamSpec] = []
        #: where each running statistic (BatchNorm's) lives in the flat :attr:`running` vector
        self.running_specs: list[ParamSpec] = []
        offset = running_offset = 0
        for index, layer in enumerate(self.layers):
            self.features.append(features)
            try:
                out = layer.output_features(features)
            except ValueError as error:
                raise ShapeError(f"layer {index} ({layer!r}) {error}") from None
            for name, shape in layer.param_shapes(features).items():
                spec = ParamSpec(f"{index}.{name}", index, name, offset, tuple(shape), math.prod(shape))
                self.param_specs.append(spec)
                offset += spec.size
            for name, shape in layer.running_shapes(features).items():
                spec = ParamSpec(f"{index}.{name}", index, name, running_offset, tuple(shape), math.prod(shape))
                self.running_specs.append(spec)
                running_offset += spec.size
            features = out
        self.out_features = features
        self.num_parameters = offset
        #: the number of running statistics (0: none, and :attr:`running` is None)
        self.num_running = running_offset
        # the layers that keep running statistics, in order (what a training step's updates come from)
        self._running_layers = tuple(sorted({spec.layer_index for spec in self.running_specs}))
        # layers before the first one with parameters need no backward pass at all
        self._first_param_layer = self.param_specs[0].layer_index if self.param_specs else len(self.layers)

    def _init_family(self, index):
        """He or Glorot for the Linear at ``index``: from the next layer that has an opinion."""
        for layer in self.layers[index + 1:]:
            if isinstance(layer, Linear):
                break
            if layer.init_family is not None:
                return layer.init_family
        return "glorot"

    def _initial_host_params(self, rng) -> np.ndarray:
        """The initial flat vector, in the model's dtype: each layer is drawn in float64 and cast
        as it is written in (the same values as casting the whole float64 vector at once)."""
        flat = np.empty(self.num_parameters, dtype=self.dtype_name)
        for index, layer in enumerate(self.layers):
            values = layer.init_params(rng, self.features[index], self._init_family(index))
            for spec in self.param_specs:
                if spec.layer_index == index:
                    flat[spec.offset:spec.offset + spec.size] = np.asarray(values[spec.name]).reshape(-1)
        return flat

    def _initial_running(self):
        """The initial running statistics (BatchNorm's zero means, unit variances) on the backend,
        or None for a model that keeps none."""
        if not self.running_specs:
            return None
        flat = np.empty(self.num_running, dtype=self.dtype_name)
        for index in self._running_layers:
            values = self.layers[index].init_running(self.features[index])
            for spec in self.running_specs:
                if spec.layer_index == index:
                    flat[spec.offset:spec.offset + spec.size] = np.asarray(values[spec.name]).reshape(-1)
        return self.backend.asarray(flat, dtype=self.dtype)

    # ------------------------------------------------------------------ pickling (sklearn, multiprocessing)

    def __getstate__(self):
        """Arrays as numpy and the backend by name: a namespace module cannot be pickled.
        (For files, use ``mx.save``: it never unpickles.)"""
        state = dict(self.__dict__)
        state["backend"] = (self.backend.name, self.backend.device)
        state.pop("dtype")
        state["_ops"] = None
        state["_contexts"] = {}
        state["_views"] = {}
        state["_compiled_steps"] = {}  # compiled functions: made again on the next fit
        opt_state = self.optimizer_state
        if opt_state is not None:
            opt_state = type(opt_state)(*(int(value) if index == 0 else value if value is None else to_numpy(value)
                                          for index, value in enumerate(opt_state)))
        # the record's arrays as numpy, its counts as ints; the guard and sums belong to a fit
        params = None if self.params is None else to_numpy(self.params)
        running = None if self.running is None else to_numpy(self.running)
        state["_state"] = TrainState(params, opt_state, self.dropout_step, None, None, (), None, running)
        return state

    def __setstate__(self, state):
        name, device = state["backend"]
        backend = resolve_backend(name, device)
        state = dict(state, backend=backend, dtype=backend.dtype(state["dtype_name"]))
        record = state["_state"]
        opt_state = record.opt_state
        if opt_state is not None:
            opt_state = type(opt_state)(*(value if index == 0 or value is None
                                          else backend.asarray(value, dtype=state["dtype"])
                                          for index, value in enumerate(opt_state)))
        params = None if record.params is None else backend.asarray(record.params, dtype=state["dtype"])
        running = None if record.running is None else backend.asarray(record.running, dtype=state["dtype"])
        state["_state"] = record._replace(params=params, opt_state=opt_state, running=running)
        self.__dict__.update(state)

    # ------------------------------------------------------------------ properties

    @property
    def xp(self):
        """The model's Array API namespace."""
        return self.backend.xp

    @property
    def device(self):
        return self.backend.device

    @property
    def ops(self):
        """The operations this model's training step is written in (:mod:`mlp_xp.ops`): the
        backend's fast overrides where it has them, else the generic Array API reference.

        Overrides give the same results (bitwise on numpy); assign None to force the generic ops.
        """
        if self._ops is None:
            from . import ops

            self._ops = ops.for_model(self.backend, self.dtype_name)
        return self._ops

    @ops.setter
    def ops(self, value):
        from . import ops

        self._ops = value if value is not None else ops.GenericOps(self.xp, self.device)

    def __len__(self) -> int:
        """The number of layers."""
        return len(self.layers)

    def __getitem__(self, index: int | slice) -> Any:
        """``model[i]`` is the i-th layer (its weights: ``state_dict()[f"{i}.weight"]``);
        a slice gives a tuple of layers."""
        return self.layers[index]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __repr__(self):
        layers = ", ".join(map(repr, self.layers))
        precision = "" if self.precision.compute == self.dtype_name else f", precision={self.precision.compute!r}"
        return (f"Sequential({layers}, backend={self.backend.name!r}, dtype={self.dtype_name!r}{precision}, "
                f"seed={self.seed})")

    def summary(self) -> Summary:
        """A table of the layers, their output shapes and parameter counts.

        The result is a string that shows as the table when it is the value of a notebook
        cell or a REPL line (``model.summary()``), and prints as it with ``print``.

        Example:
            >>> import mlp_xp as mx
            >>> print(mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Linear(8, 2), seed=0).summary())
            #   layer                                   output          parameters
            0   Linear(4 -> 8)                          (batch, 8)              40
            1   ReLU()                                  (batch, 8)               0
            2   Linear(8 -> 2)                          (batch, 2)              18
            total parameters: 58 (numpy, float32)
        """
        lines = [f"{'#':<3} {'layer':<39} {'output':<15} {'parameters':>10}"]
        for index, layer in enumerate(self.layers):
            count = sum(spec.size for spec in self.param_specs if spec.layer_index == index)
            out = self.features[index + 1] if index + 1 < len(self.features) else self.out_features
            name = (f"Linear({self.features[index]} -> {layer.out_features}{'' if layer.bias else ', no bias'}"
                    f"{f', {layer.activation}' if getattr(layer, 'activation', None) else ''})"
                    if isinstance(layer, Linear) else repr(layer))
            name = name if len(name) <= 39 else name[:36] + "..."
            lines.append(f"{index:<3} {name:<39} {f'(batch, {out})':<15} {count:>10}")
        precision = "" if self.precision.compute == self.dtype_name else f", computing in {self.precision.compute}"
        lines.append(f"total parameters: {self.num_parameters} ({self.backend.name}, {self.dtype_name}{precision})")
        return Summary("\n".join(lines))

    # ------------------------------------------------------------------ forward / backward

    def layer_params(self, params: Any = None) -> list[dict[str, Any]]:
        """Per-layer dicts {name: array} of the flat ``params`` (default: the model's), as reshaped
        slices (views where the backend has views), with the model's running statistics (a
        BatchNorm's): what each layer's ``forward`` takes."""
        per_layer = self._layer_params(self.params if params is None else params)
        if not self.running_specs:
            return per_layer
        per_layer = list(per_layer)
        for index, statistics in self._layer_running(self.running).items():
            per_layer[index] = {**per_layer[index], **statistics}
        return per_layer

    def layers_before_loss(self, loss: Loss) -> int:
        """How many layers produce what ``loss`` takes: all of them, or all but a final
        Softmax/Sigmoid that the loss folds in (it takes logits)."""
        return self._loss_forward_stop(loss)

    def _layer_params(self, params):
        """Per-layer dicts of reshaped slices (views where the backend has views).

        With mutable Ops the views of the few buffers a step reuses (two parameter buffers, the
        gradient buffer) are kept: they stay valid while the buffers are written in place."""
        cache = self._views if self._ops is not None and self._ops.mutable else None
        if cache is not None:
            hit = cache.get(id(params))
            if hit is not None and hit[0] is params:
                return hit[1]
        xp = self.xp
        per_layer = [{} for _ in self.layers]
        for spec in self.param_specs:
            per_layer[spec.layer_index][spec.name] = xp.reshape(params[spec.offset:spec.offset + spec.size],
                                                                spec.shape)
        if cache is not None:
            if len(cache) >= 4:
                cache.clear()
            cache[id(params)] = (params, per_layer)
        return per_layer

    def _context(self, train=False, uniform=None, keep=None) -> ForwardContext:
        """The forward context of this model's precision: its Ops for plain float32/float64; for
        the others, the generic Ops with the precision's matrix product."""
        plain = uniform is None and keep is None
        ops = self.ops if self.precision.compute == self.dtype_name else self._precision_ops()
        if plain and self._contexts.get(train) is not None and self._contexts[train].ops is ops:
            return self._contexts[train]  # (a context holds no state: one per mode serves every step)
        ctx = ForwardContext(self.xp, train, uniform, ops, keep)
        if plain:
            self._contexts[train] = ctx
        return ctx

    def _precision_ops(self):
        """The generic Ops whose matrix product is the model's precision's (kept with the contexts)."""
        ops = self._contexts.get("precision")
        if ops is None:
            from .ops import GenericOps

            ops = self._contexts["precision"] = GenericOps(self.xp, self.device, matmul=self._precision_matmul())
        return ops

    def _train_context(self, step=None, rows=None, start=0):
        """The training context of one step: Dropout masks hashed on the device from the key of
        training step ``step`` (default: the next one), or drawn on the host with
        ``dropout_masks="host"``. ``rows``/``start``: this process holds rows ``start:start +
        shape[0]`` of a batch of ``rows`` (data-parallel), and draws what one process would."""
        if not self._random:
            return self._context(True)  # nothing random: no mask source to build
        if self.dropout_masks == "host":
            backend, rng = self.backend, self.dropout_rng
            if rows is None:
                def uniform(shape, dtype):
                    # drawn in float64 whatever the dtype: float32 and float64 runs get the same masks
                    return backend.asarray(rng.random(shape), dtype=dtype)
            else:
                def uniform(shape, dtype):
                    return backend.asarray(rng.random((rows,) + tuple(shape[1:]))[start:start + shape[0]],
                                           dtype=dtype)
            return self._context(True, uniform)
        from .ops.generic import layer_key

        ops, step = self.ops, self.dropout_step if step is None else step
        constants = tuple(layer_key(self.dropout_key, layer) for layer in range(1, self._random + 1))
        keys = ops.layer_keys(ops.step_mix(step), constants)  # (a device step: one 0-d key per layer)
        calls = [0]

        def keep(shape, p):
            calls[0] += 1
            offset = start * math.prod(shape[1:])
            return ops.dropout_keep(keys[calls[0] - 1], shape, p, offset)

        return self._context(True, keep=keep)

    def _precision_matmul(self):
        xp, compute = self.xp, self._compute_dtype
        if self.precision.compute == "tf32":
            if self.backend.name == "numpy":
                from .ops.numpy_ops import round_to_tf32_bits as rounded
            else:
                def rounded(a):
                    return precisions.round_to_tf32(xp, a)
            return lambda a, b: xp.matmul(rounded(a), rounded(b))
        if self.backend.name in ("numpy", "array_api_strict"):
            # what tensor cores do, emulated: narrow inputs, float32 accumulation, a rounded result
            float32 = self.dtype
            return lambda a, b: xp.astype(xp.matmul(xp.astype(a, float32), xp.astype(b, float32)), compute)
        return xp.matmul  # native narrow products (they accumulate in float32 on GPUs)

    def _forward(self, params, x, ctx, stop=None, running=None):
        """Run layers[:stop]; return the output and each layer's backward closure. Under mixed
        precision the layers compute in the narrow type and the output comes back as float32.
        ``running``: the running statistics the layers read (default: the model's); in a
        training context that collects them (``ctx.updates``) the layers append their updates."""
        compute = self._compute_dtype
        if compute is not None:
            params, x = self.xp.astype(params, compute), self.xp.astype(x, compute)
        per_layer = self._layer_params(params)
        if self.running_specs:  # (their own dicts: the cached views of params stay as they are)
            per_layer = list(per_layer)
            for index, statistics in self._layer_running(self.running if running is None else running).items():
                per_layer[index] = {**per_layer[index], **statistics}
        backwards = []
        for index, layer in enumerate(self.layers[:stop]):
            x, backward = layer.forward(per_layer[index], x, ctx)
            backwards.append(backward)
        if compute is not None:
            x = self.xp.astype(x, self.dtype)
        return x, backwards

    def _layer_running(self, running) -> dict:
        """{layer index: {name: view}} of the flat running statistics."""
        xp, per_layer = self.xp, {}
        for spec in self.running_specs:
            per_layer.setdefault(spec.layer_index, {})[spec.name] = xp.reshape(
                running[spec.offset:spec.offset + spec.size], spec.shape)
        return per_layer

    def _running_from_updates(self, updates):
        """The flat running statistics of a training step from its layers' updates (in layer order)."""
        xp = self.xp
        if len(updates) != len(self._running_layers):
            raise RuntimeError(f"{len(updates)} layers updated running statistics, {len(self._running_layers)} keep "
                               "them")
        by_layer = dict(zip(self._running_layers, updates))
        return xp.concat([xp.reshape(by_layer[spec.layer_index][spec.name], (-1,)) for spec in self.running_specs])

    def _fused(self, loss: Loss) -> bool:
        """True when the last layer's math is folded into ``loss`` (Softmax + CrossEntropy...)."""
        return loss.fuses_with is not None and type(self.layers[-1]) is loss.fuses_with

    def _loss_forward_stop(self, loss):
        return len(self.layers) - 1 if self._fused(loss) else len(self.layers)

    def _loss_and_flat_grad(self, params, x, target, loss, ctx, grad_out=None, scale=1.0, running=None):
        """Loss, its gradient as one flat vector, and the output the loss was computed from.

        With ``grad_out`` (a flat buffer) the gradient is written into it and returned, instead of
        being concatenated into a new array: by mutable ``ctx.ops`` (numpy's) directly, by the
        generic ones one layer at a time as the backward pass computes it (so no more than one
        layer's gradient exists beside the buffer). Under mixed precision the
        loss is computed in float32, its gradient multiplied by ``scale`` and taken back through
        the layers in the narrow type, and the flat gradient returned in float32, divided by
        ``scale`` (it may hold inf where the scaled backward pass overflowed).
        """
        xp = self.xp
        output, backwards = self._forward(params, x, ctx, self._loss_forward_stop(loss), running)
        value, grad = loss.ops_value_and_grad(ctx.ops, output, target)
        if self._compute_dtype is not None:
            grad = xp.astype(grad * scale if scale != 1.0 else grad, self._compute_dtype)
        if grad_out is not None and self._compute_dtype is None and not ctx.ops.mutable:
            return value, self._backward_into(backwards, grad, grad_out), output
        if not ctx.ops.mutable:  # layers write into a buffer only through mutable ops
            grad_out = None
        out = self._layer_params(grad_out) if grad_out is not None else [None] * len(self.layers)
        layer_grads = {}
        for index in range(len(backwards) - 1, self._first_param_layer - 1, -1):
            grad, grads = backwards[index](grad, need_input_grad=index > self._first_param_layer,
                                           out=out[index] or None)
            layer_grads[index] = grads
        if grad_out is not None:
            for spec in self.param_specs:
                written, destination = layer_grads[spec.layer_index][spec.name], out[spec.layer_index][spec.name]
                if written is not destination:
                    ctx.ops.copy_into(destination, written)
            return value, grad_out, output
        flat = [xp.reshape(layer_grads[spec.layer_index][spec.name], (-1,)) for spec in self.param_specs]
        flat = xp.concat(flat) if flat else xp.zeros_like(params)
        if self._compute_dtype is not None:
            flat = xp.astype(flat, self.dtype)
            if scale != 1.0:
                flat = flat / scale
        return value, flat, output

    def _backward_into(self, backwards, grad, grad_out):
        """The backward pass, each layer's gradient written into the flat ``grad_out`` as soon as
        it is computed (and then dropped)."""
        xp = self.xp
        for index in range(len(backwards) - 1, self._first_param_layer - 1, -1):
            grad, grads = backwards[index](grad, need_input_grad=index > self._first_param_layer)
            for spec in self.param_specs:
                if spec.layer_index == index:
                    grad_out[spec.offset:spec.offset + spec.size] = xp.reshape(grads[spec.name], (-1,))
        return grad_out

    def loss_and_grad(self, X: ArrayLike, y: ArrayLike, loss: Loss,
                      train: bool = False) -> tuple[float, dict[str, Any]]:
        """The mean loss on (X, y) and its exact gradient, keyed like the parameters of ``state_dict``.

        Args:
            X: (samples, in_features) inputs.
            y: targets, as ``loss`` takes them.
            loss: an ``mx.losses`` loss.
            train: run layers in training mode (dropout active, with the masks of the model's
                next training step; BatchNorm with the batch's statistics, its running ones left
                as they are). False gives a deterministic gradient.

        Returns:
            (loss, grads): a Python float and {key: array of the backend}.
        """
        self.check_loss(loss)
        x = checks.prepare_inputs(self, X)
        target = checks.prepare_targets(self, y, loss, x.shape[0])
        ctx = self._train_context() if train else self._context()
        value, flat, _ = self._loss_and_flat_grad(self.params, x, target, loss, ctx)
        if train:
            self.dropout_step += 1  # the next call draws fresh masks
        return float(value), self._unflatten(flat)

    def check_loss(self, loss: Loss) -> None:
        """Raise TypeError/ValueError where ``loss`` does not fit this model's output."""
        if not isinstance(loss, Loss):
            hint = " (did you pass the class instead of an instance?)" if isinstance(loss, type) else ""
            raise TypeError(f"loss must be an mx.losses loss, got {loss!r}{hint}")
        last = type(self.layers[-1])
        if loss.target_kind in ("class", "binary") and last in (Softmax, Sigmoid) and last is not loss.fuses_with:
            right = "CrossEntropy" if last is Softmax else "BinaryCrossEntropy"
            raise ValueError(f"the model ends in {last.__name__} but the loss is {type(loss).__name__}, which "
                             f"takes logits: use mx.losses.{right}() with a {last.__name__} output")
        if loss.target_kind == "class" and self.out_features < 2:
            raise ValueError(f"CrossEntropy needs >= 2 output features, the model has {self.out_features}; "
                             "for two classes with one output use BinaryCrossEntropy")

    # ------------------------------------------------------------------ parameters

    def _unflatten(self, flat) -> dict:
        xp = self.xp
        return {spec.key: xp.asarray(xp.reshape(flat[spec.offset:spec.offset + spec.size], spec.shape), copy=True)
                for spec in self.param_specs}

    def state_dict(self) -> dict[str, Any]:
        """Copies of the parameters: {"<layer index>.weight": (in, out), "<index>.bias": (out,), ...},
        and of the running statistics (``"<index>.running_mean"``, ``"<index>.running_var"`` of a
        BatchNorm), as PyTorch's ``state_dict`` holds its buffers."""
        tensors = self._unflatten(self.params)
        if self.running is None:
            return tensors
        xp, running = self.xp, self.running
        tensors.update({spec.key: xp.asarray(xp.reshape(running[spec.offset:spec.offset + spec.size], spec.shape),
                                             copy=True) for spec in self.running_specs})
        order = [spec.key for spec in sorted(self.param_specs + self.running_specs, key=lambda spec: spec.layer_index)]
        return {key: tensors[key] for key in order}  # (layer by layer, as PyTorch's)

    def load_state_dict(self, state_dict: Mapping[str, ArrayLike]) -> Sequential:
        """Replace the parameters (and running statistics) with ``state_dict`` (arrays of any
        backend), keyed as :meth:`state_dict` keys them.

        Raises:
            ValueError: missing or unexpected keys, non-finite values, or a negative running variance.
            ShapeError: a tensor whose shape differs from the model's.
        """
        expected = {spec.key for spec in self.param_specs + self.running_specs}
        given = set(state_dict)
        if given != expected:
            raise ValueError(f"state_dict keys do not match the model: missing {sorted(expected - given)}, "
                             f"unexpected {sorted(given - expected)}")
        flat = self._host_flat(state_dict, self.param_specs, self.num_parameters)
        running = None
        if self.running_specs:
            running = self._host_flat(state_dict, self.running_specs, self.num_running)
            for spec in self.running_specs:
                if spec.name != "running_mean" and np.any(running[spec.offset:spec.offset + spec.size] < 0):
                    raise ValueError(f"state_dict[{spec.key!r}] must be >= 0")
            running = self.backend.asarray(running, dtype=self.dtype)
        self._optimizer = None
        self._state = self._state._replace(params=self.backend.asarray(flat, dtype=self.dtype), opt_state=None,
                                           running=running)
        return self

    def _host_flat(self, state_dict, specs, size):
        """The flat host vector (this model's dtype) of the tensors of ``state_dict`` at ``specs``, checked."""
        flat = np.empty(size, dtype=self.dtype_name)
        for spec in specs:
            value = np.asarray(to_numpy(state_dict[spec.key]))
            if tuple(value.shape) != spec.shape:
                raise ShapeError(f"state_dict[{spec.key!r}] has shape {tuple(value.shape)} but layer "
                                 f"{spec.layer_index} ({self.layers[spec.layer_index]!r}) needs {spec.shape}")
            if value.dtype.kind not in "fiu" or not np.all(np.isfinite(value)):
                raise ValueError(f"state_dict[{spec.key!r}] must be finite real numbers")
            with np.errstate(over="ignore"):  # an overflow is reported below, naming the tensor
                flat[spec.offset:spec.offset + spec.size] = value.reshape(-1)
        self._check_cast(flat, "state_dict", specs)
        return flat

    def _check_cast(self, flat, source, specs=None):
        """ValueError naming the first tensor that ``flat`` (host, already in this model's
        dtype) holds as inf or NaN: a value too large for the dtype overflowed in the cast."""
        if np.all(np.isfinite(flat)):
            return
        for spec in self.param_specs if specs is None else specs:
            part = flat[spec.offset:spec.offset + spec.size]
            if not np.all(np.isfinite(part)):
                raise ValueError(f"{source} {spec.key!r} has values too large for {self.dtype_name} (largest "
                                 f"finite is {np.finfo(self.dtype_name).max:.3g}): they would become inf")

    def to(self, backend: BackendLike | None = None, device: Any = None, dtype: DTypeLike | None = None,
           precision: str | precisions.Precision | None = None) -> Sequential:
        """A copy with the same weights and generator states on another backend/device/dtype/precision
        (the precision is kept unless the dtype changes).

        Example:
            >>> import mlp_xp as mx
            >>> model = mx.Sequential(mx.Linear(2, 2), seed=0)
            >>> strict = model.to(backend="array_api_strict", dtype="float64")
            >>> strict.backend.name, strict.dtype_name
            ('array_api_strict', 'float64')
        """
        if backend is None:
            target = self.backend if device is None else self.backend._replace(device=device)
        else:
            target = resolve_backend(backend, device)
        if precision is None and (dtype is None or resolve_dtype_name(dtype) == self.dtype_name):
            precision = self.precision  # the same precision, unless the dtype changes
        clone = Sequential._skeleton(self.layers, target, dtype or self.dtype_name, self.seed, precision)
        with np.errstate(over="ignore"):
            host = to_numpy(self.params).astype(clone.dtype_name)
        clone._check_cast(host, "parameter")
        clone.params = target.asarray(host, dtype=clone.dtype)
        if self.running is not None:
            with np.errstate(over="ignore"):
                running = to_numpy(self.running).astype(clone.dtype_name)
            clone._check_cast(running, "running statistic", clone.running_specs)
            clone.running = target.asarray(running, dtype=clone.dtype)
        clone.shuffle_rng = copy.deepcopy(self.shuffle_rng)
        clone.dropout_rng = copy.deepcopy(self.dropout_rng)
        clone.dropout_masks, clone.dropout_step = self.dropout_masks, self.dropout_step
        clone.data, clone.epoch = self.data, self.epoch
        return clone

    # ------------------------------------------------------------------ training API

    @property
    def optimizer(self):
        """The optimizer whose state this model holds (the last one ``fit`` used, or one loaded
        with the model), or None. Pass it to ``fit`` again to continue its state."""
        return self._optimizer

    @property
    def dropout_masks(self) -> str:
        """Where Dropout masks come from in training: "device" (default: a hash of the seed, the
        step number and the element on the device, no copy from the host) or "host" (drawn from
        ``dropout_rng`` on the host and copied up each step). Both give the same masks on every
        backend."""
        return self._dropout_masks

    @dropout_masks.setter
    def dropout_masks(self, value):
        if value not in ("device", "host"):
            raise ValueError(f'dropout_masks must be "device" or "host", got {value!r}')
        self._dropout_masks = value

    @property
    def record(self):
        """The model's one record of training state (a :class:`mlp_xp.train.step.TrainState`):
        what :attr:`params`, :attr:`optimizer_state` and :attr:`dropout_step` read, and what
        :meth:`set_train_state` replaces."""
        return self._state

    @property
    def params(self):
        """The flat parameter vector (one array of the backend; ``state_dict()`` gives copies
        per tensor). ``fit`` trains it in place."""
        return self._state.params

    @params.setter
    def params(self, value):
        self._state = self._state._replace(params=value)

    @property
    def running(self):
        """The flat vector of running statistics (BatchNorm's means and variances; see
        :attr:`running_specs`), or None for a model that keeps none. ``fit`` replaces it after
        every step that lands; ``state_dict()`` gives copies per tensor."""
        return self._state.running

    @running.setter
    def running(self, value):
        self._state = self._state._replace(running=value)

    @property
    def optimizer_state(self):
        """The state of :attr:`optimizer` (its NamedTuple: moments on the device, ``count`` the
        updates done), or None. ``fit`` continues from it."""
        return self._state.opt_state

    @optimizer_state.setter
    def optimizer_state(self, state):
        self._state = self._state._replace(opt_state=state)

    @property
    def dropout_step(self) -> int:
        """How many training steps this model took (the key of the next step's Dropout masks)."""
        step = self._state.step
        return step if isinstance(step, int) else int(step)  # (a device count: one read)

    @dropout_step.setter
    def dropout_step(self, value):
        self._state = self._state._replace(step=int(value))

    def set_optimizer(self, optimizer: Optimizer | None, state: Any = None) -> None:
        """Hold ``optimizer`` and its ``state`` (None: to be initialised by the next ``fit``)."""
        self._optimizer = optimizer
        self._state = self._state._replace(opt_state=state)

    @property
    def loss_scale(self):
        """The float16 loss scale (:class:`mlp_xp.train.precision.LossScale`: scale and good steps in
        a row); 1.0 without loss scaling."""
        return self._loss_scale

    @loss_scale.setter
    def loss_scale(self, value):
        self._loss_scale = value

    def train_state(self, optimizer: Optimizer | None = None, metrics: Sequence[Metric] = ()) -> TrainState:
        """A :class:`mlp_xp.train.step.TrainState` starting from this model: its parameters, the state
        of ``optimizer`` (default :attr:`optimizer`; a fresh state for another optimizer or where
        none is held), its step count. :meth:`set_train_state` puts one back."""
        from .train.step import init_state

        optimizer = optimizer or self._optimizer
        if optimizer is None:
            raise ValueError("train_state needs an optimizer: pass one, or fit the model first")
        held = self.optimizer_state if optimizer is self._optimizer else None
        return init_state(self, optimizer, metrics, held)

    def set_train_state(self, state: TrainState, optimizer: Optimizer | None = None) -> None:
        """Hold ``state`` (a TrainState) as the model's record: its parameters, optimizer state
        and step count, in one assignment (read the guard first, ``bool(state.guard.ok)``: the
        parameters of a failed step are the frozen ones)."""
        if optimizer is not None:
            self._optimizer = optimizer
        self._state = state

    def compiled_step(self, key, objects, make):
        """A compiled training step kept on the model for later fits (compiling one again costs
        JAX seconds): ``make()``'s, unless one was kept under ``key`` for these same ``objects``
        (the loss and optimizer it was made with). At most four are kept."""
        cached = self._compiled_steps.get(key)
        if cached is None or any(kept is not given for kept, given in zip(cached[0], objects)):
            if len(self._compiled_steps) >= 4:
                self._compiled_steps.clear()
            cached = self._compiled_steps[key] = (tuple(objects), make())
        return cached[1]

    def forward(self, x: Any, params: Any = None, loss: Loss | None = None, stop: int | None = None) -> Any:
        """The output of the model for ``x`` (an array of this backend, already checked), in
        evaluation mode.

        Args:
            x: (batch, in_features) on the model's backend and device.
            params: a flat parameter vector (default: the model's).
            loss: the loss the output goes to: a Softmax/Sigmoid folded into it is left out, so
                the output is what ``loss.value`` takes (logits).
            stop: run only ``layers[:stop]``.
        """
        if loss is not None:
            stop = self._loss_forward_stop(loss)
        return self._forward(self.params if params is None else params, x, self._context(), stop)[0]

    def value_and_grad(self, x: Any, target: Any, loss: Loss, params: Any = None, train: bool = False,
                       step: int | None = None, rows: int | None = None, start: int = 0, grad_out: Any = None,
                       scale: Any = 1.0) -> tuple[Any, Any, Any]:
        """The mean loss of one batch, its gradient as one flat vector and the output the loss was
        computed from, all on the device: the seam a training step is built on.

        Args:
            x, target: the batch (arrays of this backend; see ``checks.prepare_*``).
            loss: an ``mx.losses`` loss.
            params: a flat parameter vector (default: the model's).
            train: training mode: Dropout active with the masks of training step ``step``
                (default: the model's next step).
            rows, start: this process holds rows ``start:start + batch`` of a batch of ``rows``
                (data-parallel): it draws the masks the whole batch would.
            grad_out: a flat buffer the gradient is written into (mutable Ops only).
            scale: the loss scale of mixed precision.

        Returns:
            (loss, flat gradient, output), device arrays.
        """
        return self.value_grad_and_running(x, target, loss, params, train, step, rows, start, grad_out, scale)[:3]

    def value_grad_and_running(self, x: Any, target: Any, loss: Loss, params: Any = None, train: bool = False,
                               step: int | None = None, rows: int | None = None, start: int = 0,
                               grad_out: Any = None, scale: Any = 1.0,
                               running: Any = None) -> tuple[Any, Any, Any, Any]:
        """:meth:`value_and_grad`, and the running statistics updated by the batch (BatchNorm's,
        in training; None for a model that keeps none, or out of training): what a training
        step commits under its guard. ``running``: the statistics to start from (default: the
        model's)."""
        ctx = self._train_context(step, rows, start) if train else self._context()
        collect = train and self.running_specs
        if collect:
            ctx = ctx.collecting()
        value, grad, output = self._loss_and_flat_grad(self.params if params is None else params, x, target, loss,
                                                       ctx, grad_out, scale, running)
        return value, grad, output, (self._running_from_updates(ctx.updates) if collect else None)

    def fit(self, X: ArrayLike, y: ArrayLike | None, loss: Loss | str, optimizer: Optimizer | str, epochs: int = 1,
            batch_size: int = 32, shuffle: bool = True, validation_data: Sequence[ArrayLike] | None = None,
            validation_split: float | None = None, metrics: Metrics | None = None,
            callbacks: Iterable[object] | None = None, verbose: int | Literal["auto"] = "auto",
            on_nonfinite: Literal["raise", "skip_batch", "stop"] = "raise", resume_from: PathLike | None = None,
            distributed: str | Any | None = None, sync_every: int | None = None,
            sample_weight: ArrayLike | None = None,
            class_weight: Mapping[Any, float] | Literal["balanced"] | None = None,
            weighted_metrics: Metrics | None = None) -> History:
        """Train this model in place with minibatch gradient steps.

        Every input, argument and callback configuration is checked before the first step.
        Calling ``fit`` again with the same optimizer object continues its state (moments, step
        count).

        Args:
            X: (samples, in_features) inputs: numpy, lists, or arrays of any backend; or an
                :class:`mlp_xp.data.datasets.Batches` (then ``y`` is None) to stream host data to the
                device one batch at a time, for data larger than device memory.
            y: targets as ``loss`` takes them.
            loss: an ``mx.losses`` loss.
            optimizer: an ``mx.optim`` optimizer. A schedule as its ``lr`` that counts epochs
                (``per="epoch"``) or has no ``total_steps`` is completed from this run's length.
            epochs: passes over the data.
            batch_size: samples per step (the last batch may be smaller); with a Batches, its own
                batch_size applies.
            shuffle: reshuffle each epoch with the model's seeded generator.
            validation_data: optional (X_val, y_val), evaluated after each epoch.
            validation_split: or a fraction of (X, y) to hold out for validation, drawn with the
                model's seed (stratified by class for integer labels); not with a Batches.
            metrics: more metrics to log, by name or :mod:`mlp_xp.train.metrics` object: "mae", "mse",
                "rmse", "r2" (regression), "accuracy", "top_k_accuracy" / "top_3_accuracy"
                (classification). Accuracy is always logged for classification losses.
            callbacks: ``mx.callbacks`` objects, or any with some of the hooks listed in
                :mod:`mlp_xp.train.callbacks` (Keras-style signatures are accepted). Epochs and steps
                are numbered from 1.
            verbose: 1 a tqdm progress bar per epoch on stderr (samples/s, running loss, then
                validation metrics; in a Jupyter notebook a widget with ipywidgets installed, else
                the same text bar as on a terminal, with no warning), 2 one line per epoch on
                stdout, 0 silent. "auto" (the default) is 1 when stderr is a terminal or in a
                Jupyter notebook (an IPython ``ZMQInteractiveShell`` kernel: Jupyter Notebook and Lab,
                VS Code), and 0 otherwise (stderr redirected to a file or pipe: scripts in the
                background, CI, pytest). With ``distributed``, only the main process prints.
            on_nonfinite: what a NaN/inf loss, gradient or parameter does: "raise" (default)
                raises :class:`~mlp_xp.NonFiniteError`; "skip_batch" drops that batch's update and
                goes on (counted in ``history["skipped_batches"]``); "stop" ends training and
                records the reason in ``history.stop_reason``. In every case the model keeps its
                last finite weights.
            resume_from: a checkpoint written by ``mx.save(model, path, optimizer=...)`` (or
                ``callbacks.ModelCheckpoint``): its weights, optimizer state and random-generator
                states are loaded first (all or nothing), so training continues exactly where it
                stopped. ``epochs`` more epochs run, numbered after the checkpoint's; a schedule that
                leaves its length open continues the checkpoint's (see
                :func:`mlp_xp.optim.schedules.continue_schedule`).
            distributed: data-parallel training over processes (see :mod:`mlp_xp.train.distributed`):
                None (one process), "auto" (MPI when started by ``mpiexec`` with several
                processes), "mpi", "nccl", or an engine object. Each process must pass the same
                data, arguments and model (compared at the start, in one collective: a difference is a
                ValueError on every process); one all-reduce per step keeps them identical.
            sync_every: on a device backend, also read the loss and the non-finite guard every this
                many steps (None: only at each epoch's end and at progress-bar refreshes). Each
                read waits for the device; between reads the steps queue up without a host
                round-trip. On numpy reading costs nothing and happens after every step, as it does
                with ``on_nonfinite="skip_batch"``, float16 loss scaling, or an ``on_batch_end``
                callback.
            sample_weight: one weight >= 0 per row of X (Keras's meaning: a batch's loss is
                ``sum_i w_i l_i / rows``, each row's loss times its weight; see
                :mod:`mlp_xp.train.weights`). In-memory data only; not with ``validation_split``.
            class_weight: ``{label: weight}`` for every class of the data, or ``"balanced"``
                (``rows / (classes * rows of the class)``, as scikit-learn's); classification losses
                with integer labels; multiplies ``sample_weight``. The metrics of ``metrics`` and the
                validation loss stay unweighted (as Keras's).
            weighted_metrics: metrics (names or objects, as ``metrics``) logged on the training
                batches weighted by the rows' weights, as ``"weighted_<name>"`` (Keras's
                ``weighted_metrics``: each row's value times its weight over the sum of the weights,
                as scikit-learn's metrics with ``sample_weight``); without weights every row weighs 1.

        Returns:
            A :class:`History`: per epoch "loss", "accuracy" (classification), each metric,
            "val_..." for each of those with validation, and "lr" (the learning rate of the
            epoch's last update).

        Raises:
            ValueError / ShapeError / TypeError: bad inputs, arguments or callbacks, before any step.
            RuntimeError: the model is being trained by another fit (another thread's, or a callback's).
            NonFiniteError: with ``on_nonfinite="raise"``; names the epoch, step and the first
                non-finite parameter or activation. The optimizer state is reset. On a device
                backend it is raised at the first read after the failing step (the updates after
                it were frozen on the device, so nothing is lost in between).
        """
        return loop.fit(self, X, y, loss, optimizer, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                            validation_data=validation_data, validation_split=validation_split, metrics=metrics,
                            callbacks=callbacks, verbose=verbose, on_nonfinite=on_nonfinite,
                            resume_from=resume_from, distributed=distributed, sync_every=sync_every,
                            sample_weight=sample_weight, class_weight=class_weight,
                            weighted_metrics=weighted_metrics)

    def save(self, path: PathLike, optimizer: Optimizer | None = None) -> None:
        """Write this model (and ``optimizer``'s state) to a file: :func:`mlp_xp.save`."""
        checkpoint.save(self, path, optimizer)

    def export_onnx(self, path: PathLike, opset: int | None = None, include_scaler: bool = False) -> None:
        """Write this model to an ONNX file computing what ``predict`` does: :func:`mlp_xp.export.export_onnx`."""
        from . import export

        export.export_onnx(self, path, opset=opset, include_scaler=include_scaler)

    def to_torch(self) -> Any:
        """An equivalent ``torch.nn.Sequential`` (a copy, in eval mode): :func:`mlp_xp.export.to_torch`."""
        from . import export

        return export.to_torch(self)

    def load_checkpoint(self, path: PathLike, optimizer: Optimizer, steps_per_epoch: int | None = None,
                        updates: int | None = None) -> Callable[[], Any]:
        """Put the weights, generator states and ``optimizer``'s state of a file written with
        ``optimizer=`` into this model (same architecture): what ``fit(resume_from=path)`` does
        before its first step (all or nothing; see :func:`mlp_xp.checkpoint.resume`, and
        :func:`mlp_xp.optim.schedules.continue_schedule` for ``steps_per_epoch`` and ``updates``,
        the resumed run's). Returns a function that undoes it."""
        return checkpoint.resume(self, path, optimizer, steps_per_epoch=steps_per_epoch, updates=updates)

    def evaluate(self, X: ArrayLike, y: ArrayLike, loss: Loss | str, batch_size: int = 1024,
                 metrics: Metrics | None = None) -> dict[str, float]:
        """Mean loss over (X, y) in evaluation mode, accuracy for classification losses, and
        each of ``metrics`` (see :mod:`mlp_xp.train.metrics`).

        A model ending in Softmax/Sigmoid evaluated with the matching cross-entropy is scored
        from its logits, exactly as in training. ``loss`` may be a name, as in ``fit``
        ("cross_entropy", "mse", ...).

        Args:
            X: (samples, in_features) inputs: numpy, lists, or arrays of any backend.
            y: targets as ``loss`` takes them.
            loss: an ``mx.losses`` loss, or its name.
            batch_size: rows per forward pass (it bounds the memory used).
            metrics: more metrics, by name or :mod:`mlp_xp.train.metrics` object, as in ``fit``.

        Returns:
            {"loss": float} plus {"accuracy": float} for CrossEntropy / BinaryCrossEntropy, plus
            one float per metric.

        Raises:
            NonFiniteError: an output or the loss is NaN or infinite (the inputs are checked finite,
                so the forward pass overflowed, e.g. float16 on inputs beyond its range); names the
                first such row and the first layer whose output is not finite, as ``fit`` does.
        """
        return loop.evaluate(self, X, y, loss, batch_size=batch_size, metrics=metrics)

    def predict(self, X: ArrayLike, batch_size: int = 1024) -> Any:
        """The model's outputs (probabilities after Softmax/Sigmoid) for X, in evaluation mode.

        Args:
            X: (samples, in_features) inputs: numpy, lists, or arrays of any backend.
            batch_size: rows per forward pass (it bounds the memory used).

        Returns:
            An array of the model's backend, shape (samples, out_features); ``mx.to_numpy``
            turns it into numpy.

        Raises:
            NonFiniteError: an output is NaN or infinite (the inputs are checked finite, so the
                forward pass overflowed, e.g. float16 on inputs beyond its range); names the first
                such row and the first layer whose output is not finite, as ``fit`` does. The check
                costs one reduction and one read of the device per call.
        """
        return loop.predict(self, X, batch_size=batch_size)

    def __call__(self, X: ArrayLike) -> Any:
        """``model(X)`` is ``model.predict(X)``: outputs in evaluation mode."""
        return self.predict(X)


def load(path: PathLike, backend: BackendLike = "numpy", device: Any = None,
         dtype: DTypeLike | None = None) -> Sequential:
    """Rebuild a model saved by :func:`mlp_xp.save`.

    Args:
        path: the file.
        backend, device: where to put the model (any backend, whatever it was saved from).
        dtype: "float32" / "float64"; None keeps the saved dtype.

    Returns:
        The :class:`~mlp_xp.Sequential`, with its weights and random generators restored; if an
        optimizer was saved, ``model.optimizer`` is it, with its state, ready for ``fit``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an mlp_xp safetensors file, truncated, corrupt, or inconsistent.
    """
    with io.open_record(path) as record, io.metadata_errors(path):  # (one open file: one snapshot)
        metadata = record.metadata
        seed = metadata["seed"]
        if not seed.isdigit():
            raise ValueError(f"the seed must be an int >= 0, got {seed!r}")
        precision, _ = checkpoint.precision_from_json(metadata.get("precision"))
        dtype = dtype or metadata["dtype"]
        model = Sequential._skeleton(checkpoint.build_layers(metadata["layers"]), resolve_backend(backend, device),
                                     dtype, int(seed), precision if dtype == "float32" else None)
        tensors = checkpoint.restore_weights(model, record)
        if "data" in metadata:
            model.data = checkpoint.data_from_json(metadata["data"], model)
        if "optimizer" in metadata:
            checkpoint.restore_optimizer(model, tensors, metadata["optimizer"])
    return model
