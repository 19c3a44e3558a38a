"""The bundled digits data and the split / standardize helpers."""

import numpy as np
import pytest

from mlp_xp import datasets


def test_digits_shape_and_content():
    X, y = datasets.load_digits()
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert X.min() == 0 and X.max() == 16 and sorted(np.unique(y)) == list(range(10))
    assert np.bincount(y).min() > 170


def test_split_is_stratified_disjoint_and_seeded():
    X, y = datasets.load_digits()
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, test_size=0.2, seed=1)
    assert len(X_train) + len(X_test) == len(X) and abs(len(X_test) - 0.2 * len(X)) <= 10
    assert np.all(np.abs(np.bincount(y_test) / len(y_test) - 0.1) < 0.01)
    train_rows = {row.tobytes() for row in X_train}
    assert sum(row.tobytes() in train_rows for row in X_test) < 5  # digits has a few duplicate images
    again = datasets.train_test_split(X, y, test_size=0.2, seed=1)
    assert np.array_equal(again[1], X_test)
    with pytest.raises(ValueError, match="leaves no train or no test"):
        datasets.train_test_split(X, y, test_size=0.0)
    with pytest.raises(ValueError, match="X has 1797 samples but y has 10"):
        datasets.train_test_split(X, y[:10])


def test_standardize_uses_training_statistics():
    X, _ = datasets.load_digits()
    train, test = datasets.standardize(X[:1000], X[1000:])
    varying = X[:1000].std(axis=0) > 0
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(train.std(axis=0)[varying], 1)
    assert np.all(np.isfinite(test)) and np.all(train[:, ~varying] == 0)
    assert datasets.standardize(X).shape == X.shape
