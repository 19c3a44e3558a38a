"""One training step as a function of its inputs: ``train_step(state, x, y) -> (state, loss)``.

A :class:`TrainState` is the one record of training state: the flat parameters, the optimizer
state (its update count on the device), the step number (the key of that step's Dropout
masks, on the device), the non-finite guard, the running sums of the loss and metrics, and the
gradient buffer of numpy's Ops. A step does forward, loss, backward, the guard and the update,
with no host read, no host upload and no Python number that changes from step to step on a
device backend: ``fit`` (and anyone who writes their own loop) reads the guard and the sums only
every so often.

The guard keeps the promise of the non-finite check without a sync and without a copy of the
weights: an update lands only if the loss is finite, the gradient is (under
``on_nonfinite="skip_batch"`` or loss scaling), and its new parameters and squared-gradient
state are finite; ``guard.ok`` turns false at the first step where one is not, and every later
update is frozen, so the parameters are those from before that step. :func:`landed` counts the
updates that landed since the last read (from the optimizer's count and ``guard.since``), which
names the step that failed.

The optimizer writes parameters and moments in place (numpy, CuPy, torch, array_api_strict);
where arrays cannot be written (JAX) the step is a pure function and ``jax.jit`` compiles it
whole (:func:`jit_train_step`).

Example:
    >>> import numpy as np, mlp_xp as mx
    >>> from mlp_xp.train.step import init_state, landed, make_train_step
    >>> model = mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Dropout(0.1), mx.Linear(8, 3), seed=0)
    >>> optimizer = mx.optim.Adam(lr=1e-2)
    >>> train_step = make_train_step(model, mx.losses.CrossEntropy(), optimizer)
    >>> state = init_state(model, optimizer)
    >>> x, y = np.ones((16, 4), np.float32), np.arange(16) % 3
    >>> for _ in range(3):
    ...     state, loss = train_step(state, x, y)
    >>> int(state.step), bool(state.guard.ok), landed(state)
    (3, True, 3)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Guard", "TrainState", "init_state", "cleared", "landed", "make_train_step", "sharded_loss_and_grad", "jit_train_step"]


class Guard(NamedTuple):
    """The non-finite guard, on the device.

    Attributes:
        ok: no update failed since the last read (0-d bool).
        since: the optimizer's update count at the last read (see :func:`landed`).
        checked: the last step's batch passed the checks before its update (finite loss, and
            gradient where the mode needs it): with ``ok`` false, its update itself was refused.
    """

    ok: Any
    since: Any
    checked: Any = None


def landed(state) -> int:
    """How many updates landed since the guard was last cleared (a host read)."""
    return int(state.opt_state.count) - int(state.guard.since)


class TrainState(NamedTuple):
    """Everything a step reads and changes: the one home of training state.

    Attributes:
        params: the flat parameter vector (the model's own, updated in place).
        opt_state: the optimizer's state (its ``count``, on the device, is the number of updates).
        step: training steps taken by this model (keys the Dropout masks of the next one; on
            the device).
        guard: the :class:`Guard`.
        loss_sum: the sum of ``batch loss x batch rows`` over the steps that landed (0-d).
        totals: each metric's running totals (see :mod:`mlp_xp.train.metrics`), or None before any.
        buffer: the flat gradient buffer the backward pass writes into (numpy's Ops; the generic
            in-place ones for a large model), or None.
        running: the flat running statistics (BatchNorm's; see ``Sequential.running``), or None
            for a model that keeps none. A step replaces them (a new array) where its update lands.
    """

    params: Any
    opt_state: Any
    step: Any
    guard: Guard
    loss_sum: Any
    totals: tuple
    buffer: Any = None
    running: Any = None


def square_limit(dtype_name) -> float:
    """The largest number whose square is finite in ``dtype_name``."""
    return math.sqrt(float(np.finfo(dtype_name).max))


def _zero(model):
    ops = model.ops
    if ops.host_flags:
        return np.zeros((), dtype=model.dtype_name)[()]
    return model.xp.zeros((), dtype=model.dtype, device=model.device)


def init_state(model, optimizer, metrics=(), opt_state=None) -> TrainState:
    """A state that starts from the model's parameters and ``optimizer``'s fresh state (or
    ``opt_state``), at the model's step count, with a clear guard and empty sums. Counts become
    the Ops' counters (device scalars; host ints on numpy): one upload here, none per step."""
    ops = model.ops
    params = model.params
    if opt_state is None:
        opt_state = optimizer.init(params)
    opt_state = opt_state._replace(count=ops.counter(opt_state.count))
    return TrainState(params, opt_state, ops.step_counter(model.dropout_step), Guard(ops.true(), opt_state.count),
                      _zero(model), (None,) * len(metrics), None, model.running)


def cleared(model, state: TrainState, sums=True) -> TrainState:
    """``state`` with its guard read and cleared and, with ``sums``, its sums emptied."""
    guard = Guard(model.ops.true(), state.opt_state.count)
    if sums:
        return TrainState(state.params, state.opt_state, state.step, guard, _zero(model), (None,) * len(state.totals),
                          state.buffer, state.running)
    return TrainState(state.params, state.opt_state, state.step, guard, state.loss_sum, state.totals, state.buffer,
                      state.running)


def make_train_step(model, loss, optimizer, metrics=(), engine=None, check_gradients=False, scaled=False):
    """The training step of ``model`` with ``loss`` and ``optimizer``.

    Args:
        model: a :class:`~mlp_xp.Sequential` (its Ops, precision and Dropout keys are used).
        loss: an ``mx.losses`` loss.
        optimizer: an ``mx.optim`` optimizer.
        metrics: :mod:`mlp_xp.train.metrics` objects whose totals the step accumulates.
        engine: a :mod:`mlp_xp.train.distributed` engine: each process computes its shard of the batch
            and one all-reduce sums the gradients.
        check_gradients: also fail a step whose gradient is too large for the optimizer's
            squared state (``on_nonfinite="skip_batch"``: the batch is dropped before it can
            spoil the moments).
        scaled: float16 loss scaling: also fail a step whose gradient is not finite.

    Returns:
        ``train_step(state, x, y, scale=1.0) -> (state, loss)``: ``scale`` is the loss scale of
        mixed precision; ``loss`` is the batch's mean loss (0-d). The optimizer's learning rate
        (and schedule) is evaluated on the device at its update count.
    """
    from ..optim import SQUARED_STATE, Optimizer, guarded_update

    model.check_loss(loss)
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an mx.optim optimizer, got {optimizer!r}")
    if engine is not None and model.running_specs:
        raise ValueError(batch_norm_distributed_error(model))
    ops, xp = model.ops, model.xp
    buffer_size = model.num_parameters + (engine is not None)  # (+ the loss, all-reduced with the gradient)
    squares = any(field in SQUARED_STATE for field in
                  type(optimizer.init(xp.zeros(1, dtype=model.dtype, device=model.device)))._fields)
    #: the largest gradient whose square is finite in the model's dtype
    limit = square_limit(model.dtype_name) if squares else math.inf
    # a gradient buffer kept between steps: numpy's Ops write into it; the generic in-place ops
    # too where the model is larger than one piece of an update (then no concatenated copy)
    large = ops.in_place and engine is None and model.num_parameters > ops.chunk_size

    def train_step(state, x, y, scale=1.0):
        rows = x.shape[0]
        target, count = y, rows
        buffer = state.buffer
        if buffer is None and (ops.mutable or large):
            buffer = xp.empty(buffer_size, dtype=model.dtype, device=model.device)
        running = None
        if engine is None:
            value, grad, output, running = model.value_grad_and_running(
                x, y, loss, state.params, train=True, step=state.step, grad_out=buffer, scale=scale,
                running=state.running)
        else:
            value, grad, output, target, count = sharded_loss_and_grad(
                model, engine, state.params, x, y, loss, state.step, buffer, scale)
        ok = ops.both(state.guard.ok, ops.finite(value))
        if check_gradients and limit < math.inf:
            ok = ops.both(ok, ops.below(grad, limit))
        elif check_gradients or scaled:
            ok = ops.both(ok, ops.all_finite(grad))
        if running is not None:  # (BatchNorm's statistics land with the update, or neither does)
            ok = ops.both(ok, ops.all_finite(running))
        checked = ok
        # the gradient buffer is used up by the update: it may keep the old parameters there
        undo = grad if buffer is not None else None  # (data-parallel: a view of the all-reduced buffer)
        params, opt_state, ok = guarded_update(optimizer, ops, grad, state.opt_state, state.params, ok, undo)
        # the running statistics land with the update (a step that fails changes neither)
        running = state.running if running is None else ops.select(ok, running, state.running)
        guard = Guard(ok, state.guard.since, checked)
        if ops.host_flags:
            loss_sum = state.loss_sum + value * rows if ok else state.loss_sum
        else:
            loss_sum = state.loss_sum + ops.select(ok, value * rows, 0.0)
        totals = state.totals
        if count and totals:
            totals = tuple([metric.update(total, output, target, xp) for metric, total in zip(metrics, totals)])
        return TrainState(params, opt_state, state.step + 1, guard, loss_sum, totals, buffer, running), value

    train_step.ops = ops
    if engine is None and not (check_gradients or scaled):  # the common MLP on numpy: one call per piece
        from .lean import lean_train_step

        return lean_train_step(model, loss, optimizer, metrics, train_step) or train_step
    return train_step


def batch_norm_distributed_error(model) -> str:
    """The message refusing a data-parallel run of a model with BatchNorm running statistics."""
    index = model.running_specs[0].layer_index
    return (f"layer {index} ({model.layers[index]!r}) keeps running statistics, which data-parallel training "
            "does not synchronise yet (each process would normalise its shard with its own statistics, so "
            "the processes' models would drift apart): train it in one process, or use LayerNorm")


def sharded_loss_and_grad(model, engine, params, x, target, loss, step=None, buffer=None, scale=1.0):
    """The whole batch's mean loss and gradient from this process's shard and one all-reduce of
    ``[count x gradient, count x loss]``; with ``buffer`` (numpy fast path, num_parameters + 1
    elements) the gradient is written into it and reduced in place.

    Returns (loss, flat gradient, this shard's output, this shard's target, its row count)."""
    xp, rows, size = model.xp, x.shape[0], model.num_parameters
    begin, end = engine.shard(0, rows)
    count = end - begin
    local_target, output = target[begin:end, ...], None
    if count:
        view = None if buffer is None else buffer[:size]
        value, grad, output = model.value_and_grad(x[begin:end, ...], local_target, loss, params, train=True,
                                                   step=step, rows=rows, start=begin, grad_out=view, scale=scale)
        if buffer is None:
            local = xp.concat([grad * count, xp.reshape(value * count, (1,))])
        else:
            if grad is not view:  # (a forward pass that does not write into it: mixed precision)
                view[...] = grad
            local = buffer
            local[size] = value
            local *= count
    else:  # fewer rows than processes: this one only keeps its host dropout generator in step
        for index, layer in enumerate(model.layers):
            if getattr(layer, "p", 0.0) and model.dropout_masks == "host":
                model.dropout_rng.random((rows, model.features[index]))
        local = xp.zeros(size + 1, dtype=model.dtype, device=model.device)
        if buffer is not None:
            buffer[...] = 0
            local = buffer
    total = engine.allreduce_sum(local, xp)
    if buffer is None:
        total = total / rows
    else:
        total /= rows  # in place, the same division
    return total[size], total[:size], output, local_target, count


def jit_train_step(train_step):
    """``train_step`` compiled whole by ``jax.jit`` (JAX's fast path): the step number and the
    optimizer's count are device scalars (traced), so the compilations of the first steps (and
    of a last, smaller batch) serve every later step."""
    import jax

    import jax.numpy as jnp

    compiled = jax.jit(lambda state, x, y: train_step(state, x, y, 1.0))

    def rows_of(data, order, start, rows):
        if order is None:
            return jax.lax.dynamic_slice_in_dim(data, start, rows)
        return jnp.take(data, jax.lax.dynamic_slice_in_dim(order, start, rows), axis=0)

    # the batch gathered inside the compiled step: no separate dispatch per batch, and XLA can
    # fuse the gather into the first matrix product
    gathering = jax.jit(lambda state, x, y, order, start, rows: train_step(
        state, rows_of(x, order, start, rows), rows_of(y, order, start, rows), 1.0), static_argnums=5)

    def step(state, x, y, scale=1.0):
        if scale != 1.0:
            raise ValueError("the jitted step has no loss scaling")
        return compiled(state, x, y)

    def gather(state, x, y, order, start, rows):
        """The step on rows ``order[start:start + rows]`` of ``x`` and ``y`` (``order`` None:
        rows ``start:start + rows``)."""
        return gathering(state, x, y, order, start, rows)

    step.ops, step.jitted, step.gather = train_step.ops, compiled, gather
    return step
