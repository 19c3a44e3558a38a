"""Ctrl-C at any line of ``fit`` leaves the model at one completed step: its weights, optimizer
moments, update count and step count are those of a run that stopped cleanly after some step.

Each case first runs ``fit`` once with a line tracer that counts the line events of mlp_xp's own
code (and array_api_compat's, which it calls); then, for every one of those events, runs it
again from scratch and raises SIGINT there (as a Ctrl-C would: the signal handler, not the
tracer, raises the KeyboardInterrupt).
"""

import os
import signal
import sys
import threading

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import numpy_of

ROWS, BATCH = 12, 4  # three steps
rng = np.random.default_rng(0)
X, Y = rng.normal(size=(ROWS, 4)), np.arange(ROWS) % 3
WATCHED = tuple(os.path.dirname(module.__file__) for module in (mx, sys.modules["array_api_compat"])
                if module is not None) if "array_api_compat" in sys.modules else (os.path.dirname(mx.__file__),)

OPTIMIZERS = {"adam": lambda: mx.optim.Adam(lr=1e-2), "sgd-momentum": lambda: mx.optim.SGD(lr=0.1, momentum=0.9)}


def _model(ops_name):
    model = mx.Sequential(mx.Linear(4, 6), mx.ReLU(), mx.Dropout(0.2), mx.Linear(6, 3), seed=0)
    if ops_name == "generic":
        model.ops = None
    return model


def _record(model):
    """What must agree after an interrupt: weights, moments, update count, step count."""
    state = model.optimizer_state
    moments = () if state is None else tuple(numpy_of(value).copy() for value in state[1:] if value is not None)
    count = 0 if state is None else int(state.count)
    return numpy_of(model.params).copy(), moments, count, model.dropout_step


def _fit(model, optimizer, rows=ROWS):
    model.fit(X[:rows], Y[:rows], mx.losses.CrossEntropy(), optimizer, epochs=1, batch_size=BATCH, shuffle=False,
              verbose=0)


class _Tracer:
    """Counts line events in the watched code; raises SIGINT at event number ``at``."""

    def __init__(self, at=None):
        self.at, self.events = at, 0

    def __call__(self, frame, event, arg):
        if event == "call":
            return self if frame.f_code.co_filename.startswith(WATCHED) else None
        if event == "line":
            self.events += 1
            if self.events == self.at:
                signal.raise_signal(signal.SIGINT)
        return self


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
@pytest.mark.parametrize("ops_name", ["fast", "generic"])
@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_ctrl_c_at_every_line_of_fit_leaves_one_completed_step(ops_name, optimizer_name):
    make = OPTIMIZERS[optimizer_name]
    completed = []  # the model after k clean steps, k = 0 .. 3, with a fresh optimizer
    for steps in range(ROWS // BATCH + 1):
        model = _model(ops_name)
        if steps:
            _fit(model, make(), rows=steps * BATCH)
        else:
            model.set_optimizer(make(), make().init(model.params))
        completed.append(_record(model))

    tracer = _Tracer()
    sys.settrace(tracer)
    try:
        _fit(_model(ops_name), make())
    finally:
        sys.settrace(None)
    assert tracer.events > 500  # (the tracer sees fit's lines)

    interrupted = set()
    for at in range(1, tracer.events + 1):
        model = _model(ops_name)
        tracer = _Tracer(at)
        try:
            sys.settrace(tracer)
            _fit(model, make())
        except KeyboardInterrupt:
            interrupted.add(at)
        finally:
            sys.settrace(None)
        params, moments, count, step = _record(model)
        assert step == count and count <= ROWS // BATCH, (at, step, count)
        expected = completed[count]
        assert np.array_equal(params, expected[0]), (at, count)
        if model.optimizer_state is not None and count:
            assert len(moments) == len(expected[1]) and all(map(np.array_equal, moments, expected[1])), (at, count)
    assert len(interrupted) > 0.9 * tracer.events  # (nearly every line event did interrupt)


def _every_line(action):
    """Run ``action(tracer)`` once to count its line events, then once more per event with SIGINT
    raised there; yields (event number, whether it was interrupted) after each interrupted run."""
    tracer = _Tracer()
    sys.settrace(tracer)
    try:
        action()
    finally:
        sys.settrace(None)
    events = tracer.events
    assert events > 20, events  # (the tracer sees the action's lines)
    for at in range(1, events + 1):
        try:
            sys.settrace(_Tracer(at))
            action()
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        finally:
            sys.settrace(None)
        yield at, interrupted


def _saved(model, optimizer):
    return numpy_of(model.params).copy(), getattr(model, "epoch", 0), int(model.optimizer_state.count)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_ctrl_c_at_every_line_of_a_save_leaves_the_old_or_the_new_file_and_no_temporary(tmp_path):
    """Issue 21: the file is the old one or the new one, whole; a temporary an interrupt left is
    removed by the process's next save."""
    path = tmp_path / "model.safetensors"
    old, new = _model("fast"), _model("fast")
    old_adam, new_adam = mx.optim.Adam(lr=1e-2), mx.optim.Adam(lr=1e-2)
    _fit(old, old_adam, rows=BATCH)
    _fit(new, new_adam)
    versions = [_saved(old, old_adam), _saved(new, new_adam)]
    mx.save(old, path, optimizer=old_adam)
    interrupted = 0
    for at, stopped in _every_line(lambda: mx.save(new, path, optimizer=new_adam)):
        interrupted += stopped
        loaded = mx.load(path)
        got = _saved(loaded, loaded.optimizer)
        matches = [index for index, version in enumerate(versions)
                   if np.array_equal(got[0], version[0]) and got[1:] == version[1:]]
        assert len(matches) == 1 and (stopped or matches == [1]), (at, got[1:])  # (not interrupted: the new)
        mx.save(old, path, optimizer=old_adam)  # (the next save cleans up; and the old file again)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"], at
    assert interrupted > 20


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_ctrl_c_at_every_line_of_a_resume_changes_all_of_the_model_or_none_of_it(tmp_path):
    """Issue 21: a resume interrupted anywhere leaves the model as it was, or fully resumed
    (weights, optimizer and its state, generators, step and epoch counts, loss scale)."""
    path = tmp_path / "model.safetensors"
    trained = _model("fast")
    adam = mx.optim.Adam(lr=mx.optim.schedules.cosine(1e-2, total_steps=10))  # (a run cut after 2 updates)
    _fit(trained, adam, rows=2 * BATCH)
    mx.save(trained, path, optimizer=adam)

    def state(model):
        opt = model.optimizer_state
        return (numpy_of(model.params).tobytes(), model.optimizer, None if opt is None else
                (int(opt.count), numpy_of(opt.exp_avg).tobytes(), numpy_of(opt.exp_avg_sq).tobytes()),
                repr(model.shuffle_rng.bit_generator.state), repr(model.dropout_rng.bit_generator.state),
                model.dropout_step, model.epoch, model.loss_scale, model.dropout_masks)

    reference = _model("fast")
    before = state(reference)
    given = mx.optim.Adam(lr=mx.optim.schedules.cosine(1e-2))
    reference.load_checkpoint(path, given)
    after = state(reference)[:1] + (None,) + state(reference)[2:]
    assert after[2][0] == 2 and after[0] != before[0] and given.lr.total_steps is not None
    outcomes = set()
    model, optimizer = None, None

    def resume():
        nonlocal model, optimizer
        model, optimizer = _model("fast"), mx.optim.Adam(lr=mx.optim.schedules.cosine(1e-2))
        model.load_checkpoint(path, optimizer)

    for at, stopped in _every_line(resume):
        if model is None:
            continue  # (interrupted before the model was made)
        now = state(model)
        if now == before:
            assert optimizer.lr.total_steps is None, at
            outcomes.add("none")
        else:
            assert now[1] is optimizer and now[:1] + (None,) + now[2:] == after, at
            assert optimizer.lr == given.lr, at
            outcomes.add("all")
        model = None
    assert outcomes == {"none", "all"}
