"""Choosing initial weights for deep sigmoid, tanh and ReLU stacks.

For each 12-layer stack, the default (He before ReLU, Glorot before tanh/sigmoid) is compared
with a naive N(0, 1) initialisation: the per-layer activation spread and gradient spread show
where signals explode, vanish or saturate, and the fraction of dead ReLUs. What it shows:

- ReLU: He keeps the activation scale near 1 at every depth; N(0, 1) multiplies it by about
  sqrt(width / 2) per layer until it explodes.
- Tanh: N(0, 1) drives every unit into saturation (activations at +-1); Glorot does not.
- Sigmoid: the gradient at the first layer vanishes with depth whatever the initialisation,
  since the sigmoid's slope is at most 1/4: prefer ReLU-family or tanh for deep stacks.

Run: python examples/initializers.py [--depth 12]
"""

import argparse

import numpy as np

import mlp_xp as mx
from mlp_xp.tools.diagnostics import format_statistics


def naive(rng, shape, fan_in, fan_out):
    return rng.normal(0.0, 1.0, size=shape)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(256, args.width)), rng.integers(0, 10, size=256)
    results = {}
    for activation in (mx.ReLU, mx.Tanh, mx.Sigmoid):
        for init in (None, naive):
            layers = []
            for _ in range(args.depth):
                layers += [mx.Linear(args.width, args.width, init=init), activation()]
            model = mx.Sequential(*layers, mx.Linear(args.width, 10), seed=0)
            stats = mx.layer_statistics(model, X, y, mx.losses.CrossEntropy())
            last = stats[-2]  # the last activation
            first_grad = stats[1]["grad_std"]
            name = f"{activation.__name__} / {'default' if init is None else 'N(0, 1)'}"
            results[name] = {"last_activation_std": last["std"], "first_gradient_std": first_grad}
            print(f"\n{name}: last activation std {last['std']:.3g}, gradient std at layer 1 {first_grad:.3g}")
            print(format_statistics(stats[1::2][:4] + stats[-2:-1]))
    return results


if __name__ == "__main__":
    main()
