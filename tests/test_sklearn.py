"""mlp_xp.sklearn: scikit-learn's own estimator checks, Pipeline, GridSearchCV, backends, pickling."""

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from mlp_xp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@parametrize_with_checks([MLPClassifier(random_state=0), MLPRegressor(random_state=0)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_pipeline_and_grid_search():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    search = GridSearchCV(make_pipeline(StandardScaler(), MLPClassifier(max_iter=30, random_state=0)),
                          {"mlpclassifier__hidden_layer_sizes": [(32,), (64,)],
                           "mlpclassifier__learning_rate_init": [1e-3, 3e-3]}, cv=3)
    search.fit(X_train, y_train)
    assert search.best_estimator_.score(X_test, y_test) > 0.93
    assert set(search.best_params_) == {"mlpclassifier__hidden_layer_sizes", "mlpclassifier__learning_rate_init"}


def test_string_labels_and_probabilities():
    X, y = load_digits(return_X_y=True)
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])[y]
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=20, learning_rate_init=1e-2, random_state=0).fit(X / 16, names)
    assert set(clf.classes_) == set(names)
    proba = clf.predict_proba(X[:5] / 16)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(clf.predict(X[:5] / 16)) == list(clf.classes_[proba.argmax(axis=1)])
    assert clf.score(X / 16, names) > 0.95


def test_backends_give_the_same_estimator():
    strict = pytest.importorskip("array_api_strict")  # noqa: F841
    X, y = load_digits(return_X_y=True)
    a = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X[:300] / 16, y[:300])
    b = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0, backend="array_api_strict").fit(
        X[:300] / 16, y[:300])
    assert np.array_equal(a.predict_proba(X / 16), b.predict_proba(X / 16))


def test_regressor_multi_output_and_pickle():
    X, y = make_regression(n_samples=200, n_features=5, n_targets=2, noise=0.1, random_state=0)
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, learning_rate_init=1e-2, random_state=0)
    reg.fit(X, y / y.std())
    assert reg.predict(X).shape == (200, 2) and reg.score(X, y / y.std()) > 0.9
    clone = pickle.loads(pickle.dumps(reg))
    assert np.array_equal(clone.predict(X), reg.predict(X))


def test_bad_parameters():
    X, y = load_digits(return_X_y=True)
    with pytest.raises(ValueError, match="solver must be"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPClassifier(activation="swish").fit(X, y)
    with pytest.raises(ValueError, match="max_iter"):
        MLPClassifier(max_iter=0).fit(X, y)
