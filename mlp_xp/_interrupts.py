"""Ctrl-C (SIGINT) held back while a few lines change a model, and delivered right after them:
what makes an interrupted ``fit`` stop at a completed step and an interrupted resume change all
of the model or none of it."""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["Interrupts", "held_interrupts"]


class Interrupts:
    """Ctrl-C (SIGINT) held back while a step writes the model's arrays in place and commits
    its counts, and delivered right after: an interrupted ``fit`` leaves the model at one
    completed step (weights, optimizer moments and counts agree). Outside those few lines a
    SIGINT goes to the handler that was there before, at once. The handler is installed for
    the whole ``fit`` (main thread only); entering and leaving a step sets one flag."""

    def __init__(self):
        self.critical = False
        self.pending = None
        self.previous = None

    def __enter__(self):
        # (main thread only; and not over a handler installed outside Python, which could not be put back)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is not None:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None
        return False

    def _handle(self, signum, frame):
        if self.critical:
            self.pending = (signum, frame)
        else:
            self._deliver(signum, frame)

    def _deliver(self, signum, frame):
        if callable(self.previous):
            self.previous(signum, frame)  # (Python's default handler raises KeyboardInterrupt here)
        elif self.previous == signal.SIG_DFL:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.raise_signal(signal.SIGINT)

    def leave(self):
        """The end of a step's critical lines: a SIGINT that came during them arrives now."""
        self.critical = False
        if self.pending is not None:
            pending, self.pending = self.pending, None
            self._deliver(*pending)


@contextlib.contextmanager
def held_interrupts():
    """The enclosed lines run to their end even if Ctrl-C comes during them; it is delivered after."""
    with Interrupts() as interrupts:
        interrupts.critical = True
        try:
            yield
        finally:
            interrupts.leave()
