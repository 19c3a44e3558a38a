"""Datasets that work offline, and small data helpers.

``load_digits`` ships with the package: 1,797 8x8 images of handwritten digits (pixel
counts 0..16) from the UCI "Optical Recognition of Handwritten Digits" data set (E. Alpaydin,
C. Kaynak, 1998; CC BY 4.0), the same copy scikit-learn ships.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ["load_digits", "train_test_split", "standardize"]


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
