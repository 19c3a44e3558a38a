"""Losses: values and gradients against float64 references (and PyTorch where installed),
central-difference gradients, extreme logits, and the fused Softmax/Sigmoid paths."""

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp._backend import resolve_backend
from mlp_xp.nn.layers import ForwardContext

from .conftest import numpy_of, relative_error

rng = np.random.default_rng(0)
LOGITS = rng.normal(size=(6, 4)) * 3
LABELS = np.array([0, 3, 1, 2, 3, 0])
SOFT = rng.dirichlet(np.ones(4), size=6)
BINARY = rng.uniform(size=(6, 4))
REAL = rng.normal(size=(6, 4)) * 2


def _reference_ce(logits, target, smoothing=0.0):
    """Textbook float64 cross-entropy with an explicit softmax (finite for moderate logits)."""
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    t = np.eye(logits.shape[1])[target] if target.ndim == 1 else target
    t = (1 - smoothing) * t + smoothing / logits.shape[1]
    return -(t * np.log(p)).sum() / len(logits)


REFERENCES = {
    "ce-labels": (mx.losses.CrossEntropy(), LABELS, lambda z: _reference_ce(z, LABELS)),
    "ce-soft": (mx.losses.CrossEntropy(), SOFT, lambda z: _reference_ce(z, SOFT)),
    "ce-smooth": (mx.losses.CrossEntropy(label_smoothing=0.1), LABELS, lambda z: _reference_ce(z, LABELS, 0.1)),
    "bce": (mx.losses.BinaryCrossEntropy(), BINARY,
            lambda z: np.mean(-(BINARY * np.log(1 / (1 + np.exp(-z))) + (1 - BINARY) * np.log(1 - 1 / (1 + np.exp(-z)))))),
    "mse": (mx.losses.MSE(), REAL, lambda z: np.mean((z - REAL) ** 2)),
    "huber": (mx.losses.Huber(delta=1.5), REAL,
              lambda z: np.mean(np.where(np.abs(z - REAL) <= 1.5, 0.5 * (z - REAL) ** 2,
                                         1.5 * (np.abs(z - REAL) - 0.75)))),
}


def _on(backend, array, integer=False):
    be = resolve_backend(backend, backend.device)
    return be.asarray(array, dtype=be.xp.int64 if integer else be.xp.float64)


@pytest.mark.parametrize("case", sorted(REFERENCES))
def test_value_and_gradient_match_float64_reference(case, backend):
    loss, target, reference = REFERENCES[case]
    value, grad = loss.value_and_grad(_on(backend, LOGITS), _on(backend, target, target.dtype.kind == "i"))
    assert abs(float(value) - reference(LOGITS)) <= 1e-13 * abs(reference(LOGITS))
    eps = 1e-6
    numeric = np.empty_like(LOGITS)
    for index in np.ndindex(LOGITS.shape):
        shifted = LOGITS.copy()
        shifted[index] += eps
        plus = reference(shifted)
        shifted[index] -= 2 * eps
        numeric[index] = (plus - reference(shifted)) / (2 * eps)
    assert relative_error(grad, numeric) < 1e-7
    assert float(loss.value(_on(backend, LOGITS), _on(backend, target, target.dtype.kind == "i"))) == float(value)


TORCH_LOSSES = {
    "ce-labels": lambda F, z, t: F.cross_entropy(z, t),
    "ce-soft": lambda F, z, t: F.cross_entropy(z, t),
    "ce-smooth": lambda F, z, t: F.cross_entropy(z, t, label_smoothing=0.1),
    "bce": lambda F, z, t: F.binary_cross_entropy_with_logits(z, t),
    "mse": lambda F, z, t: F.mse_loss(z, t),
    "huber": lambda F, z, t: F.huber_loss(z, t, delta=1.5),
}


@pytest.mark.parametrize("case", sorted(REFERENCES))
def test_matches_torch(case):
    torch = pytest.importorskip("torch")
    loss, target, _ = REFERENCES[case]
    logits = LOGITS * 40  # large logits: where naive formulas lose precision
    value, grad = loss.value_and_grad(logits, target)
    zt = torch.tensor(logits, requires_grad=True)
    expected = TORCH_LOSSES[case](torch.nn.functional, zt, torch.tensor(target))
    expected.backward()
    np.testing.assert_allclose(float(value), expected.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("case", sorted(REFERENCES))
def test_extreme_logits_stay_finite(case, backend):
    loss, target, _ = REFERENCES[case]
    logits = np.where(rng.uniform(size=LOGITS.shape) < 0.5, -1e4, 1e4)
    for dtype in ("float32", "float64"):
        be = resolve_backend(backend, backend.device)
        value, grad = loss.value_and_grad(be.asarray(logits, dtype=be.dtype(dtype)),
                                          be.asarray(target, dtype=be.xp.int64 if target.dtype.kind == "i" else be.dtype(dtype)))
        assert np.isfinite(float(value))
        assert np.all(np.isfinite(numpy_of(grad)))


def test_cross_entropy_of_confident_wrong_prediction_is_the_logit_gap():
    value, grad = mx.losses.CrossEntropy().value_and_grad(np.array([[1e4, -1e4]]), np.array([1]))
    assert float(value) == pytest.approx(2e4)
    np.testing.assert_allclose(grad, [[1.0, -1.0]])


@pytest.mark.parametrize("loss,last,target", [
    (mx.losses.CrossEntropy(), mx.Softmax(), LABELS),
    (mx.losses.CrossEntropy(label_smoothing=0.2), mx.Softmax(), SOFT),
    (mx.losses.BinaryCrossEntropy(), mx.Sigmoid(), BINARY),
], ids=["softmax-ce", "softmax-ce-soft", "sigmoid-bce"])
def test_fused_output_equals_unfused_math(loss, last, target):
    """Fused training (loss from logits, grad p - y) equals probability-space math chained
    through the output layer's own backward, wherever the latter is finite."""
    logits = LOGITS
    xp = resolve_backend("numpy").xp
    probabilities, backward = last.forward({}, logits, ForwardContext(xp))
    if isinstance(loss, mx.losses.CrossEntropy):
        t = np.eye(4)[target] if target.ndim == 1 else target
        t = (1 - loss.label_smoothing) * t + loss.label_smoothing / 4
        unfused_value = -(t * np.log(probabilities)).sum() / len(logits)
        d_probabilities = -t / probabilities / len(logits)
    else:
        p = probabilities
        unfused_value = np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p)))
        d_probabilities = (p - target) / (p * (1 - p)) / target.size
    unfused_grad, _ = backward(d_probabilities)
    fused_value, fused_grad = loss.value_and_grad(logits, target)
    np.testing.assert_allclose(float(fused_value), unfused_value, rtol=1e-12)
    np.testing.assert_allclose(fused_grad, unfused_grad, rtol=1e-9, atol=1e-15)


def test_model_training_uses_fused_path_and_predict_returns_probabilities():
    model = mx.Sequential(mx.Linear(4, 3), mx.Softmax(), dtype="float64", seed=0)
    X = rng.normal(size=(5, 4)) * 100  # saturates the softmax
    y = np.array([0, 1, 2, 1, 0])
    loss, grads = model.loss_and_grad(X, y, mx.losses.CrossEntropy())
    logits = X @ mx.to_numpy(model.state_dict()["0.weight"])
    assert loss == pytest.approx(REFERENCES["ce-labels"][0].value(logits, y).item(), rel=1e-12)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
    np.testing.assert_allclose(mx.to_numpy(model.predict(X)).sum(axis=1), 1.0)


def test_accuracy_counts():
    ce = mx.losses.CrossEntropy()
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    assert float(ce.correct(logits, np.array([0, 1, 1]))) == 2
    assert float(ce.correct(logits, np.eye(2)[[0, 1, 1]])) == 2
    bce = mx.losses.BinaryCrossEntropy()
    assert float(bce.correct(np.array([[1.0], [-2.0], [0.5]]), np.array([1.0, 1.0, 0.0]))) == 1
    with pytest.raises(TypeError, match="MSE has no accuracy"):
        mx.losses.MSE().correct(logits, logits)


@pytest.mark.parametrize("make", [lambda: mx.losses.CrossEntropy(label_smoothing=1.5),
                                  lambda: mx.losses.CrossEntropy(label_smoothing=-0.1),
                                  lambda: mx.losses.Huber(delta=0)])
def test_bad_loss_arguments(make):
    with pytest.raises(ValueError):
        make()
