"""Train one model under several backend/precision configurations and compare them side by side.

Every configuration starts from the same initial weights (the model's, rounded to its dtype)
and sees the same batches in the same order and the same dropout masks, so the differences it
reports are the backends' and precisions' alone: loss curves per step and their divergence
from a reference run (numpy float64 by default), the final parameters' relative error,
accuracy, samples/s and peak memory.

Example:
    >>> import mlp_xp as mx
    >>> X, y = mx.datasets.load_digits()
    >>> model = mx.Sequential(mx.Linear(64, 32), mx.ReLU(), mx.Linear(32, 10), seed=0)
    >>> result = mx.compare(model, mx.datasets.standardize(X)[:256], y[:256], mx.losses.CrossEntropy(),
    ...                     mx.optim.SGD(lr=0.05), configs=["numpy:float64", "numpy:float32", "cupy:float32"])
    >>> [row["config"] for row in result.rows], "cupy:float32" in result.skipped
    (['numpy:float64', 'numpy:float32'], True)
    >>> result.rows[1]["final_param_rel_error"] < 1e-5
    True
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np

from .._backend import BACKEND_NAMES, to_numpy

__all__ = ["compare", "Comparison", "DEFAULT_CONFIGS"]

DEFAULT_CONFIGS = ("numpy:float64", "numpy:float32", "numpy:tf32", "numpy:bfloat16", "numpy:float16",
                   "array_api_strict:float32", "torch:float32", "torch:bfloat16", "jax:float32",
                   "cupy:float64", "cupy:float32", "cupy:tf32", "cupy:float16", "cupy:bfloat16")
PRECISIONS = ("float64", "float32", "tf32", "float16", "bfloat16")


def _parse(config):
    backend, _, precision = config.partition(":")
    precision = precision or "float32"
    if backend not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {backend!r} in {config!r}; backends: {BACKEND_NAMES}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} in {config!r}; precisions: {PRECISIONS}")
    return backend, precision


def _unavailable(backend, precision):
    """Why a configuration cannot run here, or None."""
    if importlib.util.find_spec(backend) is None:
        return f"{backend} is not installed"
    if backend == "cupy":
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                return "no CUDA GPU"
        except Exception as error:  # a driver or runtime problem: report it, do not crash the comparison
            return f"cupy cannot use a GPU here: {error}"
    if backend == "jax" and precision == "float64":
        import jax

        if not jax.config.jax_enable_x64:
            return "JAX float64 needs jax.config.update('jax_enable_x64', True)"
    return None


class _LossRecorder:
    def __init__(self):
        self.losses = []

    def on_batch_end(self, step, loss, model):
        self.losses.append(loss)


@dataclass
class Comparison:
    """What :func:`compare` measured.

    Attributes:
        reference: the configuration the others are compared with.
        rows: one dict per configuration that ran: ``config``, ``loss_curve`` (per step),
            ``divergence`` (per step, |loss - reference| / |reference|), ``max_divergence``,
            ``final_divergence``, ``final_param_rel_error`` (||p - p_ref|| / ||p_ref||),
            ``accuracy`` (classification losses), ``samples_per_s``, ``peak_memory_mb``
            (host memory traced for numpy-based backends; None where it cannot be traced),
            ``skipped_steps`` (float16 steps dropped by loss scaling).
        skipped: {configuration: why it did not run}.
    """

    reference: str
    rows: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)

    def table(self) -> str:
        """The comparison as a fixed-width text table."""
        lines = [f"{'config':26} {'final loss':>11} {'max div':>9} {'final div':>9} {'param err':>9} "
                 f"{'accuracy':>8} {'samples/s':>10} {'peak MB':>8} {'skipped':>7}"]
        for row in self.rows:
            accuracy = f"{row['accuracy']:.4f}" if row["accuracy"] is not None else "-"
            memory = f"{row['peak_memory_mb']:.1f}" if row["peak_memory_mb"] is not None else "n/a"
            lines.append(f"{row['config']:26} {row['loss_curve'][-1]:>11.6f} {row['max_divergence']:>9.1e} "
                         f"{row['final_divergence']:>9.1e} {row['final_param_rel_error']:>9.1e} {accuracy:>8} "
                         f"{row['samples_per_s']:>10.0f} {memory:>8} {row['skipped_steps']:>7}")
        lines += [f"{config:26} skipped: {why}" for config, why in self.skipped.items()]
        return "\n".join(lines)

    def to_json(self, path=None) -> str:
        """The comparison as JSON (written to ``path`` if given)."""
        text = json.dumps({"reference": self.reference, "results": self.rows, "skipped": self.skipped}, indent=2)
        if path is not None:
            with open(path, "w") as file:
                file.write(text)
        return text

    def plot(self, path=None):
        """Loss curves and their divergence from the reference, per step (needs matplotlib).

        As :meth:`mlp_xp.History.plot`: with ``path``, writes a bare ``matplotlib.figure.Figure``
        there (matplotlib's backend and pyplot untouched) and returns it; without, shows it with
        pyplot (inline in a notebook, else a window) and returns None, so that a notebook
        displays it once."""
        from .._plotting import finish, new_figure

        figure, (losses, divergence) = new_figure("Comparison.plot", 2, (11, 4), window=path is None)
        for index, row in enumerate(self.rows):
            steps = range(1, len(row["loss_curve"]) + 1)
            losses.plot(steps, row["loss_curve"], label=row["config"], linewidth=1, color=f"C{index}")
            if row["config"] != self.reference:
                divergence.semilogy(steps, [max(d, 1e-18) for d in row["divergence"]], label=row["config"],
                                    linewidth=1, color=f"C{index}")
        losses.set(xlabel="step", ylabel="training loss", title="loss per step")
        divergence.set(xlabel="step", ylabel=f"|loss - ref| / |ref|  (ref: {self.reference})",
                       title="divergence from the reference")
        for axis in (losses, divergence):
            axis.grid(alpha=0.3)
            if axis.lines:
                axis.legend(fontsize=8)
        figure.tight_layout()
        return finish(figure, path)


def _train(model, X, y, loss, optimizer, epochs, batch_size, memory):
    recorder = _LossRecorder()
    if memory:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        history = model.fit(X, y, loss=loss, optimizer=optimizer, epochs=epochs, batch_size=batch_size,
                            callbacks=[recorder], verbose=0)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20 if memory else None
    finally:
        if memory:
            tracemalloc.stop()
    return recorder.losses, elapsed, peak, history


def compare(model, X, y, loss, optimizer, configs=DEFAULT_CONFIGS, reference="numpy:float64", epochs=1,
            batch_size=32, validation_data=None) -> Comparison:
    """Train copies of ``model`` under each configuration from the same start and compare them.

    Args:
        model: the model definition and initial weights (left untouched).
        X, y: training data (host arrays).
        loss, optimizer: as for ``fit``; each configuration gets a fresh copy of ``optimizer``.
        configs: "backend:precision" strings, e.g. "numpy:float32", "torch:float32",
            "cupy:tf32". Those that cannot run here (not installed, no GPU, precision not
            available) are listed in ``skipped``, not raised.
        reference: the configuration the others are compared with; it always runs.
        epochs, batch_size: as for ``fit``.
        validation_data: (X_val, y_val) for the accuracy column; default the training data.

    Returns:
        A :class:`Comparison` (``.table()``, ``.to_json(path)``, ``.plot(path)``).
    """
    configs = list(dict.fromkeys([reference] + [c for c in configs if c != reference]))
    parsed = {config: _parse(config) for config in configs}
    X_host, y_host = to_numpy(X), to_numpy(y)
    X_eval, y_eval = validation_data if validation_data is not None else (X_host, y_host)
    result = Comparison(reference)
    reference_params = reference_losses = None
    for config in configs:
        backend, precision = parsed[config]
        why = _unavailable(backend, precision)
        if why is not None:
            if config == reference:
                raise ValueError(f"the reference configuration {reference!r} cannot run: {why}")
            result.skipped[config] = why
            continue
        dtype, compute = (precision, None) if precision in ("float32", "float64") else ("float32", precision)
        try:
            copy_of_model = model.to(backend=backend, dtype=dtype, precision=compute)
        except (ValueError, ImportError) as error:  # e.g. a backend without that type
            if config == reference:
                raise
            result.skipped[config] = str(error)
            continue
        # warm-up on a few batches (kernel compilation, JIT, allocator): not timed, not traced
        _train(copy_of_model.to(), X_host[:2 * batch_size], y_host[:2 * batch_size], loss, copy.deepcopy(optimizer), 1,
               batch_size, memory=False)
        losses, elapsed, peak, history = _train(copy_of_model, X_host, y_host, loss, copy.deepcopy(optimizer), epochs,
                                                batch_size, memory=backend in ("numpy", "array_api_strict"))
        params = to_numpy(copy_of_model.params).astype(np.float64)
        if config == reference:
            reference_params, reference_losses = params, np.array(losses)
        # float16 runs record one loss per step taken: steps skipped by loss scaling are missing
        steps = min(len(losses), len(reference_losses))
        divergence = (np.abs(np.array(losses[:steps]) - reference_losses[:steps])
                      / np.maximum(np.abs(reference_losses[:steps]), 1e-300))
        metrics = copy_of_model.evaluate(X_eval, y_eval, loss)
        result.rows.append({
            "config": config, "backend": backend, "precision": precision,
            "loss_curve": [float(v) for v in losses], "divergence": [float(d) for d in divergence],
            "max_divergence": float(divergence.max()), "final_divergence": float(divergence[-1]),
            "final_param_rel_error": float(np.linalg.norm(params - reference_params)
                                           / max(np.linalg.norm(reference_params), 1e-300)),
            "accuracy": metrics.get("accuracy"), "eval_loss": metrics["loss"],
            "samples_per_s": len(X_host) * epochs / elapsed if elapsed > 0 else math.inf,
            "peak_memory_mb": peak, "skipped_steps": int(sum(history.get("skipped_steps", []))),
        })
    return result
