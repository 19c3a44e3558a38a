"""The ``mlp-xp`` command line: ``mlp-xp train`` trains an MLP on a data set that ships
with the package and prints per-epoch progress and the final test accuracy."""

from __future__ import annotations

import argparse
import sys

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "silu", "elu", "softplus")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
DEFAULT_COMPARE = ("numpy:float64", "numpy:float32", "array_api_strict:float32", "torch:float32", "jax:float32",
                   "cupy:float32", "cupy:tf32", "cupy:float16")


def _hidden_layers(text):
    try:
        widths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes comma-separated widths like 128,64, got {text!r}") from None
    if any(width < 1 for width in widths):
        raise argparse.ArgumentTypeError(f"--layers widths must be >= 1, got {text!r}")
    return widths


def build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(prog="mlp-xp", description="Array-API MLPs: NumPy, CuPy, PyTorch, JAX.")
    parser.add_argument("--version", action="version", version=f"mlp-xp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train an MLP on the bundled digits data set",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    train.add_argument("--dataset", choices=("digits",), default="digits", help="data set (ships offline)")
    train.add_argument("--layers", type=_hidden_layers, default=[128, 64], help="hidden layer widths")
    train.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    train.add_argument("--dropout", type=float, default=0.0, help="dropout after each hidden layer")
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    train.add_argument("--backend", default="numpy", help="numpy, array_api_strict, cupy, torch or jax")
    train.add_argument("--device", default=None, help="the backend's device (default: its default)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--test-size", type=float, default=0.25, help="fraction held out for testing")
    train.add_argument("--quiet", action="store_true", help="print only the final result")

    compare = commands.add_parser("compare", help="train one model under several backends/precisions and "
                                  "compare losses, parameters, accuracy, speed and memory",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    compare.add_argument("--configs", default=",".join(DEFAULT_COMPARE),
                         help="comma-separated backend:precision list; the first is the reference")
    compare.add_argument("--layers", type=_hidden_layers, default=[128, 64], help="hidden layer widths")
    compare.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    compare.add_argument("--epochs", type=int, default=3)
    compare.add_argument("--batch-size", type=int, default=32)
    compare.add_argument("--lr", type=float, default=1e-3)
    compare.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--json", default=None, help="write the full results (curves included) here")
    compare.add_argument("--plot", default=None, help="write loss and divergence curves to this PNG")
    return parser


def _digits_and_model(args, **model_options):
    import mlp_xp as mx

    activation = {"relu": mx.ReLU, "leaky_relu": mx.LeakyReLU, "tanh": mx.Tanh, "sigmoid": mx.Sigmoid,
                  "gelu": mx.GELU, "silu": mx.SiLU, "elu": mx.ELU, "softplus": mx.Softplus}[args.activation]
    X, y = mx.datasets.load_digits()
    X_train, X_test, y_train, y_test = mx.datasets.train_test_split(X, y, test_size=getattr(args, "test_size", 0.25),
                                                                    seed=args.seed)
    X_train, X_test = mx.datasets.standardize(X_train, X_test)
    classes = int(y.max()) + 1
    layers, width = [], X.shape[1]
    for hidden in args.layers:
        layers += [mx.Linear(width, hidden), activation()]
        if getattr(args, "dropout", 0.0):
            layers.append(mx.Dropout(args.dropout))
        width = hidden
    layers += [mx.Linear(width, classes), mx.Softmax()]
    model = mx.Sequential(*layers, seed=args.seed, **model_options)
    optimizer = {"adam": mx.optim.Adam, "adamw": mx.optim.AdamW, "sgd": mx.optim.SGD,
                 "rmsprop": mx.optim.RMSprop}[args.optimizer](lr=args.lr)
    return (X_train, X_test, y_train, y_test), model, optimizer


def compare(args):
    import mlp_xp as mx

    (X_train, X_test, y_train, y_test), model, optimizer = _digits_and_model(args, dtype="float64")
    configs = [config.strip() for config in args.configs.split(",") if config.strip()]
    result = mx.compare(model, X_train, y_train, mx.losses.CrossEntropy(), optimizer, configs=configs,
                        reference=configs[0], epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(X_test, y_test))
    print(f"digits, {len(X_train)} training samples, {args.epochs} epochs; reference {configs[0]}; "
          "div: |loss - reference| / |reference| over steps")
    print(result.table())
    if args.json:
        result.to_json(args.json)
        print(f"written: {args.json}")
    if args.plot:
        result.plot(args.plot)
        print(f"written: {args.plot}")
    return 0


def train(args):
    import mlp_xp as mx

    (X_train, X_test, y_train, y_test), model, optimizer = _digits_and_model(
        args, backend=args.backend, device=args.device, dtype=args.dtype)
    if not args.quiet:
        print(f"digits: {len(X_train)} train / {len(X_test)} test samples, {model.in_features} features, "
              f"{model.out_features} classes; {model.num_parameters} parameters on {args.backend} {args.dtype}")
    loss = mx.losses.CrossEntropy()
    model.fit(X_train, y_train, loss=loss, optimizer=optimizer, epochs=args.epochs, batch_size=args.batch_size,
              validation_data=(X_test, y_test), verbose=0 if args.quiet else 2)
    result = model.evaluate(X_test, y_test, loss=loss)
    print(f"test accuracy: {result['accuracy']:.4f} (test loss {result['loss']:.4f})")
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        return {"train": train, "compare": compare}[args.command](args)
    except (ValueError, ImportError, TypeError) as error:
        print(f"mlp-xp: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
