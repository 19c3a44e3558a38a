"""M1 (BENCHMARKS.md): peak memory beyond the model's parameters while ``fit`` trains with Adam.

    python benchmarks/memory.py            # M1: 2048-2048-2048-10, batch 16; table + results/memory.json
    python benchmarks/memory.py --widths 1024 1024 1024 10 --rows 64

Python's tracemalloc sees every numpy allocation (array_api_strict's arrays are numpy arrays
inside), so the figure is what ``fit`` allocates beyond what existed before it was called: the
gradient, the optimizer's moments, temporaries, activations. It is reported in units of P, the
parameters' own size; Adam needs 3 P (the gradient and two moments). Each Ops is measured in a
fresh model: numba's (numpy's fast path), the in-place ufuncs (numpy without numba), the generic
reference on numpy, and the generic reference on array_api_strict's Device("device1").
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tracemalloc

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OPS = ("numba", "ufunc", "generic", "strict-device1")


def peak_beyond_parameters(ops_name, widths=(2048, 2048, 2048, 10), batch=16, rows=256, epochs=1):
    """Peak bytes ``fit`` allocates, divided by the parameters' bytes (P)."""
    import mlp_xp as mx

    options = {}
    if ops_name == "strict-device1":
        import array_api_strict

        options = {"backend": "array_api_strict", "device": array_api_strict.Device("device1")}
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [mx.Linear(fan_in, fan_out), mx.ReLU()]
    model = mx.Sequential(*layers[:-1], seed=0, **options)
    if ops_name == "ufunc":
        from mlp_xp.ops.numpy_ops import UfuncOps

        model.ops = UfuncOps()
    elif ops_name == "generic":
        model.ops = None
    elif ops_name == "numba":
        assert model.ops.name == "numba", "numba is not installed"
    rng = np.random.default_rng(0)
    x = model.backend.asarray(rng.standard_normal((rows, widths[0]), dtype=np.float32))
    y = model.backend.asarray(rng.integers(0, widths[-1], rows), dtype=model.backend.index_dtype)
    parameters = model.num_parameters * 4
    warm = mx.Sequential(mx.Linear(widths[0], 2), seed=0, **options)  # (numba's kernels loaded outside the count)
    warm.ops = model.ops
    warm.fit(x[:2, ...], y[:2] % 2, mx.losses.CrossEntropy(), mx.optim.Adam(), verbose=0)
    gc.collect()
    tracemalloc.start()
    try:
        model.fit(x, y, mx.losses.CrossEntropy(), mx.optim.Adam(), epochs=epochs, batch_size=batch, verbose=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / parameters


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[2048, 2048, 2048, 10])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "memory.json"))
    args = parser.parse_args(argv)
    widths = tuple(args.widths)
    parameters = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    print(f"peak memory beyond the parameters during fit, Adam, {'-'.join(map(str, widths))} "
          f"(P = {parameters:,} float32 = {parameters * 4 / 2**20:.1f} MiB), batch {args.batch}, {args.rows} rows")
    results = {}
    for name in args.ops:
        results[name] = peak_beyond_parameters(name, widths, args.batch, args.rows)
        print(f"  {name:16s} {results[name]:.2f} P")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump({"workload": "M1", "widths": widths, "batch": args.batch, "rows": args.rows,
                   "parameters": parameters, "peak_beyond_parameters_in_P": results}, file, indent=1)
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
