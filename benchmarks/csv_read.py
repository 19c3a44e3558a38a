"""How fast ``mlp_xp.data.tables.read_csv`` reads a CSV, and its peak memory against the float array
it returns (issue 23's targets: >= ~30 MB/s for numeric tables on a 2-vCPU machine, peak <= ~2x).

    python benchmarks/csv_read.py [--rows 400000] [--columns 16] [--rounds 3] [--output results.json]

Tables are generated (seeded) in a temporary folder: "numeric" (numbers only: numpy's C parser),
"missing" (1% of cells NA: those chunks go through the csv module), "mixed" (two text columns:
the csv module throughout). Each is read ``--rounds`` times; reported: the median MB/s of the file,
and the peak of Python's allocations (tracemalloc, a separate read) over the bytes of the float64
columns returned. ``pandas.read_csv`` is timed beside it where pandas is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mlp_xp.data import tables  # noqa: E402


def make(path, kind, rows, columns, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(rows, columns)).round(6)
    header = ",".join(f"c{i}" for i in range(columns))
    cells = np.char.mod("%.6g", values).astype(object)
    if kind == "missing":
        cells[rng.random(cells.shape) < 0.01] = "NA"
    if kind == "mixed":
        cells[:, 0] = rng.choice(["red", "green", "blue"], rows)
        cells[:, 1] = rng.choice(["yes", "no"], rows)
    with open(path, "w") as file:
        file.write(header + "\n")
        for start in range(0, rows, 50_000):
            file.write("\n".join(",".join(row) for row in cells[start:start + 50_000]) + "\n")


def measure(path, rounds):
    size = os.path.getsize(path) / 1e6
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        table = tables.read_csv(path)
        times.append(time.perf_counter() - start)
    numeric_bytes = sum(values.nbytes for values in table.columns.values() if values.dtype != object)
    del table
    tracemalloc.start()
    table = tables.read_csv(path)  # (kept until the peak is read: the result is part of it)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del table
    result = {"megabytes": round(size, 2), "mb_per_s": round(size / statistics.median(times), 1),
              "peak_over_float_array": round(peak / max(numeric_bytes, 1), 2)}
    try:
        import pandas
    except ImportError:
        return result
    pandas_times = []
    for _ in range(rounds):
        start = time.perf_counter()
        pandas.read_csv(path)
        pandas_times.append(time.perf_counter() - start)
    result["pandas_mb_per_s"] = round(size / statistics.median(pandas_times), 1)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--columns", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("numeric", "missing", "mixed"):
            path = os.path.join(folder, f"{kind}.csv")
            make(path, kind, args.rows, args.columns)
            results[kind] = measure(path, args.rounds)
            print(f"{kind:8s} {results[kind]}", flush=True)
    report = {"rows": args.rows, "columns": args.columns, "rounds": args.rounds, "cpus": os.cpu_count(),
              "results": results}
    if args.output:
        with open(args.output, "w") as file:
            json.dump(report, file, indent=1)
    return report


if __name__ == "__main__":
    main()
