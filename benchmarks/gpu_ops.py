"""CuPy's fused Ops against the generic ops on the GPU, side by side (issue 13): one G1-sized
training step (1024-4096x4-1000 ReLU, Adam, batch 8192, float32) and its Adam update alone.

    python benchmarks/gpu_ops.py [--output FILE]

Interleaved rounds (generic, fused, generic, fused, ...), CUDA events around each, medians.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    import cupy

    import mlp_xp as mx
    from mlp_xp.ops import GenericOps
    from mlp_xp.ops.cupy_ops import CupyOps
    from mlp_xp.train.step import init_state, make_train_step

    widths = [1024, 4096, 4096, 4096, 4096, 1000]
    layers = []
    for a, b in zip(widths[:-2], widths[1:-1]):
        layers += [mx.Linear(a, b), mx.ReLU()]
    model = mx.Sequential(*layers, mx.Linear(widths[-2], widths[-1]), backend="cupy", seed=0)
    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.standard_normal((8192, widths[0]), dtype=np.float32))
    y = cupy.asarray(rng.integers(0, widths[-1], 8192))
    variants = {"generic": GenericOps(model.xp, model.device), "fused": CupyOps(model.xp, model.device)}
    times = {name: {"step": [], "update": []} for name in variants}
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()

    def timed(function):
        start.record()
        function()
        stop.record()
        stop.synchronize()
        return cupy.cuda.get_elapsed_time(start, stop) / 1e3

    for round_ in range(args.rounds + 1):
        for name, ops in variants.items():
            model.ops = ops
            optimizer = mx.optim.Adam()
            step = make_train_step(model, mx.losses.CrossEntropy(), optimizer)
            state = init_state(model, optimizer)

            def steps():
                nonlocal state
                for _ in range(args.steps):
                    state, _ = step(state, x, y)

            grad = cupy.asarray(rng.standard_normal(model.num_parameters, dtype=np.float32))

            def updates():  # the guarded Adam update alone, in place (Adam.apply -> ops.adam)
                params, opt_state = state.params, state.opt_state
                for _ in range(args.steps):
                    params, opt_state, _ = optimizer.apply(ops, grad, opt_state, params, ops.true())

            step_time, update_time = timed(steps) / args.steps, timed(updates) / args.steps
            if round_:  # the first round warms up (kernel compilation, the memory pool)
                times[name]["step"].append(step_time)
                times[name]["update"].append(update_time)
    report = {name: {kind: statistics.median(values) for kind, values in kinds.items()}
              for name, kinds in times.items()}
    report["parameters"] = model.num_parameters
    for kind in ("step", "update"):
        print(f"{kind:7s} generic {report['generic'][kind] * 1e3:8.3f} ms  fused {report['fused'][kind] * 1e3:8.3f} ms"
              f"  generic/fused {report['generic'][kind] / report['fused'][kind]:.2f}")
    if args.output:
        with open(args.output, "w") as file:
            json.dump(report, file, indent=1)


if __name__ == "__main__":
    main()
