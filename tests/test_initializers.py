"""Initializers: their variances, their bounds, and determinism from the seed."""

import math

import numpy as np
import pytest

from mlp_xp.nn import initializers

FAN_IN, FAN_OUT = 500, 300
EXPECTED_STD = {
    "glorot_uniform": math.sqrt(2 / (FAN_IN + FAN_OUT)), "glorot_normal": math.sqrt(2 / (FAN_IN + FAN_OUT)),
    "he_uniform": math.sqrt(2 / FAN_IN), "he_normal": math.sqrt(2 / FAN_IN),
    "lecun_uniform": math.sqrt(1 / FAN_IN), "lecun_normal": math.sqrt(1 / FAN_IN),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_STD))
def test_standard_deviation(name):
    values = initializers.get(name)(np.random.default_rng(0), (FAN_IN, FAN_OUT), FAN_IN, FAN_OUT)
    assert values.shape == (FAN_IN, FAN_OUT)
    assert values.std() == pytest.approx(EXPECTED_STD[name], rel=0.01)
    assert abs(values.mean()) < 0.01 * EXPECTED_STD[name] * 10
    if name.endswith("uniform"):
        assert np.abs(values).max() <= EXPECTED_STD[name] * math.sqrt(3)


@pytest.mark.parametrize("name", sorted(EXPECTED_STD))
def test_same_seed_same_values(name):
    init = initializers.get(name)
    first = init(np.random.default_rng(5), (3, 4), 3, 4)
    assert np.array_equal(first, init(np.random.default_rng(5), (3, 4), 3, 4))
    assert not np.array_equal(first, init(np.random.default_rng(6), (3, 4), 3, 4))


def test_zeros_ones_aliases_and_unknown_names():
    assert not initializers.zeros(None, (2, 3), 2, 3).any()
    assert initializers.ones(None, (3,), 3, 3).tolist() == [1.0, 1.0, 1.0]
    assert initializers.get("kaiming_normal") is initializers.he_normal
    assert initializers.get("xavier_uniform") is initializers.glorot_uniform
    custom = lambda rng, shape, fan_in, fan_out: np.full(shape, 0.5)  # noqa: E731
    assert initializers.get(custom) is custom
    with pytest.raises(ValueError, match="unknown initializer 'glorot'"):
        initializers.get("glorot")


def test_he_keeps_relu_activations_from_vanishing():
    """Through 20 ReLU layers, He keeps the activation scale; Glorot lets it decay."""
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(256, 256))
    scales = {}
    for name in ("he_normal", "glorot_normal"):
        x = x0
        for _ in range(20):
            x = np.maximum(x @ initializers.get(name)(rng, (256, 256), 256, 256), 0)
        scales[name] = float(np.sqrt(np.mean(x ** 2)))
    assert 0.3 < scales["he_normal"] < 3
    assert scales["glorot_normal"] < 0.01
