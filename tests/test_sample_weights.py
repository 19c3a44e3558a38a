"""fit(sample_weight=, class_weight=) with Keras's meaning: a batch's loss is sum_i w_i l_i / rows,
compared with PyTorch computing that loss by hand (per-row losses times weights, mean), on every
backend; class_weight "balanced" as scikit-learn's; metrics= and validation unweighted, and
weighted_metrics= equal to scikit-learn's metrics with sample_weight."""

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import torch_twin

rng = np.random.default_rng(0)
X = rng.normal(size=(48, 5))
LABELS = rng.integers(0, 3, size=48)
VALUES = rng.normal(size=(48, 2))
WEIGHTS = rng.uniform(0, 2, size=48)


def _torch_trajectory(torch, model, loss_of, epochs=4, batch=16, lr=0.1):
    net = torch_twin(torch, model)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    Xt = torch.tensor(X)
    for _ in range(epochs):
        for start in range(0, len(X), batch):
            optimizer.zero_grad()
            loss_of(net(Xt[start:start + batch]), slice(start, start + batch)).backward()
            optimizer.step()
    return net


@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_weighted_fit_equals_torch_weighting_each_rows_loss(kind, backend):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    wt = torch.tensor(WEIGHTS)
    if kind == "cross_entropy":
        target, loss = LABELS, mx.losses.CrossEntropy()
        yt = torch.tensor(LABELS)
        loss_of = lambda out, rows: (functional.cross_entropy(out, yt[rows], reduction="none") * wt[rows]).mean()  # noqa: E731
        outputs = 3
    else:
        target, loss = VALUES, mx.losses.MSE()
        yt = torch.tensor(VALUES)
        loss_of = lambda out, rows: (functional.mse_loss(out, yt[rows], reduction="none").mean(dim=1)  # noqa: E731
                                     * wt[rows]).mean()
        outputs = 2
    model = mx.Sequential(mx.Linear(5, 12), mx.Tanh(), mx.Linear(12, outputs), dtype="float64", seed=0)
    net = _torch_trajectory(torch, model, loss_of)
    model = model.to(backend=backend, device=backend.device)
    model.fit(X, target, loss, mx.optim.SGD(lr=0.1), epochs=4, batch_size=16, shuffle=False, verbose=0,
              sample_weight=WEIGHTS)
    for index in (0, 2):
        np.testing.assert_allclose(mx.to_numpy(model.state_dict()[f"{index}.weight"]),
                                   net[index].weight.detach().numpy().T, rtol=1e-10, atol=1e-13)


def test_class_weight_is_the_weight_of_each_rows_class():
    table = {0: 0.5, 1: 2.0, 2: 1.0}
    runs = []
    for options in ({"class_weight": table}, {"sample_weight": np.array([table[label] for label in LABELS])},
                    {"class_weight": "balanced"},
                    {"sample_weight": len(LABELS) / (3 * np.bincount(LABELS)[LABELS])}):
        model = mx.Sequential(mx.Linear(5, 3), dtype="float64", seed=0)
        model.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.Adam(lr=1e-2), epochs=3, batch_size=16,
                  verbose=0, **options)
        runs.append(mx.to_numpy(model.params))
    assert np.array_equal(runs[0], runs[1]) and np.allclose(runs[2], runs[3], rtol=1e-14, atol=0)
    assert not np.allclose(runs[0], runs[2])
    # both: their product
    both = mx.Sequential(mx.Linear(5, 3), dtype="float64", seed=0)
    both.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.Adam(lr=1e-2), epochs=3, batch_size=16, verbose=0,
             class_weight=table, sample_weight=WEIGHTS)
    product = mx.Sequential(mx.Linear(5, 3), dtype="float64", seed=0)
    product.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.Adam(lr=1e-2), epochs=3, batch_size=16, verbose=0,
                sample_weight=WEIGHTS * np.array([table[label] for label in LABELS]))
    assert np.array_equal(mx.to_numpy(both.params), mx.to_numpy(product.params))


def test_unit_weights_train_as_no_weights_and_metrics_and_validation_stay_unweighted():
    runs = []
    for options in ({}, {"sample_weight": np.ones(48)}):
        model = mx.Sequential(mx.Linear(5, 8), mx.ReLU(), mx.Linear(8, 3), mx.Softmax(), dtype="float64", seed=0)
        history = model.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.SGD(lr=0.1), epochs=3, batch_size=16,
                            validation_data=(X[:10], LABELS[:10]), verbose=0, **options)
        runs.append((mx.to_numpy(model.params), history))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-13, atol=1e-15)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(runs[1][1][key], runs[0][1][key], rtol=1e-12)
    # heavy weights change the training loss, not how accuracy or validation are counted
    model = mx.Sequential(mx.Linear(5, 8), mx.ReLU(), mx.Linear(8, 3), mx.Softmax(), dtype="float64", seed=0)
    history = model.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.SGD(lr=0.0), epochs=1, batch_size=48,
                        validation_data=(X, LABELS), verbose=0, sample_weight=np.full(48, 10.0))
    assert history["loss"][0] == pytest.approx(10 * history["val_loss"][0], rel=1e-12)
    assert history["accuracy"][0] == history["val_accuracy"][0]


def test_weights_with_the_jitted_jax_step_and_a_fused_output():
    pytest.importorskip("jax")
    runs = []
    for backend in ("numpy", "jax"):
        model = mx.Sequential(mx.Linear(5, 8), mx.ReLU(), mx.Linear(8, 3), mx.Softmax(), dtype="float64", seed=0,
                              backend=backend)
        model.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.Adam(lr=1e-2), epochs=2, batch_size=16, verbose=0,
                  class_weight="balanced")
        runs.append(mx.to_numpy(model.params))
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("options,match", [
    ({"sample_weight": -WEIGHTS}, r"sample_weight must hold finite numbers >= 0; row 0 has"),
    ({"sample_weight": WEIGHTS[:10]}, r"sample_weight must have shape \(48,\), one weight per row, got \(10,\)"),
    ({"sample_weight": np.zeros(48)}, "every row has weight 0"),
    ({"class_weight": {0: 1.0, 1: 2.0}}, r"class_weight gives no weight for the classes \[2\]"),
    ({"class_weight": "balance"}, r'class_weight must be a \{label: weight\} mapping or "balanced"'),
    ({"class_weight": {0: -1.0, 1: 1.0, 2: 1.0}}, r"class_weight\[0\] must be a finite number >= 0"),
    ({"sample_weight": WEIGHTS, "validation_split": 0.2}, "sample_weight with validation_split"),
])
def test_bad_weights_are_refused_before_any_step(options, match):
    model = mx.Sequential(mx.Linear(5, 3), seed=0)
    before = mx.to_numpy(model.params).copy()
    with pytest.raises(ValueError, match=match):
        model.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.SGD(lr=0.1), verbose=0, **options)
    assert np.array_equal(mx.to_numpy(model.params), before)


def test_class_weight_needs_class_labels_and_weights_need_in_memory_data():
    model = mx.Sequential(mx.Linear(5, 2), seed=0)
    with pytest.raises(ValueError, match="class_weight needs a classification loss"):
        model.fit(X, VALUES, mx.losses.MSE(), mx.optim.SGD(), verbose=0, class_weight="balanced")
    batches = mx.datasets.Batches(X, LABELS, batch_size=16)
    with pytest.raises(ValueError, match="need in-memory data"):
        mx.Sequential(mx.Linear(5, 3), seed=0).fit(batches, None, mx.losses.CrossEntropy(), mx.optim.SGD(),
                                                     verbose=0, sample_weight=WEIGHTS)


def test_class_weight_with_ignored_labels():
    """Rows of CrossEntropy's ignore_index label count for nothing; "balanced" counts the others."""
    labels = LABELS.copy()
    labels[::4] = -100
    kept = labels >= 0
    balanced = np.ones(48)
    balanced[kept] = kept.sum() / (3 * np.bincount(labels[kept])[labels[kept]])
    runs = []
    for options in ({"class_weight": "balanced"}, {"sample_weight": balanced}):
        model = mx.Sequential(mx.Linear(5, 3), dtype="float64", seed=0)
        model.fit(X, labels, mx.losses.CrossEntropy(ignore_index=-100), mx.optim.Adam(lr=1e-2), epochs=2,
                  batch_size=16, verbose=0, **options)
        runs.append(mx.to_numpy(model.params))
    assert np.array_equal(runs[0], runs[1])


def _fixed_fit(model, target, **options):
    """One epoch at learning rate 0: every batch's output is the final model's, so the training
    metrics are the metrics of ``predict`` on all rows."""
    return model.fit(X, target, options.pop("loss"), mx.optim.SGD(lr=0.0), epochs=1, batch_size=16, verbose=0,
                     **options)


def test_weighted_metrics_equal_scikit_learn_s_with_sample_weight(backend):
    """fit(weighted_metrics=) as Keras's weighted_metrics: each row's value times its weight over
    the sum of the weights, equal to scikit-learn's metrics with sample_weight (JAX: the jitted step)."""
    metrics = pytest.importorskip("sklearn.metrics")
    model = mx.Sequential(mx.Linear(5, 4), dtype="float64", seed=0, **backend.options)
    balanced = LABELS.size / (3 * np.bincount(LABELS))
    history = _fixed_fit(model, LABELS, loss="cross_entropy", sample_weight=WEIGHTS, class_weight="balanced",
                         weighted_metrics=["accuracy", "top_2_accuracy"], metrics=["top_2_accuracy"])
    scores = mx.to_numpy(model.predict(X))
    row_weight = WEIGHTS * balanced[LABELS]
    assert history["weighted_accuracy"][0] == pytest.approx(
        metrics.accuracy_score(LABELS, scores.argmax(1), sample_weight=row_weight), rel=1e-13)
    assert history["weighted_top_2_accuracy"][0] == pytest.approx(
        metrics.top_k_accuracy_score(LABELS, scores, k=2, sample_weight=row_weight, labels=[0, 1, 2, 3]), rel=1e-13)
    assert history["accuracy"][0] == pytest.approx(metrics.accuracy_score(LABELS, scores.argmax(1)), rel=1e-13)
    assert history["weighted_accuracy"][0] != history["accuracy"][0]

    model = mx.Sequential(mx.Linear(5, 2), dtype="float64", seed=0, **backend.options)
    history = _fixed_fit(model, VALUES, loss="mse", sample_weight=WEIGHTS, weighted_metrics=["r2", "mae", "mse", "rmse"])
    predicted = mx.to_numpy(model.predict(X))
    expected = {"r2": metrics.r2_score(VALUES, predicted, sample_weight=WEIGHTS),
                "mae": metrics.mean_absolute_error(VALUES, predicted, sample_weight=WEIGHTS),
                "mse": metrics.mean_squared_error(VALUES, predicted, sample_weight=WEIGHTS)}
    expected["rmse"] = np.sqrt(expected["mse"])
    for name, value in expected.items():
        assert history[f"weighted_{name}"][0] == pytest.approx(value, rel=1e-12), name


def test_weighted_metrics_without_weights_are_the_metrics_and_have_no_validation_form():
    model = mx.Sequential(mx.Linear(5, 2), dtype="float64", seed=0)
    history = model.fit(X, VALUES, "mse", mx.optim.SGD(lr=0.05), epochs=2, batch_size=16, verbose=0, metrics="r2",
                        weighted_metrics="r2", validation_data=(X[:8], VALUES[:8]))
    assert list(history) == ["loss", "r2", "weighted_r2", "val_loss", "val_r2", "lr"]
    np.testing.assert_allclose(history["weighted_r2"], history["r2"], rtol=1e-12)
    stopper = mx.callbacks.EarlyStopping(monitor="weighted_r2", mode="max", patience=5)
    model.fit(X, VALUES, "mse", "sgd", epochs=1, batch_size=16, verbose=0, weighted_metrics=["r2"], callbacks=[stopper])
    assert stopper.best_epoch >= 1


def test_weighted_metrics_are_checked_before_any_step():
    class Median(mx.metrics.Metric):  # (no per-row form: not a mean of rows)
        name = "median"

        def update(self, totals, output, target, xp):
            return totals

    model = mx.Sequential(mx.Linear(5, 2), seed=0)
    before = mx.to_numpy(model.params)
    with pytest.raises(ValueError, match="unknown metric 'accuracyy'"):
        model.fit(X, VALUES, "mse", "adam", verbose=0, weighted_metrics=["accuracyy"])
    with pytest.raises(ValueError, match="metric 'accuracy' does not apply to MSE"):
        model.fit(X, VALUES, "mse", "adam", verbose=0, weighted_metrics=["accuracy"])
    with pytest.raises(ValueError, match="metric 'median' has no weighted form"):
        model.fit(X, VALUES, "mse", "adam", verbose=0, weighted_metrics=[Median()])
    np.testing.assert_array_equal(mx.to_numpy(model.params), before)


def test_weighted_r2_merged_over_processes_equals_the_weighted_r2_of_all_rows():
    rng = np.random.default_rng(1)
    y = rng.normal(1e4, 3.0, size=(40, 2))
    prediction, weights = y + rng.normal(size=(40, 2)), rng.uniform(0, 2, 40)
    weights[7:12] = 0.0  # (a process whose rows all weigh 0)
    metric, xp = mx.metrics.R2Score(), np
    whole = metric.weighted_result(metric.weighted_update(None, prediction, y, weights, xp))
    parts = [(metric.weighted_update(None, prediction[a:b], y[a:b], weights[a:b], xp), b - a)
             for a, b in ((0, 7), (7, 12), (12, 30), (30, 40))]
    assert metric.weighted_result(metric.weighted_merge(parts)) == pytest.approx(whole, rel=1e-12)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert whole == pytest.approx(sklearn_metrics.r2_score(y, prediction, sample_weight=weights), rel=1e-9)


def test_a_weighted_metric_without_a_weighted_form_is_refused_before_a_resume(tmp_path):
    class Median(mx.metrics.Metric):
        name = "median"

    model = mx.Sequential(mx.Linear(5, 2), seed=0)
    optimizer = mx.optim.Adam()
    model.fit(X, VALUES, "mse", optimizer, epochs=2, verbose=0)
    mx.save(model, tmp_path / "m.safetensors", optimizer)
    fresh = mx.Sequential(mx.Linear(5, 2), seed=0)
    before = mx.to_numpy(fresh.params)
    with pytest.raises(ValueError, match="has no weighted form"):
        fresh.fit(X, VALUES, "mse", mx.optim.Adam(), epochs=1, verbose=0, weighted_metrics=[Median()],
                  resume_from=tmp_path / "m.safetensors")
    np.testing.assert_array_equal(mx.to_numpy(fresh.params), before)
    assert fresh.epoch == 0
