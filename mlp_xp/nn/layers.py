"""Layers: configuration objects with analytic forward and backward passes.

A layer holds no parameters and no state; the model owns one flat parameter vector and
hands each layer its views. Every layer implements:

- ``output_features(in_features) -> int`` (raises ``ValueError`` on a size it cannot take;
  the model turns that into a :class:`~mlp_xp.ShapeError` naming the layer);
- ``param_shapes(in_features) -> {name: shape}`` and
  ``init_params(rng, in_features, family) -> {name: numpy.ndarray}`` (host, float64);
- ``forward(params, x, ctx) -> (y, backward)`` where ``backward(dy, need_input_grad=True,
  out=None) -> (dx, {name: grad})`` is a closure over what the forward pass computed (Thinc
  style). ``out``, given only when ``ctx.ops`` writes in place (``ops.mutable``), holds
  preallocated views of the model's flat gradient that a layer may write its gradients into.

Shapes: ``x`` is (batch, in_features) and ``y`` is (batch, out_features) for every layer.
All arithmetic goes through ``ctx.xp``, an Array API namespace.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Callable, SupportsIndex

from .. import _math
from . import initializers
from ..ops import GenericOps

__all__ = [
    "Layer", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "ELU",
    "Softplus", "Identity", "Softmax", "Dropout", "LayerNorm", "BatchNorm", "BatchNorm1d", "ForwardContext",
    "ACTIVATIONS",
]


class ForwardContext:
    """What a forward pass needs besides parameters and input.

    Attributes:
        xp: the Array API namespace.
        train: True in training (dropout active), False in evaluation.
        uniform: ``uniform(shape, dtype) -> array`` of U[0, 1) samples on the backend: the
            host-drawn masks of Dropout in training (``model.dropout_masks = "host"``).
        ops: the :mod:`mlp_xp.ops` the layers compute with: the model's (its backend's fast
            overrides, or the generic reference with its precision's matrix product); a context
            built without one gets the generic reference of ``xp``.
        keep: ``keep(shape, p) -> bool array``: Dropout's keep-mask drawn on the device (a
            counter-based hash of the step's key); preferred to ``uniform`` when set.
        updates: a list, in a training step of a model with running statistics (BatchNorm):
            each such layer appends the ``{name: array}`` of its updated statistics, in layer
            order; None elsewhere (a gradient query, a layer run on its own), where they are
            not updated.
    """

    __slots__ = ("xp", "train", "uniform", "ops", "keep", "updates")

    def __init__(self, xp: Any, train: bool = False, uniform: Callable[..., Any] | None = None, ops: Any = None,
                 keep: Callable[..., Any] | None = None, updates: list[dict[str, Any]] | None = None) -> None:
        if ops is None:
            ops = GenericOps(xp)
        self.xp, self.train, self.uniform, self.ops, self.keep = xp, train, uniform, ops, keep
        self.updates = updates

    def collecting(self) -> "ForwardContext":
        """A copy whose ``updates`` is a fresh list (contexts are shared between steps)."""
        return ForwardContext(self.xp, self.train, self.uniform, self.ops, self.keep, [])


class Layer:
    """Base class. Subclasses list their constructor arguments in ``_config_keys``."""

    _config_keys: tuple = ()
    #: initializer family this layer asks of the Linear before it ("he", "glorot"), or
    #: None if it is transparent (Dropout, LayerNorm) and the next layer decides.
    init_family: str | None = None

    def output_features(self, in_features: int) -> int:
        return in_features

    def param_shapes(self, in_features: int) -> dict:
        return {}

    def init_params(self, rng, in_features: int, family: str) -> dict:
        return {}

    def running_shapes(self, in_features: int) -> dict:
        """{name: shape} of the running statistics this layer keeps (not trained by the
        optimizer; BatchNorm's ``running_mean`` and ``running_var``). The model keeps them in a
        second flat vector (:attr:`~mlp_xp.Sequential.running`) and hands them to ``forward``
        among ``params``."""
        return {}

    def init_running(self, in_features: int) -> dict:
        """{name: numpy.ndarray} of the running statistics' initial values (host, float64)."""
        return {}

    def forward(self, params: dict, x, ctx: ForwardContext):
        raise NotImplementedError

    def config(self) -> dict:
        """The constructor arguments that rebuild this layer."""
        return {key: getattr(self, key) for key in self._config_keys}

    def __repr__(self):
        args = ", ".join(f"{key}={value!r}" for key, value in self.config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.config() == other.config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.config().items(), key=str))))


def _check_features(value, what):
    """A positive int; numpy integers (``np.int64(4)``) are ints too."""
    try:
        number = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        number = None
    if number is None or number < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(number)


def _check_finite_number(value, what, minimum=None, strictly=False):
    """A finite float (>= or > ``minimum``), for a layer hyperparameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    too_small = minimum is not None and (number <= minimum if strictly else number < minimum)
    if not math.isfinite(number) or too_small:
        bound = "" if minimum is None else f" {'>' if strictly else '>='} {minimum}"
        raise ValueError(f"{what} must be a finite number{bound}, got {value!r}")
    return number


class Linear(Layer):
    """Affine map ``y = x @ W + b`` with ``W`` of shape (in_features, out_features).

    Args:
        in_features: size of each input row; None to take it from the layer before.
        out_features: size of each output row.
        bias: add a learned bias ``b`` of shape (out_features,).
        init: initializer name or callable for ``W`` (see :mod:`mlp_xp.nn.initializers`);
            None picks He or Glorot from the activation that follows (or from ``activation``).
        activation: Keras's habit: the name of an activation applied to the output, one of
            :data:`ACTIVATIONS` ("relu", "tanh", "gelu", ...), or None / "linear" for none.
            ``Linear(4, 8, activation="relu")`` computes what ``Linear(4, 8), ReLU()`` computes,
            from the same initial weights, as one layer (one entry in ``model.layers``,
            ``summary`` and ``layer_statistics``); the name is saved with the model. For
            probabilities at the output end the model with ``Softmax()`` / ``Sigmoid()`` layers
            instead, which the cross-entropies fuse with (``fit`` refuses a last Linear with
            ``activation="sigmoid"`` and a cross-entropy loss, which takes logits).

    Shape:
        x: (batch, in_features) -> y: (batch, out_features)

    Raises:
        ValueError: a bad size, or an unknown initializer or activation name (the error lists
            the names).

    Example:
        >>> import mlp_xp as mx
        >>> mx.Linear(4, 8, activation="relu")
        Linear(in_features=4, out_features=8, bias=True, init=None, activation='relu')
    """

    _config_keys = ("in_features", "out_features", "bias", "init")
    #: the activation's name and layer (class defaults: a Linear pickled before they existed has none)
    activation = None
    _activation = None

    def __init__(self, in_features: SupportsIndex | None, out_features: SupportsIndex, bias: bool = True,
                 init: str | initializers.Initializer | None = None, activation: str | None = None) -> None:
        self.in_features = None if in_features is None else _check_features(in_features, "in_features")
        self.out_features = _check_features(out_features, "out_features")
        self.bias = bool(bias)
        if init is not None:
            initializers.get(init)  # fail now on an unknown name, not at build time
        self.init = init
        if activation is not None and not isinstance(activation, str):
            raise ValueError(f"Linear activation must be a name, one of {sorted(ACTIVATIONS)}, or None; got "
                             f"{activation!r} (for a layer object, put it after the Linear in the Sequential)")
        if activation is not None and activation.lower() == "linear":  # (Keras's name for none)
            activation = None
        if activation is not None and activation.lower() not in ACTIVATIONS:
            raise ValueError(f"unknown Linear activation {activation!r}: use one of {sorted(ACTIVATIONS)} or None "
                             "(softmax: end the model with mx.Softmax(), which CrossEntropy fuses with)")
        self.activation = None if activation is None else activation.lower()
        self._activation = None if activation is None else ACTIVATIONS[self.activation]()

    def config(self):
        """The constructor arguments; ``activation`` only when set (files and reprs as before it)."""
        config = super().config()
        if self.activation is not None:
            config["activation"] = self.activation
        return config

    def output_features(self, in_features):
        if self.in_features is not None and in_features != self.in_features:
            raise ValueError(f"expects input of shape (batch, {self.in_features}) "
                             f"but receives (batch, {in_features})")
        return self.out_features

    def param_shapes(self, in_features):
        shapes = {"weight": (in_features, self.out_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def init_params(self, rng, in_features, family):
        if self._activation is not None and self._activation.init_family is not None:
            family = self._activation.init_family  # (as the model picks it for Linear, activation layer)
        init = initializers.get(self.init) if self.init is not None else initializers.FAMILY_DEFAULTS[family]
        params = {"weight": init(rng, (in_features, self.out_features), in_features, self.out_features)}
        if self.bias:
            params["bias"] = initializers.zeros(rng, (self.out_features,), in_features, self.out_features)
        return params

    def forward(self, params, x, ctx):
        ops, weight, bias = ctx.ops, params["weight"], params.get("bias")
        y = ops.linear(x, weight, bias)
        activation_backward = None
        if self._activation is not None:
            y, activation_backward = self._activation.forward({}, y, ctx)

        def backward(dy, need_input_grad=True, out=None):
            if activation_backward is not None:
                dy = activation_backward(dy)[0]
            return ops.linear_backward(x, weight, dy, bias is not None, need_input_grad, out)

        return y, backward


class _Elementwise(Layer):
    """An activation applied elementwise: subclasses give ``_forward(xp, x) -> (y, dy_dx)``."""

    def forward(self, params, x, ctx):
        y, derivative = self._forward(ctx.xp, x)

        def backward(dy, need_input_grad=True, out=None):
            return derivative(dy), {}

        return y, backward


class ReLU(_Elementwise):
    """``max(x, 0)``. Gradient 0 at x <= 0. Default init before it: He.

    Shape: (batch, features) -> (batch, features)
    """

    init_family = "he"

    def forward(self, params, x, ctx):
        xp = ctx.xp
        ops = ctx.ops

        def backward(dy, need_input_grad=True, out=None):
            if ops is not None:
                return ops.relu_backward(x, dy), {}
            # a multiply by the 0/1 mask is several times faster than where(x > 0, dy, 0.0)
            return dy * xp.astype(x > 0, dy.dtype), {}

        return xp.maximum(x, 0.0), backward


class LeakyReLU(_Elementwise):
    """``x`` for x > 0, ``negative_slope * x`` otherwise. Default init before it: He.

    Args:
        negative_slope: slope for negative inputs.
    """

    _config_keys = ("negative_slope",)
    init_family = "he"

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = _check_finite_number(negative_slope, "LeakyReLU negative_slope")

    def _forward(self, xp, x):
        slope = self.negative_slope
        positive = x > 0
        return xp.where(positive, x, slope * x), lambda dy: xp.where(positive, dy, slope * dy)


class Sigmoid(_Elementwise):
    """``1 / (1 + exp(-x))``, computed without overflow. Default init before it: Glorot.

    Trained with :class:`~mlp_xp.nn.losses.BinaryCrossEntropy` as the last layer, it is fused
    with the loss (the loss is computed from the logits before it).
    """

    init_family = "glorot"

    def _forward(self, xp, x):
        y = _math.sigmoid(xp, x)
        return y, lambda dy: dy * (y * (1.0 - y))


class Tanh(_Elementwise):
    """``tanh(x)``. Default init before it: Glorot."""

    init_family = "glorot"

    def _forward(self, xp, x):
        y = xp.tanh(x)
        return y, lambda dy: dy * (1.0 - y * y)


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


class GELU(_Elementwise):
    """GELU, tanh form: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Equal to PyTorch's ``GELU(approximate="tanh")``; the Array API has no ``erf`` for the
    exact form. Default init before it: He.
    """

    init_family = "he"

    def _forward(self, xp, x):
        t = xp.tanh(_GELU_C * (x + _GELU_A * (x * x * x)))
        y = 0.5 * x * (1.0 + t)

        def derivative(dy):
            inner_grad = _GELU_C * (1.0 + (3.0 * _GELU_A) * (x * x))
            return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * inner_grad)

        return y, derivative


class SiLU(_Elementwise):
    """``x * sigmoid(x)`` (a.k.a. swish). Default init before it: He."""

    init_family = "he"

    def _forward(self, xp, x):
        s = _math.sigmoid(xp, x)
        return x * s, lambda dy: dy * (s * (1.0 + x * (1.0 - s)))


class ELU(_Elementwise):
    """``x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise. Default init before it: He.

    Args:
        alpha: the value approached for large negative inputs is ``-alpha``.
    """

    _config_keys = ("alpha",)
    init_family = "he"

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = _check_finite_number(alpha, "ELU alpha")

    def _forward(self, xp, x):
        alpha = self.alpha
        positive = x > 0
        y = xp.where(positive, x, alpha * xp.expm1(xp.minimum(x, 0.0)))
        return y, lambda dy: xp.where(positive, dy, dy * (y + alpha))


class Softplus(_Elementwise):
    """``log(1 + exp(x))``, computed stably for any finite x. Default init before it: He."""

    init_family = "he"

    def _forward(self, xp, x):
        return _math.softplus(xp, x), lambda dy: dy * _math.sigmoid(xp, x)


class Identity(_Elementwise):
    """``y = x``. Default init before it: Glorot."""

    init_family = "glorot"

    def _forward(self, xp, x):
        return x, lambda dy: dy


class Softmax(_Elementwise):
    """Softmax over the features of each row. Default init before it: Glorot.

    Trained with :class:`~mlp_xp.nn.losses.CrossEntropy` as the last layer, it is fused with
    the loss: training computes log-softmax from the logits before it, so there is no
    log(0); ``predict`` still returns probabilities.
    """

    init_family = "glorot"

    def _forward(self, xp, x):
        y = _math.softmax(xp, x)

        def derivative(dy):
            return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))

        return y, derivative


class Dropout(Layer):
    """Zeroes each input with probability ``p`` in training and scales the rest by 1/(1-p).

    The identity in evaluation (``predict``, ``evaluate``). Masks are drawn on the device from
    a hash of the model seed, the step number and the element index, so a seed fixes them
    and no mask is copied from the host; ``model.dropout_masks = "host"`` draws them from the
    model's host generator instead (identical on every backend).

    Args:
        p: drop probability, 0 <= p < 1.
    """

    _config_keys = ("p",)

    def __init__(self, p: float = 0.5) -> None:
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout p must be a number in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, params, x, ctx):
        if not ctx.train or self.p == 0.0:
            return x, lambda dy, need_input_grad=True, out=None: (dy, {})
        if ctx.keep is not None:
            keep = ctx.keep(x.shape, self.p)
        elif ctx.uniform is not None:
            keep = ctx.uniform(x.shape, x.dtype) >= self.p
        else:
            raise RuntimeError("Dropout in training needs a random source (ForwardContext.keep or uniform)")
        keep = ctx.ops.dropout_multiplier(keep, self.p, x.dtype)

        def backward(dy, need_input_grad=True, out=None):
            return dy * keep, {}

        return x * keep, backward


class LayerNorm(Layer):
    """Normalises each row to zero mean and unit variance, then scales and shifts.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` over the features of each row;
    ``weight`` starts at ones and ``bias`` at zeros (shape (features,) each), as in PyTorch.
    The arguments are in PyTorch's order, so ``LayerNorm(64)`` is ``torch.nn.LayerNorm(64)``.

    Args:
        normalized_shape: the number of features (an int or a one-element tuple), checked
            against the layer's input when the model is built; None takes it from the input.
        eps: added to the variance; a finite number > 0.
        elementwise_affine: learn ``weight`` and ``bias``.

    Shape:
        x: (batch, features) -> y: (batch, features)

    Example:
        >>> import mlp_xp as mx
        >>> mx.Sequential(mx.Linear(4, 8), mx.LayerNorm(8), mx.ReLU()).layers[1]
        LayerNorm(normalized_shape=8, eps=1e-05, elementwise_affine=True)
    """

    _config_keys = ("normalized_shape", "eps", "elementwise_affine")

    def __init__(self, normalized_shape: SupportsIndex | tuple[SupportsIndex] | None = None, eps: float = 1e-5,
                 elementwise_affine: bool = True) -> None:
        if isinstance(normalized_shape, (tuple, list)):
            if len(normalized_shape) != 1:
                raise ValueError(f"LayerNorm normalizes the last dimension only: normalized_shape must be an int "
                                 f"or a one-element tuple, got {normalized_shape!r}")
            normalized_shape = normalized_shape[0]
        self.normalized_shape = (None if normalized_shape is None
                                 else _check_features(normalized_shape, "LayerNorm normalized_shape"))
        self.eps = _check_finite_number(eps, "LayerNorm eps", minimum=0.0, strictly=True)
        self.elementwise_affine = bool(elementwise_affine)

    def output_features(self, in_features):
        if self.normalized_shape is not None and in_features != self.normalized_shape:
            raise ValueError(f"normalizes {self.normalized_shape} features but receives (batch, {in_features})")
        return in_features

    def param_shapes(self, in_features):
        return {"weight": (in_features,), "bias": (in_features,)} if self.elementwise_affine else {}

    def init_params(self, rng, in_features, family):
        if not self.elementwise_affine:
            return {}
        shape = (in_features,)
        return {"weight": initializers.ones(rng, shape, in_features, in_features),
                "bias": initializers.zeros(rng, shape, in_features, in_features)}

    def forward(self, params, x, ctx):
        xp = ctx.xp
        centered = x - xp.mean(x, axis=-1, keepdims=True)
        inv_std = 1.0 / xp.sqrt(xp.mean(centered * centered, axis=-1, keepdims=True) + self.eps)
        x_hat = centered * inv_std
        y = x_hat * params["weight"] + params["bias"] if self.elementwise_affine else x_hat

        def backward(dy, need_input_grad=True, out=None):
            grads = {}
            if self.elementwise_affine:
                grads = {"weight": xp.sum(dy * x_hat, axis=0), "bias": xp.sum(dy, axis=0)}
                dy = dy * params["weight"]
            dx = None
            if need_input_grad:
                dx = inv_std * (dy - xp.mean(dy, axis=-1, keepdims=True)
                                - x_hat * xp.mean(dy * x_hat, axis=-1, keepdims=True))
            return dx, grads

        return y, backward


class BatchNorm(Layer):
    """Batch normalisation over the rows of a batch, for MLPs (PyTorch's ``BatchNorm1d`` on
    (batch, features) input; ``mx.BatchNorm1d`` is this class).

    In training each feature is normalised with the batch's mean and (biased) variance,
    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, and the running statistics move
    towards the batch's: ``running = (1 - momentum) * running + momentum * batch`` (the
    variance unbiased, ``n / (n - 1)``), as in PyTorch. In evaluation (``predict``,
    ``evaluate``, validation) the running statistics are used instead, so a row's output does
    not depend on the rest of its batch. ``weight`` starts at ones and ``bias`` at zeros; the
    running mean at zeros and variance at ones. The arguments are PyTorch's, in its order.

    The running statistics are the model's :attr:`~mlp_xp.Sequential.running` vector (state_dict
    keys ``"<index>.running_mean"``, ``"<index>.running_var"``), kept beside the parameters in
    the training state: updated by the training step under the same guard as the weights (a
    step that fails changes neither), saved and loaded with the model, carried by ``to``,
    ``resume_from`` and the jitted JAX step. Under mixed precision they stay in float32 and
    the statistics are computed in float32.

    Args:
        num_features: the number of features (checked against the layer's input when the model
            is built); None takes it from the input.
        eps: added to the variance; a finite number > 0.
        momentum: the weight of each batch in the running statistics, in [0, 1] (PyTorch's
            convention: Keras's ``momentum=0.99`` is ``momentum=0.01`` here); None for their
            cumulative average over the batches seen (kept in ``num_batches_tracked``).
        affine: learn ``weight`` and ``bias``.
        track_running_stats: keep running statistics; False normalises with the batch's own
            statistics in evaluation too (so ``predict`` and ``evaluate`` outputs depend on their
            ``batch_size``, as in PyTorch; a last chunk of one row joins the one before it).

    Shape:
        x: (batch, features) -> y: (batch, features). Training needs at least 2 rows per batch
        (``fit`` checks its batches before the first step).

    Example:
        >>> import numpy as np, mlp_xp as mx
        >>> model = mx.Sequential(mx.Linear(3, 4), mx.BatchNorm(4), mx.ReLU(), mx.Linear(4, 2), seed=0)
        >>> sorted(key for key in model.state_dict() if key.startswith("1."))
        ['1.bias', '1.running_mean', '1.running_var', '1.weight']
        >>> X, y = np.random.default_rng(0).normal(size=(64, 3)), np.arange(64) % 2
        >>> _ = model.fit(X, y, mx.losses.CrossEntropy(), mx.optim.Adam(), epochs=1, batch_size=16, verbose=0)
        >>> bool(np.any(mx.to_numpy(model.state_dict()["1.running_mean"]) != 0))
        True
    """

    _config_keys = ("num_features", "eps", "momentum", "affine", "track_running_stats")

    def __init__(self, num_features: SupportsIndex | None = None, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        self.num_features = None if num_features is None else _check_features(num_features, "BatchNorm num_features")
        self.eps = _check_finite_number(eps, "BatchNorm eps", minimum=0.0, strictly=True)
        if momentum is not None:
            momentum = _check_finite_number(momentum, "BatchNorm momentum", minimum=0.0)
            if momentum > 1.0:
                raise ValueError(f"BatchNorm momentum must be in [0, 1] (PyTorch's convention: the weight of each "
                                 f"batch; Keras's momentum=0.99 is 0.01 here), or None, got {momentum!r}")
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)

    def output_features(self, in_features):
        if self.num_features is not None and in_features != self.num_features:
            raise ValueError(f"normalizes {self.num_features} features but receives (batch, {in_features})")
        return in_features

    def param_shapes(self, in_features):
        return {"weight": (in_features,), "bias": (in_features,)} if self.affine else {}

    def init_params(self, rng, in_features, family):
        if not self.affine:
            return {}
        shape = (in_features,)
        return {"weight": initializers.ones(rng, shape, in_features, in_features),
                "bias": initializers.zeros(rng, shape, in_features, in_features)}

    def running_shapes(self, in_features):
        if not self.track_running_stats:
            return {}
        shapes = {"running_mean": (in_features,), "running_var": (in_features,)}
        if self.momentum is None:
            shapes["num_batches_tracked"] = ()
        return shapes

    def init_running(self, in_features):
        return {name: (initializers.ones if name == "running_var" else initializers.zeros)(None, shape, in_features,
                                                                                            in_features)
                for name, shape in self.running_shapes(in_features).items()}

    def forward(self, params, x, ctx):
        xp = ctx.xp
        dtype = x.dtype
        narrow = dtype not in (xp.float32, xp.float64)  # (mixed precision: statistics in float32)
        if narrow:
            x = xp.astype(x, xp.float32)
        weight, bias = params.get("weight"), params.get("bias")
        if narrow and self.affine:
            weight, bias = xp.astype(weight, xp.float32), xp.astype(bias, xp.float32)
        batch_statistics = ctx.train or not self.track_running_stats
        if batch_statistics:
            rows = x.shape[0]
            if rows < 2:
                raise ValueError(f"{self!r} needs more than 1 row per batch to compute batch statistics, got "
                                 f"input of shape {tuple(x.shape)}")
            mean = xp.mean(x, axis=0)
            centered = x - mean
            squares = xp.sum(centered * centered, axis=0)
            inv_std = 1.0 / xp.sqrt(squares / rows + self.eps)
            if ctx.train and self.track_running_stats and ctx.updates is not None:
                ctx.updates.append(self._updated(xp, params, mean, squares / (rows - 1)))
        else:
            running_mean, running_var = params["running_mean"], params["running_var"]
            if running_mean.dtype != x.dtype:
                running_mean, running_var = xp.astype(running_mean, x.dtype), xp.astype(running_var, x.dtype)
            centered = x - running_mean
            inv_std = 1.0 / xp.sqrt(running_var + self.eps)
        x_hat = centered * inv_std
        y = x_hat * weight + bias if self.affine else x_hat

        def backward(dy, need_input_grad=True, out=None):
            if narrow:
                dy = xp.astype(dy, xp.float32)
            grads = {}
            if self.affine:
                grads = {"weight": xp.sum(dy * x_hat, axis=0), "bias": xp.sum(dy, axis=0)}
                dy = dy * weight
            dx = None
            if need_input_grad:
                if batch_statistics:
                    dx = inv_std * (dy - xp.mean(dy, axis=0) - x_hat * xp.mean(dy * x_hat, axis=0))
                else:
                    dx = dy * inv_std
            if narrow:
                grads = {name: xp.astype(grad, dtype) for name, grad in grads.items()}
                dx = None if dx is None else xp.astype(dx, dtype)
            return dx, grads

        return (xp.astype(y, dtype) if narrow else y), backward

    def _updated(self, xp, params, mean, variance):
        """The running statistics moved towards the batch's (in their own dtype, float32 under
        mixed precision)."""
        running_mean, running_var = params["running_mean"], params["running_var"]
        mean, variance = xp.astype(mean, running_mean.dtype), xp.astype(variance, running_var.dtype)
        updated = {}
        if self.momentum is None:  # the cumulative average: PyTorch's factor 1 / batches tracked
            tracked = params["num_batches_tracked"] + 1.0
            factor = 1.0 / tracked
            updated["num_batches_tracked"] = tracked
        else:
            factor = self.momentum
        updated["running_mean"] = (1.0 - factor) * running_mean + factor * mean
        updated["running_var"] = (1.0 - factor) * running_var + factor * variance
        return updated


#: PyTorch's name for :class:`BatchNorm` (the same class)
BatchNorm1d = BatchNorm

#: the registry of layers by class name (what ``mx.save`` writes and ``mx.load`` reads)
LAYER_TYPES = {cls.__name__: cls for cls in (Linear, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, SiLU, ELU,
                                             Softplus, Identity, Softmax, Dropout, LayerNorm, BatchNorm)}
#: the activations by their snake-case names (the command line's ``--activation``)
ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid, "gelu": GELU, "silu": SiLU,
               "elu": ELU, "softplus": Softplus}
