"""mlp_xp: multilayer perceptrons written once against the Python Array API standard.

The same model runs on NumPy, array-api-strict, CuPy, PyTorch or JAX arrays, with exact
analytic gradients, stable losses and clear errors. The public API is exactly what this
module re-exports.
"""

from .train import callbacks, distributed, metrics, precision, step
from .tools import counting, diagnostics
from .data import datasets
from .nn import initializers, layers, losses
from . import ops, optim
from ._backend import to_numpy
from ._errors import NonFiniteError, ShapeError
from .tools.compare import Comparison, compare
from .tools.diagnostics import layer_statistics
from .tools.gradcheck import GradientCheck, check_gradients
from .checkpoint import save
from .export import export_onnx, to_torch
from .nn.layers import (ELU, GELU, BatchNorm, BatchNorm1d, Dropout, Identity, LayerNorm, LeakyReLU, Linear, ReLU,
                        Sigmoid, SiLU, Softmax, Softplus, Tanh)
from .model import Sequential, load
from .train.loop import History

__version__ = "0.4.0"

__all__ = [
    "Sequential", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "ELU", "Softplus",
    "Identity", "Softmax", "Dropout", "LayerNorm", "BatchNorm", "BatchNorm1d",
    "losses", "optim", "callbacks", "datasets", "initializers", "metrics", "distributed", "precision",
    "step", "ops", "counting", "layers", "diagnostics",
    "check_gradients", "GradientCheck", "History", "to_numpy", "ShapeError", "NonFiniteError",
    "save", "load", "layer_statistics", "compare", "Comparison", "export_onnx", "to_torch",
    "__version__",
]
