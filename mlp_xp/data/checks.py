"""Input and target checks, run once before any work: each bad input gets a ValueError
(or ShapeError / TypeError) that names the problem and the offending values."""

from __future__ import annotations

import numpy as np

from .._backend import namespace_name, to_numpy
from .._errors import ShapeError


def _is_sparse(value):
    module = type(value).__module__
    return module.startswith("scipy.sparse") or hasattr(value, "tocsr") and hasattr(value, "nnz")


def _pandas_values(value):
    """A pandas DataFrame/Series as numpy: nullable Int64/Float64 columns become float64 with NaN
    for missing values (reported as such below), instead of an object array."""
    from pandas.api.types import is_bool_dtype, is_extension_array_dtype, is_numeric_dtype

    dtypes = list(value.dtypes) if hasattr(value, "columns") else [value.dtype]
    numeric = all(is_numeric_dtype(dtype) and not is_bool_dtype(dtype) for dtype in dtypes)
    if numeric and any(is_extension_array_dtype(dtype) for dtype in dtypes):
        return value.to_numpy(dtype=np.float64, na_value=np.nan)
    return value.to_numpy()


def _first_text(array):
    flat = array.reshape(-1)
    for index, item in enumerate(flat):
        if isinstance(item, (str, bytes)) or array.dtype.kind in "US":
            where = np.unravel_index(index, array.shape)
            return where, item
    return None


def _is_bfloat16(dtype):
    """True for a bfloat16 dtype of numpy (from ``ml_dtypes``), torch or JAX, told by its name so
    that ``ml_dtypes`` need not be imported."""
    return dtype is not None and str(dtype).rsplit(".", 1)[-1] == "bfloat16"


def _host_array(value, name, allow_text=False):
    """``value`` as a numpy array, with clear errors for sparse, ragged, text or non-numeric data.
    bfloat16 arrays (numpy with ``ml_dtypes``, torch, JAX) come back as float32, which holds
    them exactly, as float16 ones come back as float16."""
    if value is None:
        raise ValueError(f"{name} is None")
    if _is_sparse(value):
        raise ValueError(f"{name} is a scipy.sparse matrix ({type(value).__name__}); mlp_xp takes dense arrays: "
                         f"pass {name}.toarray(), or stream rows with mx.datasets.Batches if it is too large")
    if type(value).__module__.split(".")[0] == "pandas":
        value = _pandas_values(value)
    elif namespace_name(value) is not None or hasattr(value, "__dlpack__") and not isinstance(value, np.ndarray):
        if namespace_name(value) is not None and _is_bfloat16(value.dtype):  # (torch cannot hand it to numpy)
            import array_api_compat

            xp = array_api_compat.array_namespace(value)
            value = xp.astype(value, xp.float32)
        value = to_numpy(value)
    if isinstance(value, np.ma.MaskedArray):
        raise ValueError(f"{name} is a masked array; fill or drop the masked entries first ({name}.filled(...))")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} is ragged or not array-like (rows of different lengths?): {error}") from None
    if array.dtype.kind in "USO":
        text = _first_text(array) if array.size else None
        if allow_text and (array.dtype.kind in "US" or text is not None):
            return array
        if text is not None:
            where, item = text
            features = name.split()[-1].startswith("X")
            raise ValueError(f"{name} holds text ({name}{list(int(i) for i in where)} = {str(item)!r}); "
                             + ("features must be numbers: encode text columns first (e.g. one-hot)" if features
                                else "this loss takes numbers"))
    if _is_bfloat16(array.dtype):  # ml_dtypes' bfloat16 (numpy kind "V"): exact in float32
        array = array.astype(np.float32)
    if array.dtype == object:
        raise ValueError(f"{name} is ragged or holds non-numbers (numpy made an object array of shape "
                         f"{array.shape}); give a rectangular array of numbers")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}"
                         + (" (complex: its imaginary part would be dropped)" if array.dtype.kind == "c" else ""))
    return array


def host_features(X, name="X"):
    """Numeric host data as numpy (for helpers such as ``datasets.Standardizer``)."""
    return np.asarray(_host_array(X, name), dtype=np.float64)


def host_labels(y, name="y"):
    """Class labels of any kind (numbers or text) as a numpy array."""
    return _host_array(y, name, allow_text=True)


def _first_non_finite(array, row_offset=0):
    """(index, value) of the first NaN/inf; the row counted from ``row_offset`` (for chunks)."""
    index = np.argwhere(~np.isfinite(array))[0]
    value = array[tuple(index)]
    return (int(index[0]) + row_offset, *(int(i) for i in index[1:])), value


def prepare_inputs(model, X, name="X"):
    """Check X and put it on the model's backend as (samples, in_features) of its dtype."""
    same_namespace = namespace_name(X) == model.backend.name and model.backend.name != "numpy"
    if same_namespace:
        if not model.xp.isdtype(X.dtype, ("real floating", "integral", "bool")):
            raise ValueError(f"{name} must hold real numbers, got dtype {X.dtype}"
                             + (" (complex: its imaginary part would be dropped)"
                                if model.xp.isdtype(X.dtype, "complex floating") else ""))
        shape = tuple(X.shape)
    else:
        host = _host_array(X, name)
        shape = host.shape
    if len(shape) == 1 and model.in_features == 1:
        shape = (shape[0], 1)
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {shape}"
                         + ("; for one sample use X.reshape(1, -1)" if len(shape) == 1 else ""))
    if shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {shape}")
    if shape[1] != model.in_features:
        raise ShapeError(f"{name} has {shape[1]} features (shape {shape}) but layer 0 "
                         f"({model.layers[0]!r}) expects input of shape (batch, {model.in_features})")
    if same_namespace:
        x = model.xp.reshape(model.xp.astype(X, model.dtype), shape)
        if not bool(model.xp.all(model.xp.isfinite(x))):
            raise ValueError(f"{name} contains NaN or infinity (after conversion to {model.dtype_name})")
        return x
    return model.backend.asarray(_finite_host(model, host.reshape(shape), name), dtype=model.dtype)


def _finite_host(model, host, name, row_offset=0):
    with np.errstate(over="ignore"):  # overflow is reported below, as non-finite input
        host = host.astype(model.dtype_name, copy=False)
    if not np.all(np.isfinite(host)):
        where, value = _first_non_finite(host, row_offset)
        raise ValueError(f"{name} contains NaN or infinity: {name}[{where[0]}, {where[1]}] = {value} "
                         f"(after conversion to {model.dtype_name}); clean or impute the data first")
    return host


def check_host_chunk(model, X, y, loss, row_offset):
    """Check rows ``row_offset..`` of host data (a chunk of a ``datasets.Batches``) as ``fit`` would,
    naming positions by their row in the whole data set; nothing goes to the device."""
    host = _host_array(X, "X")
    if host.ndim == 1 and model.in_features == 1:
        host = host.reshape(-1, 1)
    if host.ndim != 2 or host.shape[1] != model.in_features:
        raise ShapeError(f"X has shape {host.shape[1:]} per row from row {row_offset} but layer 0 "
                         f"({model.layers[0]!r}) expects input of shape (batch, {model.in_features})")
    _finite_host(model, host, "X", row_offset)
    _checked_host_targets(model, y, loss, host.shape[0], "y", row_offset)


def prepare_targets(model, y, loss, samples, name="y"):
    """Check y against the loss and the model's outputs; put it on the backend."""
    host = _checked_host_targets(model, y, loss, samples, name)
    dtype = model.backend.index_dtype if host.dtype == np.int64 else model.dtype
    return model.backend.asarray(host, dtype=dtype)


def _checked_host_targets(model, y, loss, samples, name, row_offset=0):
    """y checked against the loss and the model's outputs, as a host array: int64 class labels,
    or targets in the model's dtype."""
    check_fit = getattr(loss, "check_fit", None)
    if check_fit is not None:  # the loss's own options against the model (reduction, weights' lengths)
        check_fit(model.out_features)
    host = _host_array(y, name, allow_text=loss.target_kind == "class")
    if host.dtype.kind in "USO":
        example = str(host.reshape(-1)[0])
        raise ValueError(f"{name} holds text labels (e.g. {example!r}); CrossEntropy takes integer class indices "
                         f"0..C-1: encode them with `codes, classes = mx.datasets.encode_labels({name})`, train on "
                         "codes, and map predicted indices back with classes[index]")
    outputs = model.out_features
    if host.ndim == 0 or host.shape[0] != samples:
        raise ValueError(f"X has {samples} samples but {name} has "
                         f"{host.shape[0] if host.ndim else 'none (a scalar)'} (shape {host.shape})")
    if host.dtype.kind == "f" and not np.all(np.isfinite(host)):
        where, value = _first_non_finite(host, row_offset)
        raise ValueError(f"{name} contains NaN or infinity: {name}{list(where)} = {value}")
    kind = loss.target_kind
    if kind == "class" and host.ndim == 1:
        if host.dtype.kind == "f":
            if not np.all(host == np.round(host)):
                raise ValueError(f"{name} holds non-integer class labels (e.g. {host[host != np.round(host)][0]}); "
                                 "CrossEntropy takes integer labels of shape (samples,) or class "
                                 "probabilities of shape (samples, classes)")
        elif host.dtype.kind == "b":
            raise ValueError(f"{name} is boolean; CrossEntropy takes integer labels 0..{outputs - 1}")
        if getattr(loss, "log_target", False):
            raise ValueError(f"{type(loss).__name__}(log_target=True) takes log-probabilities of shape "
                             f"(samples, classes), got {name} of shape {host.shape}")
        ignore_index = getattr(loss, "ignore_index", None)
        if ignore_index is not None:
            bad_rows = np.flatnonzero(((host < 0) | (host >= outputs)) & (host != ignore_index))
        else:
            bad_rows = np.flatnonzero((host < 0) | (host >= outputs))
        if bad_rows.size:
            row = int(bad_rows[0])
            bad = host[row].item()
            bad = int(bad) if float(bad).is_integer() else bad
            also = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
            raise ValueError(f"label out of range: {name}[{row + row_offset}] = {bad} but the model has {outputs} "
                             f"outputs, so labels must be in [0, {outputs - 1}]{also}")
        return host.astype(np.int64)
    expected = (samples, outputs)
    if host.ndim == 1 and outputs == 1:
        host = host.reshape(expected)
    if host.shape != expected:
        raise ShapeError(f"{name} has shape {host.shape} but the model's outputs have shape {expected}"
                         + (" (class labels must be 1-D)" if kind == "class" and host.ndim == 2 else ""))
    with np.errstate(over="ignore"):
        host = host.astype(model.dtype_name)
    if not np.all(np.isfinite(host)):
        raise ValueError(f"{name} overflows {model.dtype_name}")
    if getattr(loss, "log_target", False):  # log-probabilities: check them as probabilities
        if host.max() > 0:
            raise ValueError(f"{type(loss).__name__}(log_target=True) targets are log-probabilities (<= 0); "
                             f"{name} reaches {host.max()}")
        probabilities = np.exp(host)
    else:
        probabilities = host
    if kind in ("class", "binary") and (probabilities.min() < 0 or probabilities.max() > 1):
        raise ValueError(f"{type(loss).__name__} targets must lie in [0, 1]; {name} spans "
                         f"[{host.min()}, {host.max()}]")
    if kind == "class":
        sums = probabilities.sum(axis=1)
        worst = int(np.argmax(np.abs(sums - 1.0)))
        if abs(sums[worst] - 1.0) > 1e-3:
            raise ValueError(f"CrossEntropy probability targets must sum to 1 per row; row {worst + row_offset} "
                             f"sums to {sums[worst]}")
    return host


def check_positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)
