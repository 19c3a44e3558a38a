"""A sigmoid network trained with cross-entropy at lr=1.0 stays finite.

Computing log(sigmoid(z)) naively gives log(0) = -inf as soon as the output saturates; mlp_xp
fuses the Sigmoid output layer with BinaryCrossEntropy and works from the logits
(softplus(z) - y z, gradient sigmoid(z) - y), so the loss stays finite however large z gets.

Run: python examples/sigmoid_stability.py [--epochs 100]
"""

import argparse

import numpy as np

import mlp_xp as mx


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 10)) * 5
    y = (X[:, 0] + X[:, 1] > 0).astype(float)
    model = mx.Sequential(mx.Linear(10, 16), mx.Sigmoid(), mx.Linear(16, 1), mx.Sigmoid(), seed=0)
    history = model.fit(X, y, loss=mx.losses.BinaryCrossEntropy(), optimizer=mx.optim.SGD(lr=1.0),
                        epochs=args.epochs, batch_size=8, verbose=0)
    p = mx.to_numpy(model.predict(X)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        naive = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    print(f"{args.epochs * 32} steps at lr=1.0: final loss {history['loss'][-1]:.6f}, "
          f"accuracy {history['accuracy'][-1]:.3f}")
    print(f"outputs saturated to exactly 0 or 1: {int(np.sum((p == 0) | (p == 1)))}; "
          f"naive log(sigmoid) loss on them: {naive}")
    return {"loss": history["loss"][-1], "accuracy": history["accuracy"][-1], "naive_loss": naive}


if __name__ == "__main__":
    main()
