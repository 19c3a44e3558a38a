"""Losses at PyTorch parity: every loss and option (weights, ignore_index, label smoothing up to 1,
pos_weight, reductions, L1, SmoothL1, KLDivergence) against the ``torch.nn.functional`` function
named in each case, in float64, for random and +-1e4 logits; central-difference gradients; every
backend (array-api-strict on its second device too); labels out of range refused in every entry
point; fit's refusal of reductions other than "mean"; the training path with options; configs."""

import json

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp._backend import resolve_backend
from mlp_xp.nn.losses import LOSS_TYPES

from .conftest import numpy_of, relative_error

L = mx.losses
rng = np.random.default_rng(22)
N, C = 7, 4
LOGITS = rng.normal(size=(N, C)) * 3
EXTREME = np.where(rng.uniform(size=(N, C)) < 0.5, -1e4, 1e4)
LABELS = np.array([0, 3, 1, 2, 3, 0, 1])
IGNORED = np.array([0, -100, 1, 2, -100, 0, 3])  # torch's default ignore_index
IGNORE_TWO = np.array([0, 2, 1, 2, 3, 2, 1])  # ignore_index inside the class range
SOFT = rng.dirichlet(np.ones(C), size=N)
SOFT[2] = [0.0, 0.5, 0.5, 0.0]  # exact zeros: 0 log 0 in KL
BINARY = rng.uniform(size=(N, C))
BINARY[:, 0] = np.round(BINARY[:, 0])
REAL = rng.normal(size=(N, C)) * 2
REAL[0, 0] = LOGITS[0, 0]  # a zero difference: L1's and SmoothL1's gradient there is 0
WEIGHT = (0.5, 2.0, 1.0, 3.0)
POS_WEIGHT = (3.0, 0.5, 1.0, 2.0)

T = "torch.nn.functional."
# id -> (loss factory, target, torch function name, torch call (F, z, t, torch) -> tensor)
CASES = {}


def _case(name, make, target, function, call):
    CASES[name] = (make, target, function, call)


def _w(torch, values):
    return torch.tensor(values, dtype=torch.float64)


for reduction in ("mean", "sum", "none"):
    _case(f"ce-labels-{reduction}", lambda r=reduction: L.CrossEntropy(reduction=r), LABELS, "cross_entropy",
          lambda F, z, t, torch, r=reduction: F.cross_entropy(z, t, reduction=r))
    _case(f"ce-weight-{reduction}", lambda r=reduction: L.CrossEntropy(weight=WEIGHT, reduction=r), LABELS,
          "cross_entropy", lambda F, z, t, torch, r=reduction: F.cross_entropy(z, t, weight=_w(torch, WEIGHT),
                                                                               reduction=r))
    _case(f"ce-ignore-{reduction}", lambda r=reduction: L.CrossEntropy(ignore_index=-100, reduction=r), IGNORED,
          "cross_entropy", lambda F, z, t, torch, r=reduction: F.cross_entropy(z, t, reduction=r))
    _case(f"ce-all-options-{reduction}", lambda r=reduction: L.CrossEntropy(
        weight=WEIGHT, ignore_index=-100, label_smoothing=0.2, reduction=r), IGNORED, "cross_entropy",
          lambda F, z, t, torch, r=reduction: F.cross_entropy(z, t, weight=_w(torch, WEIGHT), ignore_index=-100,
                                                              label_smoothing=0.2, reduction=r))
    _case(f"ce-soft-weight-smooth-{reduction}", lambda r=reduction: L.CrossEntropy(
        weight=WEIGHT, label_smoothing=0.1, reduction=r), SOFT, "cross_entropy",
          lambda F, z, t, torch, r=reduction: F.cross_entropy(z, t, weight=_w(torch, WEIGHT), label_smoothing=0.1,
                                                              reduction=r))
    _case(f"bce-{reduction}", lambda r=reduction: L.BinaryCrossEntropy(reduction=r), BINARY,
          "binary_cross_entropy_with_logits",
          lambda F, z, t, torch, r=reduction: F.binary_cross_entropy_with_logits(z, t, reduction=r))
    _case(f"bce-pos-weight-weight-{reduction}", lambda r=reduction: L.BinaryCrossEntropy(
        pos_weight=POS_WEIGHT, weight=WEIGHT, reduction=r), BINARY, "binary_cross_entropy_with_logits",
          lambda F, z, t, torch, r=reduction: F.binary_cross_entropy_with_logits(
              z, t, weight=_w(torch, WEIGHT), pos_weight=_w(torch, POS_WEIGHT), reduction=r))
    _case(f"mse-{reduction}", lambda r=reduction: L.MSE(reduction=r), REAL, "mse_loss",
          lambda F, z, t, torch, r=reduction: F.mse_loss(z, t, reduction=r))
    _case(f"huber-{reduction}", lambda r=reduction: L.Huber(delta=1.5, reduction=r), REAL, "huber_loss",
          lambda F, z, t, torch, r=reduction: F.huber_loss(z, t, delta=1.5, reduction=r))
    _case(f"l1-{reduction}", lambda r=reduction: L.L1(reduction=r), REAL, "l1_loss",
          lambda F, z, t, torch, r=reduction: F.l1_loss(z, t, reduction=r))
    _case(f"smooth-l1-{reduction}", lambda r=reduction: L.SmoothL1(beta=0.7, reduction=r), REAL, "smooth_l1_loss",
          lambda F, z, t, torch, r=reduction: F.smooth_l1_loss(z, t, beta=0.7, reduction=r))
    kl_reduction = {"mean": "batchmean", "sum": "sum", "none": "none"}[reduction]
    _case(f"kl-{reduction}", lambda r=reduction: L.KLDivergence(reduction=r), SOFT, "kl_div",
          lambda F, z, t, torch, r=kl_reduction: _kl(F, z, t, r, False))
    _case(f"kl-log-target-{reduction}", lambda r=reduction: L.KLDivergence(log_target=True, reduction=r),
          np.log(np.where(SOFT > 0, SOFT, 1e-300)), "kl_div",
          lambda F, z, t, torch, r=kl_reduction: _kl(F, z, t, r, True))

_case("ce-ignore-in-range", lambda: L.CrossEntropy(ignore_index=2, label_smoothing=0.3), IGNORE_TWO, "cross_entropy",
      lambda F, z, t, torch: F.cross_entropy(z, t, ignore_index=2, label_smoothing=0.3))
_case("ce-smoothing-1", lambda: L.CrossEntropy(label_smoothing=1.0), LABELS, "cross_entropy",
      lambda F, z, t, torch: F.cross_entropy(z, t, label_smoothing=1.0))
_case("ce-weight-smoothing-1", lambda: L.CrossEntropy(label_smoothing=1.0, weight=WEIGHT), LABELS, "cross_entropy",
      lambda F, z, t, torch: F.cross_entropy(z, t, label_smoothing=1.0, weight=_w(torch, WEIGHT)))
_case("ce-soft-smoothing-1", lambda: L.CrossEntropy(label_smoothing=1.0), SOFT, "cross_entropy",
      lambda F, z, t, torch: F.cross_entropy(z, t, label_smoothing=1.0))
_case("bce-one-pos-weight", lambda: L.BinaryCrossEntropy(pos_weight=[2.5]), BINARY, "binary_cross_entropy_with_logits",
      lambda F, z, t, torch: F.binary_cross_entropy_with_logits(z, t, pos_weight=_w(torch, [2.5])))
_case("smooth-l1-beta-0", lambda: L.SmoothL1(beta=0.0), REAL, "smooth_l1_loss",
      lambda F, z, t, torch: F.smooth_l1_loss(z, t, beta=0.0))
_case("kl-labels", lambda: L.KLDivergence(), LABELS, "kl_div",
      lambda F, z, t, torch: F.kl_div(F.log_softmax(z, dim=1), F.one_hot(t, C).double(), reduction="batchmean"))


def _kl(F, z, t, reduction, log_target):
    """torch.nn.functional.kl_div of log_softmax(z); "none" summed per sample (this loss's "none")."""
    log_q = F.log_softmax(z, dim=1)
    if reduction == "none":
        return F.kl_div(log_q, t, reduction="none", log_target=log_target).sum(dim=1)
    return F.kl_div(log_q, t, reduction=reduction, log_target=log_target)


def _torch_reference(case, logits):
    torch = pytest.importorskip("torch")
    make, target, function, call = CASES[case]
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(target)
    expected = call(torch.nn.functional, z, t, torch)
    expected.sum().backward()
    return expected.detach().numpy(), z.grad.numpy()


def _close(actual, expected, rtol=1e-12):
    """Per-tensor relative error (max |a - e| / max |e|) below ``rtol``, NaN where expected."""
    actual, expected = np.asarray(numpy_of(actual)), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    scale = np.max(np.abs(np.nan_to_num(expected)), initial=0.0)
    error = np.max(np.abs(np.nan_to_num(actual) - np.nan_to_num(expected)), initial=0.0)
    assert error <= rtol * scale + 1e-300, (error, scale)


@pytest.mark.parametrize("scale", ["random", "extreme"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_value_and_grad_match_torch(case, scale):
    """Each case against the ``torch.nn.functional`` function it names (values and gradients
    with respect to the logits / inputs, float64, ~1e-12 relative)."""
    logits = LOGITS if scale == "random" else EXTREME
    expected_value, expected_grad = _torch_reference(case, logits)
    make, target, function, _ = CASES[case]
    value, grad = make().value_and_grad(logits, target)
    _close(value, expected_value)
    _close(grad, expected_grad)
    _close(make().value(logits, target), expected_value)
    assert function in dir(pytest.importorskip("torch").nn.functional)


def _numeric_gradient(loss, logits, target, eps=1e-6):
    numeric = np.empty_like(logits)
    for index in np.ndindex(logits.shape):
        shifted = logits.copy()
        shifted[index] += eps
        plus = float(np.sum(loss.value(shifted, target)))
        shifted[index] -= 2 * eps
        numeric[index] = (plus - float(np.sum(loss.value(shifted, target)))) / (2 * eps)
    return numeric


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_matches_central_differences(case):
    make, target, _, _ = CASES[case]
    loss = make()
    logits = LOGITS.copy()
    if isinstance(loss, (L.L1, L.SmoothL1)):  # away from the kinks (|d| = 0, |d| = beta)
        logits = np.where(np.abs(logits - REAL) < 1e-3, logits + 0.1, logits)
        logits[0, 0] += 0.05
    _, grad = loss.value_and_grad(logits, target)
    assert relative_error(grad, _numeric_gradient(loss, logits, target)) < 1e-7


def _on(backend, array):
    be = resolve_backend(backend, backend.device)
    return be.asarray(array, dtype=be.xp.int64 if array.dtype.kind == "i" else be.xp.float64)


@pytest.mark.parametrize("case", sorted(c for c in CASES if c.endswith(("-none", "-mean", "-1", "range"))))
def test_every_backend_computes_the_same(case, backend):
    """The generic code of each loss and option on every backend, array-api-strict's second
    device included, equal to numpy's in float64."""
    make, target, _, _ = CASES[case]
    for logits in (LOGITS, EXTREME):
        expected_value, expected_grad = make().value_and_grad(logits, target)
        value, grad = make().value_and_grad(_on(backend, logits), _on(backend, target))
        if backend.device is not None:
            assert value.device == backend.device and grad.device == backend.device
        _close(value, expected_value, 1e-13)
        _close(grad, expected_grad, 1e-13)


# ---------------------------------------------------------------------- labels out of range


@pytest.mark.parametrize("labels,ignore_index,message", [
    (IGNORED, None, r"label out of range: target\[1\] = -100 but the output has 4 classes, so labels must be in "
                    r"\[0, 3\]$"),
    (np.array([0, 1, 4, 0, 1, 2, 3]), None, r"target\[2\] = 4"),
    (np.array([0, 1, -100, -5, 1, 2, 3]), -100, r"target\[3\] = -5 .* or equal ignore_index=-100"),
])
@pytest.mark.parametrize("make", [L.CrossEntropy, L.KLDivergence], ids=["ce", "kl"])
def test_out_of_range_labels_are_errors_in_value_and_value_and_grad(labels, ignore_index, message, make, backend):
    if ignore_index is not None and make is L.KLDivergence:
        pytest.skip("KLDivergence has no ignore_index")
    loss = make() if ignore_index is None else make(ignore_index=ignore_index)
    for reduction_loss in (loss, type(loss)(**{**loss.config(), "reduction": "none"})):
        for entry in (reduction_loss.value, reduction_loss.value_and_grad):
            with pytest.raises(ValueError, match=message):
                entry(_on(backend, LOGITS), _on(backend, labels))


def test_out_of_range_labels_under_jax_jit_give_nan():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    loss = L.CrossEntropy(weight=WEIGHT)
    value = jax.jit(lambda z, t: loss.value_and_grad(z, t, jnp)[0])(jnp.asarray(LOGITS), jnp.asarray(IGNORED))
    assert np.isnan(float(value))
    fine = jax.jit(lambda z, t: loss.value_and_grad(z, t, jnp)[0])(jnp.asarray(LOGITS), jnp.asarray(LABELS))
    assert float(fine) == pytest.approx(float(loss.value(LOGITS, LABELS)), rel=1e-12)


def _classifier(seed=0):
    return mx.Sequential(mx.Linear(3, 8), mx.ReLU(), mx.Linear(8, C), mx.Softmax(), dtype="float64", seed=seed)


X = rng.normal(size=(40, 3))
Y = rng.integers(0, C, size=40)
Y_IGNORED = np.where(rng.uniform(size=40) < 0.3, -100, Y)


def test_fit_and_evaluate_refuse_out_of_range_labels_and_accept_ignore_index():
    model = _classifier()
    before = numpy_of(model.params)
    for call in (lambda loss: model.fit(X, Y_IGNORED, loss, mx.optim.SGD(lr=0.1), epochs=1, verbose=0),
                 lambda loss: model.evaluate(X, Y_IGNORED, loss),
                 lambda loss: model.loss_and_grad(X, Y_IGNORED, loss)):
        with pytest.raises(ValueError, match=r"label out of range: y\[\d+\] = -100 but the model has 4 outputs"):
            call(L.CrossEntropy())
    np.testing.assert_array_equal(numpy_of(model.params), before)
    history = model.fit(X, Y_IGNORED, L.CrossEntropy(ignore_index=-100), mx.optim.SGD(lr=0.1), epochs=2, verbose=0)
    assert np.all(np.isfinite(history["loss"]))
    assert np.isfinite(model.evaluate(X, Y_IGNORED, L.CrossEntropy(ignore_index=-100), batch_size=64)["loss"])


@pytest.mark.parametrize("loss", [
    L.CrossEntropy(weight=WEIGHT, ignore_index=-100, label_smoothing=0.1),
    L.CrossEntropy(ignore_index=2),
    L.KLDivergence(),
], ids=repr)
def test_training_path_with_options_matches_torch(loss):
    """model.loss_and_grad (the training step's path, fused with the Softmax output) against
    torch.nn.functional.cross_entropy / kl_div of the same network in float64."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    model = _classifier(1)
    y = Y_IGNORED if loss.config().get("ignore_index") == -100 else Y
    value, grads = model.loss_and_grad(X, y, loss)
    state = {key: torch.tensor(numpy_of(v), requires_grad=True) for key, v in model.state_dict().items()}
    hidden = torch.relu(torch.tensor(X) @ state["0.weight"] + state["0.bias"])
    logits = hidden @ state["2.weight"] + state["2.bias"]
    if isinstance(loss, L.KLDivergence):
        expected = F.kl_div(F.log_softmax(logits, dim=1), F.one_hot(torch.tensor(y), C).double(), reduction="batchmean")
    else:
        config = loss.config()
        weight = None if config["weight"] is None else torch.tensor(config["weight"], dtype=torch.float64)
        expected = F.cross_entropy(logits, torch.tensor(y), weight=weight, ignore_index=config["ignore_index"],
                                   label_smoothing=config["label_smoothing"])
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    for key, tensor in state.items():
        _close(grads[key], tensor.grad.numpy(), 1e-11)


@pytest.mark.parametrize("loss,y", [
    (L.CrossEntropy(weight=WEIGHT, ignore_index=-100), Y_IGNORED),
    (L.CrossEntropy(label_smoothing=1.0), Y),
    (L.KLDivergence(), Y),
], ids=["ce-options", "ce-smoothing-1", "kl"])
def test_gradient_check_of_the_model(loss, y):
    result = mx.check_gradients(_classifier(2), X[:12], y[:12], loss)
    assert result.ok, result.errors


@pytest.mark.parametrize("make,out,y", [
    (lambda: L.BinaryCrossEntropy(pos_weight=POS_WEIGHT, weight=WEIGHT), mx.Sigmoid(), BINARY[:, :2].repeat(20, 0)),
    (lambda: L.L1(), None, REAL.repeat(6, 0)[:40]),
    (lambda: L.SmoothL1(beta=0.5), None, REAL.repeat(6, 0)[:40]),
], ids=["bce-options", "l1", "smooth-l1"])
def test_new_options_train_and_gradient_check(make, out, y):
    y = y[:40, :C] if y.shape[1] >= C else np.tile(y, (1, 2))[:40]
    layers = [mx.Linear(3, 8), mx.ReLU(), mx.Linear(8, C)] + ([out] if out is not None else [])
    model = mx.Sequential(*layers, dtype="float64", seed=3)
    assert mx.check_gradients(model, X[:12], y[:12], make()).ok
    history = model.fit(X, y, make(), mx.optim.Adam(lr=1e-2), epochs=3, verbose=0)
    assert history["loss"][-1] < history["loss"][0]


def test_all_ignored_batch_trains_as_zero_but_value_is_nan_as_torch():
    loss = L.CrossEntropy(ignore_index=-100)
    labels = np.full(N, -100)
    value, grad = loss.value_and_grad(LOGITS, labels)
    assert np.isnan(float(value))  # 0 / 0, as torch.nn.functional.cross_entropy
    model = _classifier()
    value, grads = model.loss_and_grad(X[:N], labels, loss)
    assert value == 0.0 and all(np.all(numpy_of(g) == 0) for g in grads.values())


# ---------------------------------------------------------------------- fit and reductions


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_fit_and_evaluate_refuse_other_reductions_before_any_work(reduction):
    model = _classifier()
    before = numpy_of(model.params)
    loss = L.CrossEntropy(reduction=reduction)
    for call in (lambda: model.fit(X, Y, loss, mx.optim.SGD(lr=0.1), epochs=1, verbose=0),
                 lambda: model.evaluate(X, Y, loss), lambda: model.loss_and_grad(X, Y, loss),
                 lambda: mx.check_gradients(model, X[:4], Y[:4], loss)):
        with pytest.raises(ValueError, match=f"take reduction='mean' only; use reduction='{reduction}' through"):
            call()
    np.testing.assert_array_equal(numpy_of(model.params), before)
    regression = mx.Sequential(mx.Linear(3, 2), dtype="float64")
    with pytest.raises(ValueError, match="reduction='mean' only"):
        regression.fit(X, REAL[:1].repeat(40, 0)[:, :2], L.MSE(reduction=reduction), mx.optim.SGD(), verbose=0)


def test_weight_length_must_match_the_classes():
    model = _classifier()
    with pytest.raises(ValueError, match="CrossEntropy weight has 3 entries but the output has 4 classes"):
        model.fit(X, Y, L.CrossEntropy(weight=[1, 2, 3]), mx.optim.SGD(), verbose=0)
    with pytest.raises(ValueError, match="weight has 3 entries but the output has 4 classes"):
        L.CrossEntropy(weight=[1, 2, 3]).value_and_grad(LOGITS, LABELS)
    with pytest.raises(ValueError, match="pos_weight has 2 entries but the output has 4 outputs"):
        L.BinaryCrossEntropy(pos_weight=[1, 2]).value_and_grad(LOGITS, BINARY)


def test_fast_paths_unchanged_and_uniform_weight_equals_plain():
    """The plain loss keeps the fused fast path (ops.cross_entropy); an all-ones weight takes the
    general path and trains to the same weights."""
    results = []
    for loss in (L.CrossEntropy(), L.CrossEntropy(weight=[1.0] * C)):
        model = _classifier(4)
        history = model.fit(X, Y, loss, mx.optim.Adam(lr=1e-2), epochs=2, batch_size=8, verbose=0)
        results.append((numpy_of(model.params), history["loss"]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-10)


def test_fast_path_is_used_only_for_the_plain_loss(monkeypatch):
    model = _classifier()
    calls = []
    original = type(model.ops).cross_entropy

    def spy(self, *args):
        calls.append(args)
        return original(self, *args)

    monkeypatch.setattr(type(model.ops), "cross_entropy", spy)
    model.loss_and_grad(X, Y, L.CrossEntropy(label_smoothing=0.1))
    assert len(calls) == 1
    model.loss_and_grad(X, Y, L.CrossEntropy(weight=WEIGHT))
    model.loss_and_grad(X, Y_IGNORED, L.CrossEntropy(ignore_index=-100))
    assert len(calls) == 1


# ---------------------------------------------------------------------- arguments and configs


@pytest.mark.parametrize("make,message", [
    (lambda: L.CrossEntropy(label_smoothing=1.5), r"label_smoothing must be in \[0, 1\]"),
    (lambda: L.CrossEntropy(weight=[1, -1]), "must hold finite numbers >= 0"),
    (lambda: L.CrossEntropy(weight=[[1, 2]]), "1-D"),
    (lambda: L.CrossEntropy(ignore_index=1.5), "ignore_index must be an int"),
    (lambda: L.CrossEntropy(reduction="avg"), "reduction must be one of 'mean', 'sum', 'none'"),
    (lambda: L.KLDivergence(reduction="batchmean"), "torch's 'batchmean'"),
    (lambda: L.BinaryCrossEntropy(pos_weight=[np.nan]), "finite"),
    (lambda: L.SmoothL1(beta=-1), "beta must be >= 0"),
    (lambda: L.Huber(delta=0), "delta must be > 0"),
    (lambda: L.KLDivergence(log_target="yes"), "log_target must be True or False"),
])
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_round_trips_through_json_and_the_registry(case):
    loss = CASES[case][0]()
    assert type(loss).__name__ in LOSS_TYPES
    again = LOSS_TYPES[type(loss).__name__](**json.loads(json.dumps(loss.config())))
    assert again.config() == loss.config() and repr(again) == repr(loss)
    np.testing.assert_array_equal(numpy_of(again.value(LOGITS, CASES[case][1])),
                                  numpy_of(loss.value(LOGITS, CASES[case][1])))


def test_weights_from_any_backend():
    torch = pytest.importorskip("torch")
    assert L.CrossEntropy(weight=torch.tensor(WEIGHT)).weight == WEIGHT
    assert L.CrossEntropy(weight=np.array(WEIGHT, dtype=np.float32)).weight == WEIGHT


def test_kl_log_target_checks_in_fit():
    model = _classifier()
    with pytest.raises(ValueError, match="log_target=True.*log-probabilities"):
        model.fit(X, Y, L.KLDivergence(log_target=True), mx.optim.SGD(), verbose=0)
    with pytest.raises(ValueError, match=r"log-probabilities \(<= 0\)"):
        model.fit(X, SOFT[:1].repeat(40, 0), L.KLDivergence(log_target=True), mx.optim.SGD(), verbose=0)
    history = model.fit(X, np.log(rng.dirichlet(np.ones(C), size=40)), L.KLDivergence(log_target=True),
                        mx.optim.SGD(lr=0.1), epochs=1, verbose=0)
    assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize("options", [{"weight": [1.0, 3.0, 0.5]}, {"ignore_index": -100},
                                     {"weight": [1.0, 3.0, 0.5], "ignore_index": -100, "label_smoothing": 0.1}])
def test_evaluate_gives_the_whole_sets_weighted_mean_however_it_is_batched(options):
    """torch.nn.functional.cross_entropy over all rows at once, against evaluate in batches of 7
    (one of which has only ignored rows)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, size=40)
    if "ignore_index" in options:
        y[::3] = -100
        y[7:14] = -100  # (a whole batch ignored: it counts for nothing)
    model = mx.Sequential(mx.Linear(4, 3), dtype="float64", seed=0)
    loss = mx.losses.CrossEntropy(**options)
    ours = model.evaluate(X, y, loss, batch_size=7)["loss"]
    logits = torch.tensor(mx.to_numpy(model.forward(X, loss=loss)))
    kwargs = {"weight": torch.tensor(options["weight"], dtype=torch.float64)} if "weight" in options else {}
    theirs = torch.nn.functional.cross_entropy(logits, torch.tensor(y), ignore_index=-100,
                                               label_smoothing=options.get("label_smoothing", 0.0), **kwargs)
    assert ours == pytest.approx(float(theirs), rel=1e-12)
    assert model.evaluate(X, y, loss, batch_size=40)["loss"] == pytest.approx(ours, rel=1e-12)
