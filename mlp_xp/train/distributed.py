"""Data-parallel training over processes: one all-reduce of the flat gradient per step.

``fit(..., distributed="mpi")`` (or ``"auto"``, or an :class:`MPI` / :class:`NCCL` object)
trains one replica of the model per process. Every process draws the same global batch order
from the shared seed, takes its contiguous shard of each batch, computes the summed loss and
gradient of its rows, and one all-reduce of a single flat buffer (``[sum of gradients, sum of
losses, count]``) gives every process the gradient of the whole batch; each applies the same
update, so the replicas stay identical, bitwise. Each process hashes the Dropout masks of its own
rows by their place in the whole batch, so a run on N processes computes what one process computes
on the whole batch (to float64 rounding: the sums are added in another order).

Engines:

- :class:`MPI` (mpi4py; ``pip install 'mlp_xp[mpi]'``, whose ``mpich`` wheel provides
  ``mpiexec``): CPU processes, numpy-based backends. Launch with ``mpiexec -n 4 python train.py``
  or ``mpiexec -n 4 mlp-xp train ...``.
- :class:`NCCL` (CuPy's NCCL bindings, one GPU per process, the NCCL id shared over MPI): the
  reduction stays on the GPUs. Written against CuPy's API but **not yet run on a GPU**.

Before the first step, one all-gather compares everything the replicas' bitwise equality depends
on, and every process refuses a difference with the same ``ValueError``, naming each field that
differs and its value on each process (``distributed training needs the same configuration on every
process: batch_size differs: process 0: 32, process 1: 64``): the training data's and validation
data's row counts; the model (its layers, dtype, backend and its kernels, precision and, under float16,
loss-scaling settings and state); digests of its weights, of the optimizer state ``fit`` continues
from, and of the random state (the shuffling generator, the Dropout key and step, the host Dropout
generator); the loss (type and config), the optimizer (type and every hyperparameter, a learning-rate
schedule included), batch_size, steps per epoch, epochs, shuffle, metrics, on_nonfinite and
sync_every. Callbacks, ``verbose`` and the engine's own settings may differ; the contents of the data
are not compared (only their row counts).

Only process 0 prints progress and runs the callbacks that write files (``ModelCheckpoint``,
``CSVLogger``); every process runs the others (``EarlyStopping`` stops all of them together).
Resuming (``fit(resume_from=path)``) reads the same file on every process.

A process that dies makes the others fail: ``mpiexec`` ends the job when a process is killed, an
uncaught exception in one process aborts the job once Python has printed it, and a reduction that
waits longer than ``timeout`` seconds raises :class:`DistributedError` instead of hanging.

Example (run with ``mpiexec -n 2 python script.py``)::

    import mlp_xp as mx
    X, y = mx.datasets.load_digits()
    model = mx.Sequential(mx.Linear(64, 64), mx.ReLU(), mx.Linear(64, 10), mx.Softmax(), seed=0)
    model.fit(mx.datasets.standardize(X), y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(),
              epochs=5, distributed="mpi")
    if mx.distributed.MPI().is_main:
        mx.save(model, "model.safetensors")
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import os
import pickle
import re
import time

import numpy as np

__all__ = ["Engine", "MPI", "NCCL", "DistributedError", "resolve", "launched_with_mpi", "check_replicas"]

#: environment variables that MPI launchers (MPICH/hydra, Open MPI, PMIx, Slurm) set for each process
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


class DistributedError(RuntimeError):
    """A collective operation failed or timed out (another process died or stalled)."""


def launched_with_mpi() -> bool:
    """True when this process was started by an MPI launcher with more than one process."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return True
    return False


class Engine:
    """A group of processes training replicas of one model.

    Attributes:
        rank: this process's index, 0 .. size - 1.
        size: the number of processes.
    """

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """True on process 0, the one that prints and writes files."""
        return self.rank == 0

    def allreduce_sum(self, buffer, xp):
        """The elementwise sum of ``buffer`` over all processes (an array of the model's backend)."""
        raise NotImplementedError

    def allgather(self, value) -> list:
        """Every process's small Python ``value``, in rank order (for checks, not for the hot path)."""
        raise NotImplementedError

    def shard(self, start, stop):
        """This process's contiguous part of rows ``start:stop``: ``(begin, end)``; may be empty."""
        count = stop - start
        return start + count * self.rank // self.size, start + count * (self.rank + 1) // self.size


class MPI(Engine):
    """MPI over mpi4py: CPU processes, each holding a replica.

    Args:
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``).
        timeout: seconds a reduction may wait for the other processes before
            :class:`DistributedError` (a dead or stalled process); None waits forever.

    Raises:
        ImportError: mpi4py is not installed (``pip install 'mlp_xp[mpi]'``).
    """

    def __init__(self, comm=None, timeout=300.0):
        try:
            from mpi4py import MPI as mpi
        except ImportError:
            raise ImportError("distributed='mpi' needs mpi4py: pip install 'mlp_xp[mpi]' (with the mpich wheel, "
                              "which provides mpiexec)") from None
        self._mpi = mpi
        self.comm = comm if comm is not None else mpi.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout!r}")
        self.timeout = timeout
        if self.size > 1:
            _abort_on_uncaught_exceptions(self.comm)

    def abort(self, status=1):
        """End every process of the job now (MPI_Abort): for an error only this process saw."""
        self.comm.Abort(status)

    def _wait(self, request, what):
        if self.timeout is None:
            request.Wait()
            return
        # poll without sleeping: MPI progresses a non-blocking collective only inside Test, and the
        # other processes are in the same collective anyway; look at the clock every 1000 polls
        deadline = time.monotonic() + self.timeout
        while True:
            for _ in range(1000):
                if request.Test():
                    return
            if time.monotonic() > deadline:
                # the job cannot go on; MPI_Finalize would wait for the stalled process forever, so
                # end the whole job once this error has been reported (atexit runs before mpi4py's)
                atexit.register(self.comm.Abort, 1)
                raise DistributedError(f"{what}: process {self.rank} waited more than {self.timeout:g} s for "
                                       f"the other {self.size - 1}; one of them died or stalled")

    def allreduce_sum(self, buffer, xp):
        """Sums in place when ``buffer`` is a writeable contiguous numpy array."""
        from .._backend import to_numpy

        if isinstance(buffer, np.ndarray) and buffer.flags.c_contiguous and buffer.flags.writeable:
            self._wait(self.comm.Iallreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM), "all-reduce")
            return buffer
        host = np.ascontiguousarray(to_numpy(buffer)).copy()
        self._wait(self.comm.Iallreduce(self._mpi.IN_PLACE, host, op=self._mpi.SUM), "all-reduce")
        return xp.asarray(host, device=_device_of(buffer))

    def allgather(self, value):
        """Waits at most ``timeout`` seconds, as a reduction does (sizes, then the pickled values)."""
        if self.timeout is None:
            return self.comm.allgather(value)
        mine = np.frombuffer(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)
        sizes = np.zeros(self.size, dtype=np.int64)
        self._wait(self.comm.Iallgather(np.array([mine.size], dtype=np.int64), sizes), "all-gather")
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        everyone = np.empty(int(sizes.sum()), dtype=np.uint8)
        self._wait(self.comm.Iallgatherv(mine, [everyone, (sizes.tolist(), offsets.tolist()), self._mpi.BYTE]),
                   "all-gather")
        return [pickle.loads(everyone[start:start + size].tobytes()) for start, size in zip(offsets, sizes)]

    def __repr__(self):
        return f"MPI(rank={self.rank}, size={self.size})"


class NCCL(Engine):
    """NCCL through CuPy: one GPU per process, the reduction on the GPUs.

    The processes are started by an MPI launcher (``mpiexec -n 8 ...``); MPI shares NCCL's
    unique id, then every all-reduce runs over NCCL on the current CUDA stream. Each process uses
    GPU ``rank % device_count`` unless ``device`` says otherwise.

    Not yet run on a GPU: written against CuPy's ``cupy.cuda.nccl`` API; the tests that exercise
    it are skipped without CUDA.

    Args:
        comm: an mpi4py communicator used once, to share the NCCL id.
        device: the CUDA device index of this process.
    """

    def __init__(self, comm=None, device=None):
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError:
            raise ImportError("distributed='nccl' needs CuPy with NCCL: pip install 'mlp_xp[cuda13]'") from None
        mpi = MPI(comm)
        self.rank, self.size = mpi.rank, mpi.size
        self._cupy, self._nccl, self._mpi = cupy, nccl, mpi
        index = self.rank % cupy.cuda.runtime.getDeviceCount() if device is None else device
        cupy.cuda.Device(index).use()
        uid = mpi.comm.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def allreduce_sum(self, buffer, xp):
        cupy, nccl = self._cupy, self._nccl
        buffer = cupy.ascontiguousarray(buffer)
        result = cupy.empty_like(buffer)
        kind = {cupy.dtype("float32"): nccl.NCCL_FLOAT32, cupy.dtype("float64"): nccl.NCCL_FLOAT64}[buffer.dtype]
        self.comm.allReduce(buffer.data.ptr, result.data.ptr, buffer.size, kind, nccl.NCCL_SUM,
                            cupy.cuda.get_current_stream().ptr)
        return result

    def allgather(self, value):
        return self._mpi.allgather(value)

    def __repr__(self):
        return f"NCCL(rank={self.rank}, size={self.size})"


def _abort_on_uncaught_exceptions(comm):
    """An exception that ends one process would leave the others waiting in a collective forever:
    after Python has reported it, end the whole job (what ``python -m mpi4py`` does)."""
    import sys

    previous = sys.excepthook
    if getattr(previous, "_mlp_xp_aborts", False):
        return

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.flush()
        comm.Abort(1)

    hook._mlp_xp_aborts = True
    sys.excepthook = hook


def check_replicas(engine, model, samples, *, loss, optimizer, epochs, batch_size, steps_per_epoch, shuffle,
                   on_nonfinite, sync_every, metrics=(), validation_samples=None):
    """Refuse, on every process, a run whose processes would not train identical replicas.

    One all-gather of :func:`replica_fields` (see the module docstring); every process compares
    all of them, so all raise together or none does.

    Raises:
        ValueError: naming each field that differs and its value on each process.
    """
    fields = replica_fields(model, samples, loss=loss, optimizer=optimizer, epochs=epochs, batch_size=batch_size,
                            steps_per_epoch=steps_per_epoch, shuffle=shuffle, on_nonfinite=on_nonfinite,
                            sync_every=sync_every, metrics=metrics, validation_samples=validation_samples)
    differences = _differences(engine.allgather(fields))
    if differences:
        raise ValueError("distributed training needs the same configuration on every process: "
                         + "; ".join(differences))


#: what to do about a difference in these fields
_HINTS = {
    "samples": "give every process the same data",
    "weights_digest": "build the model with the same seed on every process, or resume from the same file",
    "optimizer_state_digest": "pass a fresh optimizer, or resume from the same file",
    "random_state_digest": "build the model with the same seed on every process, or resume from the same file",
}


def replica_fields(model, samples, *, loss, optimizer, epochs, batch_size, steps_per_epoch, shuffle, on_nonfinite,
                   sync_every, metrics=(), validation_samples=None) -> dict:
    """What must agree between the processes, as ``{field: text}`` (short, comparable strings;
    a field ``"a.b"`` details field ``"a"``)."""
    from .._backend import to_numpy

    precision = model.precision
    fields = {
        "samples": str(samples),
        "validation_samples": str(validation_samples),
        "model": _describe(tuple(model.layers)),
        "dtype": str(model.dtype_name),
        "backend": str(model.backend.name),
        "ops": type(model.ops).__qualname__,  # (numba's kernels or numpy's: rounded differently)
        "precision": str(precision.compute),
    }
    if precision.scaled:
        fields.update({f"precision.{key}": _describe(value) for key, value in precision.config().items()
                       if key != "compute"})
        fields["precision.scale_state"] = _describe(tuple(model.loss_scale))  # (the dynamic scale, good steps)
    fields["loss"] = type(loss).__qualname__
    fields.update({f"loss.{key}": _describe(value) for key, value in loss.config().items()})
    fields["optimizer"] = type(optimizer).__qualname__
    fields.update({f"optimizer.{key}": _describe(value) for key, value in optimizer.config().items()})
    if callable(optimizer.lr):  # (two functions of one name, a lambda say, differ in their values only)
        fields["optimizer.lr_values"] = _lr_values(optimizer, model, epochs * steps_per_epoch)
    fields.update({"batch_size": str(batch_size), "steps_per_epoch": str(steps_per_epoch), "epochs": str(epochs),
                   "shuffle": str(bool(shuffle)), "metrics": _describe(list(metrics)),
                   "on_nonfinite": str(on_nonfinite), "sync_every": str(sync_every)})
    fields["weights_digest"] = _digest(np.ascontiguousarray(to_numpy(model.params)))
    # the state fit continues from (a fresh one for another optimizer or where none is held)
    held = model.optimizer_state if optimizer is model.optimizer else None
    fields["optimizer_state_digest"] = "fresh" if held is None else _digest(
        *(None if part is None else np.ascontiguousarray(to_numpy(part)) if hasattr(part, "shape") else repr(part)
          for part in held))
    fields["random_state_digest"] = _digest(
        model.shuffle_rng.bit_generator.state if shuffle else None, model.dropout_key, model.dropout_step,
        model.dropout_masks, model.dropout_rng.bit_generator.state if model.dropout_masks == "host" else None)
    return fields


def _lr_values(optimizer, model, updates) -> str:
    """A digest of the learning rates of the run's updates (at most 100,000 of them, evenly spread)."""
    held = model.optimizer_state if optimizer is model.optimizer else None
    start = 0 if held is None else int(held.count)
    counts = (range(start, start + updates) if updates <= 100_000
              else np.linspace(start, start + updates - 1, 100_000).astype(np.int64).tolist())
    try:
        return _digest(np.array([optimizer.learning_rate(count) for count in counts], dtype=np.float64))
    except Exception as error:  # (a schedule fit completes later, or one that fails: compared as its error)
        return f"{type(error).__name__}: {error}"[:200]


def _describe(value) -> str:
    """``value`` as text that is the same on every process holding an equal value: its repr
    without memory addresses (a function is named by its module and qualified name)."""
    if callable(value) and hasattr(value, "__qualname__") and not dataclasses.is_dataclass(value):
        return f"{getattr(value, '__module__', None)}.{value.__qualname__}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _digest(*parts) -> str:
    """A short SHA-256 of arrays (their dtype, shape and bytes) and small picklable values."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype.str}{part.shape}".encode())
            digest.update(part.tobytes())
        else:
            digest.update(pickle.dumps(part, protocol=4))
    return "sha256 " + digest.hexdigest()[:16]


def _differences(views) -> list:
    """``"field differs: process 0: a, process 1: b"`` for each field whose value is not the same on
    every process (a detail ``"a.b"`` left out where ``"a"`` itself differs)."""
    names = list(dict.fromkeys(name for view in views for name in view))
    differing = [name for name in names if len({view.get(name) for view in views}) > 1]
    lines, hinted = [], set()
    for name in differing:
        if any(name.startswith(parent + ".") for parent in differing):
            continue
        groups = {}
        for rank, view in enumerate(views):
            groups.setdefault(view.get(name, "(absent)"), []).append(rank)
        values = ", ".join(f"{_processes(ranks)}: {value}" for value, ranks in groups.items())
        hint = _HINTS.get(name)
        lines.append(f"{name} differs: {values}" + (f" ({hint})" if hint and hint not in hinted else ""))
        hinted.add(hint)
    return lines


def _processes(ranks) -> str:
    """``process 3`` or ``processes 0-2, 5``."""
    if len(ranks) == 1:
        return f"process {ranks[0]}"
    runs = []
    for rank in ranks:
        if runs and rank == runs[-1][1] + 1:
            runs[-1][1] = rank
        else:
            runs.append([rank, rank])
    return "processes " + " ".join(f"{a}-{b}," if b > a else f"{a}," for a, b in runs).rstrip(",")


def _device_of(array):
    import array_api_compat

    return array_api_compat.device(array)


def resolve(distributed):
    """The engine ``fit`` uses: None for one process.

    Args:
        distributed: None / False (one process), "mpi", "nccl", "auto" (MPI when launched by
            an MPI launcher with more than one process, else None), or an :class:`Engine`.
    """
    if distributed is None or distributed is False:
        return None
    if isinstance(distributed, Engine):
        return distributed if distributed.size > 1 else None
    if distributed == "auto":
        return MPI() if launched_with_mpi() else None
    if distributed == "mpi":
        engine = MPI()
    elif distributed == "nccl":
        engine = NCCL()
    else:
        raise ValueError(f"distributed must be None, 'auto', 'mpi', 'nccl' or an mx.distributed engine, "
                         f"got {distributed!r}")
    return engine if engine.size > 1 else None
