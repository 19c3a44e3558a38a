"""A model as a file record, and back: what :func:`save` writes and ``mx.load`` /
``fit(resume_from=...)`` read (the record's format itself is :mod:`mlp_xp.io`'s).

A file holds the parameters under their state_dict keys ("0.weight" of shape (in, out), ...),
the optimizer's state vectors under "optimizer.<field>", and in its metadata the architecture
(layer types and arguments), dtype, seed, the optimizer's type, hyperparameters and step count,
the states of the model's two random generators and its Dropout step count, and what
``model.data`` knows of the training data (input and target standardisation, class labels, column
names). Loading parses JSON and raw tensors only, so an untrusted file can never run code.

Example:
    >>> import os, tempfile, mlp_xp as mx
    >>> model = mx.Sequential(mx.Linear(4, 3), mx.ReLU(), mx.Linear(3, 2), seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> mx.save(model, path)
    >>> mx.load(path).layers == model.layers
    True
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from . import io, optim
from ._backend import to_numpy
from .nn.layers import LAYER_TYPES
from .optim import schedules

if TYPE_CHECKING:
    from ._types import PathLike
    from .model import Sequential
    from .optim.optimizers import Optimizer

__all__ = ["save", "resume", "build_layers", "restore_weights", "restore_optimizer", "data_from_json",
           "precision_from_json"]

_OPTIMIZER_PREFIX = "optimizer."
#: optimizer state that is a running mean of squares
_NON_NEGATIVE_STATE = ("exp_avg_sq", "max_exp_avg_sq", "square_avg")


def schedule_to_json(lr):
    if isinstance(lr, schedules.Schedule):
        fields = {name: schedule_to_json(getattr(lr, name)) for name in lr.__dataclass_fields__}
        return {"schedule": type(lr).__name__, "args": fields}
    if callable(lr):
        raise ValueError(f"cannot save a learning-rate function {lr!r}; use mx.optim.schedules")
    return lr


def schedule_from_json(value):
    if isinstance(value, dict):
        kind = value.get("schedule")
        cls = getattr(schedules, kind, None) if isinstance(kind, str) and kind in schedules.__all__ else None
        if not (isinstance(cls, type) and issubclass(cls, schedules.Schedule)) or cls is schedules.Schedule:
            raise ValueError(f"unknown schedule {kind!r}")
        args = {name: schedule_from_json(arg) for name, arg in value["args"].items()}
        return cls(**args)
    return value




def _plain(value):
    """A label or name as a JSON value (numpy scalars become Python ones)."""
    value = value.item() if isinstance(value, np.generic) else value
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"cannot save the label {value!r}: class labels must be strings or numbers")
    return value


def data_to_json(data):
    from .data.datasets import Standardizer

    out = {}
    for key in ("scaler", "target_scaler"):
        scaler = getattr(data, key)
        if scaler is not None:
            if scaler.mean is None:
                raise ValueError(f"model.data.{key} is not fitted")
            try:  # (what load will check: a file that saves must load again)
                Standardizer(scaler.mean, scaler.scale)
            except ValueError as error:
                raise ValueError(f"cannot save model.data.{key}: {error} (its scale is {scaler.scale.tolist()[:8]}"
                                 f"{', ...' if scaler.scale.size > 8 else ''}; mean {scaler.mean.tolist()[:8]}"
                                 f"{', ...' if scaler.mean.size > 8 else ''})") from None
            out[key] = {"mean": scaler.mean.tolist(), "scale": scaler.scale.tolist()}
    for key in ("classes", "feature_names"):
        if getattr(data, key) is not None:
            out[key] = [_plain(value) for value in getattr(data, key)]
    if data.target_name is not None:
        out["target_name"] = str(data.target_name)
    if data.table is not None:
        out["table"] = data.table.to_json()
    return out


def data_from_json(text, model):
    from .data.datasets import Standardizer

    values = io.parse_json(text, "data")
    if not isinstance(values, dict):
        raise ValueError("the data metadata must be a JSON object")
    info = {}
    for key in ("scaler", "target_scaler"):
        if key in values:
            info[key] = Standardizer(values[key]["mean"], values[key]["scale"])
    for key in ("classes", "feature_names"):
        if key in values:
            info[key] = tuple(values[key])
    if "target_name" in values:
        info["target_name"] = str(values["target_name"])
    if "table" in values:
        from .data.tables import TableInfo

        info["table"] = TableInfo.from_json(values["table"])
        if len(info["table"].plan.feature_names) != model.in_features:
            raise ValueError(f"its table plan makes {len(info['table'].plan.feature_names)} features, the model "
                             f"takes {model.in_features}")
    if info.get("scaler") is not None and info["scaler"].mean.size != model.in_features:
        raise ValueError(f"its input scaler has {info['scaler'].mean.size} features, the model takes "
                         f"{model.in_features}")
    if "classes" in info and len(info["classes"]) != model.out_features:
        raise ValueError(f"it names {len(info['classes'])} classes for {model.out_features} outputs")
    if "feature_names" in info and len(info["feature_names"]) != model.in_features:
        raise ValueError(f"it names {len(info['feature_names'])} features, the model takes {model.in_features}")
    return model.data._replace(**info)


def layer_config(index, layer):
    if LAYER_TYPES.get(type(layer).__name__) is not type(layer):
        kind = f"{type(layer).__module__}.{type(layer).__qualname__}"
        raise ValueError(f"cannot save layer {index} ({layer!r}): it is a custom layer class ({kind}), and a file "
                         "can rebuild only mlp_xp's own layers (loading never runs code); save "
                         "model.state_dict() with safetensors and rebuild the model in code")
    config = layer.config()
    if "init" in config and config["init"] is not None and not isinstance(config["init"], str):
        config["init"] = None  # a custom initializer only matters at construction; the weights are saved
    return {"type": type(layer).__name__, "config": config}


def optimizer_metadata(optimizer):
    config = {key: schedule_to_json(value) if key == "lr" else value for key, value in optimizer.config().items()}
    return {"type": type(optimizer).__name__, "config": config}




def _epoch(value):
    """``model.epoch`` as the file holds it: an int >= 0 (what load accepts)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"cannot save model.epoch={value!r}: it must be an int >= 0 (the last epoch fit completed)")
    return int(value)


def save(model: Sequential, path: PathLike, optimizer: Optimizer | None = None) -> None:
    """Write ``model`` (and the state of ``optimizer``, if given) to a safetensors file.

    Args:
        model: a :class:`~mlp_xp.Sequential`.
        path: the file to write (conventionally ``*.safetensors``); replaced atomically.
        optimizer: the optimizer ``fit`` trained the model with; its moments and step count
            are saved so that ``fit(..., resume_from=path)`` continues exactly. The model's
            random generators (batch order, dropout) are always saved.

    Raises:
        ValueError: ``optimizer`` has no state in this model (it was never passed to ``fit``),
            or its learning rate is a plain function rather than an ``mx.optim.schedules`` one.
    """
    # (np.require, not ascontiguousarray: a 0-d tensor, BatchNorm's num_batches_tracked, stays 0-d)
    tensors = {key: np.require(to_numpy(value), requirements="C") for key, value in model.state_dict().items()}
    metadata = {
        "format": "mlp_xp",
        "format_version": io.FORMAT_VERSION,
        "layers": json.dumps([layer_config(index, layer) for index, layer in enumerate(model.layers)]),
        "dtype": model.dtype_name,
        "seed": str(model.seed),
        "rng": json.dumps({"shuffle": model.shuffle_rng.bit_generator.state,
                           "dropout": model.dropout_rng.bit_generator.state,
                           "dropout_step": model.dropout_step, "dropout_masks": model.dropout_masks}),
        "epoch": str(_epoch(model.epoch)),
    }
    data = data_to_json(model.data)
    if data:
        metadata["data"] = json.dumps(data)
    if model.precision.compute != model.dtype_name:
        metadata["precision"] = json.dumps({**model.precision.config(), "scale": model.loss_scale.scale,
                                            "good_steps": model.loss_scale.good_steps})
    if optimizer is not None:
        if optimizer is not model.optimizer or model.optimizer_state is None:
            raise ValueError("this optimizer has no state in the model: pass the optimizer that fit() used, "
                             "or save without optimizer=")
        state = model.optimizer_state
        info = optimizer_metadata(optimizer)
        info["state_type"] = type(state).__name__
        info["count"] = int(state.count)
        info["fields"] = [field for field in state._fields[1:] if getattr(state, field) is not None]
        metadata["optimizer"] = json.dumps(info)
        for field in info["fields"]:
            tensors[_OPTIMIZER_PREFIX + field] = np.ascontiguousarray(to_numpy(getattr(state, field)))

    io.write(path, tensors, metadata)




def check_declared_shapes(model, shapes):
    """The file's tensors must be exactly the model's (and its optimizer state's), in shape: checked
    from the header, before any tensor is read."""
    from ._errors import ShapeError

    expected = {spec.key: spec.shape for spec in model.param_specs + model.running_specs}
    weights = {key for key in shapes if not key.startswith(_OPTIMIZER_PREFIX)}
    if weights != set(expected):
        raise ValueError(f"its tensors do not match its layers: missing {sorted(set(expected) - weights)}, "
                         f"unexpected {sorted(weights - set(expected))}")
    for key, shape in expected.items():
        if shapes[key] != shape:
            raise ShapeError(f"tensor {key!r} has shape {shapes[key]} but its layer needs {shape}")
    for key, shape in shapes.items():
        if key.startswith(_OPTIMIZER_PREFIX) and shape != (model.num_parameters,):
            raise ValueError(f"optimizer state {key[len(_OPTIMIZER_PREFIX):]!r} has shape {shape}, the model has "
                             f"{model.num_parameters} parameters")




def build_layers(text):
    layers = []
    for entry in io.parse_json(text, "layers"):
        cls = LAYER_TYPES.get(entry.get("type"))
        if cls is None:
            raise ValueError(f"unknown layer type {entry.get('type')!r} in checkpoint")
        layers.append(cls(**entry["config"]))
    return layers


def restore_rng(model, text):
    states = io.parse_json(text, "rng")
    model.shuffle_rng.bit_generator.state = states["shuffle"]
    model.dropout_rng.bit_generator.state = states["dropout"]
    # device masks are keyed by the step count (files from before it existed resume at 0)
    step = states.get("dropout_step", 0)
    masks = states.get("dropout_masks", "device")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0 or masks not in ("device", "host"):
        raise ValueError(f"checkpoint has a bad dropout state: step {step!r}, masks {masks!r}")
    model.dropout_step, model.dropout_masks = step, masks


def restore_optimizer(model, tensors, text, optimizer=None):
    """Put the saved optimizer state into ``model``; build the optimizer unless one is given."""
    info = io.parse_json(text, "optimizer")
    if optimizer is None:
        cls = optim.OPTIMIZER_TYPES.get(info["type"])
        if cls is None:
            raise ValueError(f"unknown optimizer type {info['type']!r} in checkpoint")
        config = dict(info["config"])
        config["lr"] = schedule_from_json(config["lr"])
        if "betas" in config:
            config["betas"] = tuple(config["betas"])
        optimizer = cls(**config)
    elif type(optimizer).__name__ != info["type"]:
        raise ValueError(f"the checkpoint holds {info['type']} state but fit was given {type(optimizer).__name__}")
    state_type = {cls.__name__: cls for cls in (optim.SGDState, optim.AdamState, optim.RMSpropState)}.get(
        info["state_type"])
    if state_type is None:
        raise ValueError(f"unknown optimizer state type {info['state_type']!r}")
    fresh = optimizer.init(np.zeros(1))
    if type(fresh) is not state_type:
        raise ValueError(f"holds {info['state_type']} for a {type(optimizer).__name__}, which keeps "
                         f"{type(fresh).__name__}")
    needed = {field for field in state_type._fields[1:] if getattr(fresh, field) is not None}
    if isinstance(fresh, optim.SGDState) and optimizer.momentum and info.get("count", 0) != 0:
        needed.add("momentum_buffer")
    missing = sorted(needed - set(info["fields"]))
    if missing:
        raise ValueError(f"the {type(optimizer).__name__} state lacks {missing}")
    fields = {field: None for field in state_type._fields[1:]}
    for field in info["fields"]:
        if field not in fields:
            raise ValueError(f"optimizer state field {field!r} is not a field of {info['state_type']}")
        value = tensors[_OPTIMIZER_PREFIX + field]
        if value.shape != (model.num_parameters,):
            raise ValueError(f"optimizer state {field!r} has shape {value.shape}, the model has "
                             f"{model.num_parameters} parameters")
        with np.errstate(over="ignore", invalid="ignore"):
            value = value.astype(model.dtype_name)
        if not np.all(np.isfinite(value)):
            raise ValueError(f"optimizer state {field!r} holds NaN or infinity (in {model.dtype_name})")
        if field in _NON_NEGATIVE_STATE and np.any(value < 0):
            raise ValueError(f"optimizer state {field!r} is a mean of squares but holds negative values")
        fields[field] = model.backend.asarray(value, dtype=model.dtype)
    count = info["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"the optimizer's step count must be an int >= 0, got {count!r}")
    model.set_optimizer(optimizer, state_type(count, **fields))
    return optimizer




def precision_from_json(text):
    """(Precision, LossScale) saved with a model, or (None, None) for a plain one."""
    if text is None:
        return None, None
    from .train.precision import LossScale, Precision

    values = io.parse_json(text, "precision")
    if not isinstance(values, dict):
        raise ValueError("the precision metadata must be a JSON object")
    scale, good_steps = values.pop("scale", None), values.pop("good_steps", 0)
    precision = Precision(**values)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 1.0 <= scale < float("inf") \
            or isinstance(good_steps, bool) or not isinstance(good_steps, int) or good_steps < 0:
        raise ValueError(f"the saved loss scale must be a finite number >= 1 and its good steps an int >= 0, got "
                         f"{scale!r} and {good_steps!r}")
    return precision, LossScale(float(scale), good_steps)




def resume(model, path, optimizer, steps_per_epoch=None, updates=None):
    """Load weights, generator states, epoch count and ``optimizer``'s state from ``path`` into
    ``model``, all or nothing: everything is read and checked into a scratch model first, then
    handed over in a few assignments during which Ctrl-C is held back, so a file refused at any
    point (another optimizer's state, a bad field) or an interrupt leaves the model as it was.

    Returns a function that undoes the resume (for a caller that refuses the run after it).

    ``optimizer``'s learning-rate schedule continues the saved one: where it leaves a length
    open (``cosine()`` without ``total_steps``), the saved schedule's is taken; where it differs
    otherwise from the saved one and leaves a length open, the resume is refused (that length
    would be counted from this run while the update count continues from the file).
    """
    from ._interrupts import held_interrupts

    with io.open_record(path) as record, io.metadata_errors(path):  # (one open file: one snapshot)
        metadata = record.metadata
        saved = build_layers(metadata["layers"])
        if tuple(saved) != model.layers:
            raise ValueError(f"holds a different architecture: {saved} vs the model's {list(model.layers)}")
        if "optimizer" not in metadata:
            raise ValueError("has no optimizer state to resume from: save with optimizer=")
        scratch = type(model)._skeleton(model.layers, model.backend, model.dtype_name, model.seed, model.precision)
        scratch.loss_scale = model.loss_scale
        tensors = restore_weights(scratch, record)
        restore_optimizer(scratch, tensors, metadata["optimizer"], optimizer)
        info = io.parse_json(metadata["optimizer"], "optimizer")
        lr = schedules.continue_schedule(optimizer.lr, schedule_from_json(info["config"]["lr"]),
                                         scratch.optimizer_state.count, steps_per_epoch, updates)
    before = _resumed_state(model, optimizer.lr)
    with held_interrupts():  # (the hand-over: all of it, or none of it)
        _hand_over(model, optimizer, _resumed_state(scratch, lr))
    return lambda: _hand_over(model, optimizer, before)


def _resumed_state(model, lr):
    """What a resume replaces in a model (and the optimizer's ``lr``)."""
    return (model.record, model.optimizer, model.shuffle_rng.bit_generator.state,
            model.dropout_rng.bit_generator.state, model.dropout_masks, model.loss_scale, model.epoch, lr)


def _hand_over(model, optimizer, state):
    record, held, shuffle, dropout, masks, loss_scale, epoch, lr = state
    model.set_train_state(record, held)
    model.set_optimizer(held, record.opt_state)
    model.shuffle_rng.bit_generator.state, model.dropout_rng.bit_generator.state = shuffle, dropout
    model.dropout_masks, model.loss_scale, model.epoch, optimizer.lr = masks, loss_scale, epoch, lr




def restore_weights(model, record):
    """Shapes checked from the header of ``record`` (an :func:`mlp_xp.io.open_record`), then weights,
    generator states, epoch count and (for the same precision) the loss scale put into ``model``;
    returns the file's tensors."""
    metadata = record.metadata
    check_declared_shapes(model, record.shapes)
    tensors = record.tensors()
    model.load_state_dict({key: value for key, value in tensors.items() if not key.startswith(_OPTIMIZER_PREFIX)})
    restore_rng(model, metadata["rng"])
    epoch = metadata.get("epoch", "0")  # (files from before it was saved: 0)
    if not (isinstance(epoch, str) and epoch.isdigit() and epoch.isascii()):
        raise ValueError(f"its epoch must be an int >= 0, got {epoch!r}")
    model.epoch = int(epoch)
    precision, loss_scale = precision_from_json(metadata.get("precision"))
    if loss_scale is not None and precision == model.precision:
        model.loss_scale = loss_scale
    return tensors
