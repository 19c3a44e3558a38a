"""CPU benchmarks W1 and W2 (shared/BENCHMARKS.md): mlp_xp against the GEMM floor, PyTorch CPU eager
and scikit-learn's MLPClassifier, interleaved in one run.

    python benchmarks/cpu.py                 # W1 and W2, 5 rounds each, JSON under benchmarks/results/
    python benchmarks/cpu.py --workloads W2 --rounds 3 --no-memory

Each contender trains one epoch per round. The contenders run interleaved (A B C D A B C D ...) after
one warm-up each; we report the median and the min-max spread, and ratios of medians. Every
contender's final epoch loss must be finite and close to the others' (same math), or the run fails.
Peak memory is measured per contender in a fresh subprocess (ru_maxrss), so one contender's
allocations never count against another's.

The floor is the matrix products a forward and backward pass needs, with the same shapes and dtype,
on numpy: per Linear layer the forward product and the weight gradient, plus the input gradient for
every layer but the first (no framework computes the gradient of the input data; PyTorch skips it
too). Nothing else: no activations, no loss, no optimizer. The ratio to it is overhead.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

WORKLOADS = {
    # id: layer widths, samples, batch, optimizer (name, kwargs)
    "W1": {"widths": [784, 512, 512, 10], "samples": 20_000, "batch": 128, "optimizer": ("adam", {"lr": 1e-3})},
    "W2": {"widths": [64, 128, 10], "samples": 1797, "batch": 32, "optimizer": ("sgd", {"lr": 0.1, "momentum": 0.9})},
}


def make_data(workload):
    """W1: standard normal inputs with random labels; W2: the digits data set, standardized."""
    if workload == "W1":
        rng = np.random.default_rng(0)
        spec = WORKLOADS["W1"]
        X = rng.standard_normal((spec["samples"], spec["widths"][0]), dtype=np.float32)
        y = rng.integers(0, spec["widths"][-1], size=spec["samples"])
        return X, y
    import mlp_xp as mx

    X, y = mx.datasets.load_digits()
    return mx.datasets.standardize(X).astype(np.float32), y


def initial_weights(widths):
    import mlp_xp as mx

    layers = []
    for index in range(len(widths) - 1):
        layers += [mx.Linear(widths[index], widths[index + 1]), mx.ReLU()]
    model = mx.Sequential(*layers[:-1], seed=0)
    return model, {k: mx.to_numpy(v) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- contenders
# Each builder returns run_epoch() -> final epoch loss (nan where the contender has none).


def build_floor(workload, X, y):
    spec = WORKLOADS[workload]
    widths, batch = spec["widths"], spec["batch"]
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal((a, b), dtype=np.float32) for a, b in zip(widths[:-1], widths[1:])]
    hidden = [rng.standard_normal((batch, w), dtype=np.float32) for w in widths[1:-1]]
    grads = [rng.standard_normal((batch, w), dtype=np.float32) for w in widths[1:]]
    outs = [np.empty((batch, b), dtype=np.float32) for b in widths[1:]]
    input_grads = [np.empty((batch, a), dtype=np.float32) for a in widths[:-1]]
    weight_grads = [np.empty_like(w) for w in weights]
    starts = range(0, len(X), batch)

    def run_epoch():
        for start in starts:  # the real input batches: the first product reads new data every step
            inputs = [X[start:start + batch]] + hidden
            size = len(inputs[0])
            for i, weight in enumerate(weights):
                np.matmul(inputs[i][:size], weight, out=outs[i][:size])
            for i in range(len(weights) - 1, -1, -1):
                if i:
                    np.matmul(grads[i][:size], weights[i].T, out=input_grads[i][:size])
                np.matmul(inputs[i][:size].T, grads[i][:size], out=weight_grads[i])
        return math.nan

    return run_epoch


def build_mlp_xp(workload, X, y):
    import mlp_xp as mx

    spec = WORKLOADS[workload]
    name, kwargs = spec["optimizer"]
    loss = mx.losses.CrossEntropy()
    template, _ = initial_weights(spec["widths"])

    def run_epoch():
        model = template.to()  # fresh copy of the same initial weights each round
        optimizer = {"adam": mx.optim.Adam, "sgd": mx.optim.SGD}[name](**kwargs)
        history = model.fit(X, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=spec["batch"], verbose=0)
        return history["loss"][-1]

    return run_epoch


def build_mlp_xp_without_numba(workload, X, y):
    """mlp_xp with numba absent: in-place ufunc fast paths only (what `pip install mlp_xp` gives)."""
    import mlp_xp as mx
    from mlp_xp.ops.numpy_ops import UfuncOps

    spec = WORKLOADS[workload]
    name, kwargs = spec["optimizer"]
    template, _ = initial_weights(spec["widths"])

    def run_epoch():
        model = template.to()
        model.ops = UfuncOps(np)
        optimizer = {"adam": mx.optim.Adam, "sgd": mx.optim.SGD}[name](**kwargs)
        history = model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=1,
                            batch_size=spec["batch"], verbose=0)
        return history["loss"][-1]

    return run_epoch


def build_torch(workload, X, y):
    import torch

    spec = WORKLOADS[workload]
    widths, batch = spec["widths"], spec["batch"]
    template, weights = initial_weights(widths)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    name, kwargs = spec["optimizer"]
    # the batch order mlp_xp's first epoch uses, so both run the same math on the same batches
    order = torch.from_numpy(copy.deepcopy(template.shuffle_rng).permutation(len(X)))

    def make_net():
        modules = []
        for index in range(len(widths) - 1):
            linear = torch.nn.Linear(widths[index], widths[index + 1])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(weights[f"{2 * index}.weight"].T))
                linear.bias.copy_(torch.from_numpy(weights[f"{2 * index}.bias"]))
            modules += [linear, torch.nn.ReLU()]
        return torch.nn.Sequential(*modules[:-1])

    def run_epoch():
        net = make_net()
        optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name](net.parameters(), **kwargs)
        total = 0.0
        for start in range(0, len(Xt), batch):
            index = order[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(Xt[index]), yt[index])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        return total / len(Xt)

    return run_epoch


def build_sklearn(workload, X, y):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    spec = WORKLOADS[workload]
    name, kwargs = spec["optimizer"]
    options = {"solver": "adam", "learning_rate_init": kwargs["lr"]} if name == "adam" else {
        "solver": "sgd", "learning_rate_init": kwargs["lr"], "momentum": kwargs["momentum"], "nesterovs_momentum": False}

    def run_epoch():
        model = MLPClassifier(hidden_layer_sizes=tuple(spec["widths"][1:-1]), activation="relu", alpha=0.0,
                              batch_size=spec["batch"], max_iter=1, shuffle=True, random_state=0, tol=0.0,
                              n_iter_no_change=10**9, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        return model.loss_curve_[-1]

    return run_epoch


def build_mlp_xp_jax(workload, X, y):
    """mlp_xp on the JAX backend (CPU): its training step compiled whole by jax.jit. One model,
    loss and optimizer across rounds (the compiled step is kept on the model), reset to the same
    initial weights and a fresh optimizer state each round; data put on the JAX device once."""
    import jax.numpy as jnp

    import mlp_xp as mx

    spec = WORKLOADS[workload]
    name, kwargs = spec["optimizer"]
    loss = mx.losses.CrossEntropy()
    template, _ = initial_weights(spec["widths"])
    model = template.to(backend="jax")
    start = model.params
    optimizer = {"adam": mx.optim.Adam, "sgd": mx.optim.SGD}[name](**kwargs)
    x, labels = jnp.asarray(X), jnp.asarray(y)

    def run_epoch():
        model.params, model._optimizer_state, model.dropout_step = start, None, 0
        model.shuffle_rng = copy.deepcopy(template.shuffle_rng)  # the same batches as the others
        history = model.fit(x, labels, loss=loss, optimizer=optimizer, epochs=1, batch_size=spec["batch"], verbose=0)
        return history["loss"][-1]

    return run_epoch


CONTENDERS = {"floor": build_floor, "mlp_xp": build_mlp_xp, "mlp_xp-nonumba": build_mlp_xp_without_numba,
              "mlp_xp-jax": build_mlp_xp_jax, "torch": build_torch, "sklearn": build_sklearn}


def available(contenders):
    keep = []
    for name in contenders:
        module = {"torch": "torch", "sklearn": "sklearn", "mlp_xp-jax": "jax"}.get(name)
        if module:
            try:
                __import__(module)
            except ImportError:
                print(f"skipping {name}: {module} is not installed (pip install '.[bench]')", file=sys.stderr)
                continue
        keep.append(name)
    return keep


# --------------------------------------------------------------------------- measurement


def time_interleaved(workload, contenders, rounds):
    X, y = make_data(workload)
    runners = {name: CONTENDERS[name](workload, X, y) for name in contenders}
    times = {name: [] for name in contenders}
    losses = {}
    for name, run in runners.items():  # warm-up: caches, allocator, thread pools
        losses[name] = run()
    for _ in range(rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            losses[name] = run()
            times[name].append(time.perf_counter() - started)
    return times, losses, len(X)


def peak_rss_mb(workload, contender):
    """Peak resident memory of a fresh process that loads the data and trains one epoch."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import cpu; "
            f"X, y = cpu.make_data({workload!r}); "
            + (f"cpu.CONTENDERS[{contender!r}]({workload!r}, X, y)(); " if contender != "data only" else "")
            + "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024.0


def check_losses(workload, losses):
    """A fast wrong run is not a result: same math must give nearly the same epoch loss."""
    real = {k: v for k, v in losses.items() if not math.isnan(v)}
    for name, value in real.items():
        if not math.isfinite(value):
            raise SystemExit(f"{workload}: {name} ended with a non-finite loss {value}")
    if "mlp_xp" in real and "mlp_xp-nonumba" in real and real["mlp_xp"] != real["mlp_xp-nonumba"]:
        raise SystemExit(f"{workload}: the fast paths changed the result ({real['mlp_xp']} vs {real['mlp_xp-nonumba']})")
    if "torch" in real and "mlp_xp" in real:
        # same initial weights and batches: float32 rounding is the only difference
        gap = abs(real["torch"] - real["mlp_xp"]) / real["torch"]
        if gap > 1e-3:
            raise SystemExit(f"{workload}: mlp_xp loss {real['mlp_xp']:.4f} differs from torch's {real['torch']:.4f}")
    # scikit-learn draws its own initial weights, so only the same ballpark is expected
    if "sklearn" in real and "mlp_xp" in real and not 0.5 < real["sklearn"] / real["mlp_xp"] < 2.0:
        raise SystemExit(f"{workload}: mlp_xp loss {real['mlp_xp']:.4f} far from sklearn's {real['sklearn']:.4f}")


def device_name():
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} x{os.cpu_count()}"


def versions():
    found = {"python": platform.python_version(), "numpy": np.__version__}
    for module in ("mlp_xp", "torch", "sklearn", "array_api_compat"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            pass
    try:
        found["blas"] = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:
        pass
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2"], choices=sorted(WORKLOADS))
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=list(CONTENDERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-contender peak-RSS subprocesses")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/cpu-DEVICE.json)")
    args = parser.parse_args(argv)
    contenders = available(args.contenders)

    device = device_name()
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": device, "versions": versions(), "rounds": args.rounds, "workloads": {}}
    table = []
    for workload in args.workloads:
        times, losses, samples = time_interleaved(workload, contenders, args.rounds)
        check_losses(workload, losses)
        medians = {name: statistics.median(values) for name, values in times.items()}
        memory = {}
        if not args.no_memory:
            baseline = peak_rss_mb(workload, "data only")
            memory = {name: peak_rss_mb(workload, name) for name in contenders}
            memory["data only"] = baseline
        entries = {}
        for name in contenders:
            entries[name] = {
                "median_s": medians[name], "min_s": min(times[name]), "max_s": max(times[name]),
                "samples_per_s": samples / medians[name],
                "ratio_to_floor": medians[name] / medians["floor"] if "floor" in medians else None,
                "ratio_to_torch": medians[name] / medians["torch"] if "torch" in medians else None,
                "final_loss": None if math.isnan(losses[name]) else losses[name],
                "peak_rss_mb": memory.get(name),
            }
            table.append((workload, name, entries[name]))
        report["workloads"][workload] = {**WORKLOADS[workload], "optimizer": WORKLOADS[workload]["optimizer"][0],
                                         "optimizer_args": WORKLOADS[workload]["optimizer"][1],
                                         "dtype": "float32", "epochs_per_round": 1, "samples": samples,
                                         "peak_rss_data_only_mb": memory.get("data only"), "contenders": entries}

    path = args.output or os.path.join(RESULTS, "cpu-" + "".join(c if c.isalnum() else "-" for c in device).strip("-")
                                       .replace("--", "-") + ".json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        json.dump(report, file, indent=2)

    print(f"\n{device}; numpy {np.__version__}; {args.rounds} rounds, one epoch each; medians (min-max)")
    print(f"{'workload':8} {'contender':14} {'seconds':>22} {'samples/s':>11} {'x floor':>8} {'x torch':>8} "
          f"{'loss':>7} {'peak MB':>8}")
    for workload, name, entry in table:
        spread = f"{entry['median_s']:.3f} ({entry['min_s']:.3f}-{entry['max_s']:.3f})"
        ratio = lambda key: f"{entry[key]:.2f}" if entry[key] is not None else "-"  # noqa: E731
        loss = f"{entry['final_loss']:.4f}" if entry["final_loss"] is not None else "-"
        rss = f"{entry['peak_rss_mb']:.0f}" if entry["peak_rss_mb"] is not None else "-"
        print(f"{workload:8} {name:14} {spread:>22} {entry['samples_per_s']:>11.0f} {ratio('ratio_to_floor'):>8} "
              f"{ratio('ratio_to_torch'):>8} {loss:>7} {rss:>8}")
    print(f"\nwritten: {os.path.relpath(path)}")
    return report


if __name__ == "__main__":
    main()
