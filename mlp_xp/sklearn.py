"""scikit-learn estimators backed by mlp_xp: ``MLPClassifier`` and ``MLPRegressor``.

They follow ``sklearn.neural_network``'s estimators formula for formula: the same parameters,
the same initial weights for a given ``random_state`` (Glorot-uniform draws from the same
generator), the same half squared error / log loss / half Poisson deviance, the same L2 penalty
``alpha`` (on the weights only, scaled by the batch's sample-weight sum), scikit-learn's own SGD
(with ``learning_rate`` "constant", "invscaling" or "adaptive", ``momentum``, Nesterov) and Adam
updates, the same batches, early stopping, ``n_iter_no_change`` rule (``np.inf``: never stop on no
change), warnings and attributes.
A model fitted from the same weights gives scikit-learn's loss curve to rounding (tested in
float64 for sgd and adam). The arithmetic runs on the model's backend through mlp_xp's layers,
so ``backend="cupy"`` trains on a GPU; ``solver="lbfgs"`` uses ``scipy.optimize`` for numpy and
a device-side L-BFGS elsewhere.

Plus ``backend``, ``device`` and ``dtype`` (None: float32 for float32 input, else float64).

A diverging ``sgd``/``adam`` run never trains on NaN: the first epoch whose loss, weights or validation
score is non-finite is recorded (``nan`` in ``validation_scores_``, as scikit-learn records it) and ends
the fit. With ``early_stopping`` the fit then keeps the best (finite) weights and warns a
``ConvergenceWarning``, where scikit-learn trains on to ``max_iter`` and ends with the same weights; without
it, it raises scikit-learn's ``ValueError("Solver produced non-finite parameter weights...")`` at once,
where scikit-learn raises it after ``max_iter`` epochs.

Example:
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from mlp_xp.sklearn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=1e-2,
    ...                                                     max_iter=300, random_state=0))
    >>> clf.fit(X, y).score(X, y) > 0.95
    True
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import scipy.optimize
import scipy.sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, gen_batches, shuffle
from sklearn.utils._available_if import available_if
from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

from .nn import layers as mlp_layers
from ._backend import to_numpy
from ._errors import NonFiniteError
from .nn.losses import Loss
from .model import Sequential

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names (its vocabulary), on mlp_xp's registry
_ACTIVATIONS = {"identity": mlp_layers.Identity, "logistic": mlp_layers.ACTIVATIONS["sigmoid"],
                "tanh": mlp_layers.ACTIVATIONS["tanh"], "relu": mlp_layers.ACTIVATIONS["relu"]}
_SOLVERS = ("lbfgs", "sgd", "adam")
_STOCHASTIC = ("sgd", "adam")
#: rows of a sparse X densified at a time (full-batch L-BFGS, prediction)
_SPARSE_CHUNK = 1024


# ---------------------------------------------------------------------------------------- losses


class _SklearnLoss(Loss):
    """scikit-learn's loss of the output activation ``kind`` ("identity", "exp", "softmax",
    "logistic"), from the last Linear layer's output ``z``. The target holds the labels / values
    and, in its last column, the sample weights divided by their sum; the gradient returned is
    scikit-learn's ``delta * weight / sum of weights`` with respect to ``z``."""

    target_kind = "regression"

    def __init__(self, kind):
        self.kind = kind

    def value_and_grad(self, z, target, xp=None):
        y, weight = target[:, :-1], target[:, -1:]
        if self.kind == "identity":
            p = z
            value = 0.5 * xp.mean(xp.sum(weight * (y - p) ** 2, axis=0))
        elif self.kind == "exp":
            p = xp.exp(z)
            safe = xp.where(y > 0, y, xp.ones_like(y))
            xlogy = xp.where(y > 0, y * xp.log(safe / p), xp.zeros_like(y))
            value = xp.sum(weight * (xlogy - y + p))
        else:
            if self.kind == "softmax":
                shifted = z - xp.max(z, axis=1, keepdims=True)
                e = xp.exp(shifted)
                p = e / xp.sum(e, axis=1, keepdims=True)
            else:
                p = 1.0 / (1.0 + xp.exp(-z))
            eps = float(np.finfo(_dtype_name(p)).eps)
            clipped = xp.clip(p, eps, 1.0 - eps)
            if self.kind == "softmax":
                value = -xp.sum(weight * _xlogy(xp, y, clipped))
            else:
                value = -xp.sum(weight * (_xlogy(xp, y, clipped) + _xlogy(xp, 1.0 - y, 1.0 - clipped)))
        return value, (p - y) * weight

    def value(self, z, target, xp=None):
        return self.value_and_grad(z, target, xp)[0]


def _xlogy(xp, x, y):
    return xp.where(x == 0, xp.zeros_like(y), x * xp.log(y))


def _dtype_name(array):
    return str(getattr(array.dtype, "name", array.dtype)).rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------------------- optimizers


class _SGD:
    """scikit-learn's SGDOptimizer over the flat parameter vector."""

    def __init__(self, params, xp, learning_rate_init, lr_schedule, momentum, nesterov, power_t):
        self.learning_rate_init, self.learning_rate = learning_rate_init, float(learning_rate_init)
        self.lr_schedule, self.momentum, self.nesterov, self.power_t = lr_schedule, momentum, nesterov, power_t
        self.velocity = xp.zeros_like(params)

    def update(self, params, grad, xp):
        self.velocity = self.momentum * self.velocity - self.learning_rate * grad
        if self.nesterov:
            return params + (self.momentum * self.velocity - self.learning_rate * grad)
        return params + self.velocity

    def iteration_ends(self, time_step):
        if self.lr_schedule == "invscaling":
            self.learning_rate = float(self.learning_rate_init) / (time_step + 1) ** self.power_t

    def trigger_stopping(self, message, verbose):
        if self.lr_schedule != "adaptive":
            if verbose:
                print(message + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(message + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(message + " Setting learning rate to %f" % self.learning_rate)
        return False


class _Adam:
    """scikit-learn's AdamOptimizer over the flat parameter vector."""

    def __init__(self, params, xp, learning_rate_init, beta_1, beta_2, epsilon):
        self.learning_rate_init, self.learning_rate = learning_rate_init, float(learning_rate_init)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.t = 0
        self.m, self.v = xp.zeros_like(params), xp.zeros_like(params)

    def update(self, params, grad, xp):
        self.t += 1
        self.m = self.beta_1 * self.m + (1 - self.beta_1) * grad
        self.v = self.beta_2 * self.v + (1 - self.beta_2) * (grad ** 2)
        self.learning_rate = (self.learning_rate_init * math.sqrt(1 - self.beta_2 ** self.t)
                              / (1 - self.beta_1 ** self.t))
        return params + (-self.learning_rate * self.m / (xp.sqrt(self.v) + self.epsilon))

    def iteration_ends(self, time_step):
        pass

    def trigger_stopping(self, message, verbose):
        if verbose:
            print(message + " Stopping.")
        return True


def _device_lbfgs(function, x, max_iter, max_fun, gtol, xp, history=10):
    """L-BFGS on the device: two-loop recursion over the last ``history`` steps and a backtracking
    (Armijo) line search; stops when the largest gradient entry is below ``gtol``, or after
    ``max_iter`` iterations or ``max_fun`` evaluations. Returns (x, f, iterations, evaluations,
    converged)."""
    f, g = function(x)
    evaluations, steps = 1, []
    for iteration in range(1, max_iter + 1):
        if float(xp.max(xp.abs(g))) <= gtol:
            return x, f, iteration - 1, evaluations, True
        q, coefficients = g, []
        for s, y, rho in reversed(steps):
            alpha = rho * xp.sum(s * q)
            coefficients.append(alpha)
            q = q - alpha * y
        if steps:
            s, y, _ = steps[-1]
            q = q * (xp.sum(s * y) / xp.sum(y * y))
        else:
            q = q / max(1.0, float(xp.sqrt(xp.sum(g * g))))
        for (s, y, rho), alpha in zip(steps, reversed(coefficients)):
            q = q + s * (alpha - rho * xp.sum(y * q))
        direction = -q
        slope = float(xp.sum(g * direction))
        if not slope < 0:  # not a descent direction: restart from the gradient
            steps, direction = [], -g
            slope = float(xp.sum(g * direction))
        step = 1.0
        while True:
            candidate = x + step * direction
            f_new, g_new = function(candidate)
            evaluations += 1
            if f_new <= f + 1e-4 * step * slope or evaluations >= max_fun:
                break
            step *= 0.5
        s, y = candidate - x, g_new - g
        curvature = float(xp.sum(s * y))
        if curvature > 1e-10:
            steps = (steps + [(s, y, 1.0 / curvature)])[-history:]
        x, f, g = candidate, f_new, g_new
        if evaluations >= max_fun:
            return x, f, iteration, evaluations, False
    return x, f, max_iter, evaluations, False


# ---------------------------------------------------------------------------------------- estimators


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, backend="numpy", device=None, dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.device = device
        self.dtype = dtype

    # ---------------------------------------------------------------- checks

    def _check_params(self):
        def number(name, low, high=math.inf, low_open=False, high_open=False):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                    (low < value if low_open else low <= value) and (value < high if high_open else value <= high)):
                raise ValueError(f"{name} must be a number in {'(' if low_open else '['}{low}, {high}"
                                 f"{')' if high_open else ']'}, got {value!r}")

        def integer(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        if self.learning_rate not in ("constant", "invscaling", "adaptive"):
            raise ValueError("learning_rate must be 'constant', 'invscaling' or 'adaptive', got "
                             f"{self.learning_rate!r}")
        number("alpha", 0.0)
        number("learning_rate_init", 0.0, low_open=True)
        number("power_t", 0.0)
        number("momentum", 0.0, 1.0)
        number("validation_fraction", 0.0, 1.0, low_open=True, high_open=True)
        number("beta_1", 0.0, 1.0, high_open=True)
        number("beta_2", 0.0, 1.0, high_open=True)
        number("epsilon", 0.0, low_open=True)
        number("tol", 0.0)
        integer("max_iter", 1)
        if not (isinstance(self.n_iter_no_change, numbers.Real) and not isinstance(self.n_iter_no_change, bool)
                and self.n_iter_no_change == math.inf):  # np.inf: never stop on no change, as scikit-learn's
            value = self.n_iter_no_change
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"n_iter_no_change must be an int >= 1 or np.inf, got {value!r}")
        integer("max_fun", 1)
        if self.batch_size != "auto":
            integer("batch_size", 1)
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if any(isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0 for size in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {self.hidden_layer_sizes!r}.")
        return [int(size) for size in sizes]

    def _check_solver(self):
        if self.solver not in _STOCHASTIC:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. {self.solver} is not "
                                 "stochastic.")
        return True

    # ---------------------------------------------------------------- the network

    def _build(self, layer_units, dtype):
        stack = []
        for index, (fan_in, fan_out) in enumerate(zip(layer_units[:-1], layer_units[1:])):
            stack.append(mlp_layers.Linear(fan_in, fan_out))
            if index < len(layer_units) - 2:
                stack.append(_ACTIVATIONS[self.activation]())
        model = Sequential(*stack, backend=self.backend, device=self.device,
                           dtype=self.dtype or dtype, seed=0)
        mask = np.zeros(model.num_parameters)
        for spec in model.param_specs:
            if spec.name == "weight":
                mask[spec.offset:spec.offset + spec.size] = 1.0
        self._weight_mask = model.backend.asarray(mask, dtype=model.dtype)
        return model

    def _initialize(self, y, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        self.coefs_, self.intercepts_ = [], []
        factor = 2.0 if self.activation == "logistic" else 6.0
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):  # scikit-learn's draws, in its order
            bound = np.sqrt(factor / (fan_in + fan_out))
            self.coefs_.append(self._random_state.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype, copy=False))
            self.intercepts_.append(self._random_state.uniform(-bound, bound, fan_out).astype(dtype, copy=False))
        self.model_ = self._build(layer_units, dtype)
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [i.copy() for i in self.intercepts_]
        if self.solver in _STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _state_dict(self):
        state = {}
        for index, (coef, intercept) in enumerate(zip(self.coefs_, self.intercepts_)):
            state[f"{2 * index}.weight"], state[f"{2 * index}.bias"] = coef, intercept
        return state

    def _push(self):
        """coefs_ and intercepts_ (which users may set) into the mlp_xp model."""
        self.model_.load_state_dict(self._state_dict())
        return self.model_.params

    def _pull(self, params):
        """The flat vector back into coefs_ and intercepts_ (host arrays of the model's dtype)."""
        host = np.asarray(to_numpy(params))
        for spec in self.model_.param_specs:
            value = host[spec.offset:spec.offset + spec.size].reshape(spec.shape).copy()
            (self.coefs_ if spec.name == "weight" else self.intercepts_)[spec.layer_index // 2] = value
        self.model_.params = params

    def _targets(self, y, sample_weight):
        """y (2-D) with the normalised sample weights as a last column, on the device."""
        weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return np.concatenate([np.asarray(y, dtype=np.float64), weight[:, None]], axis=1)

    def _loss_and_grad(self, params, X_batch, targets_batch, weight_sum):
        """scikit-learn's ``_backprop``: the loss with the L2 penalty and its flat gradient. ``X_batch``
        is a device array, or a sparse matrix (then densified and sent in chunks of rows)."""
        model, xp = self.model_, self.model_.xp
        if scipy.sparse.issparse(X_batch):
            value = grad = 0.0
            for rows in gen_batches(X_batch.shape[0], _SPARSE_CHUNK):
                part_value, part_grad, _ = model.value_and_grad(
                    self._device_batch(X_batch, rows), targets_batch[rows.start:rows.stop, ...],
                    self._loss_object, params)
                value, grad = value + part_value, grad + part_grad
        else:
            value, grad, _ = model.value_and_grad(X_batch, targets_batch, self._loss_object, params)
        weights = params * self._weight_mask
        value = value / weight_sum + (0.5 * self.alpha) * xp.sum(weights * weights) / weight_sum
        return value, grad / weight_sum + self.alpha * weights / weight_sum

    def _device_batch(self, X, rows):
        model = self.model_
        part = X[rows]
        if scipy.sparse.issparse(part):  # densified one batch at a time, on the device
            part = part.toarray()
        return model.backend.asarray(np.asarray(part), dtype=model.dtype)

    # ---------------------------------------------------------------- fitting

    def _fit(self, X, y, sample_weight=None, incremental=False):
        sizes = self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        self.n_outputs_ = y.shape[1]
        layer_units = [X.shape[1]] + sizes + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, X.dtype)
        self._loss_object = _SklearnLoss(self.out_activation_)
        if self.solver in _STOCHASTIC:
            self._fit_stochastic(X, y, sample_weight, incremental)
        else:
            self._fit_lbfgs(X, y, sample_weight)
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large values "
                             "and need to be preprocessed.")
        return self

    def _fit_lbfgs(self, X, y, sample_weight):
        model, xp = self.model_, self.model_.xp
        x = X if scipy.sparse.issparse(X) else self._device_batch(X, slice(None))  # sparse: chunks, never whole
        targets = model.backend.asarray(self._targets(y, sample_weight), dtype=model.dtype)
        weight_sum = float(len(y) if sample_weight is None else np.sum(sample_weight))
        start = self._push()
        if model.backend.name == "numpy":
            def function(packed):
                value, grad = self._loss_and_grad(xp.asarray(packed, dtype=model.dtype), x, targets, weight_sum)
                return float(value), np.asarray(grad, dtype=np.float64)

            result = scipy.optimize.minimize(function, np.asarray(start, dtype=np.float64), method="L-BFGS-B",
                                             jac=True, options={"maxfun": self.max_fun, "maxiter": self.max_iter,
                                                                "gtol": self.tol, **_get_additional_lbfgs_options_dict(
                                                                    "iprint", 1 if self.verbose else -1)})
            self.n_iter_ = _check_optimize_result("lbfgs", result, self.max_iter)
            self.loss_ = float(result.fun)
            self._pull(model.backend.asarray(result.x, dtype=model.dtype))
            return
        params, loss, iterations, evaluations, converged = _device_lbfgs(
            lambda p: self._loss_and_grad(p, x, targets, weight_sum), start, self.max_iter, self.max_fun, self.tol, xp)
        self.n_iter_, self.loss_ = iterations, float(loss)
        if not converged:
            warnings.warn(f"lbfgs failed to converge after {iterations} iteration(s) and {evaluations} function "
                          "evaluations (max_iter / max_fun reached).", ConvergenceWarning)
        self._pull(params)

    def _fit_stochastic(self, X, y, sample_weight, incremental):
        model, xp = self.model_, self.model_.xp
        params = self._push()
        if not incremental or not hasattr(self, "_optimizer"):
            if self.solver == "sgd":
                self._optimizer = _SGD(params, xp, self.learning_rate_init, self.learning_rate, self.momentum,
                                       self.nesterovs_momentum, self.power_t)
            else:
                self._optimizer = _Adam(params, xp, self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            stratify = y if is_classifier(self) and self.n_outputs_ == 1 else None
            if sample_weight is None:
                X_train, X_val, y_train, y_val = train_test_split(
                    X, y, random_state=self._random_state, test_size=self.validation_fraction, stratify=stratify)
                sample_weight_train = sample_weight_val = None
            else:
                X_train, X_val, y_train, y_val, sample_weight_train, sample_weight_val = train_test_split(
                    X, y, sample_weight, random_state=self._random_state, test_size=self.validation_fraction,
                    stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                                 "your dataset.")
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
        else:
            X_train, y_train, sample_weight_train = X, y, sample_weight
            X_val = y_val = sample_weight_val = None
        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        dense = not scipy.sparse.issparse(X_train)
        x_all = self._device_batch(X_train, slice(None)) if dense else None  # uploaded once
        targets_all = model.backend.asarray(self._targets(y_train, sample_weight_train), dtype=model.dtype)
        weights_host = np.ones(n_samples) if sample_weight_train is None else np.asarray(sample_weight_train)
        index_dtype = model.backend.index_dtype
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    sample_idx = shuffle(sample_idx, random_state=self._random_state)
                order = model.backend.asarray(sample_idx, dtype=index_dtype)
                accumulated = 0.0
                for batch_slice in gen_batches(n_samples, batch_size):
                    rows = order[batch_slice]
                    x = xp.take(x_all, rows, axis=0) if dense else self._device_batch(X_train, sample_idx[batch_slice])
                    batch_weight = float(np.sum(weights_host[sample_idx[batch_slice]]))
                    value, grad = self._loss_and_grad(params, x, xp.take(targets_all, rows, axis=0), batch_weight)
                    accumulated = accumulated + value * (batch_slice.stop - batch_slice.start)  # as scikit-learn
                    params = self._optimizer.update(params, grad, xp)
                self._pull(params)
                self.n_iter_ += 1
                self.loss_ = float(accumulated) / n_samples  # one read per epoch
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                weights_finite = self._weights_finite()
                self._update_no_improvement_count(early_stopping, X_val, y_val, sample_weight_val, weights_finite)
                if not (weights_finite and math.isfinite(self.loss_)
                        and (not early_stopping or math.isfinite(self.validation_scores_[-1]))):
                    self._diverged(early_stopping, weights_finite)
                    break
                self._optimizer.iteration_ends(self.t_)
                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        message = ("Validation score did not improve more than tol=%f for %d consecutive epochs."
                                   % (self.tol, self.n_iter_no_change))
                    else:
                        message = ("Training loss did not improve more than tol=%f for %d consecutive epochs."
                                   % (self.tol, self.n_iter_no_change))
                    if self._optimizer.trigger_stopping(message, self.verbose):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the optimization hasn't "
                                  "converged yet." % self.max_iter, ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
            self._pull(params)
        if early_stopping:
            self.coefs_, self.intercepts_ = self._best_coefs, self._best_intercepts

    def _weights_finite(self):
        return all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_)

    def _diverged(self, early_stopping, weights_finite):
        """The epoch just recorded has a non-finite loss, weights or validation score: training stops
        there (never goes on on NaN). With early stopping the caller restores the best weights and this
        warns; without, this raises scikit-learn's error."""
        if early_stopping:
            warnings.warn("Stochastic Optimizer: training diverged at iteration %d (non-finite loss, weights or "
                          "validation score); stopping and keeping the best weights (validation score %r). Lower "
                          "learning_rate_init or scale the data." % (self.n_iter_, self.best_validation_score_),
                          ConvergenceWarning)
        elif not weights_finite:
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large values "
                             "and need to be preprocessed.")
        else:
            raise ValueError("Solver produced a non-finite loss (%r) at iteration %d. The input data may contain "
                             "large values and need to be preprocessed." % (self.loss_, self.n_iter_))

    def _update_no_improvement_count(self, early_stopping, X, y, sample_weight, weights_finite=True):
        if early_stopping:
            # non-finite weights predict non-finite values, which scikit-learn's scoring makes nan
            score = np.nan
            if weights_finite:
                try:
                    score = self._score(X, y, sample_weight=sample_weight)
                except NonFiniteError:  # (finite weights whose outputs overflow: predict refuses them)
                    pass
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % self.validation_scores_[-1])
            last = self.validation_scores_[-1]
            if last < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last > self.best_validation_score_:
                self.best_validation_score_ = last
                self._best_coefs = [c.copy() for c in self.coefs_]
                self._best_intercepts = [i.copy() for i in self.intercepts_]
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    # ---------------------------------------------------------------- predicting

    def _forward_pass_fast(self, X, check_input=True):
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        self._push()
        model = self.model_
        if scipy.sparse.issparse(X):
            output = np.concatenate([np.asarray(to_numpy(model.predict(self._device_batch(X, rows))))
                                     for rows in gen_batches(X.shape[0], _SPARSE_CHUNK)])
        else:
            output = np.asarray(to_numpy(model.predict(model.backend.asarray(np.asarray(X), dtype=model.dtype))))
        if self.out_activation_ == "softmax":
            output = np.exp(output - output.max(axis=1, keepdims=True))
            output /= output.sum(axis=1, keepdims=True)
        elif self.out_activation_ == "logistic":
            output = 1.0 / (1.0 + np.exp(-output))
        elif self.out_activation_ == "exp":
            output = np.exp(output)
        return output

    def _score_with_function(self, X, y, sample_weight, score_function):
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return score_function(y, y_pred, sample_weight=sample_weight)

    def fit(self, X, y, sample_weight=None):
        """Fit the model to X and y (scikit-learn's semantics; ``sample_weight`` optional)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.non_deterministic = self.random_state is None
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multilayer-perceptron classifier with scikit-learn's ``MLPClassifier`` semantics, on any
    mlp_xp backend: softmax output for several classes, one logistic unit for two classes, one
    logistic unit per label for multilabel targets; log loss.

    Parameters are scikit-learn's (see the module docstring), plus ``backend``, ``device`` and
    ``dtype``.

    Attributes:
        classes_, loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_,
        t_, coefs_, intercepts_, n_features_in_, n_iter_, n_layers_, n_outputs_,
        out_activation_, model_ (the mlp_xp Sequential).
    """

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the previous "
                                     f"call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                                 f"'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(bool)

    def predict(self, X):
        """Predicted classes (or label indicators for multilabel targets)."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight=sample_weight, score_function=accuracy_score)

    @available_if(lambda estimator: estimator._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One pass over (X, y); ``classes`` is needed on the first call."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """Log of ``predict_proba``."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Class probabilities, columns ordered as ``classes_``."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multilayer-perceptron regressor with scikit-learn's ``MLPRegressor`` semantics, on any mlp_xp
    backend: ``loss="squared_error"`` (half squared error, identity output) or ``"poisson"`` (half
    Poisson deviance, exponential output).

    Attributes: as :class:`MLPClassifier`'s, without ``classes_``.
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, backend="numpy", device=None,
                 dtype=None):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver, alpha=alpha,
                         batch_size=batch_size, learning_rate=learning_rate, learning_rate_init=learning_rate_init,
                         power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol,
                         verbose=verbose, warm_start=warm_start, momentum=momentum,
                         nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
                         validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         n_iter_no_change=n_iter_no_change, max_fun=max_fun, backend=backend, device=device,
                         dtype=dtype)
        self.loss = loss

    def _validate_input(self, X, y, incremental, reset):
        if self.loss not in ("squared_error", "poisson"):
            raise ValueError(f"loss must be 'squared_error' or 'poisson', got {self.loss!r}")
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("loss='poisson' needs non-negative targets y")
        return X, y

    def predict(self, X):
        """Predicted values, (n_samples,) or (n_samples, n_outputs)."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight=sample_weight, score_function=r2_score)

    @available_if(lambda estimator: estimator._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One pass over (X, y)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
