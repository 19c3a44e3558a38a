"""What one steady-state training step asks of a device (issue 13's targets), counted on the CPU.

    python benchmarks/step_costs.py              # table + benchmarks/results/step-costs.json

The workload: 784-512-512-10 ReLU with two Dropout(0.1), Adam, batch 128, float32, on
array_api_strict's simulated ``Device("device1")`` (so the generic Ops run, as on any device
backend without fast overrides). ``fit`` runs one epoch of 3 and of 9 steps; the difference over
6 steps is one steady-state step: array operations (views not counted), host syncs and
host-to-device uploads (:mod:`mlp_xp.tools.counting`), and the Python numbers handed to array
operations in the longer epoch only (numbers that change per step: 0 is the target). Also counted: the same step with the host-drawn
masks of ``dropout_masks="host"`` (the exact-comparison opt-in), and with ``sync_every=1``.
The CuPy path's launches are counted by reading mlp_xp/ops/cupy_ops.py (see the note printed).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def count(steps, masks="device", **options):
    import array_api_strict as xps

    import mlp_xp as mx
    from mlp_xp.tools.counting import count_array_work

    rng = np.random.default_rng(0)
    X = rng.standard_normal((128 * steps, 784), dtype=np.float32)
    y = rng.integers(0, 10, 128 * steps)
    model = mx.Sequential(mx.Linear(784, 512), mx.ReLU(), mx.Dropout(0.1), mx.Linear(512, 512), mx.ReLU(),
                          mx.Dropout(0.1), mx.Linear(512, 10), backend="array_api_strict",
                          device=xps.Device("device1"), seed=0)
    model.dropout_masks = masks
    x, t = model.backend.asarray(X), model.backend.asarray(y, dtype=model.backend.index_dtype)
    with count_array_work() as work:
        model.fit(x, t, mx.losses.CrossEntropy(), mx.optim.Adam(), epochs=1, batch_size=128, verbose=0, **options)
    return work


def per_step(**options):
    short, long = count(3, **options), count(9, **options)
    by_name = {name: (long.by_name.get(name, 0) - short.by_name.get(name, 0)) / 6 for name in long.by_name}
    # Python numbers handed to array operations in the 9-step epoch and not in the 3-step one:
    # numbers that change from step to step
    new_numbers = sorted(f"{name}({value!r})" for name, value in set(long.numbers) - set(short.numbers))
    return {"ops": (long.ops - short.ops) / 6, "syncs": (long.syncs - short.syncs) / 6,
            "uploads": (long.uploads - short.uploads) / 6, "step_dependent_numbers": new_numbers,
            "by_name": {k: v for k, v in by_name.items() if v}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(HERE, "results", "step-costs.json"))
    args = parser.parse_args(argv)
    rows = {"device masks (default)": per_step(), "host masks (opt-in)": per_step(masks="host"),
            "sync_every=1": per_step(sync_every=1)}
    print("per steady-state step, 784-512-512-10 ReLU + 2 Dropout(0.1), Adam, batch 128, array_api_strict device1")
    for name, row in rows.items():
        print(f"  {name:24s} ops {row['ops']:5.1f}  syncs {row['syncs']:.1f}  uploads {row['uploads']:.1f}  "
              f"step-dependent Python numbers {len(row['step_dependent_numbers'])}")
    print("  by operation (default):", ", ".join(f"{k} {v:g}" for k, v in sorted(rows['device masks (default)']
                                                                                  ['by_name'].items())))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump(rows, file, indent=1)
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
