"""Where the JAX backend's W1 time goes (CPU): XLA's matrix products alone, the jitted training step
alone, and ``fit``, interleaved with numpy's matrix products and numpy ``fit`` in one run.

    python benchmarks/jax_step.py [--rounds 3]

Each row is one epoch of W1 (157 steps of 784-512-512-10 ReLU, Adam, batch 128); medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    import jax
    import jax.numpy as jnp

    import mlp_xp as mx
    from cpu import make_data
    from mlp_xp.train import metrics
    from mlp_xp.train.step import init_state, jit_train_step, make_train_step

    X, y = make_data("W1")
    layers = [mx.Linear(784, 512), mx.ReLU(), mx.Linear(512, 512), mx.ReLU(), mx.Linear(512, 10)]
    models = {name: mx.Sequential(*layers, backend=name, seed=0) for name in ("numpy", "jax")}
    loss, optimizer = mx.losses.CrossEntropy(), mx.optim.Adam()
    x, t = jnp.asarray(X), jnp.asarray(y)
    batch, steps = 128, len(X) // 128
    rng = np.random.default_rng(0)
    order = rng.permutation(len(X))
    host_batches = [(X[order[s * batch:(s + 1) * batch]], y[order[s * batch:(s + 1) * batch]]) for s in range(steps)]
    jax_batches = jax.block_until_ready([(jnp.asarray(a), jnp.asarray(b)) for a, b in host_batches])
    weights = [rng.standard_normal(shape, dtype=np.float32) * 0.05 for shape in ((784, 512), (512, 512), (512, 10))]

    def products(m, xb, w1, w2, w3):  # the 8 matrix products of a step (3 forward, 5 backward)
        h1 = xb @ w1
        h2 = h1 @ w2
        out = h2 @ w3
        d2 = out @ w3.T
        d1 = d2 @ w2.T
        return h2.T @ out, h1.T @ d2, xb.T @ d1

    jitted_products = jax.jit(lambda *a: products(jnp, *a))
    jax_weights = [jnp.asarray(w) for w in weights]
    metric_list = metrics.resolve(None, loss)
    step = jit_train_step(make_train_step(models["jax"], loss, optimizer, metric_list))

    def numpy_products():
        for xb, _ in host_batches:
            products(np, xb, *weights)

    def jax_products():
        for xb, _ in jax_batches:
            out = jitted_products(xb, *jax_weights)
        jax.block_until_ready(out)

    def jax_steps():
        state = init_state(models["jax"], optimizer, metric_list)
        for xb, yb in jax_batches:
            state, _ = step(state, xb, yb, lr=1e-3)
        jax.block_until_ready(state)

    def fit(name, data):
        def run():
            models[name].fit(*data, loss, optimizer, epochs=1, batch_size=batch, verbose=0)
        return run

    contenders = {"numpy matrix products": numpy_products, "jax matrix products (jit)": jax_products,
                  "jax training steps (jit)": jax_steps, "numpy fit": fit("numpy", (X, y)),
                  "jax fit": fit("jax", (x, t))}
    times = {name: [] for name in contenders}
    for round_ in range(args.rounds + 1):
        for name, run in contenders.items():
            started = time.perf_counter()
            run()
            if round_:  # round 0 warms up (compilation)
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["numpy fit"])
    for name, values in times.items():
        print(f"{name:28s} {statistics.median(values):.3f} s/epoch  x numpy fit {statistics.median(values) / base:.2f}")


if __name__ == "__main__":
    main()
