"""The Ops vocabulary's layer and loss entries (linear, its backward, the cross-entropies, the
Dropout multiplier): each equals the code it stands for, on every backend, and the constants it
keeps are made once per model, not once per step."""

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp import _math
from mlp_xp.ops import GenericOps, generic
from mlp_xp.ops.numpy_ops import UfuncOps

from .conftest import numpy_of


def _model(backend, device=None, dtype="float64"):
    return mx.Sequential(mx.Linear(6, 8), mx.ReLU(), mx.Dropout(0.2), mx.Linear(8, 4), backend=backend,
                         device=device, dtype=dtype, seed=0)


def _strict_device1_model():
    xps = pytest.importorskip("array_api_strict")
    return _model("array_api_strict", xps.Device("device1"))


def _data(model, rows=5, classes=4):
    rng = np.random.default_rng(3)
    be = model.backend
    logits = be.asarray(rng.normal(size=(rows, classes)) * 4.0, dtype=model.dtype)
    labels = be.asarray(rng.integers(0, classes, rows), dtype=be.index_dtype)
    probabilities = rng.random((rows, classes))
    probabilities = be.asarray(probabilities / probabilities.sum(axis=1, keepdims=True), dtype=model.dtype)
    binary = be.asarray(rng.random((rows, classes)), dtype=model.dtype)
    return logits, labels, probabilities, binary


def _same(a, b):
    return np.array_equal(numpy_of(a), numpy_of(b))


def test_ops_losses_equal_the_loss_classes_bitwise(backend):
    model = _model(backend, backend.device)
    logits, labels, probabilities, binary = _data(model)
    ops = model.ops
    for loss, target in [(mx.losses.CrossEntropy(), labels), (mx.losses.CrossEntropy(0.1), labels),
                         (mx.losses.CrossEntropy(), probabilities), (mx.losses.BinaryCrossEntropy(), binary)]:
        expected = loss.value_and_grad(logits, target)
        for _ in range(2):  # the second call uses the kept one-hot row
            value, grad = loss.ops_value_and_grad(ops, logits, target)
            assert _same(value, expected[0]) and _same(grad, expected[1]), (backend, loss)
        assert _same(loss.value(logits, target), expected[0])


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_loss_formulas_are_those_of_0_2(backend):
    """Fewer operations, the same bits: the sum over -batch, exp(-|z|) taken once for both BCE terms."""
    model = _model(backend)
    xp = model.xp
    logits, labels, _, binary = _data(model)
    log_p = _math.log_softmax(xp, logits)
    one_hot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(xp.arange(4, dtype=labels.dtype), (1, -1)),
                        logits.dtype)
    value, grad = mx.losses.CrossEntropy().value_and_grad(logits, labels)
    assert _same(value, -xp.sum(one_hot * log_p) / 5) and _same(grad, (xp.exp(log_p) - one_hot) / 5)
    value, grad = mx.losses.BinaryCrossEntropy().value_and_grad(logits, binary)
    assert _same(value, xp.sum(_math.softplus(xp, logits) - binary * logits) / 20)
    assert _same(grad, (_math.sigmoid(xp, logits) - binary) / 20)


def test_a_subclass_with_its_own_loss_math_keeps_it_in_training():
    calls = []

    class Recorded(mx.losses.CrossEntropy):
        def value_and_grad(self, output, target, xp=None):
            calls.append(output.shape)
            return super().value_and_grad(output, target, xp)

    model = _model("numpy")
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(32, 6)), rng.integers(0, 4, 32), Recorded(), mx.optim.SGD(0.1), batch_size=16,
              verbose=0)
    assert calls == [(16, 4), (16, 4)]


@pytest.mark.parametrize("ops", [UfuncOps(np), GenericOps(np)], ids=["ufunc", "generic"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_entries_equal_the_reference_and_write_into_out(ops, bias):
    rng = np.random.default_rng(1)
    x, w, b, dy = rng.normal(size=(7, 5)), rng.normal(size=(5, 3)), rng.normal(size=3), rng.normal(size=(7, 3))
    assert np.array_equal(ops.linear(x, w, b if bias else None), x @ w + b if bias else x @ w)
    dx, grads = ops.linear_backward(x, w, dy, bias)
    assert np.array_equal(dx, dy @ w.T) and np.array_equal(grads["weight"], x.T @ dy)
    assert sorted(grads) == (["bias", "weight"] if bias else ["weight"])
    if bias:
        assert np.array_equal(grads["bias"], dy.sum(axis=0))
    if ops.mutable:  # the model's gradient buffer, written in place
        out = {"weight": np.empty((5, 3)), "bias": np.empty(3)}
        dx_out, written = ops.linear_backward(x, w, dy, bias, need_input_grad=False, out=out)
        assert dx_out is None and written["weight"] is out["weight"]
        assert np.array_equal(out["weight"], grads["weight"])
        if bias:
            assert written["bias"] is out["bias"] and np.array_equal(out["bias"], grads["bias"])


def test_dropout_multiplier_equals_the_scaled_mask(backend):
    model = _model(backend, backend.device, dtype="float32")
    keep = model.xp.asarray(model.backend.asarray(np.array([[True, False, True], [False, True, True]])))
    expected = np.array([[1, 0, 1], [0, 1, 1]], dtype=np.float32) * np.float32(1 / 0.8)
    for result in (model.ops.dropout_multiplier(keep, 0.2, model.dtype),
                   generic.dropout_multiplier(model.xp, keep, 0.2, model.dtype)):
        assert result.dtype == model.dtype and np.array_equal(numpy_of(result), expected)


def test_constants_are_made_once_on_a_device():
    """On a device backend the one-hot row of the labels and the Dropout factors are kept: a later
    step makes neither again (no arange, no upload)."""
    from mlp_xp.tools.counting import count_array_work

    model = _strict_device1_model()
    logits, labels, _, _ = _data(model)
    keep = logits > 0
    ops, loss = model.ops, mx.losses.CrossEntropy()
    loss.ops_value_and_grad(ops, logits, labels)
    ops.dropout_multiplier(keep, 0.2, model.dtype)
    with count_array_work() as work:
        value, grad = loss.ops_value_and_grad(ops, logits, labels)
        factor = ops.dropout_multiplier(keep, 0.2, model.dtype)
    assert "arange" not in work.by_name and work.uploads == 0 and work.syncs == 0
    assert work.by_name.get("where") == 1 and work.by_name.get("astype") == 1  # (the one-hot row's comparison)
    assert value.device == grad.device == factor.device == model.device
