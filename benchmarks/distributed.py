"""Scaling of data-parallel training over MPI processes on this machine (issue 15), and a written
model of the all-reduce cost for GPUs over NVLink.

    python benchmarks/distributed.py --rounds 5            # W1 and W2, JSON under benchmarks/results/

Contenders, interleaved A B C A B C ... after one warm-up epoch each (every run is a fresh set of
processes that trains ``--epochs`` epochs and reports the median epoch time):

- ``1 process, 1 thread``: the unit of work (BLAS limited to one thread);
- ``1 process, N threads``: what one process gets from the whole machine;
- ``N processes, 1 thread each``: ``fit(distributed="mpi")`` under ``mpiexec -n N``.

Scaling efficiency = throughput(N processes) / (N x throughput(1 process, 1 thread)). All runs
must end with the same loss to 1% (same math in float32, summed in another order), or the
benchmark fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, mlp_xp as mx
from cpu import WORKLOADS, make_data
workload, epochs, distributed = sys.argv[2], int(sys.argv[3]), sys.argv[4]
spec = WORKLOADS[workload]
X, y = make_data(workload)
layers = []
for a, b in zip(spec["widths"][:-2], spec["widths"][1:-1]):
    layers += [mx.Linear(a, b), mx.ReLU()]
model = mx.Sequential(*layers, mx.Linear(spec["widths"][-2], spec["widths"][-1]), mx.Softmax(), seed=0)
name, options = spec["optimizer"]
optimizer = {"adam": mx.optim.Adam, "sgd": mx.optim.SGD}[name](**options)
engine = mx.distributed.resolve(distributed if distributed != "none" else None)
fit = lambda: model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=1,
                        batch_size=spec["batch"], verbose=0, distributed=engine)
fit()
times = []
for _ in range(epochs):
    start = time.perf_counter()
    history = fit()
    times.append(time.perf_counter() - start)
if engine is None or engine.is_main:
    print(json.dumps({"seconds": statistics.median(times), "loss": history["loss"][-1], "samples": len(X)}))
"""


def _run(command, threads):
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                       MKL_NUM_THREADS=str(threads))
    out = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=1200)
    if out.returncode != 0:
        raise SystemExit(f"{command}: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def allreduce_model(parameters, step_seconds, gpus=8, bandwidth=450e9, latency=10e-6, itemsize=4):
    """Expected scaling efficiency of one ring all-reduce per step, not overlapped with compute.

    A ring all-reduce moves 2 (g - 1) / g of the gradient bytes through each GPU's link, in
    2 (g - 1) latency-bound steps. With the per-GPU step time ``step_seconds`` (compute only),
    efficiency = step / (step + all-reduce).
    """
    payload = parameters * itemsize
    seconds = 2 * (gpus - 1) / gpus * payload / bandwidth + 2 * (gpus - 1) * latency
    return {"gradient_bytes": payload, "allreduce_seconds": seconds, "step_seconds": step_seconds,
            "efficiency": step_seconds / (step_seconds + seconds)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2"], choices=("W1", "W2"))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per run (median taken)")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, HERE)
    from cpu import device_name, versions

    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if mpiexec is None:
        raise SystemExit("mpiexec not found: pip install 'mlp_xp[mpi]'")
    n = args.processes
    contenders = {
        "1 process, 1 thread": ([sys.executable, "-c", CHILD, HERE], 1, "none"),
        f"1 process, {n} threads": ([sys.executable, "-c", CHILD, HERE], n, "none"),
        f"{n} processes, 1 thread each": ([mpiexec, "-n", str(n), sys.executable, "-c", CHILD, HERE], 1, "mpi"),
    }
    report = {"date": datetime.date.today().isoformat(), "device": device_name(), "versions": versions(),
              "processes": n, "workloads": {}}
    for workload in args.workloads:
        runs = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, (command, threads, engine) in contenders.items():
                runs[name].append(_run(command + [workload, str(args.epochs), engine], threads))
        losses = {name: results[-1]["loss"] for name, results in runs.items()}
        # float32, and BLAS sums in another order with other thread counts: same math to about 1%
        if max(losses.values()) - min(losses.values()) > 1e-2 * max(1.0, abs(min(losses.values()))):
            raise SystemExit(f"{workload}: final losses differ: {losses}")
        summary = {}
        for name, results in runs.items():
            seconds = [result["seconds"] for result in results]
            summary[name] = {"median_seconds": statistics.median(seconds), "min_seconds": min(seconds),
                             "max_seconds": max(seconds),
                             "samples_per_second": results[0]["samples"] / statistics.median(seconds),
                             "loss": losses[name]}
        unit = summary["1 process, 1 thread"]["samples_per_second"]
        many = summary[f"{n} processes, 1 thread each"]["samples_per_second"]
        threaded = summary[f"{n} processes, 1 thread each"]["median_seconds"] / summary[
            f"1 process, {n} threads"]["median_seconds"]
        report["workloads"][workload] = {"contenders": summary, "scaling_efficiency": many / (n * unit),
                                         "time_vs_one_process_all_threads": threaded}
        print(f"{workload}")
        for name, row in summary.items():
            print(f"  {name:28s} {row['median_seconds']:.3f} s/epoch ({row['min_seconds']:.3f}-"
                  f"{row['max_seconds']:.3f})  {row['samples_per_second']:9.0f} samples/s  loss {row['loss']:.4f}")
        print(f"  scaling efficiency over {n} processes: {many / (n * unit):.2f}; time vs 1 process with {n} "
              f"threads: {threaded:.2f}x")
    # the model of 8 GPUs over NVLink, for G1's network (1024-4096x4-1000) and G2's (784-256-256-10)
    g1 = 1024 * 4096 + 3 * 4096 * 4096 + 4096 * 1000 + 4 * 4096 + 1000
    g2 = 784 * 256 + 256 * 256 + 256 * 10 + 256 + 256 + 10
    report["nvlink_model"] = {
        "assumptions": "8 GPUs, ring all-reduce, 450 GB/s per GPU (H100 NVLink 4, one direction), 10 us per hop, "
                       "float32 gradients, no overlap with compute; step times are per-GPU compute estimates",
        "G1 batch 8192 (1024 per GPU)": allreduce_model(g1, step_seconds=0.020),
        "G2 batch 128 (16 per GPU)": allreduce_model(g2, step_seconds=0.0003),
    }
    for name, row in report["nvlink_model"].items():
        if isinstance(row, dict):
            print(f"NVLink model, {name}: {row['gradient_bytes'] / 1e6:.1f} MB per step, all-reduce "
                  f"{row['allreduce_seconds'] * 1e3:.3f} ms vs step {row['step_seconds'] * 1e3:.2f} ms: "
                  f"efficiency {row['efficiency']:.2f}")
    os.makedirs(RESULTS, exist_ok=True)
    words = re.sub(r"\((R|TM)\)|[^A-Za-z0-9 ]", "", report["device"]).split()[:2]
    path = args.output or os.path.join(RESULTS, f"distributed-{'-'.join(words)}-x{os.cpu_count()}.json")
    with open(path, "w") as file:
        json.dump(report, file, indent=1)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
