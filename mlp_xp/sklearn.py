"""scikit-learn estimators backed by mlp_xp: ``MLPClassifier`` and ``MLPRegressor``.

Parameter names follow ``sklearn.neural_network.MLPClassifier`` where they mean the same thing,
plus ``backend``, ``device`` and ``dtype``: ``backend="cupy"`` is meant to make them a GPU MLP
usable in Pipelines and GridSearchCV (the CuPy path has not been run on a GPU yet). Needs
scikit-learn (``pip install scikit-learn``).

Example:
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from mlp_xp.sklearn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=1e-2,
    ...                                                     max_iter=200, random_state=0))
    >>> clf.fit(X, y).score(X, y) > 0.95
    True
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import layers as mlp_layers
from . import losses, optim
from ._backend import to_numpy
from .model import Sequential

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"relu": mlp_layers.ReLU, "tanh": mlp_layers.Tanh, "logistic": mlp_layers.Sigmoid,
                "identity": mlp_layers.Identity, "gelu": mlp_layers.GELU, "silu": mlp_layers.SiLU,
                "elu": mlp_layers.ELU, "leaky_relu": mlp_layers.LeakyReLU}


class _BaseMLP(BaseEstimator):
    """Shared fitting logic; subclasses define the output layer, loss and targets."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", solver="adam", alpha=0.0001, batch_size="auto",
                 learning_rate_init=0.001, max_iter=200, shuffle=True, random_state=None, tol=1e-4,
                 n_iter_no_change=10, momentum=0.9, nesterovs_momentum=True, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, verbose=False, backend="numpy", device=None, dtype="float64"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.verbose = verbose
        self.backend = backend
        self.device = device
        self.dtype = dtype

    def _optimizer(self):
        if self.solver == "adam":
            return optim.Adam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                              weight_decay=self.alpha)
        if self.solver == "sgd":
            return optim.SGD(lr=self.learning_rate_init, momentum=self.momentum,
                             nesterov=bool(self.nesterovs_momentum and self.momentum > 0), weight_decay=self.alpha)
        raise ValueError(f"solver must be 'adam' or 'sgd', got {self.solver!r}")

    def _build(self, n_features, n_outputs, output_layer):
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, (int, np.integer)) else list(sizes)
        if any(int(size) < 1 for size in sizes):
            raise ValueError(f"hidden_layer_sizes must be positive, got {self.hidden_layer_sizes!r}")
        stack, width = [], n_features
        for size in sizes:
            stack += [mlp_layers.Linear(width, int(size)), _ACTIVATIONS[self.activation]()]
            width = int(size)
        stack.append(mlp_layers.Linear(width, n_outputs))
        if output_layer is not None:
            stack.append(output_layer)
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        return Sequential(*stack, backend=self.backend, device=self.device, dtype=self.dtype, seed=seed)

    def _train(self, X, targets, n_outputs, output_layer, loss):
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be an int >= 1, got {self.max_iter!r}")
        batch_size = min(200, len(X)) if self.batch_size == "auto" else int(self.batch_size)
        self.model_ = self._build(X.shape[1], n_outputs, output_layer)
        optimizer = self._optimizer()
        self.loss_curve_ = []
        best, stalled = np.inf, 0
        for _ in range(self.max_iter):  # one fit call per epoch, like scikit-learn's own MLP loop
            history = self.model_.fit(X, targets, loss=loss, optimizer=optimizer, epochs=1,
                                      batch_size=min(batch_size, len(X)), shuffle=self.shuffle,
                                      verbose=2 if self.verbose else 0)
            value = history["loss"][-1]
            self.loss_curve_.append(value)
            if value > best - self.tol:
                stalled += 1
                if stalled > self.n_iter_no_change:
                    break
            else:
                stalled = 0
            best = min(best, value)
        self.n_iter_ = len(self.loss_curve_)
        self.loss_ = self.loss_curve_[-1]
        return self

    def _forward(self, X):
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return to_numpy(self.model_.predict(X)).astype(np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multilayer-perceptron classifier: softmax cross-entropy from logits, trained by mlp_xp.

    Parameters are scikit-learn's ``MLPClassifier``'s where they mean the same (``alpha`` is an
    L2 penalty applied as the optimizer's weight decay; ``max_iter`` counts epochs), plus
    ``backend`` ("numpy", "cupy", "torch", ...), ``device`` and ``dtype`` ("float64" by default,
    as scikit-learn; "float32" for speed on GPUs).

    Attributes:
        classes_, n_features_in_, loss_curve_, n_iter_, loss_, model_ (the mlp_xp Sequential).
    """

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
        check_classification_targets(y)
        y = column_or_1d(y, warn=True)
        self._encoder = LabelEncoder().fit(y)
        self.classes_ = self._encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"MLPClassifier needs at least 2 classes in y; got 1 class: {self.classes_[0]!r}")
        return self._train(X, self._encoder.transform(y), len(self.classes_), mlp_layers.Softmax(),
                           losses.CrossEntropy())

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns ordered as ``classes_``."""
        return self._forward(X)

    def predict_log_proba(self, X):
        return np.log(np.clip(self.predict_proba(X), 1e-300, None))

    def predict(self, X):
        probabilities = self.predict_proba(X)  # first: it checks that the estimator is fitted
        return self.classes_[np.argmax(probabilities, axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multilayer-perceptron regressor (squared error), trained by mlp_xp.

    Same parameters as :class:`MLPClassifier`. ``y`` may be (n_samples,) or (n_samples, n_outputs).
    """

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=True, multi_output=True)
        self._y_ndim = y.ndim
        targets = y.reshape(len(y), -1).astype(np.float64)
        return self._train(X, targets, targets.shape[1], None, losses.MSE())

    def predict(self, X):
        output = self._forward(X)
        return output.ravel() if self._y_ndim == 1 else output

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
