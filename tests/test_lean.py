"""The lean step (mlp_xp.train.lean) trains bitwise as the general step does, takes only the models
it plans, and hands everything else to the general step."""

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp.ops.numpy_ops import UfuncOps
from mlp_xp.train import metrics as metric_module
from mlp_xp.train.lean import plan
from mlp_xp.train.step import init_state, make_train_step

from .conftest import numpy_of


def _numba_ops():
    return pytest.importorskip("mlp_xp.ops.numba_ops", reason="numba is not installed").NumbaOps()


OPS = {"ufunc": lambda: UfuncOps(np), "numba": _numba_ops}

NETS = {
    "linear-relu-linear": lambda: [mx.Linear(12, 24), mx.ReLU(), mx.Linear(24, 5)],
    "activation-softmax": lambda: [mx.Linear(12, 16, activation="relu"), mx.Linear(16, 8), mx.ReLU(),
                                   mx.Linear(8, 5), mx.Softmax()],
    "no-relu": lambda: [mx.Linear(12, 9), mx.Linear(9, 5)],
    "one-layer": lambda: [mx.Linear(12, 5)],
}

OPTIMIZERS = {
    "sgd-momentum": lambda: mx.optim.SGD(lr=0.05, momentum=0.9),
    "adam-clip": lambda: mx.optim.Adam(lr=3e-3, clip_norm=1.0),
    "adamw-schedule": lambda: mx.optim.AdamW(lr=mx.optim.schedules.cosine(3e-3, 40), weight_decay=0.05),
    "rmsprop": lambda: mx.optim.RMSprop(lr=1e-3, momentum=0.5),
}


def _data(rows=150, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 12)), rng.integers(0, classes, size=rows)


def _train(ops, layers, optimizer, dtype, X, y, **options):
    model = mx.Sequential(*layers(), dtype=dtype, seed=3)
    model.ops = ops
    history = model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=optimizer(), epochs=3, batch_size=16,
                        verbose=0, **options)
    return numpy_of(model.params), dict(history)


@pytest.mark.parametrize("ops_name", sorted(OPS))
@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_lean_step_trains_bitwise_as_the_general_step(ops_name, net, optimizer, dtype):
    X, y = _data()
    options = {"validation_data": (X[:30], y[:30]), "metrics": ["accuracy"]}
    reference, reference_history = _train(None, NETS[net], OPTIMIZERS[optimizer], dtype, X, y, **options)
    ops = OPS[ops_name]()
    lean, lean_history = _train(ops, NETS[net], OPTIMIZERS[optimizer], dtype, X, y, **options)
    assert np.array_equal(lean, reference)
    assert lean_history == reference_history
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(reference_history)


@pytest.mark.parametrize("ops_name", sorted(OPS))
def test_the_lean_step_is_the_step_of_a_plain_mlp_and_counts_like_accuracy(ops_name):
    ops = OPS[ops_name]()
    model = mx.Sequential(*NETS["linear-relu-linear"](), seed=0)
    model.ops = ops
    loss, optimizer = mx.losses.CrossEntropy(), mx.optim.SGD(lr=0.1)
    metric_list = metric_module.resolve(["accuracy"], loss)
    step = make_train_step(model, loss, optimizer, metric_list)
    assert getattr(step, "lean", False)
    X, y = _data(rows=40)
    x, labels = X.astype(np.float32), y
    state = init_state(model, optimizer, metric_list)
    output = model.forward(x, loss=loss)  # the logits before the step
    state, value = step(state, x, labels)
    assert float(state.totals[0][0]) == float(np.sum(np.argmax(output, axis=-1) == labels))
    assert float(value) == pytest.approx(float(loss.value(output, labels)), rel=1e-6)
    assert state.step == 1 and state.guard.ok


@pytest.mark.parametrize("make, why", [
    (lambda: ([mx.Linear(12, 8), mx.Tanh(), mx.Linear(8, 5)], mx.losses.CrossEntropy(), ()), "Tanh"),
    (lambda: ([mx.Linear(12, 8), mx.ReLU(), mx.Dropout(0.2), mx.Linear(8, 5)], mx.losses.CrossEntropy(), ()),
     "Dropout"),
    (lambda: ([mx.Linear(12, 8), mx.BatchNorm(8), mx.ReLU(), mx.Linear(8, 5)], mx.losses.CrossEntropy(), ()),
     "BatchNorm"),
    (lambda: ([mx.Linear(12, 8, bias=False), mx.ReLU(), mx.Linear(8, 5)], mx.losses.CrossEntropy(), ()), "no bias"),
    (lambda: ([mx.Linear(12, 8), mx.ReLU(), mx.Linear(8, 5), mx.ReLU()], mx.losses.CrossEntropy(), ()),
     "ReLU on the logits"),
    (lambda: ([mx.Linear(12, 8), mx.ReLU(), mx.ReLU(), mx.Linear(8, 5)], mx.losses.CrossEntropy(), ()), "ReLU twice"),
    (lambda: ([mx.ReLU(), mx.Linear(12, 5)], mx.losses.CrossEntropy(), ()), "ReLU first"),
    (lambda: ([mx.Linear(12, 5)], mx.losses.CrossEntropy(label_smoothing=0.1), ()), "label smoothing"),
    (lambda: ([mx.Linear(12, 5)], mx.losses.CrossEntropy(weight=[1.0] * 5), ()), "class weights"),
    (lambda: ([mx.Linear(12, 5)], mx.losses.CrossEntropy(ignore_index=-1), ()), "ignore_index"),
    (lambda: ([mx.Linear(12, 5)], mx.losses.MSE(), ()), "MSE"),
    (lambda: ([mx.Linear(12, 5)], mx.losses.CrossEntropy(), ("top_2_accuracy",)), "top-k accuracy"),
])
def test_other_models_take_the_general_step(make, why):
    layers, loss, metric_names = make()
    model = mx.Sequential(*layers, seed=0)
    metric_list = metric_module.resolve(list(metric_names) or None, loss) if metric_names else ()
    assert plan(model, loss, metric_list) is None, why
    assert not getattr(make_train_step(model, loss, mx.optim.SGD(lr=0.1), metric_list), "lean", False), why


def test_the_generic_ops_and_mixed_precision_take_the_general_step():
    loss = mx.losses.CrossEntropy()
    model = mx.Sequential(*NETS["linear-relu-linear"](), seed=0)
    assert plan(model, loss) is not None
    model.ops = None
    assert plan(model, loss) is None
    assert plan(mx.Sequential(*NETS["linear-relu-linear"](), seed=0, precision="tf32"), loss) is None


@pytest.mark.parametrize("ops_name", sorted(OPS))
def test_batches_the_lean_step_does_not_take_go_to_the_general_step(ops_name):
    """Probability targets and sample weights (a column of the targets) train as the generic ops do."""
    X, y = _data()
    one_hot = np.eye(5)[y]
    weights = np.linspace(0.5, 2.0, len(y))
    for targets, options in ((one_hot, {}), (y, {"sample_weight": weights})):
        model = mx.Sequential(*NETS["linear-relu-linear"](), seed=0)
        reference = mx.Sequential(*NETS["linear-relu-linear"](), seed=0)
        model.ops, reference.ops = OPS[ops_name](), None
        history = model.fit(X, targets, loss="cross_entropy", optimizer=mx.optim.Adam(lr=1e-2), epochs=2,
                            batch_size=16, verbose=0, **options)
        expected = reference.fit(X, targets, loss="cross_entropy", optimizer=mx.optim.Adam(lr=1e-2), epochs=2,
                                 batch_size=16, verbose=0, **options)
        assert np.array_equal(numpy_of(model.params), numpy_of(reference.params))
        assert dict(history) == dict(expected)


@pytest.mark.parametrize("ops_name", sorted(OPS))
def test_a_non_finite_batch_stops_the_lean_step_as_the_general_one(ops_name):
    X, y = _data()
    X = X.astype(np.float32)
    X[37, :] = 3e38  # finite, but its products overflow float32: the third batch of an unshuffled epoch
    for on_nonfinite in ("raise", "skip_batch"):
        results = []
        for ops in (OPS[ops_name](), None):
            model = mx.Sequential(*NETS["linear-relu-linear"](), seed=0)
            model.ops = ops
            before = numpy_of(model.params)
            fit = lambda: model.fit(X, y, loss="cross_entropy", optimizer=mx.optim.SGD(lr=0.1),  # noqa: E731
                                    epochs=1, batch_size=16, shuffle=False, verbose=0, on_nonfinite=on_nonfinite)
            if on_nonfinite == "raise":
                with pytest.raises(mx.NonFiniteError, match="step 3"):
                    fit()
                results.append(numpy_of(model.params))
            else:
                history = fit()
                results.append((numpy_of(model.params), dict(history)))
        if on_nonfinite == "raise":
            assert np.array_equal(results[0], results[1])
            assert not np.array_equal(results[0], before)  # two steps landed
        else:
            assert np.array_equal(results[0][0], results[1][0]) and results[0][1] == results[1][1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_fused_pieces_are_bitwise_the_ufunc_pieces(dtype):
    """numba's one-pass pieces against numpy's, on values with NaN, infinities, ties and signed zeros."""
    fused, reference = _numba_ops(), UfuncOps(np)
    rng = np.random.default_rng(7)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30], dtype=dtype)
    for rows, columns in ((1, 1), (3, 2), (17, 10), (32, 129)):
        def sample():
            a = rng.normal(size=(rows, columns)).astype(dtype)
            a[rng.random(a.shape) < 0.1] = rng.choice(special, size=int(np.sum(rng.random(a.shape) < 0.1)) or 1)[0]
            a[:, -1] = a[:, 0]  # ties
            return a
        h, bias = sample(), rng.normal(size=columns).astype(dtype)
        h2 = h.copy()
        assert np.array_equal(fused.bias_relu(h, bias), reference.bias_relu(h2, bias), equal_nan=True)
        assert np.array_equal(h, h2, equal_nan=True)
        labels = rng.integers(0, columns, size=rows)
        z, z2 = sample(), None
        z2 = z.copy()
        assert fused.shift_logits(z, bias, labels) == reference.shift_logits(z2, bias, labels)
        assert np.array_equal(z, z2, equal_nan=True)
        sums = np.abs(rng.normal(size=(rows, 1))).astype(dtype)
        shifted = sample()
        shifted2, out, out2 = shifted.copy(), np.empty_like(shifted), np.empty_like(shifted)
        fused.log_probs(shifted, sums, labels, out)
        reference.log_probs(shifted2, sums, labels, out2)
        assert np.array_equal(shifted, shifted2, equal_nan=True) and np.array_equal(out, out2, equal_nan=True)
        probs = np.abs(sample())
        probs2 = probs.copy()
        fused.probs_grad(probs, labels, rows)
        reference.probs_grad(probs2, labels, rows)
        assert np.array_equal(probs, probs2, equal_nan=True)
    # a non-contiguous array takes numpy's route, with the same result
    h = rng.normal(size=(8, 6)).astype(dtype)[:, ::2]
    assert np.array_equal(fused.bias_relu(h.copy(), np.ones(3, dtype)), reference.bias_relu(h.copy(), np.ones(3, dtype)))
