"""mlp_xp.sklearn: scikit-learn's own estimator checks, Pipeline, GridSearchCV, backends, pickling."""

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import load_digits, make_multilabel_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SklearnClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SklearnRegressor  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from mlp_xp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@parametrize_with_checks([MLPClassifier(random_state=0, max_iter=50), MLPRegressor(random_state=0, max_iter=50),
                          MLPClassifier(random_state=0, max_iter=50, solver="lbfgs"),
                          MLPRegressor(random_state=0, max_iter=50, solver="sgd")])
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
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
        MLPClassifier(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPClassifier(activation="swish").fit(X, y)
    with pytest.raises(ValueError, match="max_iter"):
        MLPClassifier(max_iter=0).fit(X, y)
    with pytest.raises(ValueError, match="learning_rate must be"):
        MLPClassifier(learning_rate="cosine").fit(X, y)
    with pytest.raises(ValueError, match="loss must be"):
        MLPRegressor(loss="huber").fit(X, y)


# ------------------------------------------------------------------ the same formulas as scikit-learn's


DIGITS_X, DIGITS_Y = load_digits(return_X_y=True)
DIGITS_X = DIGITS_X / 16


def _both(options, X, y, regressor=False, **fit):
    ours = (MLPRegressor if regressor else MLPClassifier)(**options)
    theirs = (SklearnRegressor if regressor else SklearnClassifier)(**options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return ours.fit(X, y, **fit), theirs.fit(X, y, **fit)


def _relative(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("options", [
    {"solver": "sgd"}, {"solver": "sgd", "momentum": 0.5, "nesterovs_momentum": False, "alpha": 0.1},
    {"solver": "sgd", "learning_rate": "invscaling", "power_t": 0.3}, {"solver": "sgd", "learning_rate": "adaptive",
                                                                      "n_iter_no_change": 2, "tol": 1e-2},
    {"solver": "adam"}, {"solver": "adam", "alpha": 1.0, "activation": "tanh", "batch_size": 64},
    {"solver": "adam", "early_stopping": True, "validation_fraction": 0.2, "n_iter_no_change": 3},
    {"solver": "sgd", "activation": "logistic", "shuffle": False}, {"solver": "adam", "activation": "identity"},
])
def test_the_loss_curve_is_scikit_learns(options):
    ours, theirs = _both(dict(hidden_layer_sizes=(32, 16), max_iter=12, random_state=0, **options),
                         DIGITS_X, DIGITS_Y)
    assert ours.n_iter_ == theirs.n_iter_ and len(ours.loss_curve_) == len(theirs.loss_curve_)
    assert _relative(ours.loss_curve_, theirs.loss_curve_) < 1e-12
    assert all(_relative(a, b) < 1e-10 for a, b in zip(ours.coefs_, theirs.coefs_))
    assert _relative(ours.predict_proba(DIGITS_X), theirs.predict_proba(DIGITS_X)) < 1e-10
    assert (ours.t_, ours.n_layers_, ours.n_outputs_, ours.out_activation_) == (
        theirs.t_, theirs.n_layers_, theirs.n_outputs_, theirs.out_activation_)
    for name in ("best_loss_", "validation_scores_", "best_validation_score_"):
        mine, reference = getattr(ours, name), getattr(theirs, name)
        assert (reference is None and mine is None) or mine == pytest.approx(reference, rel=1e-12), name


def test_binary_multilabel_sparse_and_weighted_classification_match():
    X, Y = make_multilabel_classification(n_samples=120, n_features=8, n_classes=3, random_state=0)
    ours, theirs = _both(dict(hidden_layer_sizes=(16,), max_iter=20, random_state=0), X, Y)
    assert ours.out_activation_ == "logistic" and ours.n_outputs_ == 3
    assert _relative(ours.loss_curve_, theirs.loss_curve_) < 1e-12 and np.array_equal(ours.predict(X), theirs.predict(X))
    binary = (DIGITS_Y > 4).astype(int)
    ours, theirs = _both(dict(hidden_layer_sizes=(8,), max_iter=10, random_state=0), DIGITS_X, binary)
    assert ours.n_outputs_ == 1 and ours.coefs_[-1].shape == (8, 1) and ours.predict_proba(DIGITS_X).shape[1] == 2
    assert _relative(ours.loss_curve_, theirs.loss_curve_) < 1e-12
    scipy_sparse = pytest.importorskip("scipy.sparse")
    weights = np.random.default_rng(0).uniform(0.5, 2.0, size=len(DIGITS_Y))
    ours, theirs = _both(dict(hidden_layer_sizes=(16,), max_iter=8, random_state=0), scipy_sparse.csr_matrix(DIGITS_X),
                         DIGITS_Y, sample_weight=weights)
    assert _relative(ours.loss_curve_, theirs.loss_curve_) < 1e-12


@pytest.mark.parametrize("options", [{"solver": "sgd", "alpha": 1.0}, {"solver": "adam"}, {"solver": "lbfgs"},
                                     {"solver": "adam", "loss": "poisson"}])
def test_regression_matches(options):
    X, y = make_regression(n_samples=150, n_features=5, n_targets=2, random_state=0)
    y = y / y.std()
    if options.get("loss") == "poisson":
        y = np.exp(y[:, 0] / 2)
    ours, theirs = _both(dict(hidden_layer_sizes=(16,), max_iter=25, random_state=0, **options), X, y, regressor=True)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-8)
    assert _relative(ours.predict(X), theirs.predict(X)) < 1e-7


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_alpha_is_scikit_learns_l2_penalty(solver):
    X, y = np.ones((20, 1)), np.full(20, 100.0)  # the case: a constant target, no hidden layer, alpha=10
    ours, theirs = _both(dict(hidden_layer_sizes=(), alpha=10.0, solver=solver, random_state=0), X, y, regressor=True)
    assert ours.predict(X[:1])[0] == pytest.approx(theirs.predict(X[:1])[0], rel=1e-8)


def test_float32_stays_float32():
    X = DIGITS_X.astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, DIGITS_Y)
    assert clf.coefs_[0].dtype == np.float32 and clf.model_.dtype_name == "float32"
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, DIGITS_Y.astype(np.float32))
    assert reg.predict(X).dtype == np.float32


def test_warnings_errors_and_edge_cases(capsys):
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(2\\) reached"):
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(DIGITS_X, DIGITS_Y)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=3, random_state=0).fit(DIGITS_X, DIGITS_Y)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MLPRegressor(hidden_layer_sizes=(4,), solver="sgd", learning_rate_init=1e6, max_iter=5,
                     random_state=0).fit(DIGITS_X, DIGITS_Y * 1e6)
    one = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one.fit(DIGITS_X[:20], np.zeros(20, dtype=int))
        assert set(one.predict(DIGITS_X[:5])) == {0}  # one class is accepted, as scikit-learn does
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, verbose=True, random_state=0).fit(DIGITS_X, DIGITS_Y)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("Iteration 1, loss = ") and printed[1].startswith("Iteration 2, loss = ")


def test_partial_fit_warm_start_and_lbfgs_without_partial_fit():
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit") and hasattr(MLPClassifier(), "partial_fit")
    ours = MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
    theirs = SklearnClassifier(hidden_layer_sizes=(16,), random_state=0)
    for _ in range(3):
        ours.partial_fit(DIGITS_X, DIGITS_Y, classes=np.arange(10))
        theirs.partial_fit(DIGITS_X, DIGITS_Y, classes=np.arange(10))
    assert ours.n_iter_ == theirs.n_iter_ and _relative(ours.loss_curve_, theirs.loss_curve_) < 1e-12
    ours, theirs = _both(dict(hidden_layer_sizes=(16,), max_iter=3, warm_start=True, random_state=0), DIGITS_X,
                         DIGITS_Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(DIGITS_X, DIGITS_Y), theirs.fit(DIGITS_X, DIGITS_Y)
    assert len(ours.loss_curve_) == 6 and _relative(ours.loss_curve_, theirs.loss_curve_) < 1e-12


def test_the_device_side_lbfgs():
    strict = pytest.importorskip("array_api_strict")
    options = dict(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        host = MLPClassifier(**options).fit(DIGITS_X, DIGITS_Y)
        device = MLPClassifier(**options, backend="array_api_strict", device=strict.Device("device1")).fit(DIGITS_X,
                                                                                                          DIGITS_Y)
    first = MLPClassifier(**dict(options, max_iter=1), backend="array_api_strict")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first.fit(DIGITS_X, DIGITS_Y)
    assert device.loss_ < 0.2 * first.loss_ and device.loss_ < 3 * host.loss_ + 0.05
    assert device.score(DIGITS_X, DIGITS_Y) > 0.95


def test_sparse_input_is_densified_a_chunk_at_a_time(monkeypatch):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    import mlp_xp.sklearn as wrapper

    monkeypatch.setattr(wrapper, "_SPARSE_CHUNK", 100)
    X = scipy_sparse.csr_matrix(DIGITS_X)
    seen = []
    original = wrapper._BaseMLP._device_batch

    def spy(self, data, rows):
        result = original(self, data, rows)
        seen.append(result.shape[0])
        return result

    monkeypatch.setattr(wrapper._BaseMLP, "_device_batch", spy)
    ours, theirs = _both(dict(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=5, random_state=0), X, DIGITS_Y)
    assert max(seen) <= 100 and ours.loss_ == pytest.approx(theirs.loss_, rel=1e-8)
    assert np.array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_n_iter_no_change_inf_never_stops_early(estimator):
    # scikit-learn's test_n_iter_no_change_inf: a huge tol makes every epoch a "no change" epoch, and
    # n_iter_no_change=np.inf still trains to max_iter (warm_start too), with the ConvergenceWarning
    X, y = DIGITS_X[:100], (DIGITS_Y[:100] > 4).astype(int)
    options = dict(hidden_layer_sizes=(8,), solver="sgd", tol=1e9, n_iter_no_change=np.inf, max_iter=30,
                   warm_start=True, random_state=0)
    reference = SklearnClassifier if estimator is MLPClassifier else SklearnRegressor
    fitted = []
    for model in (estimator(**options), reference(**options)):
        for _ in range(2):
            with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(30\\) reached"):
                model.fit(X, y)
        fitted.append(model)
    ours, theirs = fitted
    assert ours.n_iter_ == theirs.n_iter_ == 30 and len(ours.loss_curve_) == len(theirs.loss_curve_) == 60
    assert ours._no_improvement_count == theirs._no_improvement_count
    assert _relative(ours.loss_curve_, theirs.loss_curve_) < 1e-12
    for bad in (-np.inf, np.nan, 2.5, 0):  # refused like scikit-learn's (only +inf among the non-integers)
        for model in (estimator(n_iter_no_change=bad), reference(n_iter_no_change=bad)):
            with pytest.raises(ValueError, match="n_iter_no_change"):
                model.fit(X, y)


# scikit-learn's test_mlp_diverging_loss (its issue 29504): SGD at learning rate 1 diverges on iris
DIVERGING = dict(hidden_layer_sizes=100, activation="identity", solver="sgd", alpha=0.0001, learning_rate="constant",
                 learning_rate_init=1, shuffle=True, max_iter=20, random_state=0)


def test_a_diverging_run_with_early_stopping_keeps_the_best_weights():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    theirs = SklearnRegressor(**DIVERGING, early_stopping=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.fit(X, y)  # runs on NaN to max_iter, then restores its best weights
    ours = MLPRegressor(**DIVERGING, early_stopping=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours.fit(X, y)  # no error
    assert any(issubclass(w.category, ConvergenceWarning) and "diverged" in str(w.message) for w in caught)
    # mlp_xp stops at the first non-finite epoch (never trains on NaN); what it recorded is scikit-learn's
    n = ours.n_iter_
    assert 1 < n < theirs.n_iter_ and len(ours.loss_curve_) == len(ours.validation_scores_) == n
    assert np.isnan(ours.validation_scores_[-1]) and np.isnan(theirs.validation_scores_[n - 1])
    assert isinstance(ours.validation_scores_[-1], float)
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_[:n], rtol=1e-12)
    np.testing.assert_allclose(ours.loss_curve_[:-1], theirs.loss_curve_[:n - 1], rtol=1e-12)
    assert np.isfinite(ours.best_validation_score_)
    assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_, rel=1e-12)
    assert all(np.isfinite(w).all() for w in ours.coefs_ + ours.intercepts_)
    prediction = ours.predict(X)
    assert np.isfinite(prediction).all() and _relative(prediction, theirs.predict(X)) < 1e-10
    assert ours.score(X, y) == pytest.approx(theirs.score(X, y), rel=1e-10)


def test_a_diverging_run_without_early_stopping_raises_at_once():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    message = "Solver produced non-finite parameter weights"
    theirs = SklearnRegressor(**DIVERGING)
    with pytest.raises(ValueError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.fit(X, y)  # scikit-learn trains on NaN to max_iter, then raises
    ours = MLPRegressor(**DIVERGING)
    with pytest.raises(ValueError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(X, y)  # the same error, raised at the first non-finite epoch
    n = ours.n_iter_
    assert 1 < n < theirs.n_iter_ and not np.isfinite(ours.loss_curve_[-1])
    np.testing.assert_allclose(ours.loss_curve_[:-1], theirs.loss_curve_[:n - 1], rtol=1e-12)
