"""Train an MLP on the bundled digits data set and report the test accuracy.

Run: python examples/quickstart.py [--backend array_api_strict] [--epochs 10]
"""

import argparse

import mlp_xp as mx


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)

    X, y = mx.datasets.load_digits()
    X_train, X_test, y_train, y_test = mx.datasets.train_test_split(X, y, seed=0)
    X_train, X_test = mx.datasets.standardize(X_train, X_test)
    model = mx.Sequential(mx.Linear(64, 128), mx.ReLU(), mx.Dropout(0.1), mx.Linear(128, 10), mx.Softmax(),
                          backend=args.backend, seed=0)
    model.fit(X_train, y_train, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(lr=1e-3),
              epochs=args.epochs, batch_size=32, validation_data=(X_test, y_test), verbose=2)
    result = model.evaluate(X_test, y_test, loss=mx.losses.CrossEntropy())
    print(f"test accuracy {result['accuracy']:.4f}")
    return result


if __name__ == "__main__":
    main()
