"""One contract test runs every layer through the same checks: output shape and dtype,
float64 central-difference gradients for the input and every parameter, and the same run
on every installed backend (array_api_strict included)."""

import math

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp._backend import resolve_backend
from mlp_xp.nn.layers import ForwardContext

from .conftest import numpy_of, relative_error

FEATURES = 5
BATCH = 4

# (layer, expected out features, input sampler: rng -> x). Kinked activations get inputs
# kept away from 0 so central differences never straddle the kink.
def _away_from_zero(rng):
    return rng.choice([-1.0, 1.0], size=(BATCH, FEATURES)) * rng.uniform(0.1, 2.0, size=(BATCH, FEATURES))


def _normal(rng):
    return rng.normal(size=(BATCH, FEATURES)) * 1.5


LAYER_CASES = [
    (mx.Linear(FEATURES, 3), 3, _normal),
    (mx.Linear(FEATURES, 3, bias=False), 3, _normal),
    (mx.ReLU(), FEATURES, _away_from_zero),
    (mx.LeakyReLU(0.1), FEATURES, _away_from_zero),
    (mx.Sigmoid(), FEATURES, _normal),
    (mx.Tanh(), FEATURES, _normal),
    (mx.GELU(), FEATURES, _normal),
    (mx.SiLU(), FEATURES, _normal),
    (mx.ELU(alpha=0.7), FEATURES, _away_from_zero),
    (mx.Softplus(), FEATURES, _normal),
    (mx.Identity(), FEATURES, _normal),
    (mx.Softmax(), FEATURES, _normal),
    (mx.Dropout(0.3), FEATURES, _normal),
    (mx.LayerNorm(), FEATURES, _normal),
    (mx.LayerNorm(elementwise_affine=False), FEATURES, _normal),
    (mx.BatchNorm(), FEATURES, _normal),  # (training mode: the batch's statistics)
    (mx.BatchNorm(affine=False, track_running_stats=False), FEATURES, _normal),
]
IDS = [repr(case[0]) for case in LAYER_CASES]


def _run(layer, backend, dtype, seed=0):
    """Forward + backward of ``layer`` on ``backend`` with scalar objective sum(y * dy)."""
    be = resolve_backend(backend, getattr(backend, "device", None))
    xp = be.xp
    rng = np.random.default_rng(seed)
    case = next(c for c in LAYER_CASES if c[0] is layer)
    x_host = case[2](rng)
    params_host = {name: value + 0.1 * rng.normal(size=value.shape)  # move off ones/zeros
                   for name, value in layer.init_params(rng, FEATURES, "glorot").items()}
    dy_host = rng.normal(size=(BATCH, case[1]))
    mask_host = rng.random((BATCH, FEATURES))
    ctx = ForwardContext(xp, True, lambda shape, dt: be.asarray(mask_host, dtype=dt))
    dtype_obj = be.dtype(dtype)

    def objective(x_values, params_values):
        x = be.asarray(x_values, dtype=dtype_obj)
        params = {k: be.asarray(v, dtype=dtype_obj) for k, v in params_values.items()}
        y, backward = layer.forward(params, x, ctx)
        return y, backward, float(xp.sum(y * be.asarray(dy_host, dtype=dtype_obj)))

    return be, x_host, params_host, dy_host, objective


@pytest.mark.parametrize("layer,out_features,sampler", LAYER_CASES, ids=IDS)
def test_shapes_and_dtypes(layer, out_features, sampler, backend):
    for dtype in ("float32", "float64"):
        be, x, params, dy, objective = _run(layer, backend, dtype)
        y, backward, _ = objective(x, params)
        assert tuple(y.shape) == (BATCH, out_features)
        assert y.dtype == be.dtype(dtype)
        dx, grads = backward(be.asarray(dy, dtype=be.dtype(dtype)))
        assert tuple(dx.shape) == (BATCH, FEATURES) and dx.dtype == be.dtype(dtype)
        assert set(grads) == set(params)
        for name, grad in grads.items():
            assert tuple(grad.shape) == params[name].shape and grad.dtype == be.dtype(dtype)
        assert layer.output_features(FEATURES) == out_features


@pytest.mark.parametrize("layer,out_features,sampler", LAYER_CASES, ids=IDS)
def test_gradients_float64(layer, out_features, sampler, backend):
    """Analytic input and parameter gradients agree with central differences (rel < 1e-7)."""
    be, x, params, dy, objective = _run(layer, backend, "float64")
    _, backward, _ = objective(x, params)
    dx, grads = backward(be.asarray(dy, dtype=be.xp.float64))
    eps = 1e-6

    def numeric(values, perturb):
        result = np.empty(values.shape)
        for index in np.ndindex(values.shape):
            original = values[index]
            values[index] = original + eps
            plus = perturb()
            values[index] = original - eps
            minus = perturb()
            values[index] = original
            result[index] = (plus - minus) / (2 * eps)
        return result

    assert relative_error(dx, numeric(x, lambda: objective(x, params)[2])) < 1e-7
    for name, value in params.items():
        assert relative_error(grads[name], numeric(value, lambda: objective(x, params)[2])) < 1e-7, name


@pytest.mark.parametrize("layer,out_features,sampler", LAYER_CASES, ids=IDS)
def test_backends_agree_with_numpy(layer, out_features, sampler, backend):
    """The same layer gives the same numbers on every backend (float64)."""
    results = []
    for name in ("numpy", backend):
        be, x, params, dy, objective = _run(layer, name, "float64")
        y, backward, _ = objective(x, params)
        dx, grads = backward(be.asarray(dy, dtype=be.xp.float64))
        results.append([numpy_of(y), numpy_of(dx)] + [numpy_of(grads[k]) for k in sorted(grads)])
    for reference, other in zip(*results):
        np.testing.assert_allclose(other, reference, rtol=1e-12, atol=1e-14)


def test_linear_backward_skips_input_gradient_when_asked():
    be = resolve_backend("numpy")
    layer = mx.Linear(3, 2)
    params = {"weight": np.ones((3, 2)), "bias": np.zeros(2)}
    _, backward = layer.forward(params, np.ones((4, 3)), ForwardContext(be.xp))
    dx, grads = backward(np.ones((4, 2)), need_input_grad=False)
    assert dx is None and grads["weight"].shape == (3, 2)


TORCH_ACTIVATIONS = [
    (mx.ReLU(), "relu", {}), (mx.LeakyReLU(0.2), "leaky_relu", {"negative_slope": 0.2}),
    (mx.Sigmoid(), "sigmoid", {}), (mx.Tanh(), "tanh", {}), (mx.GELU(), "gelu", {"approximate": "tanh"}),
    (mx.SiLU(), "silu", {}), (mx.ELU(0.5), "elu", {"alpha": 0.5}), (mx.Softplus(), "softplus", {"threshold": 1e9}),
    (mx.Softmax(), "softmax", {"dim": -1}),
]


@pytest.mark.parametrize("layer,name,kwargs", TORCH_ACTIVATIONS, ids=[c[1] for c in TORCH_ACTIVATIONS])
def test_activations_match_torch(layer, name, kwargs):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(6, 7)) * 4
    x[0, :3] = [-700.0, 700.0, 0.5]  # extreme values stay finite
    dy = np.random.default_rng(2).normal(size=x.shape)
    y, backward = layer.forward({}, x, ForwardContext(resolve_backend("numpy").xp))
    dx, _ = backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.nn.functional, name)(xt, **kwargs)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))


def test_layernorm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, dy = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    weight, bias = rng.normal(size=6), rng.normal(size=6)
    y, backward = mx.LayerNorm().forward({"weight": weight, "bias": bias}, x, ForwardContext(resolve_backend("numpy").xp))
    dx, grads = backward(dy)
    ln = torch.nn.LayerNorm(6, dtype=torch.float64)
    with torch.no_grad():
        ln.weight.copy_(torch.tensor(weight)), ln.bias.copy_(torch.tensor(bias))
    xt = torch.tensor(x, requires_grad=True)
    ln(xt).backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ln(xt).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(grads["weight"], ln.weight.grad.numpy(), rtol=1e-10)


def test_dropout_masks_and_scales():
    be = resolve_backend("numpy")
    x = np.ones((1000, 50))
    rng = np.random.default_rng(0)
    ctx = ForwardContext(be.xp, True, lambda shape, dtype: rng.random(shape))
    y, backward = mx.Dropout(0.25).forward({}, x, ctx)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    assert np.allclose(y[kept], 1 / 0.75)
    dx, _ = backward(np.full(x.shape, 2.0))
    assert np.array_equal(dx != 0, kept)
    y_eval, _ = mx.Dropout(0.25).forward({}, x, ForwardContext(be.xp, False))
    assert y_eval is x


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "0.5", True])
def test_dropout_rejects_bad_p(bad):
    with pytest.raises(ValueError, match="Dropout p"):
        mx.Dropout(bad)


@pytest.mark.parametrize("kwargs", [{"in_features": 0, "out_features": 3}, {"in_features": 3, "out_features": -1},
                                    {"in_features": 2.5, "out_features": 3}])
def test_linear_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="features must be a positive int"):
        mx.Linear(**kwargs)


def test_linear_rejects_unknown_initializer():
    with pytest.raises(ValueError, match="unknown initializer 'hee_normal'"):
        mx.Linear(3, 4, init="hee_normal")


def test_gelu_constant():
    assert math.isclose(mx.layers._GELU_C, math.sqrt(2 / math.pi))
