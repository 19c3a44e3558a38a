"""CuPy against NumPy: every layer, loss and optimizer trained 100 steps from the same weights on the
same batches (and dropout masks). float64 within 1e-12 relative, float32 within 1e-5 (shared/DESIGN.md).

The cupy cases run wherever CuPy finds a GPU (skipped otherwise); the same cases run on
array_api_strict, where they must match NumPy bitwise, so the harness itself is exercised in CI.
"""

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import _available, numpy_of

TOLERANCE = {("cupy", "float64"): 1e-12, ("cupy", "float32"): 1e-5,
             ("array_api_strict", "float64"): 0.0, ("array_api_strict", "float32"): 0.0}

MODELS = {
    # every layer appears in one of these; each ends in what its loss takes
    "relu-softmax-ce": (lambda: [mx.Linear(6, 16), mx.ReLU(), mx.Dropout(0.2), mx.Linear(16, 4), mx.Softmax()],
                        mx.losses.CrossEntropy, "labels"),
    "smooth-activations": (lambda: [mx.Linear(6, 12), mx.GELU(), mx.Linear(12, 12), mx.SiLU(), mx.LayerNorm(12),
                                    mx.Linear(12, 12), mx.Tanh(), mx.Linear(12, 4), mx.Softmax()],
                           lambda: mx.losses.CrossEntropy(label_smoothing=0.1), "labels"),
    "sigmoid-bce": (lambda: [mx.Linear(6, 8), mx.ELU(), mx.Linear(8, 8), mx.Softplus(), mx.Linear(8, 1),
                             mx.Sigmoid()], mx.losses.BinaryCrossEntropy, "binary"),
    "leaky-mse": (lambda: [mx.Linear(6, 10), mx.LeakyReLU(0.1), mx.Linear(10, 10), mx.Sigmoid(),
                           mx.Linear(10, 2), mx.Identity()], mx.losses.MSE, "regression"),
    "huber": (lambda: [mx.Linear(6, 10), mx.Tanh(), mx.Linear(10, 2)], lambda: mx.losses.Huber(delta=0.5),
              "regression"),
}
OPTIMIZERS = {
    "sgd": lambda: mx.optim.SGD(lr=0.05),
    "sgd-nesterov-decay": lambda: mx.optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam-clip": lambda: mx.optim.Adam(lr=1e-2, clip_norm=1.0),
    "adamw-cosine": lambda: mx.optim.AdamW(lr=mx.optim.schedules.cosine(1e-2, 100)),
    "rmsprop-centered": lambda: mx.optim.RMSprop(lr=1e-3, momentum=0.5, centered=True),
}


def _data(kind):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    if kind == "labels":
        return X, (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0).astype(int)
    if kind == "binary":
        return X, (X[:, 0] * X[:, 1] > 0).astype(float)
    return X, np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)


@pytest.fixture(params=["array_api_strict", "cupy"])
def device_backend(request):
    if not _available(request.param):
        pytest.skip(f"{request.param} is not available" + (" (needs a CUDA GPU)" if request.param == "cupy" else ""))
    return request.param


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("case", sorted(MODELS))
def test_100_steps_match_numpy(case, optimizer, dtype, device_backend):
    layers, loss, kind = MODELS[case]
    X, y = _data(kind)
    results = {}
    for backend in ("numpy", device_backend):
        model = mx.Sequential(*layers(), backend=backend, dtype=dtype, seed=0)
        model.fit(X, y, loss=loss(), optimizer=OPTIMIZERS[optimizer](), epochs=16, batch_size=32, verbose=0)
        assert model.optimizer_state.count == 112  # 7 steps x 16 epochs: at least 100
        results[backend] = numpy_of(model.params)
    reference, other = results["numpy"], results[device_backend]
    error = np.max(np.abs(other - reference)) / np.max(np.abs(reference))
    assert error <= TOLERANCE[(device_backend, dtype)], f"relative error {error:.3g}"
