"""Regression: fit y = sin(2x) + noise with MSE and with Huber (robust to outliers).

Run: python examples/regression.py [--epochs 200]
"""

import argparse

import numpy as np

import mlp_xp as mx


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(512, 1))
    y = np.sin(2 * X[:, 0]) + rng.normal(scale=0.05, size=512)
    y[::50] += 5.0  # a few gross outliers
    clean = np.sin(2 * X[:, 0])
    errors = {}
    for loss in (mx.losses.MSE(), mx.losses.Huber(delta=0.5)):
        model = mx.Sequential(mx.Linear(1, 64), mx.Tanh(), mx.Linear(64, 64), mx.Tanh(), mx.Linear(64, 1), seed=0)
        model.fit(X, y, loss=loss, optimizer=mx.optim.Adam(lr=3e-3), epochs=args.epochs, batch_size=64, verbose=0)
        prediction = mx.to_numpy(model.predict(X)).ravel()
        errors[type(loss).__name__] = float(np.sqrt(np.mean((prediction - clean) ** 2)))
        print(f"{type(loss).__name__:6s} RMSE against the clean curve: {errors[type(loss).__name__]:.4f}")
    return errors


if __name__ == "__main__":
    main()
