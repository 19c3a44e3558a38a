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
