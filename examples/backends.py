"""Move one model between backends: train on numpy, check on array-api-strict, and on PyTorch,
JAX or CuPy where installed; the same weights give the same predictions.

Run: python examples/backends.py
"""

import argparse
import importlib.util

import numpy as np

import mlp_xp as mx


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    if importlib.util.find_spec("jax") is not None:
        import jax

        # JAX computes in float32 unless 64-bit mode is on (mlp_xp refuses a float64 model without it);
        # a script owns its process, so it can turn it on. Or run with JAX_ENABLE_X64=1.
        jax.config.update("jax_enable_x64", True)

    X, y = mx.datasets.load_digits()
    X = mx.datasets.standardize(X)
    model = mx.Sequential(mx.Linear(64, 64), mx.ReLU(), mx.Linear(64, 10), mx.Softmax(), dtype="float64", seed=0)
    model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), epochs=args.epochs, verbose=0)
    reference = mx.to_numpy(model.predict(X))
    differences = {}
    for backend in ("array_api_strict", "torch", "jax", "cupy"):
        if importlib.util.find_spec(backend) is None:
            print(f"{backend:17s} not installed, skipped")
            continue
        try:
            moved = model.to(backend=backend)
            predictions = mx.to_numpy(moved.predict(X))
        except Exception as error:  # e.g. cupy installed without a GPU
            print(f"{backend:17s} unavailable: {error}")
            continue
        differences[backend] = float(np.max(np.abs(predictions - reference)))
        accuracy = moved.evaluate(X, y, mx.losses.CrossEntropy())["accuracy"]
        print(f"{backend:17s} max |p - p_numpy| = {differences[backend]:.1e}, accuracy {accuracy:.4f}")
    return differences


if __name__ == "__main__":
    main()
