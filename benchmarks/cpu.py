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
    # (W2's epoch is 57 steps of a few dozen microseconds: a round is 5 epochs, so that what one fit call
    # costs to set up, which users pay once per run, is not a fifth of the time)
    "W2": {"widths": [64, 128, 10], "samples": 1797, "batch": 32, "optimizer": ("sgd", {"lr": 0.1, "momentum": 0.9}),
           "epochs": 5},
}


def sweep_points():
    """The size sweep: W1's net and optimizer with one of batch, hidden width or depth changed, 32 steps a
    round on standard normal inputs (W1's data, as many rows as 32 batches)."""
    points = {}
    base = WORKLOADS["W1"]
    for batch in (16, 32, 64, 256, 1024):
        points[f"batch {batch}"] = {**base, "batch": batch}
    for width in (128, 1024, 2048):
        points[f"width {width}"] = {**base, "widths": [784, width, width, 10]}
    for depth in (2, 4, 8, 16):  # Linear layers
        points[f"depth {depth}"] = {**base, "widths": [784] + [512] * (depth - 1) + [10]}
    return {name: {**spec, "samples": 32 * spec["batch"]} for name, spec in points.items()}


SWEEP = sweep_points()


def _spec(workload):
    return WORKLOADS[workload] if workload in WORKLOADS else SWEEP[workload]


def make_data(workload):
    """W1 and the sweep: standard normal inputs with random labels; W2: the digits data set, standardized."""
    if workload != "W2":
        rng = np.random.default_rng(0)
        spec = _spec(workload)
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


def epoch_orders(template, samples, epochs):
    """The batch orders of ``epochs`` epochs of a model copied from ``template`` (fit draws one
    permutation of the rows per epoch from its shuffle generator)."""
    rng = copy.deepcopy(template.shuffle_rng)
    return [rng.permutation(samples) for _ in range(epochs)]


# --------------------------------------------------------------------------- contenders
# Each builder returns run_epoch() -> the final epoch's loss (nan where the contender has none), after the
# workload's epochs per round (spec["epochs"], default 1).


def build_floor(workload, X, y):
    spec = _spec(workload)
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
        for _ in range(spec.get("epochs", 1)):
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

    spec = _spec(workload)
    name, kwargs = spec["optimizer"]
    loss = mx.losses.CrossEntropy()
    template, _ = initial_weights(spec["widths"])

    def run_epoch():
        model = template.to()  # fresh copy of the same initial weights each round
        optimizer = {"adam": mx.optim.Adam, "sgd": mx.optim.SGD}[name](**kwargs)
        history = model.fit(X, y, loss=loss, optimizer=optimizer, epochs=spec.get("epochs", 1), batch_size=spec["batch"],
                            verbose=0)
        return history["loss"][-1]

    return run_epoch


def build_mlp_xp_without_numba(workload, X, y):
    """mlp_xp with numba absent: in-place ufunc fast paths only (what `pip install mlp_xp` gives)."""
    import mlp_xp as mx
    from mlp_xp.ops.numpy_ops import UfuncOps

    spec = _spec(workload)
    name, kwargs = spec["optimizer"]
    template, _ = initial_weights(spec["widths"])

    def run_epoch():
        model = template.to()
        model.ops = UfuncOps(np)
        optimizer = {"adam": mx.optim.Adam, "sgd": mx.optim.SGD}[name](**kwargs)
        history = model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=spec.get("epochs", 1),
                            batch_size=spec["batch"], verbose=0)
        return history["loss"][-1]

    return run_epoch


def _torch_runner(workload, X, y, fused=False, compiled=False):
    """PyTorch eager (``fused``: ``Adam(fused=True)`` / ``SGD(fused=True)``; ``compiled``: the model and the
    optimizer step under ``torch.compile``). The net and optimizer are built and warmed once; each round
    puts the initial weights back and zeroes the optimizer state in place (the same numbers as a fresh
    optimizer: its first step finds zero moments, and a zero momentum buffer times 0.9 plus the gradient is
    the gradient), so setup and compilation stay out of the timed rounds."""
    import torch

    spec = _spec(workload)
    widths, batch = spec["widths"], spec["batch"]
    template, weights = initial_weights(widths)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    name, kwargs = spec["optimizer"]
    # the batch orders mlp_xp's epochs use, so both run the same math on the same batches
    orders = epoch_orders(template, len(X), spec.get("epochs", 1))
    modules = []
    for index in range(len(widths) - 1):
        modules += [torch.nn.Linear(widths[index], widths[index + 1]), torch.nn.ReLU()]
    net = torch.nn.Sequential(*modules[:-1])
    linears = [module for module in net if isinstance(module, torch.nn.Linear)]
    options = {"fused": True} if fused else {}
    optimizer = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name](net.parameters(), **kwargs, **options)
    forward = torch.compile(net) if compiled else net
    update = torch.compile(optimizer.step) if compiled else optimizer.step

    def reset():
        with torch.no_grad():
            for index, linear in enumerate(linears):
                linear.weight.copy_(torch.from_numpy(weights[f"{2 * index}.weight"].T))
                linear.bias.copy_(torch.from_numpy(weights[f"{2 * index}.bias"]))
            for state in optimizer.state.values():
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()

    orders = [torch.from_numpy(order) for order in orders]

    def run_epoch():
        reset()
        for order in orders:
            total = torch.zeros((), dtype=torch.float64)
            for start in range(0, len(Xt), batch):
                index = order[start:start + batch]
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(forward(Xt[index]), yt[index])
                loss.backward()
                update()
                total += loss.detach() * len(index)  # (no host read per step)
        return float(total) / len(Xt)

    return run_epoch


def build_torch(workload, X, y):
    return _torch_runner(workload, X, y)


def build_torch_fused(workload, X, y):
    return _torch_runner(workload, X, y, fused=True)


def build_torch_compile(workload, X, y):
    return _torch_runner(workload, X, y, compiled=True)


def build_jax_optax(workload, X, y):
    """A hand-written ``jax.jit`` step with optax (what a JAX user writes): the batch gathered inside the
    compiled step from a permutation on the device, the loss summed on the device, read once per epoch."""
    import jax
    import jax.numpy as jnp
    import optax

    spec = _spec(workload)
    widths, batch = spec["widths"], spec["batch"]
    template, weights = initial_weights(widths)
    name, kwargs = spec["optimizer"]
    optimizer = optax.adam(kwargs["lr"]) if name == "adam" else optax.sgd(kwargs["lr"], momentum=kwargs["momentum"])
    start_params = [(jnp.asarray(weights[f"{2 * i}.weight"]), jnp.asarray(weights[f"{2 * i}.bias"]))
                    for i in range(len(widths) - 1)]
    x, labels = jnp.asarray(X), jnp.asarray(y)
    orders = [jnp.asarray(order) for order in epoch_orders(template, len(X), spec.get("epochs", 1))]

    def loss_fn(params, xb, yb):
        h = xb
        for weight, bias in params[:-1]:
            h = jax.nn.relu(h @ weight + bias)
        logits = h @ params[-1][0] + params[-1][1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(params, state, total, order, begin, rows):
        index = jax.lax.dynamic_slice_in_dim(order, begin, rows)
        value, grads = jax.value_and_grad(loss_fn)(params, x[index], labels[index])
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, total + value * rows

    jitted = jax.jit(step, static_argnums=5)

    def run_epoch():
        params, state = start_params, optimizer.init(start_params)
        for order in orders:
            total = jnp.zeros((), jnp.float32)
            for begin in range(0, len(X), batch):
                params, state, total = jitted(params, state, total, order, begin, min(batch, len(X) - begin))
        return float(total) / len(X)

    return run_epoch


def build_numpy_hand(workload, X, y):
    """Hand-written NumPy, as a careful programmer writes it: flat parameter, gradient and state vectors
    with views per layer, matrix products into preallocated arrays where numpy allows, in-place ufuncs,
    softmax cross-entropy by log-sum-exp, the same batches and initial weights as mlp_xp. No checks: no
    guard against a non-finite step, no metrics (mlp_xp does both)."""
    spec = _spec(workload)
    widths, batch = spec["widths"], spec["batch"]
    template, weights = initial_weights(widths)
    name, kwargs = spec["optimizer"]
    orders = epoch_orders(template, len(X), spec.get("epochs", 1))
    shapes = [((a, b), (b,)) for a, b in zip(widths[:-1], widths[1:])]
    size = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    start_flat = np.concatenate([np.concatenate([weights[f"{2 * i}.weight"].ravel(), weights[f"{2 * i}.bias"]])
                                 for i in range(len(shapes))]).astype(np.float32)
    params, grads = np.empty(size, np.float32), np.empty(size, np.float32)
    m, v, tmp = np.zeros(size, np.float32), np.zeros(size, np.float32), np.empty(size, np.float32)

    def views(flat):
        out, at = [], 0
        for (a, b), _ in shapes:
            out.append((flat[at:at + a * b].reshape(a, b), flat[at + a * b:at + a * b + b]))
            at += a * b + b
        return out

    p_views, g_views = views(params), views(grads)
    lr = kwargs["lr"]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    momentum = kwargs.get("momentum", 0.0)

    def run_epoch():
        nonlocal params, m, v, tmp  # (updated in place: += keeps the arrays)
        params[...] = start_flat
        m[...] = 0.0
        v[...] = 0.0
        steps = [(order, begin) for order in orders for begin in range(0, len(X), batch)]
        for t, (order, begin) in enumerate(steps, start=1):
            if not begin:
                total = np.zeros((), np.float64)
            index = order[begin:begin + batch]
            xb, yb = X[index], y[index]
            rows = len(index)
            hs = [xb]
            for weight, bias in p_views[:-1]:
                h = hs[-1] @ weight
                h += bias
                np.maximum(h, 0.0, out=h)
                hs.append(h)
            z = hs[-1] @ p_views[-1][0]
            z += p_views[-1][1]
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            sums = e.sum(axis=1, keepdims=True)
            picked = np.arange(rows), yb
            total += (np.log(sums).sum() - z[picked].sum())  # (mean loss x rows)
            e /= sums
            e[picked] -= 1.0
            e /= rows
            dz = e
            for i in range(len(shapes) - 1, -1, -1):
                np.matmul(hs[i].T, dz, out=g_views[i][0])
                np.sum(dz, axis=0, out=g_views[i][1])
                if i:
                    dz = dz @ p_views[i][0].T
                    dz *= hs[i] > 0
            if name == "adam":
                m *= beta1
                np.multiply(grads, 1.0 - beta1, out=tmp)
                m += tmp
                v *= beta2
                np.multiply(grads, grads, out=tmp)
                tmp *= 1.0 - beta2
                v += tmp
                np.sqrt(v, out=tmp)
                tmp /= math.sqrt(1.0 - beta2 ** t)
                tmp += eps
                np.divide(m, tmp, out=tmp)
                tmp *= lr / (1.0 - beta1 ** t)
                params -= tmp
            else:
                m *= momentum
                m += grads
                np.multiply(m, lr, out=tmp)
                params -= tmp
        return float(total) / len(X)

    return run_epoch


def build_sklearn(workload, X, y):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    spec = _spec(workload)
    name, kwargs = spec["optimizer"]
    options = {"solver": "adam", "learning_rate_init": kwargs["lr"]} if name == "adam" else {
        "solver": "sgd", "learning_rate_init": kwargs["lr"], "momentum": kwargs["momentum"], "nesterovs_momentum": False}

    def run_epoch():
        model = MLPClassifier(hidden_layer_sizes=tuple(spec["widths"][1:-1]), activation="relu", alpha=0.0,
                              batch_size=spec["batch"], max_iter=spec.get("epochs", 1), shuffle=True, random_state=0, tol=0.0,
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

    spec = _spec(workload)
    name, kwargs = spec["optimizer"]
    loss = mx.losses.CrossEntropy()
    template, _ = initial_weights(spec["widths"])
    model = template.to(backend="jax")
    start = model.params
    optimizer = {"adam": mx.optim.Adam, "sgd": mx.optim.SGD}[name](**kwargs)
    x, labels = jnp.asarray(X), jnp.asarray(y)

    def run_epoch():
        model.params, model.dropout_step = start, 0
        model.set_optimizer(optimizer, None)  # a fresh optimizer state
        model.shuffle_rng = copy.deepcopy(template.shuffle_rng)  # the same batches as the others
        history = model.fit(x, labels, loss=loss, optimizer=optimizer, epochs=spec.get("epochs", 1),
                            batch_size=spec["batch"], verbose=0)
        return history["loss"][-1]

    return run_epoch


CONTENDERS = {"floor": build_floor, "mlp_xp": build_mlp_xp, "mlp_xp-nonumba": build_mlp_xp_without_numba,
              "mlp_xp-jax": build_mlp_xp_jax, "torch": build_torch, "torch-fused": build_torch_fused,
              "torch-compile": build_torch_compile, "jax-optax": build_jax_optax, "numpy-hand": build_numpy_hand,
              "sklearn": build_sklearn}
#: the peers "x best peer" compares with: every contender that is neither mlp_xp nor the floor
PEERS = ("torch", "torch-fused", "torch-compile", "jax-optax", "numpy-hand", "sklearn")
#: what the sweep runs by default (torch.compile would compile anew at every point; scikit-learn has no Adam
#: of its own batches and weights)
SWEEP_CONTENDERS = ("floor", "mlp_xp", "mlp_xp-nonumba", "torch", "torch-fused", "jax-optax", "numpy-hand")
NEEDS = {"torch": "torch", "torch-fused": "torch", "torch-compile": "torch", "sklearn": "sklearn", "mlp_xp-jax": "jax",
         "jax-optax": "optax"}


def available(contenders):
    keep = []
    for name in contenders:
        module = NEEDS.get(name)
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
    reference = next((name for name in ("mlp_xp", "mlp_xp-nonumba", "torch") if name in real), None)
    for name in ("mlp_xp-jax", "torch", "torch-fused", "torch-compile", "jax-optax", "numpy-hand"):
        # same initial weights and batches: float32 rounding is the only difference
        if name in real and reference and name != reference:
            # (float32 rounding drifts apart over the steps: 1e-3 per epoch of the round)
            gap = abs(real[name] - real[reference]) / abs(real[reference])
            if gap > 1e-3 * _spec(workload).get("epochs", 1):
                raise SystemExit(f"{workload}: {name}'s loss {real[name]:.5f} differs from {reference}'s "
                                 f"{real[reference]:.5f}")
    # scikit-learn draws its own initial weights, so only the same ballpark is expected
    if "sklearn" in real and reference and not 0.2 < real["sklearn"] / real[reference] < 5.0:
        raise SystemExit(f"{workload}: sklearn's loss {real['sklearn']:.4f} far from {reference}'s {real[reference]:.4f}")


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


def limit_threads(threads):
    """This process (and its children) on ``threads`` cores: the CPU affinity (what XLA's and numba's thread
    pools size themselves by) and every BLAS/OpenMP thread count; before numpy's BLAS or any framework starts
    its threads (main() re-runs this script in a fresh process per thread count)."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[name] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def measure(workloads, contenders, rounds, memory):
    """{workload: entry} for one thread setting, and the printed table's rows."""
    results, table = {}, []
    for workload in workloads:
        names = [name for name in contenders if workload in WORKLOADS or name in SWEEP_CONTENDERS]
        spec = _spec(workload)
        times, losses, samples = time_interleaved(workload, names, rounds)
        check_losses(workload, losses)
        medians = {name: statistics.median(values) for name, values in times.items()}
        peers = [medians[name] for name in PEERS if name in medians]
        usage = {}
        if memory:
            usage = {name: peak_rss_mb(workload, name) for name in names}
            usage["data only"] = peak_rss_mb(workload, "data only")
        entries = {}
        for name in names:
            entries[name] = {
                "median_s": medians[name], "min_s": min(times[name]), "max_s": max(times[name]),
                "samples_per_s": samples * spec.get("epochs", 1) / medians[name],
                "ratio_to_floor": medians[name] / medians["floor"] if "floor" in medians else None,
                "ratio_to_torch": medians[name] / medians["torch"] if "torch" in medians else None,
                "ratio_to_best_peer": medians[name] / min(peers) if peers else None,
                "final_loss": None if math.isnan(losses[name]) else losses[name],
                "peak_rss_mb": usage.get(name),
            }
            table.append((workload, name, entries[name]))
        results[workload] = {**spec, "optimizer": spec["optimizer"][0], "optimizer_args": spec["optimizer"][1],
                             "dtype": "float32", "epochs_per_round": spec.get("epochs", 1), "samples": samples,
                             "peak_rss_data_only_mb": usage.get("data only"), "contenders": entries}
    return results, table


def print_table(title, table):
    print(f"\n{title}")
    print(f"{'workload':11} {'contender':14} {'seconds':>22} {'samples/s':>10} {'x floor':>8} {'x torch':>8} "
          f"{'x best peer':>11} {'loss':>7} {'peak MB':>8}")
    for workload, name, entry in table:
        spread = f"{entry['median_s']:.3f} ({entry['min_s']:.3f}-{entry['max_s']:.3f})"
        ratio = lambda key: f"{entry[key]:.2f}" if entry[key] is not None else "-"  # noqa: E731
        loss = f"{entry['final_loss']:.4f}" if entry["final_loss"] is not None else "-"
        rss = f"{entry['peak_rss_mb']:.0f}" if entry["peak_rss_mb"] is not None else "-"
        print(f"{workload:11} {name:14} {spread:>22} {entry['samples_per_s']:>10.0f} {ratio('ratio_to_floor'):>8} "
              f"{ratio('ratio_to_torch'):>8} {ratio('ratio_to_best_peer'):>11} {loss:>7} {rss:>8}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2"], choices=sorted(WORKLOADS) + ["sweep"],
                        help="'sweep': the size sweep (batch, width, depth around W1)")
    parser.add_argument("--contenders", nargs="+", default=None, choices=list(CONTENDERS),
                        help="default: all (the sweep: %s)" % ", ".join(SWEEP_CONTENDERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", nargs="+", type=int, default=None,
                        help="thread counts, each measured in a fresh process limited to that many cores "
                             "(default: this process as it is)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-contender peak-RSS subprocesses")
    parser.add_argument("--output", default=None, help="JSON path (default benchmarks/results/cpu-DEVICE.json)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    workloads = [name for w in args.workloads for name in (SWEEP if w == "sweep" else [w])]
    contenders = available(args.contenders or (list(SWEEP_CONTENDERS) if args.workloads == ["sweep"] else
                                               list(CONTENDERS)))
    device = device_name()
    path = args.output or os.path.join(RESULTS, "cpu-" + "".join(c if c.isalnum() else "-" for c in device).strip("-")
                                       .replace("--", "-") + ".json")

    if args.child is not None:  # one thread setting, in its own process: write the results to --output
        limit_threads(args.child)
        results, table = measure(workloads, contenders, args.rounds, not args.no_memory)
        with open(path, "w") as file:
            json.dump({"results": results, "table": table}, file)
        return None

    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": device, "versions": versions(), "rounds": args.rounds,
              "command": "python benchmarks/cpu.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.threads:
        report["threads"] = {}
        for threads in args.threads:
            part = path + f".{threads}.tmp"
            command = [sys.executable, os.path.abspath(__file__), "--child", str(threads), "--output", part,
                       "--rounds", str(args.rounds), "--workloads", *args.workloads, "--contenders", *contenders]
            subprocess.run(command + (["--no-memory"] if args.no_memory else []), check=True)
            with open(part) as file:
                child = json.load(file)
            os.remove(part)
            report["threads"][str(threads)] = child["results"]
            print_table(f"{device}; {threads} thread(s); {args.rounds} rounds; medians (min-max)", child["table"])
    else:
        report["workloads"], table = measure(workloads, contenders, args.rounds, not args.no_memory)
        print_table(f"{device}; numpy {np.__version__}; {args.rounds} rounds (W2: 5 epochs each, else one); medians (min-max)",
                    table)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        json.dump(report, file, indent=2)
    print(f"\nwritten: {os.path.relpath(path)}")
    return report


if __name__ == "__main__":
    main()
