"""GPU benchmarks G1-G3 (shared/BENCHMARKS.md): mlp_xp on CuPy and on torch-on-CUDA against the
cuBLAS floor, PyTorch eager, torch.compile and CUDA-graph-captured PyTorch, interleaved in one run.

    python benchmarks/gpu.py                      # G1 (float32, tf32, float16), G2, G3, sklearn on the GPU
    python benchmarks/gpu.py --smoke              # tiny shapes on the CPU: checks this harness (CI runs it)

Every contender trains ``--steps`` optimizer steps per round from the same initial weights on the
same batches (in order), after one warm-up round (kernel compilation, allocator, cuDNN/cuBLAS
heuristics, torch.compile); rounds are interleaved A B C ... and timed with CUDA events around the
whole round (synchronised), reporting the median and min-max. Every contender's final loss must be
finite and agree with PyTorch eager's at the same precision (1e-3 relative for float32; 2e-2 for
tf32/float16), or the run fails. G3 is the peak device memory of one training round, read in a
fresh process per contender (CuPy: a memory hook on its pool; torch: max_memory_allocated).
"sklearn" fits mlp_xp.sklearn.MLPClassifier(backend="cupy") and scikit-learn's CPU MLPClassifier with
the same parameters on 200,000 x 100 synthetic rows: fit time and test accuracy.

Results go to benchmarks/results/gpu-DEVICE.json with the device name, driver, CUDA, CuPy and torch
versions; a short table is printed last. mlp_xp's TF32 on CuPy is its emulation (inputs rounded,
float32 products) until a CuPy override turns on cuBLAS's TF32 mode; contenders that cannot run
are listed with the reason, not skipped silently.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

WORKLOADS = {
    "G1": {"widths": [1024, 4096, 4096, 4096, 4096, 1000], "samples": 131_072, "batch": 8192},
    "G2": {"widths": [784, 256, 256, 10], "samples": 60_000, "batch": 128},
}
SMOKE = {"G1": {"widths": [32, 64, 64, 10], "samples": 512, "batch": 128},
         "G2": {"widths": [16, 32, 10], "samples": 256, "batch": 32}}
PRECISIONS = {"G1": ["float32", "tf32", "float16"], "G2": ["float32"]}


class Setup:
    """Shapes, data, initial weights and the device of one workload (shared by every contender)."""

    def __init__(self, workload, smoke, steps):
        spec = (SMOKE if smoke else WORKLOADS)[workload]
        self.widths, self.batch, self.smoke = spec["widths"], spec["batch"], smoke
        self.steps = min(steps, spec["samples"] // spec["batch"])
        rng = np.random.default_rng(0)
        self.X = rng.standard_normal((self.steps * self.batch, self.widths[0]), dtype=np.float32)
        self.y = rng.integers(0, self.widths[-1], size=len(self.X))
        import mlp_xp as mx

        layers = []
        for a, b in zip(self.widths[:-1], self.widths[1:]):
            layers += [mx.Linear(a, b), mx.ReLU()]
        self.template = mx.Sequential(*layers[:-1], seed=0)
        self.weights = {key: mx.to_numpy(value) for key, value in self.template.state_dict().items()}


# --------------------------------------------------------------------------- timing


def _timer(smoke):
    """(start, stop) -> seconds: CUDA events on the GPU, perf_counter in smoke mode."""
    if smoke:
        return time.perf_counter, lambda start: time.perf_counter() - start
    import cupy

    def start():
        event = cupy.cuda.Event()
        event.record()
        return event

    def stop(begin):
        end = cupy.cuda.Event()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(begin, end) / 1e3

    return start, stop


# --------------------------------------------------------------------------- contenders
# Each builder returns run_round() -> final loss (nan where none), or raises NotImplementedError.


def build_floor(setup, precision):
    """The GEMMs alone: per Linear the forward product and the weight gradient, and the input
    gradient for every layer but the first, on preallocated CuPy arrays (numpy in smoke mode)."""
    xp = np if setup.smoke else __import__("cupy")
    dtype = {"float32": xp.float32, "tf32": xp.float32, "float16": xp.float16}[precision]
    if precision == "tf32" and not setup.smoke:
        os.environ["CUPY_TF32"] = "1"
    widths, batch = setup.widths, setup.batch
    X = xp.asarray(setup.X, dtype=dtype)
    weights = [xp.asarray(setup.weights[f"{2 * i}.weight"], dtype=dtype) for i in range(len(widths) - 1)]
    hidden = [xp.ones((batch, w), dtype=dtype) for w in widths[1:-1]]
    grads = [xp.ones((batch, w), dtype=dtype) * 1e-3 for w in widths[1:]]
    outs = [xp.empty((batch, w), dtype=dtype) for w in widths[1:]]
    input_grads = [xp.empty((batch, w), dtype=dtype) for w in widths[:-1]]
    weight_grads = [xp.empty_like(w) for w in weights]

    def run_round():
        for step in range(setup.steps):
            inputs = [X[step * batch:(step + 1) * batch]] + hidden
            for i, weight in enumerate(weights):
                xp.matmul(inputs[i], weight, out=outs[i])
            for i in range(len(weights) - 1, -1, -1):
                if i:
                    xp.matmul(grads[i], weights[i].T, out=input_grads[i])
                xp.matmul(inputs[i].T, grads[i], out=weight_grads[i])
        return math.nan

    return run_round


def _build_mlp_xp(setup, precision, backend, device):
    import mlp_xp as mx

    model_device = None if setup.smoke else device
    template = setup.template.to(backend=backend, device=model_device,
                                 precision=None if precision == "float32" else precision)
    X = template.backend.asarray(setup.X, dtype=template.dtype)
    y = template.backend.asarray(setup.y, dtype=template.backend.index_dtype)

    def run_round():
        model = template.to()
        history = model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(lr=1e-3), epochs=1,
                            batch_size=setup.batch, shuffle=False, verbose=0)
        return history["loss"][-1]

    return run_round


def build_mlp_xp_cupy(setup, precision):
    return _build_mlp_xp(setup, precision, "numpy" if setup.smoke else "cupy", None)


def build_mlp_xp_torch(setup, precision):
    return _build_mlp_xp(setup, precision, "torch", "cuda")


def _torch_net(setup, torch, device):
    modules = []
    for index in range(len(setup.widths) - 1):
        linear = torch.nn.Linear(setup.widths[index], setup.widths[index + 1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(setup.weights[f"{2 * index}.weight"].T))
            linear.bias.copy_(torch.from_numpy(setup.weights[f"{2 * index}.bias"]))
        modules += [linear, torch.nn.ReLU()]
    return torch.nn.Sequential(*modules[:-1]).to(device)


def _build_torch(setup, precision, mode):
    import torch

    device = "cpu" if setup.smoke else "cuda"
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    X = torch.from_numpy(setup.X).to(device)
    y = torch.from_numpy(setup.y).to(device)
    autocast = precision == "float16"
    batch = setup.batch

    def step_function(net, optimizer, scaler, xb, yb):
        optimizer.zero_grad(set_to_none=mode != "graphs")
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=autocast):
            loss = torch.nn.functional.cross_entropy(net(xb), yb)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    def run_round():
        net = _torch_net(setup, torch, device)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, capturable=mode == "graphs" and not setup.smoke)
        scaler = torch.amp.GradScaler(device, enabled=autocast)
        forward = torch.compile(net) if mode == "compile" else net
        total = torch.zeros((), device=device)
        if mode == "graphs" and not setup.smoke:
            static_x, static_y = X[:batch].clone(), y[:batch].clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm up the captured step on a side stream, as torch requires
                for _ in range(3):
                    step_function(forward, optimizer, scaler, static_x, static_y)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            optimizer.zero_grad(set_to_none=False)
            with torch.cuda.graph(graph):
                static_loss = step_function(forward, optimizer, scaler, static_x, static_y)
            # restart from the same weights and a fresh Adam state, in place (the graph holds these buffers)
            net.load_state_dict(_torch_net(setup, torch, device).state_dict())
            for state in optimizer.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()
            for step in range(setup.steps):
                static_x.copy_(X[step * batch:(step + 1) * batch])
                static_y.copy_(y[step * batch:(step + 1) * batch])
                graph.replay()
                total += static_loss.detach()
        else:
            for step in range(setup.steps):
                total += step_function(forward, optimizer, scaler, X[step * batch:(step + 1) * batch],
                                       y[step * batch:(step + 1) * batch]).detach()
        return float(total) / setup.steps

    return run_round


def build_torch_eager(setup, precision):
    return _build_torch(setup, precision, "eager")


def build_torch_compile(setup, precision):
    if setup.smoke:
        raise NotImplementedError("torch.compile is not timed in smoke mode")
    return _build_torch(setup, precision, "compile")


def build_torch_graphs(setup, precision):
    if setup.smoke:
        raise NotImplementedError("CUDA graphs need a GPU")
    if precision == "float16":
        raise NotImplementedError("GradScaler's host-side checks cannot be captured")
    return _build_torch(setup, precision, "graphs")


CONTENDERS = {"floor": build_floor, "mlp_xp-cupy": build_mlp_xp_cupy, "mlp_xp-torch": build_mlp_xp_torch,
              "torch-eager": build_torch_eager, "torch-compile": build_torch_compile,
              "torch-graphs": build_torch_graphs}


# --------------------------------------------------------------------------- memory (G3)


MEMORY_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import gpu
setup = gpu.Setup("G1", sys.argv[4] == "smoke", int(sys.argv[3]))
name = sys.argv[2]
if name.startswith("torch"):
    import torch
    run = gpu.CONTENDERS[name](setup, "float32")
    run()
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
elif sys.argv[4] == "smoke":
    gpu.CONTENDERS[name](setup, "float32")()
    peak = None
else:
    import cupy
    class Peak(cupy.cuda.MemoryHook):
        name = "peak"
        def __init__(self):
            self.used = self.peak = 0
        def malloc_postprocess(self, device_id, size, mem_size, mem_ptr, pmem_id):
            self.used += mem_size
            self.peak = max(self.peak, self.used)
        def free_postprocess(self, device_id, mem_size, mem_ptr, pmem_id):
            self.used -= mem_size
    hook = Peak()
    with hook:
        gpu.CONTENDERS[name](setup, "float32")()
    peak = hook.peak
print(json.dumps({"peak_bytes": peak}))
"""


def peak_memory(name, smoke, steps):
    mode = "smoke" if smoke else "gpu"
    command = [sys.executable, "-c", MEMORY_CHILD, HERE, name, str(steps), mode]
    out = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- scikit-learn users


def sklearn_comparison(smoke, rounds):
    """mlp_xp.sklearn.MLPClassifier on the GPU (numpy in smoke mode) against scikit-learn's CPU MLP on
    a larger data set: fit time (median of ``rounds``) and test accuracy, same parameters and seed."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SklearnMLP

    from mlp_xp.sklearn import MLPClassifier

    rows, features = (2000, 20) if smoke else (200_000, 100)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    y = np.argmax(np.tanh(X @ rng.normal(size=(features, 32)) / np.sqrt(features)) @ rng.normal(size=(32, 10)), axis=1)
    split = int(0.8 * rows)
    options = dict(hidden_layer_sizes=(64,) if smoke else (512, 256), max_iter=3 if smoke else 10, random_state=0,
                   batch_size=256)
    contenders = {"scikit-learn (CPU)": lambda: SklearnMLP(**options),
                  "mlp_xp.sklearn": lambda: MLPClassifier(**options, backend="numpy" if smoke else "cupy")}
    result = {}
    for name, make in contenders.items():
        times = []
        with warnings.catch_warnings():  # warm-up: imports, kernel compilation, the allocator
            warnings.simplefilter("ignore", ConvergenceWarning)
            make().set_params(max_iter=1).fit(X[:1000], y[:1000])
        for _ in range(rounds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                started = time.perf_counter()
                model = make().fit(X[:split], y[:split])
                times.append(time.perf_counter() - started)
        result[name] = {"fit_seconds": statistics.median(times), "test_accuracy": float(model.score(X[split:], y[split:])),
                        "final_loss": float(model.loss_)}
    result["rows"], result["features"] = rows, features
    return result


# --------------------------------------------------------------------------- run


def device_and_versions(smoke):
    found = {"python": sys.version.split()[0], "numpy": np.__version__}
    for module in ("mlp_xp", "cupy", "torch", "array_api_compat"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            pass
    if smoke:
        return "cpu (smoke)", found
    import cupy

    properties = cupy.cuda.runtime.getDeviceProperties(0)
    found["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    found["driver"] = cupy.cuda.runtime.driverGetVersion()
    return properties["name"].decode(), found


def check_losses(workload, precision, losses):
    """The contenders whose final loss is non-finite or not torch eager's: {name: why}. Their timings
    are kept in the report, marked, and the run ends with a non-zero status."""
    reference = losses.get("torch-eager")
    tolerance = 1e-3 if precision == "float32" else 2e-2
    wrong = {}
    for name, loss in losses.items():
        if name == "floor":
            continue
        if not math.isfinite(loss):
            wrong[name] = f"{workload} {precision}: {name} ended with a non-finite loss {loss}"
        elif reference is not None and abs(loss - reference) > tolerance * max(1.0, abs(reference)):
            wrong[name] = (f"{workload} {precision}: {name} loss {loss:.6f} differs from torch eager's "
                           f"{reference:.6f}: not the same computation")
    return wrong


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["G1", "G2", "G3", "sklearn"],
                        choices=("G1", "G2", "G3", "sklearn"))
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=list(CONTENDERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per timed round")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, to check the harness")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    device, versions = device_and_versions(args.smoke)
    start, stop = _timer(args.smoke)
    report = {"date": datetime.date.today().isoformat(), "device": device, "versions": versions,
              "smoke": args.smoke, "steps_per_round": args.steps, "workloads": {}}
    lines, failures = [], []
    for workload in [w for w in args.workloads if w in WORKLOADS]:
        setup = Setup(workload, args.smoke, args.steps)
        for precision in PRECISIONS[workload]:
            runners, skipped = {}, {}
            for name in args.contenders:
                try:
                    runners[name] = CONTENDERS[name](setup, precision)
                    runners[name]()  # warm-up
                except (NotImplementedError, ImportError) as why:
                    skipped[name] = str(why)
                    runners.pop(name, None)
            times = {name: [] for name in runners}
            losses = {}
            for _ in range(args.rounds):
                for name, run in runners.items():
                    begin = start()
                    losses[name] = run()
                    times[name].append(stop(begin))
            wrong = check_losses(workload, precision, losses)
            failures += wrong.values()
            samples = setup.steps * setup.batch
            medians = {name: statistics.median(values) for name, values in times.items()}
            rows = {}
            for name, values in times.items():
                rows[name] = {"median_seconds": medians[name], "min_seconds": min(values), "max_seconds": max(values),
                              "samples_per_second": samples / medians[name], "loss": losses[name],
                              "x_floor_throughput": medians.get("floor", math.nan) / medians[name],
                              "x_torch_eager_throughput": medians.get("torch-eager", math.nan) / medians[name]}
                if name in wrong:
                    rows[name]["wrong"] = wrong[name]
            report["workloads"][f"{workload} {precision}"] = {"contenders": rows, "not_run": skipped}
            for name, row in rows.items():
                lines.append(f"{workload:3s} {precision:8s} {name:14s} {row['median_seconds'] * 1e3:9.2f} ms "
                             f"({row['min_seconds'] * 1e3:.2f}-{row['max_seconds'] * 1e3:.2f}) "
                             f"{row['samples_per_second']:12.0f} samples/s  x floor {row['x_floor_throughput']:.2f}  "
                             f"x torch {row['x_torch_eager_throughput']:.2f}  loss {row['loss']:.4f}")
            lines += [f"{workload:3s} {precision:8s} {name:14s} not run: {why}" for name, why in skipped.items()]
    if "G3" in args.workloads:
        memory = {name: peak_memory(name, args.smoke, args.steps) for name in ("mlp_xp-cupy", "torch-eager")}
        report["workloads"]["G3"] = memory
        lines += [f"G3  float32  {name:14s} peak {value}" for name, value in memory.items()]
    if "sklearn" in args.workloads:
        report["workloads"]["sklearn"] = comparison = sklearn_comparison(args.smoke, max(1, min(args.rounds, 3)))
        lines += [f"sklearn  {name:20s} fit {row['fit_seconds']:.2f} s  test accuracy {row['test_accuracy']:.4f}"
                  for name, row in comparison.items() if isinstance(row, dict)]
    os.makedirs(RESULTS, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in device).strip("-")
    path = args.output or os.path.join(RESULTS, f"gpu-{slug}.json")
    report["failures"] = failures
    with open(path, "w") as file:
        json.dump(report, file, indent=1)
    print("\n".join(lines))
    print(f"written: {path}")
    if failures:
        raise SystemExit("\n".join(["contenders that did not compute the same thing:"] + failures))
    return report


if __name__ == "__main__":
    main()
