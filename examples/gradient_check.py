"""Gradient-check a custom configuration of layer widths in float64.

Any stack of widths builds (a mismatch would be a ShapeError naming the layer); the analytic
gradients are compared with central differences for every parameter. The last width is the
number of classes (softmax cross-entropy), or 1 for one sigmoid output (binary cross-entropy).

Run: python examples/gradient_check.py --widths 7,3,11,1,5 --activation gelu
"""

import argparse

import numpy as np

import mlp_xp as mx

ACTIVATIONS = {"relu": mx.ReLU, "tanh": mx.Tanh, "gelu": mx.GELU, "silu": mx.SiLU, "elu": mx.ELU,
               "sigmoid": mx.Sigmoid, "softplus": mx.Softplus, "leaky_relu": mx.LeakyReLU}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="7,3,11,1,5", help="input, hidden..., outputs (at least two widths)")
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    parser.add_argument("--layernorm", action="store_true")
    args = parser.parse_args(argv)

    try:
        widths = [int(w) for w in args.widths.split(",") if w.strip()]
    except ValueError:
        parser.error(f"--widths takes comma-separated integers, got {args.widths!r}")
    if len(widths) < 2 or min(widths) < 1:
        parser.error(f"--widths needs an input width and an output width (each >= 1), got {args.widths!r}")
    layers = []
    for fan_in, fan_out in zip(widths[:-2], widths[1:-1]):
        layers += [mx.Linear(fan_in, fan_out), ACTIVATIONS[args.activation]()]
        if args.layernorm and fan_out > 2:  # over 1 or 2 features LayerNorm outputs only +-1: no gradient
            layers.append(mx.LayerNorm())
    binary = widths[-1] == 1
    layers += [mx.Linear(widths[-2], widths[-1]), mx.Sigmoid() if binary else mx.Softmax()]
    model = mx.Sequential(*layers, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, widths[0])), rng.integers(0, 2 if binary else widths[-1], size=16)
    loss = mx.losses.BinaryCrossEntropy() if binary else mx.losses.CrossEntropy()
    result = mx.check_gradients(model, X, y, loss=loss)
    print(model.summary())
    for key, error in result.errors.items():
        print(f"{key:10s} relative error {error:.2e}")
    print(f"max relative error {result.max_rel_error:.2e} over {result.checked} parameters: "
          f"{'OK' if result.ok else 'FAILED'}")
    return result


if __name__ == "__main__":
    main()
