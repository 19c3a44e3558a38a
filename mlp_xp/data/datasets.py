"""Datasets that work offline, loaders for files you downloaded, and data helpers.

``load_digits`` ships with the package: 1,797 8x8 images of handwritten digits (pixel
counts 0..16) from the UCI "Optical Recognition of Handwritten Digits" data set (E. Alpaydin,
C. Kaynak, 1998; CC BY 4.0), the same copy scikit-learn ships.

``load_mnist`` reads MNIST or Fashion-MNIST from the standard IDX files (gzipped or not) or
from an ``.npz`` (``x_train, y_train, x_test, y_test``, as Keras distributes it); mlp_xp never
downloads anything. ``Batches`` streams host arrays to the device one batch at a time.
"""

from __future__ import annotations

import gzip
import os
from importlib import resources
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["load_digits", "load_mnist", "load_idx", "train_test_split", "split_indices", "standardize",
           "Standardizer", "encode_labels", "Batches", "Table", "load_table"]

from .._types import ArrayLike, PathLike  # noqa: E402 (for type checkers; here for the signatures below)

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


def load_idx(path: PathLike) -> NDArray[Any]:
    """Read one IDX file (the MNIST format), gzipped or not, checking its header against its size.

    Returns:
        A numpy array with the dimensions the header declares.

    Raises:
        ValueError: a bad magic number, an unknown element type, or a size that does not match.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        data = file.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path!r} is a truncated or corrupt gzip file: {error}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path!r} is not an IDX file (bad magic number {data[:4]!r})")
    dims = data[3]
    header = 4 + 4 * dims
    if len(data) < header:
        raise ValueError(f"{path!r} is truncated inside its header")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path!r} declares shape {shape} ({expected} bytes) but holds {len(data)} bytes: "
                         "truncated or not what it claims")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{stem}[.gz] not found in {directory!r}")


def load_mnist(path: PathLike) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64],
                                         NDArray[np.int64]]:
    """MNIST or Fashion-MNIST (same format) from files you downloaded.

    Args:
        path: a directory with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally
            ``.gz``), or an ``.npz`` with ``x_train, y_train, x_test, y_test``.

    Returns:
        (X_train, y_train, X_test, y_test): images flattened to float64 rows of 784 values in
        [0, 1]; labels int64 in 0..9.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is not what it should be (not 28x28 images, labels out of 0..9,
            image and label counts that differ, truncated or corrupt data).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        arrays = {key: load_idx(_find(path, stem)) for key, stem in MNIST_FILES.items()}
        parts = (arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"])
    elif os.path.isfile(path):
        keys = ("x_train", "y_train", "x_test", "y_test")
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [key for key in keys if key not in data.files]
                if missing:
                    raise ValueError(f"{path!r} lacks {missing}; an MNIST .npz holds {list(keys)}")
                parts = tuple(data[key] for key in keys)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path!r} is not a readable .npz file: {error}") from None
    else:
        raise FileNotFoundError(f"no such file or directory: {path!r}")
    result = []
    for images, labels, split in ((parts[0], parts[1], "train"), (parts[2], parts[3], "test")):
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(f"{split} images have shape {images.shape}; MNIST images are (n, 28, 28)")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{split} labels have shape {labels.shape} for {images.shape[0]} images")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{split} labels span [{labels.min()}, {labels.max()}]; MNIST labels are 0..9")
        result += [images.reshape(len(images), 784).astype(np.float64) / 255.0, labels.astype(np.int64)]
    return tuple(result)


class Batches:
    """Minibatches of host arrays, moved to the device one batch at a time by ``fit``.

    For data larger than device memory: pass ``fit(mx.datasets.Batches(X, y, 256), None, ...)``
    and only one batch at a time is on the device. ``fit`` checks all of the data before the
    first step (in chunks, so memory-mapped data is never read whole), naming a bad value by its
    row in the whole data set. The batch order comes from the model's
    seeded generator exactly as with in-memory data, so both give the same training.

    Args:
        X: (samples, features) host array (numpy, or a memory-mapped ``numpy.load(...,
            mmap_mode="r")`` array).
        y: targets with the same number of rows.
        batch_size: samples per batch.

    Example:
        >>> import numpy as np
        >>> from mlp_xp.data.datasets import Batches
        >>> batches = Batches(np.zeros((10, 3)), np.zeros(10), batch_size=4)
        >>> [len(x) for x, _ in batches.epoch(np.random.default_rng(0))]
        [4, 4, 2]
    """

    def __init__(self, X: ArrayLike, y: ArrayLike, batch_size: int = 32) -> None:
        from .checks import host_labels

        # numpy arrays (memory-mapped ones included) are used as they are; lists, DataFrames and
        # other array-likes become numpy arrays here, so that rows can be gathered
        X, y = (value if isinstance(value, np.ndarray) else host_labels(value, name)
                for value, name in ((X, "X"), (y, "y")))
        if X.ndim == 0 or y.ndim == 0:
            raise ValueError(f"X and y must have one row per sample, got shapes {X.shape} and {y.shape}")
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} samples but y has {len(y)}")
        if len(X) == 0:
            raise ValueError("X is empty")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.X, self.y, self.batch_size = X, y, batch_size

    def __len__(self) -> int:
        return -(-len(self.X) // self.batch_size)

    def epoch(self, rng: np.random.Generator, shuffle: bool = True) -> Iterator[tuple[NDArray[Any], NDArray[Any]]]:
        """Yield (X_batch, y_batch) numpy arrays for one pass, shuffled with ``rng``."""
        count = len(self.X)
        order = rng.permutation(count) if shuffle else None
        for start in range(0, count, self.batch_size):
            if order is None:
                rows = slice(start, start + self.batch_size)
            else:
                rows = order[start:start + self.batch_size]
            yield np.asarray(self.X[rows]), np.asarray(self.y[rows])


def load_digits() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """The digits data set.

    Returns:
        (X, y): X float64 of shape (1797, 64), values 0..16; y int64 of shape (1797,), 0..9.

    Example:
        >>> from mlp_xp import datasets
        >>> X, y = datasets.load_digits()
        >>> X.shape, y.shape, int(y.max())
        ((1797, 64), (1797,), 9)
    """
    with resources.files("mlp_xp").joinpath("data/digits.npz").open("rb") as file:
        data = np.load(file)
        return data["X"].astype(np.float64), data["y"].astype(np.int64)


def _test_count(test_size, n, name="test_size"):
    """How many of ``n`` samples a fraction (0, 1) or a count >= 1 asks for."""
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a fraction in (0, 1) or a count >= 1, got {test_size!r}")
    if isinstance(test_size, (float, np.floating)):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"{name} as a fraction must lie in (0, 1), got {test_size!r} (a count is an int)")
        count = int(round(test_size * n))
    else:
        count = int(test_size)
    if not 0 < count < n:
        raise ValueError(f"{name}={test_size!r} leaves no train or no test samples out of {n}")
    return count


def split_indices(n: int, test_size: float, labels: ArrayLike | None = None,
                  seed: int = 0) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Row indices (train, test) of a seeded split of ``n`` samples.

    Args:
        n: number of samples.
        test_size: fraction in (0, 1) or count >= 1 of test samples.
        labels: class labels of shape (n,) to stratify by (each class keeps its proportion
            in both parts), or None for a plain random split.
        seed: the shuffle seed.

    Returns:
        (train, test): sorted int64 index arrays.

    Raises:
        ValueError: an empty part, or a class that would be missing from either part.
    """
    count = _test_count(test_size, n)
    rng = np.random.default_rng(seed)
    if labels is None:
        test = np.sort(rng.permutation(n)[:count])
    else:
        labels = np.asarray(labels)
        classes, codes = np.unique(labels, return_inverse=True)
        test = []
        for code, label in enumerate(classes):
            members = rng.permutation(np.flatnonzero(codes == code))
            take = int(round(len(members) * count / n))
            if not 0 < take < len(members):
                label = label.item() if isinstance(label, np.generic) else label
                where = "test" if take == 0 else "training"
                raise ValueError(f"class {label!r} has {len(members)} sample(s) of {n}: a stratified split with "
                                 f"test_size={test_size!r} leaves none of it in the {where} set; use a "
                                 f"{'larger' if take == 0 else 'smaller'} test_size, more data, or stratify=False")
            test.extend(members[:take])
        test = np.array(sorted(test), dtype=np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def train_test_split(X: ArrayLike, y: ArrayLike, test_size: float = 0.25, seed: int = 0,
                     stratify: bool = True) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Split into train and test sets with a seeded shuffle.

    Args:
        X, y: arrays with the same number of rows.
        test_size: fraction in (0, 1) or count >= 1 of test samples.
        seed: shuffle seed.
        stratify: keep class proportions (for 1-D integer or string labels y).

    Returns:
        (X_train, X_test, y_train, y_test)

    Raises:
        ValueError: different row counts, an empty train or test set, or (stratified) a class
            that would be missing from one of them.

    Example:
        >>> import numpy as np
        >>> from mlp_xp.data.datasets import train_test_split
        >>> X_train, X_test, y_train, y_test = train_test_split(np.arange(20).reshape(10, 2), np.arange(10) % 2,
        ...                                                     test_size=0.2)
        >>> X_train.shape, X_test.shape, sorted(y_test.tolist())
        ((8, 2), (2, 2), [0, 1])
    """
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}")
    labels = y if stratify and y.ndim == 1 and y.dtype.kind in "iuUSbO" else None
    train, test = split_indices(len(X), test_size, labels, seed)
    return X[train], X[test], y[train], y[test]


class Standardizer:
    """Scales features to zero mean and unit variance with statistics learned from training data.

    Fit it on the training set and reuse it on every later batch of data (validation, test,
    new rows at prediction time); ``mx.save`` stores it with a model (``model.scaler``), so a
    loaded model gets the same preprocessing. Constant features are centred and left unscaled.
    A 1-D array is one feature. The statistics are computed without overflow, so features of
    any magnitude (1e200, or near float64's largest) are standardized correctly.

    Attributes:
        mean: per-feature mean (float64), set by ``fit``.
        scale: per-feature standard deviation (1 for constant features), set by ``fit``.

    Example:
        >>> import numpy as np
        >>> from mlp_xp.data.datasets import Standardizer
        >>> scaler = Standardizer().fit(np.array([[1.0, 10.0], [3.0, 10.0]]))
        >>> scaler.transform(np.array([[2.0, 11.0]])).tolist()
        [[0.0, 1.0]]
        >>> scaler.inverse_transform(scaler.transform(np.array([[5.0, 7.0]]))).tolist()
        [[5.0, 7.0]]
    """

    def __init__(self, mean: ArrayLike | None = None, scale: ArrayLike | None = None) -> None:
        if (mean is None) != (scale is None):
            raise ValueError("give both mean and scale, or neither")
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64).reshape(-1)
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float64).reshape(-1)
        if self.mean is not None:
            if self.mean.shape != self.scale.shape:
                raise ValueError(f"mean has {self.mean.size} features but scale has {self.scale.size}")
            if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.scale)) and np.all(self.scale > 0)):
                raise ValueError("a Standardizer needs finite means and finite scales > 0")

    @staticmethod
    def _rows(X, name="X"):
        from .checks import host_features

        array = host_features(X, name)
        return array.reshape(-1, 1) if array.ndim == 1 else array

    def fit(self, X: ArrayLike) -> Standardizer:
        """Learn per-feature mean and standard deviation from ``X`` (samples, features); returns self."""
        rows = self._rows(X)
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise ValueError(f"Standardizer.fit needs a non-empty (samples, features) array, got shape {rows.shape}")
        if not np.all(np.isfinite(rows)):
            raise ValueError("Standardizer.fit: X contains NaN or infinity; clean or impute the data first")
        mean, scale = _mean_and_std(rows)
        for column in np.flatnonzero(~(np.isfinite(mean) & np.isfinite(scale))):  # (not expected: std <= max |x|)
            raise ValueError(f"Standardizer.fit: column {column} (values up to {np.max(np.abs(rows[:, column])):.6g}) "
                             "has a mean or standard deviation beyond float64's range; rescale that feature first")
        scale[scale == 0] = 1.0
        self.mean, self.scale = mean, scale
        return self

    def _check(self, rows):
        if self.mean is None:
            raise ValueError("this Standardizer is not fitted: call fit(X_train) first")
        if rows.ndim != 2 or rows.shape[1] != self.mean.size:
            raise ValueError(f"the Standardizer was fitted on {self.mean.size} features, got shape {rows.shape}")

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        """``(X - mean) / scale`` as float64, in X's shape (1-D stays 1-D).

        Raises:
            ValueError: a value so far from the training data that its standardized value is
                beyond float64's range (the message names its row and column).
        """
        return self._apply(X, "transform", lambda rows: (rows - self.mean) / self.scale,
                           lambda rows: (rows * 0.5 - self.mean * 0.5) / (self.scale * 0.5))

    def fit_transform(self, X: ArrayLike) -> NDArray[np.float64]:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, X: ArrayLike) -> NDArray[np.float64]:
        """Undo ``transform``: ``X * scale + mean``.

        Raises:
            ValueError: a result beyond float64's range (the message names its row and column).
        """
        return self._apply(X, "inverse_transform", lambda rows: rows * self.scale + self.mean,
                           lambda rows: (rows * (self.scale * 0.5) + self.mean * 0.5) * 2.0)

    def _apply(self, X, name, function, halved):
        """``function`` of X's rows; where it overflows (the difference or product of values near
        float64's largest), ``halved``: the same computed on halves, exact for such values. A
        finite value whose result is still beyond float64 is refused."""
        from .checks import host_features

        array = host_features(X)
        rows = self._rows(array)
        self._check(rows)
        with np.errstate(over="ignore", invalid="ignore"):
            out = function(rows)
            overflowed = ~np.isfinite(out)
            if overflowed.any():
                out = np.where(overflowed, halved(rows), out)
        overflowed = ~np.isfinite(out) & np.isfinite(rows)  # (NaN or infinity given pass through, as before)
        if overflowed.any():
            row, column = (int(i) for i in np.argwhere(overflowed)[0])
            raise ValueError(f"Standardizer.{name}: X[{row}, {column}] = {rows[row, column]:.6g} gives a value "
                             f"beyond float64's range (column {column}: mean {self.mean[column]:.6g}, scale "
                             f"{self.scale[column]:.6g}); is it in the units the Standardizer was fitted on?")
        return out.reshape(-1) if array.ndim == 1 else out

    def __repr__(self):
        return "Standardizer()" if self.mean is None else f"Standardizer(<{self.mean.size} features>)"


def _mean_and_std(rows):
    """Per-column mean and (population) standard deviation of finite float64 ``rows``, without
    overflow: each column is first scaled by the power of two nearest its largest magnitude, so
    that squaring cannot overflow (a feature of 1e200 would square to infinity), then the
    results are scaled back. Scaling by a power of two is exact, so on ordinary data the results
    are numpy's ``mean`` and ``std`` bit for bit."""
    _, exponent = np.frexp(np.max(np.abs(rows), axis=0))  # max |x| = m * 2**exponent, 0.5 <= m < 1
    scaled = np.ldexp(rows, -exponent)  # each column's largest magnitude in [0.5, 1)
    mean, std = np.ldexp(scaled.mean(axis=0), exponent), np.ldexp(scaled.std(axis=0), exponent)
    if rows.shape[0]:  # a constant column: its value exactly, and no spread (a rounded mean made it -1)
        constant = np.all(rows == rows[:1], axis=0)
        mean[constant], std[constant] = rows[0, constant], 0.0
    return mean, std


def standardize(X_train: ArrayLike, *others: ArrayLike, return_scaler: bool = False) -> Any:
    """Scale features to zero mean and unit variance using the training set's statistics.

    Constant features are centred and left unscaled; a 1-D array is one feature.

    Args:
        X_train: the data the statistics come from.
        *others: more arrays to scale with the same statistics (e.g. the test set).
        return_scaler: also return the fitted :class:`Standardizer`, to reuse on new data
            or save with a model.

    Returns:
        The standardized ``X_train`` (alone, or followed by each of ``others``), then the
        Standardizer if ``return_scaler``.

    Example:
        >>> import numpy as np
        >>> from mlp_xp.data.datasets import standardize
        >>> X_train, X_test, scaler = standardize(np.array([0.0, 2.0]), np.array([4.0]), return_scaler=True)
        >>> X_train.tolist(), X_test.tolist(), scaler.transform(np.array([1.0])).tolist()
        ([-1.0, 1.0], [3.0], [0.0])
    """
    scaler = Standardizer().fit(X_train)
    scaled = [scaler.transform(X) for X in (X_train, *others)]
    if return_scaler:
        return (*scaled, scaler)
    return scaled[0] if not others else tuple(scaled)


def encode_labels(y: ArrayLike) -> tuple[NDArray[np.int64], NDArray[Any]]:
    """Class labels of any kind (strings, integers, booleans) as codes 0..C-1, like
    scikit-learn's ``LabelEncoder``.

    Returns:
        (codes, classes): int64 codes of shape (n,) and the sorted distinct labels, so that
        ``classes[codes]`` gives ``y`` back. Train with the codes; map predictions
        (``argmax``) back through ``classes``.

    Example:
        >>> from mlp_xp.data.datasets import encode_labels
        >>> codes, classes = encode_labels(["cat", "dog", "cat", "bird"])
        >>> codes.tolist(), classes.tolist()
        ([1, 2, 1, 0], ['bird', 'cat', 'dog'])
    """
    from .checks import host_labels

    labels = host_labels(y)
    if labels.ndim != 1:
        raise ValueError(f"encode_labels takes 1-D labels, got shape {labels.shape}")
    classes, codes = np.unique(labels, return_inverse=True)
    return codes.astype(np.int64), classes


class Table(NamedTuple):
    """Data read by :func:`load_table`.

    Attributes:
        X: float64 features, (samples, features).
        y: the target column as read (numbers, or strings for text labels), (samples,) or
            (samples, outputs); None when the file has no target.
        feature_names: the feature columns' names.
        target_name: the target's name, or None.
    """

    X: Any
    y: Any
    feature_names: tuple
    target_name: Any


def _target_values(texts):
    """A CSV column as int64 (all integers), float64 (all numbers) or strings."""
    from .tables import _float_or_none

    numbers = [_float_or_none(text) for text in texts]
    if all(number is not None and np.isfinite(number) for number in numbers):
        as_int = all(text.strip().lstrip("+-").isdigit() for text in texts)
        return np.array([int(text) for text in texts], dtype=np.int64) if as_int else np.array(numbers)
    return np.array([text.strip() for text in texts])


def _read_csv(path, target, features, need_target):
    """A CSV's numeric features and its target, read by :func:`mlp_xp.data.tables.read_csv` (streamed,
    numpy's C parser for numeric chunks); text and missing feature values are errors naming them
    (``mlp-xp train`` encodes those: :mod:`mlp_xp.data.tables`)."""
    from . import tables

    header = tables.csv_header(path)
    if target is None and need_target:
        target = header[-1]
    if target is not None and target not in header:
        if need_target:
            raise ValueError(f"{path!r} has no column {target!r}; its columns are {header}")
        target = None
    names = [name for name in header if name != target] if features is None else list(features)
    missing = [name for name in names if name not in header]
    if missing:
        raise ValueError(f"{path!r} lacks the feature column(s) {missing} the model was trained on; it has {header}")
    raw = tables.read_csv(path, list(dict.fromkeys(names + ([target] if target is not None else []))),
                          text_columns=[target] if target is not None else [])
    X = np.empty((raw.rows, len(names)))
    for column, name in enumerate(names):
        values = raw.columns[name]
        if values.dtype == object:
            row = next(row for row, value in enumerate(values)
                       if value is None or tables._float_or_none(value) is None)
            shown = "" if values[row] is None else values[row]
            raise ValueError(f"{path!r} line {raw.lines[row]}, column {name!r}: {shown!r} is "
                             + ("missing" if values[row] is None else "not a number")
                             + ": features must be numbers (encode text columns, fill missing values; "
                             "mlp-xp train does both)")
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(f"{path!r} line {raw.lines[row]}, column {name!r}: "
                             + ("the value is missing" if np.isnan(values[row]) else f"{values[row]} is not finite")
                             + ": features must be finite numbers (fill missing values; mlp-xp train --missing "
                             "does)")
        X[:, column] = values
    y = None
    if target is not None:
        texts = raw.columns[target]
        lost = [row for row, text in enumerate(texts) if text is None]
        if lost:
            raise ValueError(f"{path!r} line {raw.lines[lost[0]]}: the target {target!r} is missing")
        y = _target_values(list(texts))
    return Table(X, y, tuple(names), target)


def _numeric_features(array, path):
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path!r}: features must be numbers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise ValueError(f"{path!r}: features must be 2-D (samples, features), got shape {array.shape}")
    return array.astype(np.float64)


def load_table(path: PathLike, target: PathLike | None = None, features: Sequence[str] | None = None,
               need_target: bool = True) -> Table:
    """Read features and a target from a CSV, ``.npz`` or ``.npy`` file.

    - CSV: a header row names the columns; ``target`` is a column name (default: the
      last column) and the other columns are the features, which must be numbers. The
      delimiter (comma, semicolon or tab) is detected. The target is read as integers,
      numbers or text.
    - ``.npz``: arrays ``X`` and ``y`` (``target`` names another key for y).
    - ``.npy``: the features; ``target`` is a second ``.npy`` file with the targets.

    Args:
        path: the file.
        target: see above.
        features: the feature columns to take, in order (CSV), e.g. those a model was
            trained on; other columns are ignored. None: all but the target.
        need_target: False to read files without a target (for prediction).

    Returns:
        A :class:`Table`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown format, a missing column or key, a non-numeric or empty
            feature value (named by line and column), or row counts that differ.

    Example:
        >>> import os, tempfile
        >>> from mlp_xp.data.datasets import load_table
        >>> path = os.path.join(tempfile.mkdtemp(), "pets.csv")
        >>> _ = open(path, "w").write("weight,height,kind\\n4.1,30,cat\\n30.5,60,dog\\n")
        >>> table = load_table(path, target="kind")
        >>> table.X.tolist(), table.y.tolist(), table.feature_names
        ([[4.1, 30.0], [30.5, 60.0]], ['cat', 'dog'], ('weight', 'height'))
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such data file: {path!r}")
    extension = os.path.splitext(path)[1].lower()
    if extension in (".csv", ".tsv", ".txt"):
        return _read_csv(path, target, features, need_target)
    if extension == ".npz":
        key = target or "y"
        try:
            with np.load(path, allow_pickle=False) as data:
                names = data.files
                x_key = "X" if "X" in names else "x" if "x" in names else None
                if x_key is None:
                    raise ValueError(f"{path!r} holds {names}; an .npz data file holds arrays 'X' and 'y'")
                X = data[x_key]
                y = data[key] if key in names else None
        except (OSError, EOFError) as error:
            raise ValueError(f"{path!r} is not a readable .npz file: {error}") from None
        if y is None and need_target:
            raise ValueError(f"{path!r} has no array {key!r} for the target; it holds {names}")
        table = Table(_numeric_features(X, path), y, (), key if y is not None else None)
    elif extension == ".npy":
        X = _numeric_features(np.load(path, allow_pickle=False), path)
        y = None
        if target is not None:
            if not os.path.isfile(target):
                raise FileNotFoundError(f"no such target file: {target!r} (with .npy features, --target is the "
                                        ".npy file of targets)")
            y = np.load(target, allow_pickle=False)
        elif need_target:
            raise ValueError(f"{path!r} holds only the features: give the targets as a second .npy file")
        table = Table(X, y, (), None if y is None else os.path.splitext(os.path.basename(target))[0])
    else:
        raise ValueError(f"{path!r}: unknown data format {extension or '(no extension)'!r}; use .csv, .npz or .npy")
    if table.y is not None and len(table.y) != len(table.X):
        raise ValueError(f"{path!r}: {len(table.X)} rows of features but {len(table.y)} targets")
    if features is not None and table.X.shape[1] != len(features):
        raise ValueError(f"{path!r} has {table.X.shape[1]} features, the model takes {len(features)}")
    return table
