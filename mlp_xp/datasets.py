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

import numpy as np

__all__ = ["load_digits", "load_mnist", "load_idx", "train_test_split", "standardize", "Batches"]

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}


def load_idx(path):
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


def load_mnist(path):
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
    and only one batch at a time is on the device. The batch order comes from the model's
    seeded generator exactly as with in-memory data, so both give the same training.

    Args:
        X: (samples, features) host array (numpy, or a memory-mapped ``numpy.load(...,
            mmap_mode="r")`` array).
        y: targets with the same number of rows.
        batch_size: samples per batch.

    Example:
        >>> import numpy as np
        >>> from mlp_xp.datasets import Batches
        >>> batches = Batches(np.zeros((10, 3)), np.zeros(10), batch_size=4)
        >>> [len(x) for x, _ in batches.epoch(np.random.default_rng(0))]
        [4, 4, 2]
    """

    def __init__(self, X, y, batch_size=32):
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} samples but y has {len(y)}")
        if len(X) == 0:
            raise ValueError("X is empty")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.X, self.y, self.batch_size = X, y, batch_size

    def __len__(self):
        return -(-len(self.X) // self.batch_size)

    def epoch(self, rng, shuffle=True):
        """Yield (X_batch, y_batch) numpy arrays for one pass, shuffled with ``rng``."""
        count = len(self.X)
        order = rng.permutation(count) if shuffle else None
        for start in range(0, count, self.batch_size):
            if order is None:
                rows = slice(start, start + self.batch_size)
            else:
                rows = order[start:start + self.batch_size]
            yield np.asarray(self.X[rows]), np.asarray(self.y[rows])


def load_digits():
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


def train_test_split(X, y, test_size=0.25, seed=0, stratify=True):
    """Split into train and test sets with a seeded shuffle.

    Args:
        X, y: numpy arrays with the same number of rows.
        test_size: fraction (0, 1) or count of test samples.
        seed: shuffle seed.
        stratify: keep class proportions (for integer labels y).

    Returns:
        (X_train, X_test, y_train, y_test)
    """
    X, y = np.asarray(X), np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}")
    n = len(X)
    count = int(round(test_size * n)) if isinstance(test_size, float) else int(test_size)
    if not 0 < count < n:
        raise ValueError(f"test_size={test_size!r} leaves no train or no test samples out of {n}")
    rng = np.random.default_rng(seed)
    if stratify and y.ndim == 1 and y.dtype.kind in "iu":
        test = []
        for label in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == label))
            test.extend(members[:int(round(len(members) * count / n))])
        test = np.array(sorted(test), dtype=np.int64)
    else:
        test = np.sort(rng.permutation(n)[:count])
    mask = np.zeros(n, dtype=bool)
    mask[test] = True
    return X[~mask], X[mask], y[~mask], y[mask]


def standardize(X_train, *others):
    """Scale features to zero mean and unit variance using the training set's statistics.

    Constant features are centred and left unscaled.

    Returns:
        The standardized ``X_train`` followed by each of ``others`` (e.g. the test set).
    """
    X_train = np.asarray(X_train, dtype=np.float64)
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    scaled = [(X_train - mean) / std] + [(np.asarray(X, dtype=np.float64) - mean) / std for X in others]
    return scaled[0] if not others else tuple(scaled)
