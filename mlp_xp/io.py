"""Save and load models in safetensors: tensors plus JSON metadata, never pickle.

A file holds the parameters under their state_dict keys ("0.weight" of shape (in, out), ...),
the optimizer's state vectors under "optimizer.<field>", and in its metadata the architecture
(layer types and arguments), dtype, seed, the optimizer's type, hyperparameters and step count,
the states of the model's two random generators, and what ``model.data`` knows of the training
data (input and target standardisation, class labels, column names). Loading parses JSON and raw tensors only,
so an untrusted file can never run code. Writes go to a temporary file that is renamed over the
target, so a crash mid-save leaves the previous file intact.

Example:
    >>> import os, tempfile, mlp_xp as mx
    >>> model = mx.Sequential(mx.Linear(4, 3), mx.ReLU(), mx.Linear(3, 2), seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> mx.save(model, path)
    >>> mx.load(path).layers == model.layers
    True
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

import numpy as np

from . import optim
from ._backend import to_numpy
from .layers import LAYER_TYPES
from .optim import schedules

__all__ = ["save", "load", "check_writable", "FORMAT_VERSION"]

FORMAT_VERSION = "1"
_OPTIMIZER_PREFIX = "optimizer."


def _schedule_to_json(lr):
    if isinstance(lr, schedules.Schedule):
        fields = {name: _schedule_to_json(getattr(lr, name)) for name in lr.__dataclass_fields__}
        return {"schedule": type(lr).__name__, "args": fields}
    if callable(lr):
        raise ValueError(f"cannot save a learning-rate function {lr!r}; use mx.optim.schedules")
    return lr


def _schedule_from_json(value):
    if isinstance(value, dict):
        kind = value.get("schedule")
        cls = getattr(schedules, kind, None) if isinstance(kind, str) and kind in schedules.__all__ else None
        if not (isinstance(cls, type) and issubclass(cls, schedules.Schedule)) or cls is schedules.Schedule:
            raise ValueError(f"unknown schedule {kind!r}")
        args = {name: _schedule_from_json(arg) for name, arg in value["args"].items()}
        return cls(**args)
    return value


def check_writable(path, what):
    """A ValueError now, before any work, if ``path`` cannot be written later.

    The folder must exist and the file be creatable (or appendable, if it exists); it is
    probed by opening it, since ``os.access`` says yes to root everywhere, and nothing that
    exists is truncated.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder, not a file")
    if not os.path.isdir(directory):
        raise ValueError(f"{what} {path!r}: the folder {directory!r} does not exist")
    existed = os.path.exists(path)
    try:
        with open(path, "a" if existed else "x"):
            pass
        if not existed:
            os.remove(path)
    except OSError as error:
        raise ValueError(f"{what} {path!r} is not writable: {error.strerror or error}") from None


def _plain(value):
    """A label or name as a JSON value (numpy scalars become Python ones)."""
    value = value.item() if isinstance(value, np.generic) else value
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"cannot save the label {value!r}: class labels must be strings or numbers")
    return value


def _data_to_json(data):
    out = {}
    for key in ("scaler", "target_scaler"):
        scaler = getattr(data, key)
        if scaler is not None:
            if scaler.mean is None:
                raise ValueError(f"model.data.{key} is not fitted")
            out[key] = {"mean": scaler.mean.tolist(), "scale": scaler.scale.tolist()}
    for key in ("classes", "feature_names"):
        if getattr(data, key) is not None:
            out[key] = [_plain(value) for value in getattr(data, key)]
    if data.target_name is not None:
        out["target_name"] = str(data.target_name)
    return out


def _data_from_json(text, model):
    from .datasets import Standardizer

    values = json.loads(text)
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
    if info.get("scaler") is not None and info["scaler"].mean.size != model.in_features:
        raise ValueError(f"its input scaler has {info['scaler'].mean.size} features, the model takes {model.in_features}")
    if "classes" in info and len(info["classes"]) != model.out_features:
        raise ValueError(f"it names {len(info['classes'])} classes for {model.out_features} outputs")
    if "feature_names" in info and len(info["feature_names"]) != model.in_features:
        raise ValueError(f"it names {len(info['feature_names'])} features, the model takes {model.in_features}")
    return model.data._replace(**info)


def _layer_config(layer):
    config = layer.config()
    if "init" in config and config["init"] is not None and not isinstance(config["init"], str):
        config["init"] = None  # a custom initializer only matters at construction; the weights are saved
    return {"type": type(layer).__name__, "config": config}


def _optimizer_metadata(optimizer):
    config = {key: _schedule_to_json(value) if key == "lr" else value for key, value in optimizer.config().items()}
    return {"type": type(optimizer).__name__, "config": config}


def save(model, path, optimizer=None):
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
    from safetensors.numpy import save_file

    tensors = {key: np.ascontiguousarray(to_numpy(value)) for key, value in model.state_dict().items()}
    metadata = {
        "format": "mlp_xp",
        "format_version": FORMAT_VERSION,
        "layers": json.dumps([_layer_config(layer) for layer in model.layers]),
        "dtype": model.dtype_name,
        "seed": str(model.seed),
        "rng": json.dumps({"shuffle": model.shuffle_rng.bit_generator.state,
                           "dropout": model.dropout_rng.bit_generator.state}),
    }
    data = _data_to_json(model.data)
    if data:
        metadata["data"] = json.dumps(data)
    if optimizer is not None:
        if optimizer is not model._optimizer or model._optimizer_state is None:
            raise ValueError("this optimizer has no state in the model: pass the optimizer that fit() used, "
                             "or save without optimizer=")
        state = model._optimizer_state
        info = _optimizer_metadata(optimizer)
        info["state_type"] = type(state).__name__
        info["count"] = int(state.count)
        info["fields"] = [field for field in state._fields[1:] if getattr(state, field) is not None]
        metadata["optimizer"] = json.dumps(info)
        for field in info["fields"]:
            tensors[_OPTIMIZER_PREFIX + field] = np.ascontiguousarray(to_numpy(getattr(state, field)))

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _read(path):
    """(tensors, metadata) of an mlp_xp file, or a ValueError that says what is wrong."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path!r}")
    try:
        with safe_open(path, framework="numpy") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt headers/data
        raise ValueError(f"{path!r} is not a readable safetensors file (truncated or corrupt?): {error}") from None
    if metadata.get("format") != "mlp_xp":
        raise ValueError(f"{path!r} is a safetensors file but not an mlp_xp model (no mlp_xp metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path!r} has mlp_xp format version {metadata.get('format_version')!r}; "
                         f"this mlp_xp reads version {FORMAT_VERSION}")
    return tensors, metadata


def _build_layers(text):
    layers = []
    for entry in json.loads(text):
        cls = LAYER_TYPES.get(entry.get("type"))
        if cls is None:
            raise ValueError(f"unknown layer type {entry.get('type')!r} in checkpoint")
        layers.append(cls(**entry["config"]))
    return layers


def _restore_rng(model, text):
    states = json.loads(text)
    model.shuffle_rng.bit_generator.state = states["shuffle"]
    model.dropout_rng.bit_generator.state = states["dropout"]


def _restore_optimizer(model, tensors, text, optimizer=None):
    """Put the saved optimizer state into ``model``; build the optimizer unless one is given."""
    info = json.loads(text)
    if optimizer is None:
        cls = optim.OPTIMIZER_TYPES.get(info["type"])
        if cls is None:
            raise ValueError(f"unknown optimizer type {info['type']!r} in checkpoint")
        config = dict(info["config"])
        config["lr"] = _schedule_from_json(config["lr"])
        if "betas" in config:
            config["betas"] = tuple(config["betas"])
        optimizer = cls(**config)
    elif type(optimizer).__name__ != info["type"]:
        raise ValueError(f"the checkpoint holds {info['type']} state but fit was given {type(optimizer).__name__}")
    state_type = getattr(optim, info["state_type"])
    fields = {field: None for field in state_type._fields[1:]}
    for field in info["fields"]:
        value = tensors[_OPTIMIZER_PREFIX + field]
        if value.shape != (model.num_parameters,):
            raise ValueError(f"optimizer state {field!r} has shape {value.shape}, the model has "
                             f"{model.num_parameters} parameters")
        fields[field] = model.backend.asarray(value.astype(model.dtype_name), dtype=model.dtype)
    model._optimizer, model._optimizer_state = optimizer, state_type(int(info["count"]), **fields)
    return optimizer


def load(path, backend="numpy", device=None, dtype=None):
    """Rebuild a model saved by :func:`save`.

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
    from .model import Sequential

    tensors, metadata = _read(path)
    with _metadata_errors(path):
        model = Sequential(*_build_layers(metadata["layers"]), backend=backend, device=device,
                           dtype=dtype or metadata["dtype"], seed=int(metadata["seed"]))
        model.load_state_dict({key: value for key, value in tensors.items() if not key.startswith(_OPTIMIZER_PREFIX)})
        _restore_rng(model, metadata["rng"])
        if "data" in metadata:
            model.data = _data_from_json(metadata["data"], model)
        if "optimizer" in metadata:
            _restore_optimizer(model, tensors, metadata["optimizer"])
    return model


@contextlib.contextmanager
def _metadata_errors(path):
    """Turn whatever malformed metadata makes the rebuilding code trip over into a ValueError."""
    try:
        yield
    except ImportError:
        raise
    except ValueError as error:  # ours (and ShapeError) already name the problem
        raise type(error)(f"{os.fspath(path)!r}: {error}") from None
    except (KeyError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"{os.fspath(path)!r} has malformed mlp_xp metadata: {type(error).__name__}: {error}") from None


def resume(model, path, optimizer):
    """Load weights, generator states and ``optimizer``'s state from ``path`` into ``model``."""
    tensors, metadata = _read(path)
    with _metadata_errors(path):
        saved = _build_layers(metadata["layers"])
        if tuple(saved) != model.layers:
            raise ValueError(f"holds a different architecture: {saved} vs the model's {list(model.layers)}")
        if "optimizer" not in metadata:
            raise ValueError("has no optimizer state to resume from: save with optimizer=")
        model.load_state_dict({key: value for key, value in tensors.items()
                               if not key.startswith(_OPTIMIZER_PREFIX)})
        _restore_rng(model, metadata["rng"])
        _restore_optimizer(model, tensors, metadata["optimizer"], optimizer)
