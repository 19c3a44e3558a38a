"""Before/after timing of ``fit`` at two git revisions, interleaved in one run (BENCHMARKS.md method).

    python benchmarks/revisions.py 697c794 HEAD --workload W2 --rounds 7

Each revision is checked out into a temporary git worktree; every round runs one fresh process per
revision (A B A B ...), which warms up with one epoch and then times ``--epochs`` epochs of
``model.fit`` exactly as a user calls it. Reported: the median (min-max) seconds per epoch and the
ratio of medians, B / A (below 1: B is faster). Final losses must agree, or the run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import numpy as np, mlp_xp as mx
from cpu import WORKLOADS, make_data
spec = WORKLOADS[sys.argv[3]]
X, y = make_data(sys.argv[3])
layers = []
for a, b in zip(spec["widths"][:-2], spec["widths"][1:-1]):
    layers += [mx.Linear(a, b), mx.ReLU()]
layers += [mx.Linear(spec["widths"][-2], spec["widths"][-1]), mx.Softmax()]
model = mx.Sequential(*layers, seed=0)
if sys.argv[5] == "plain":  # a plain install: in-place ufuncs, no numba (either layout of the fast paths)
    try:
        from mlp_xp.ops.numpy_ops import UfuncOps
        model.ops = UfuncOps(np)
    except ImportError:
        from mlp_xp._kernels import for_backend
        model.kernels = for_backend("numpy", model.dtype_name, use_numba=False)
name, options = spec["optimizer"]
optimizer = {"adam": mx.optim.Adam, "sgd": mx.optim.SGD}[name](**options)
fit = lambda epochs: model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=epochs,
                               batch_size=spec["batch"], verbose=0)
fit(1)
times = []
for _ in range(int(sys.argv[4])):
    start = time.perf_counter()
    history = fit(1)
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": statistics.median(times), "loss": history["loss"][-1], "file": mx.__file__}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="git revision A")
    parser.add_argument("after", help="git revision B")
    parser.add_argument("--workload", default="W2", choices=("W1", "W2"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per process")
    parser.add_argument("--no-numba", action="store_true", help="time the plain-install fast path")
    args = parser.parse_args(argv)

    top = subprocess.check_output(["git", "rev-parse", "--show-toplevel"], cwd=HERE, text=True).strip()
    folder = tempfile.mkdtemp()
    trees = {}
    for label, revision in (("A", args.before), ("B", args.after)):
        tree = os.path.join(folder, label)
        subprocess.run(["git", "worktree", "add", "--detach", "-q", tree, revision], cwd=top, check=True)
        trees[label] = tree
    results = {"A": [], "B": []}
    try:
        for _ in range(args.rounds):
            for label in ("A", "B"):
                out = subprocess.check_output([sys.executable, "-c", CHILD, trees[label], HERE, args.workload,
                                               str(args.epochs), "plain" if args.no_numba else "numba"], text=True)
                run = json.loads(out)
                if not run["file"].startswith(trees[label]):
                    raise SystemExit(f"revision {label} imported mlp_xp from {run['file']}, not its worktree")
                results[label].append(run)
    finally:
        for tree in trees.values():
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=top, check=False)
    losses = {label: runs[-1]["loss"] for label, runs in results.items()}
    if abs(losses["A"] - losses["B"]) > 1e-3 * max(1.0, abs(losses["A"])):
        raise SystemExit(f"final losses differ: {losses}: not the same computation")
    medians = {}
    for label, revision in (("A", args.before), ("B", args.after)):
        seconds = [run["seconds"] for run in results[label]]
        medians[label] = statistics.median(seconds)
        print(f"{label} {revision:>12}  {medians[label] * 1e3:8.2f} ms/epoch ({min(seconds) * 1e3:.2f}-"
              f"{max(seconds) * 1e3:.2f})  loss {losses[label]:.6f}")
    print(f"{args.workload}: B / A = {medians['B'] / medians['A']:.3f} (ratio of medians; below 1: B is faster)")


if __name__ == "__main__":
    main()
