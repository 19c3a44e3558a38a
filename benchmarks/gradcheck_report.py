"""Print float64 gradient-check errors for the whole-model cases of tests/test_model.py on every
installed backend.

    python benchmarks/gradcheck_report.py
"""

import importlib.util
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mlp_xp as mx  # noqa: E402
from tests.test_model import GRADCHECK_MODELS  # noqa: E402

BACKENDS = [name for name in ("numpy", "array_api_strict", "torch", "jax") if importlib.util.find_spec(name)]


def main():
    if "jax" in BACKENDS:
        import jax

        jax.config.update("jax_enable_x64", True)  # check_gradients works in float64
    rng = np.random.default_rng(1)
    print(f"{'model':18s} " + " ".join(f"{name:>16s}" for name in BACKENDS))
    for name, (make_layers, loss, kind) in sorted(GRADCHECK_MODELS.items()):
        X = rng.normal(size=(10, 6))
        y = {"labels": rng.integers(0, 4, size=10), "binary": rng.uniform(size=(10, 2)),
             "real": rng.normal(size=(10, 3)), "real4": rng.normal(size=(10, 4))}[kind]
        errors = [mx.check_gradients(mx.Sequential(*make_layers(), backend=backend, seed=2), X, y, loss).max_rel_error
                  for backend in BACKENDS]
        print(f"{name:18s} " + " ".join(f"{error:>16.1e}" for error in errors))


if __name__ == "__main__":
    main()
