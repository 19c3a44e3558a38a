"""How far each compute precision drifts from float64, and whether it reaches the same accuracy
(issue 12): mx.compare on the digits and on a larger synthetic task, written to
benchmarks/results/precision-cpu.json and printed as tables.

    python benchmarks/precision.py

Each configuration trains the same model from the same initial weights on the same batches;
"max div" is the largest |loss - loss_float64| / loss_float64 over the steps, "param err" the
final parameters' relative distance from the float64 run, "skipped" the float16 steps dropped by
loss scaling. TF32 on the CPU is emulated (matrix-product inputs rounded to TF32).
"""

from __future__ import annotations

import json
import os

import numpy as np

import mlp_xp as mx

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = ["numpy:float64", "numpy:float32", "numpy:tf32", "numpy:bfloat16", "numpy:float16", "torch:float32",
           "torch:bfloat16", "torch:float16", "cupy:tf32", "cupy:float16", "cupy:bfloat16"]


def digits():
    X, y = mx.datasets.load_digits()
    X_train, X_test, y_train, y_test = mx.datasets.train_test_split(X, y, seed=0)
    X_train, X_test = mx.datasets.standardize(X_train, X_test)
    model = mx.Sequential(mx.Linear(64, 128), mx.ReLU(), mx.Linear(128, 64), mx.ReLU(), mx.Linear(64, 10),
                          mx.Softmax(), dtype="float64", seed=0)
    return "digits (1347 train / 450 test, 64-128-64-10 ReLU, Adam 1e-3, batch 32, 20 epochs)", model, \
        (X_train, y_train, X_test, y_test), 20, 32


def synthetic():
    """Labels from a random teacher network: 20,000 x 256 inputs, 10 classes."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(24000, 256))
    hidden = np.tanh(X @ rng.normal(size=(256, 64)) / 16)
    y = np.argmax(hidden @ rng.normal(size=(64, 10)), axis=1)
    model = mx.Sequential(mx.Linear(256, 512), mx.ReLU(), mx.Linear(512, 256), mx.ReLU(), mx.Linear(256, 10),
                          mx.Softmax(), dtype="float64", seed=0)
    return "teacher (20,000 train / 4,000 test, 256-512-256-10 ReLU, Adam 1e-3, batch 128, 5 epochs)", model, \
        (X[:20000], y[:20000], X[20000:], y[20000:]), 5, 128


def main():
    import jax

    jax.config.update("jax_enable_x64", True)
    report = {}
    for make in (digits, synthetic):
        name, model, (X_train, y_train, X_test, y_test), epochs, batch = make()
        result = mx.compare(model, X_train, y_train, mx.losses.CrossEntropy(), mx.optim.Adam(1e-3), configs=CONFIGS,
                            epochs=epochs, batch_size=batch, validation_data=(X_test, y_test))
        print(name)
        print(result.table())
        print()
        report[name] = json.loads(result.to_json())
        for row in report[name]["results"]:  # the curves are long; keep the summary
            row.pop("loss_curve"), row.pop("divergence")
    path = os.path.join(HERE, "results", "precision-cpu.json")
    with open(path, "w") as file:
        json.dump(report, file, indent=1)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
