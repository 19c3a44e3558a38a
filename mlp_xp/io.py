"""Save models in safetensors (tensors plus JSON metadata, never pickle); resume from them.

:func:`mlp_xp.load` (in :mod:`mlp_xp.model`, which builds the model) reads these files with the
helpers here; this module imports no model code, so io, model and training import no cycle.

A file holds the parameters under their state_dict keys ("0.weight" of shape (in, out), ...),
the optimizer's state vectors under "optimizer.<field>", and in its metadata the architecture
(layer types and arguments), dtype, seed, the optimizer's type, hyperparameters and step count,
the states of the model's two random generators and its Dropout step count, and what
``model.data`` knows of the training data (input and target standardisation, class labels, column
names). Loading parses JSON and raw tensors only,
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
import hashlib
import json
import os
import tempfile

import numpy as np

from . import optim
from ._backend import to_numpy
from .layers import LAYER_TYPES
from .optim import schedules

__all__ = ["save", "check_writable", "FORMAT_VERSION"]

FORMAT_VERSION = "1"
_OPTIMIZER_PREFIX = "optimizer."
#: optimizer state that is a running mean of squares
_NON_NEGATIVE_STATE = ("exp_avg_sq", "square_avg")


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


def _json(text, key):
    """The metadata field ``key`` parsed as JSON, or a ValueError that names it."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"its {key!r} metadata is nested too deeply") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"its {key!r} metadata is not valid JSON: {error}") from None


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

    values = _json(text, "data")
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
        raise ValueError(f"its input scaler has {info['scaler'].mean.size} features, the model takes "
                         f"{model.in_features}")
    if "classes" in info and len(info["classes"]) != model.out_features:
        raise ValueError(f"it names {len(info['classes'])} classes for {model.out_features} outputs")
    if "feature_names" in info and len(info["feature_names"]) != model.in_features:
        raise ValueError(f"it names {len(info['feature_names'])} features, the model takes {model.in_features}")
    return model.data._replace(**info)


def _layer_config(index, layer):
    if LAYER_TYPES.get(type(layer).__name__) is not type(layer):
        kind = f"{type(layer).__module__}.{type(layer).__qualname__}"
        raise ValueError(f"cannot save layer {index} ({layer!r}): it is a custom layer class ({kind}), and a file "
                         "can rebuild only mlp_xp's own layers (loading never runs code); save "
                         "model.state_dict() with safetensors and rebuild the model in code")
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
        "layers": json.dumps([_layer_config(index, layer) for index, layer in enumerate(model.layers)]),
        "dtype": model.dtype_name,
        "seed": str(model.seed),
        "rng": json.dumps({"shuffle": model.shuffle_rng.bit_generator.state,
                           "dropout": model.dropout_rng.bit_generator.state,
                           "dropout_step": model.dropout_step, "dropout_masks": model.dropout_masks}),
    }
    data = _data_to_json(model.data)
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
        info = _optimizer_metadata(optimizer)
        info["state_type"] = type(state).__name__
        info["count"] = int(state.count)
        info["fields"] = [field for field in state._fields[1:] if getattr(state, field) is not None]
        metadata["optimizer"] = json.dumps(info)
        for field in info["fields"]:
            tensors[_OPTIMIZER_PREFIX + field] = np.ascontiguousarray(to_numpy(getattr(state, field)))

    metadata["checksum"] = _checksum(tensors, metadata)
    _write_atomically(os.fspath(path), lambda temporary: save_file(tensors, temporary, metadata=metadata))


_TEMPORARY_PREFIX = ".tmp-mlp_xp-"


def _write_atomically(path, write):
    """``write(temporary)`` then rename it over ``path``: a crash leaves the old file intact.

    A symlink is written through to its target; an existing file keeps its permissions (a new
    one gets the umask's); a target that is not a regular file (a folder, a device such as
    /dev/full, a socket) is refused rather than replaced. Temporaries that killed saves left in
    that folder (named with their process id, which no longer runs) are removed first.
    """
    target = os.path.realpath(path)
    if os.path.exists(target) and not os.path.isfile(target):
        raise ValueError(f"{path!r} is not a regular file (a folder, device or socket): refusing to replace it")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"the folder {directory!r} of {path!r} does not exist")
    _remove_stale_temporaries(directory)
    if os.path.exists(target):
        mode = os.stat(target).st_mode & 0o7777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    handle, temporary = tempfile.mkstemp(prefix=f"{_TEMPORARY_PREFIX}{os.getpid()}-", suffix=".safetensors",
                                         dir=directory)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, mode)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _remove_stale_temporaries(directory):
    """Delete our own temporaries whose writing process is gone (left by a kill -9 mid-save)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(_TEMPORARY_PREFIX) and name.endswith(".safetensors")):
            continue
        pid = name[len(_TEMPORARY_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.remove(os.path.join(directory, name))


def _process_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, but not ours to signal
    return True


def _checksum(tensors, metadata):
    """sha256 over the metadata (but this checksum) and every tensor's name, dtype, shape and bytes:
    a flipped byte anywhere in a file is caught at load rather than loaded as other weights."""
    digest = hashlib.sha256()
    digest.update(json.dumps({key: value for key, value in metadata.items() if key != "checksum"},
                             sort_keys=True).encode())
    for key in sorted(tensors):
        value = np.ascontiguousarray(tensors[key])
        digest.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return "sha256:" + digest.hexdigest()


def _open(path):
    """(header shapes {key: shape}, metadata) of an mlp_xp file, reading no tensor data."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path!r}")
    try:
        with safe_open(path, framework="numpy") as file:
            metadata = file.metadata() or {}
            shapes = {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path!r} is not a readable safetensors file (truncated or corrupt?): {error}") from None
    if metadata.get("format") != "mlp_xp":
        raise ValueError(f"{path!r} is a safetensors file but not an mlp_xp model (no mlp_xp metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path!r} has mlp_xp format version {metadata.get('format_version')!r}; "
                         f"this mlp_xp reads version {FORMAT_VERSION}")
    return shapes, metadata


def _check_declared_shapes(model, shapes):
    """The file's tensors must be exactly the model's (and its optimizer state's), in shape: checked
    from the header, before any tensor is read."""
    from ._errors import ShapeError

    expected = {spec.key: spec.shape for spec in model.param_specs}
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


def _read_tensors(path, metadata):
    """Every tensor of the file, verified against the checksum written with it."""
    from safetensors import safe_open

    path = os.fspath(path)
    try:
        with safe_open(path, framework="numpy") as file:
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except Exception as error:
        raise ValueError(f"{path!r} is not a readable safetensors file (truncated or corrupt?): {error}") from None
    expected = metadata.get("checksum")
    if expected is not None and _checksum(tensors, metadata) != expected:
        raise ValueError(f"{path!r} is corrupt: its contents do not match the checksum saved with it")
    return tensors


def _build_layers(text):
    layers = []
    for entry in _json(text, "layers"):
        cls = LAYER_TYPES.get(entry.get("type"))
        if cls is None:
            raise ValueError(f"unknown layer type {entry.get('type')!r} in checkpoint")
        layers.append(cls(**entry["config"]))
    return layers


def _restore_rng(model, text):
    states = _json(text, "rng")
    model.shuffle_rng.bit_generator.state = states["shuffle"]
    model.dropout_rng.bit_generator.state = states["dropout"]
    # device masks are keyed by the step count (files from before it existed resume at 0)
    step = states.get("dropout_step", 0)
    masks = states.get("dropout_masks", "device")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0 or masks not in ("device", "host"):
        raise ValueError(f"checkpoint has a bad dropout state: step {step!r}, masks {masks!r}")
    model.dropout_step, model.dropout_masks = step, masks


def _restore_optimizer(model, tensors, text, optimizer=None):
    """Put the saved optimizer state into ``model``; build the optimizer unless one is given."""
    info = _json(text, "optimizer")
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


def _precision_from_json(text):
    """(Precision, LossScale) saved with a model, or (None, None) for a plain one."""
    if text is None:
        return None, None
    from .precision import LossScale, Precision

    values = _json(text, "precision")
    if not isinstance(values, dict):
        raise ValueError("the precision metadata must be a JSON object")
    scale, good_steps = values.pop("scale", None), values.pop("good_steps", 0)
    precision = Precision(**values)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 1.0 <= scale < float("inf") \
            or isinstance(good_steps, bool) or not isinstance(good_steps, int) or good_steps < 0:
        raise ValueError(f"the saved loss scale must be a finite number >= 1 and its good steps an int >= 0, got "
                         f"{scale!r} and {good_steps!r}")
    return precision, LossScale(float(scale), good_steps)


@contextlib.contextmanager
def _metadata_errors(path):
    """Turn whatever malformed metadata makes the rebuilding code trip over into a ValueError
    (a ShapeError stays one) that names the file."""
    from ._errors import ShapeError

    try:
        yield
    except ImportError:
        raise
    except ShapeError as error:
        raise ShapeError(f"{os.fspath(path)!r}: {error}") from None
    except ValueError as error:  # ours already name the problem; json's need no rebuilding by type
        raise ValueError(f"{os.fspath(path)!r}: {error}") from None
    except (KeyError, TypeError, AttributeError, IndexError, OverflowError, RecursionError) as error:
        raise ValueError(f"{os.fspath(path)!r} has malformed mlp_xp metadata: {type(error).__name__}: "
                         f"{str(error)[:200]}") from None


def resume(model, path, optimizer):
    """Load weights, generator states and ``optimizer``'s state from ``path`` into ``model``."""
    shapes, metadata = _open(path)
    with _metadata_errors(path):
        saved = _build_layers(metadata["layers"])
        if tuple(saved) != model.layers:
            raise ValueError(f"holds a different architecture: {saved} vs the model's {list(model.layers)}")
        if "optimizer" not in metadata:
            raise ValueError("has no optimizer state to resume from: save with optimizer=")
        tensors = _restore_weights(model, path, shapes, metadata)
        _restore_optimizer(model, tensors, metadata["optimizer"], optimizer)


def _restore_weights(model, path, shapes, metadata):
    """Shapes checked from the header, then weights, generator states and (for the same precision)
    the loss scale put into ``model``; returns the file's tensors."""
    _check_declared_shapes(model, shapes)
    tensors = _read_tensors(path, metadata)
    model.load_state_dict({key: value for key, value in tensors.items() if not key.startswith(_OPTIMIZER_PREFIX)})
    _restore_rng(model, metadata["rng"])
    precision, loss_scale = _precision_from_json(metadata.get("precision"))
    if loss_scale is not None and precision == model.precision:
        model.loss_scale = loss_scale
    return tensors
