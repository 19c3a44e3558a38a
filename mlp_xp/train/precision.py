"""Compute precisions: TF32 matrix products and float16 / bfloat16 mixed precision.

A model's ``dtype`` is the precision of its master weights and optimizer state; its
``precision`` is what the forward and backward passes compute in:

- ``"float32"`` / ``"float64"`` (the default: the dtype itself);
- ``"tf32"``: float32 everywhere, but every matrix product reads its inputs rounded to TF32's
  10-bit mantissa (round to nearest even) and accumulates in float32, as NVIDIA tensor cores do.
  On the CPU this emulates what a GPU's TF32 mode does to a model, so its effect can be studied
  anywhere;
- ``"float16"`` / ``"bfloat16"``: mixed precision. Each step casts the float32 master weights and
  the inputs to the compute type; layers compute in it, matrix products accumulate in float32
  (on numpy the inputs are multiplied as float32 and the result rounded, as tensor cores do);
  the output is cast back to float32 for the loss, so softmax and log-sum-exp are float32;
  gradients come back to float32 for the optimizer. bfloat16 on numpy uses the ``ml_dtypes``
  package (``pip install ml_dtypes``); torch, JAX and CuPy (float16) are native.

float16's range is narrow (largest 65504, smallest normal 6.1e-5), so gradients are protected
by dynamic loss scaling, as ``torch.amp.GradScaler`` does: the loss gradient is multiplied by a
scale (2**16 to start) before the backward pass and the gradients divided by it after; a step
whose scaled gradients overflow is skipped (counted in ``history["skipped_steps"]``) and the
scale halves; after ``growth_interval`` good steps in a row it doubles. The scale is saved with
the model and restored by ``mx.load`` / ``resume_from``.

Example:
    >>> import mlp_xp as mx
    >>> model = mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Linear(8, 2), precision="float16", seed=0)
    >>> model.precision
    Precision(compute='float16', loss_scale='dynamic', init_scale=65536.0, growth_interval=2000)
    >>> mx.precision.round_to_tf32(model.xp, model.xp.asarray([1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11])).tolist()
    [1.0, 1.001953125]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Precision", "LossScale", "COMPUTE", "resolve", "round_to_tf32"]

COMPUTE = ("float32", "float64", "tf32", "float16", "bfloat16")
MIXED = ("float16", "bfloat16")


@dataclass(frozen=True)
class Precision:
    """How a model computes (see the module docstring).

    Args:
        compute: "float32", "float64", "tf32", "float16" or "bfloat16".
        loss_scale: for float16: "dynamic" (default), a fixed number, or None for no scaling;
            ignored for the other precisions (bfloat16 has float32's range).
        init_scale: the dynamic scale to start from.
        growth_interval: good steps in a row before the dynamic scale doubles.
    """

    compute: str
    loss_scale: object = "dynamic"
    init_scale: float = 2.0 ** 16
    growth_interval: int = 2000

    def __post_init__(self):
        if self.compute not in COMPUTE:
            raise ValueError(f"precision must be one of {COMPUTE}, got {self.compute!r}")
        scale = self.loss_scale
        if not (scale is None or scale == "dynamic" or (isinstance(scale, (int, float)) and not isinstance(scale, bool)
                                                        and 0 < scale < math.inf)):
            raise ValueError(f"loss_scale must be 'dynamic', a finite number > 0 or None, got {scale!r}")
        if not (isinstance(self.init_scale, (int, float)) and 1.0 <= self.init_scale < math.inf):
            raise ValueError(f"init_scale must be a finite number >= 1, got {self.init_scale!r}")
        if isinstance(self.growth_interval, bool) or not isinstance(self.growth_interval, int) \
                or self.growth_interval < 1:
            raise ValueError(f"growth_interval must be an int >= 1, got {self.growth_interval!r}")

    @property
    def mixed(self) -> bool:
        """True for float16 and bfloat16: master weights in float32, compute in the narrow type."""
        return self.compute in MIXED

    @property
    def scaled(self) -> bool:
        """True when float16 gradients are loss-scaled."""
        return self.compute == "float16" and self.loss_scale is not None

    @property
    def dynamic(self) -> bool:
        return self.scaled and self.loss_scale == "dynamic"

    def initial_scale(self) -> float:
        if not self.scaled:
            return 1.0
        return float(self.init_scale if self.dynamic else self.loss_scale)

    def config(self) -> dict:
        return {"compute": self.compute, "loss_scale": self.loss_scale, "init_scale": self.init_scale,
                "growth_interval": self.growth_interval}


class LossScale(NamedTuple):
    """The dynamic loss scale and how many good steps in a row it has seen."""

    scale: float
    good_steps: int


def resolve(precision, dtype_name) -> Precision:
    """A :class:`Precision` from a name, a Precision or None (the dtype itself), checked against the
    master dtype: TF32 and the mixed precisions keep float32 master weights."""
    if precision is None:
        return Precision(dtype_name)
    if isinstance(precision, str):
        precision = Precision(precision)
    if not isinstance(precision, Precision):
        raise TypeError(f"precision must be a name or an mx.precision.Precision, got {precision!r}")
    if precision.compute in ("float32", "float64") and precision.compute != dtype_name:
        raise ValueError(f"precision={precision.compute!r} with dtype={dtype_name!r}: give dtype={precision.compute!r} "
                         "instead (the precision of a plain model is its dtype)")
    if precision.compute in ("tf32",) + MIXED and dtype_name != "float32":
        raise ValueError(f"precision={precision.compute!r} keeps float32 master weights: use dtype='float32', "
                         f"not {dtype_name!r}")
    return precision


def compute_dtype(backend, name):
    """The backend's dtype object for a mixed compute type, or a clear error where it has none."""
    if backend.name == "numpy" and name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise ImportError("bfloat16 on numpy needs the ml_dtypes package: pip install ml_dtypes") from None
        return ml_dtypes.bfloat16
    dtype = getattr(backend.xp, name, None)
    if dtype is None:
        raise ValueError(f"backend {backend.name!r} has no {name}: use another backend (numpy, torch, jax) or "
                         "precision='float32'")
    return dtype


def round_to_tf32(xp, a):
    """``a`` (float32) rounded to TF32: 10 mantissa bits kept, round half to even.

    Written with Array API operations only (no bit casts): the spacing of TF32 values around
    ``a`` is ``2 ** (exponent(a) - 10)``, a power of two, so dividing by it, rounding and
    multiplying back are exact apart from the rounding itself. Zeros, infinities and NaN pass
    through unchanged.
    """
    magnitude = xp.abs(a)
    usable = xp.isfinite(a) & (magnitude > 0)
    safe = xp.where(usable, magnitude, xp.ones_like(a))
    exponent = xp.floor(xp.log2(safe))
    # log2 is not correctly rounded: put the exponent right where it is off by one
    power = xp.pow(xp.asarray(2.0, dtype=a.dtype, device=_device(a)), exponent)
    exponent = xp.where(safe < power, exponent - 1, xp.where(safe >= 2 * power, exponent + 1, exponent))
    quantum = xp.pow(xp.asarray(2.0, dtype=a.dtype, device=_device(a)), exponent - 10)
    return xp.where(usable, xp.round(a / quantum) * quantum, a)


def _device(array):
    import array_api_compat

    return array_api_compat.device(array)
