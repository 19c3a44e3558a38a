"""Weight initializers, drawn on the host so the same seed gives the same weights everywhere.

Every initializer has the signature ``init(rng, shape, fan_in, fan_out) -> numpy.ndarray``
(float64). The model draws them from a seeded ``numpy.random.Generator``, casts to its dtype
and then moves them to its backend, so numpy, array_api_strict, cupy and torch models built
with the same seed start from the same numbers.

Which one to use follows the activation after a Linear layer (``default_for``):

- He (Kaiming): ReLU, LeakyReLU, GELU, SiLU, ELU, Softplus. Keeps the activation variance
  constant through rectifiers, which zero half of their input.
- Glorot (Xavier): Tanh, Sigmoid, Softmax, Identity, or no activation.
- LeCun: for self-normalising setups; available by name.

Example:
    >>> import numpy as np
    >>> from mlp_xp import initializers
    >>> w = initializers.he_normal(np.random.default_rng(0), (256, 128), 256, 128)
    >>> w.shape, round(float(w.std()), 2)
    ((256, 128), 0.09)
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal",
    "lecun_uniform", "lecun_normal", "zeros", "ones", "get", "NAMES",
]

#: for type checkers: ``init(rng, shape, fan_in, fan_out) -> numpy.ndarray``
Initializer = Callable[[np.random.Generator, tuple[int, ...], int, int], NDArray[Any]]


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> NDArray[np.float64]:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def glorot_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> NDArray[np.float64]:
    """N(0, 2 / (fan_in + fan_out))."""
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def he_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> NDArray[np.float64]:
    """U(-a, a) with a = sqrt(6 / fan_in) (He et al., 2015)."""
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape)


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> NDArray[np.float64]:
    """N(0, 2 / fan_in)."""
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)


def lecun_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> NDArray[np.float64]:
    """U(-a, a) with a = sqrt(3 / fan_in)."""
    limit = math.sqrt(3.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape)


def lecun_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> NDArray[np.float64]:
    """N(0, 1 / fan_in)."""
    return rng.normal(0.0, math.sqrt(1.0 / fan_in), size=shape)


def zeros(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> NDArray[np.float64]:
    """All zeros (biases; a zero weight matrix never breaks symmetry, so avoid it for W)."""
    return np.zeros(shape)


def ones(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> NDArray[np.float64]:
    """All ones (LayerNorm scales)."""
    return np.ones(shape)


NAMES = {
    "glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal,
    "xavier_uniform": glorot_uniform, "xavier_normal": glorot_normal,
    "he_uniform": he_uniform, "he_normal": he_normal,
    "kaiming_uniform": he_uniform, "kaiming_normal": he_normal,
    "lecun_uniform": lecun_uniform, "lecun_normal": lecun_normal,
    "zeros": zeros, "ones": ones,
}

# what a family named by an activation layer maps to by default
FAMILY_DEFAULTS = {"he": he_normal, "glorot": glorot_uniform, "lecun": lecun_normal}


def get(init: str | Initializer) -> Initializer:
    """An initializer from a name in ``NAMES`` or a callable with the signature above."""
    if callable(init):
        return init
    try:
        return NAMES[init]
    except (KeyError, TypeError):
        raise ValueError(f"unknown initializer {init!r}; choose one of {sorted(NAMES)} or pass a callable") from None
