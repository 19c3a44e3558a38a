"""Data-parallel training over MPI processes (mpiexec from the mpich wheel) against one process."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import mlp_xp as mx

pytest.importorskip("mpi4py", reason="distributed tests need mpi4py (in the [test] extra)")

WORKER = pathlib.Path(__file__).resolve().parent / "mpi_worker.py"
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec here (the [test] extra's mpich wheel has one)")


def _load_worker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mpi_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def _mpiexec(processes, out, mode, epochs=3, timeout=120):
    assert MPIEXEC, "mpiexec not found: pip install mpich"
    started = time.monotonic()
    result = subprocess.run([MPIEXEC, "-n", str(processes), sys.executable, str(WORKER), str(out), mode, str(epochs)],
                            capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - started


def _mpiexec_bounded(processes, out, mode, timeout):
    """``_mpiexec``, but a job still running after ``timeout`` seconds is killed with every process it
    started (a hung worker would poll in its collective until its own timeout): (result or None, seconds)."""
    assert MPIEXEC, "mpiexec not found: pip install mpich"
    started = time.monotonic()
    job = subprocess.Popen([MPIEXEC, "-n", str(processes), sys.executable, str(WORKER), str(out), mode],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
        return None, time.monotonic() - started
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr), time.monotonic() - started


def _single_process(epochs):
    net = worker.model()
    history = worker.fit(net, epochs, None)
    return mx.to_numpy(net.params), history


@needs_mpiexec
@pytest.mark.parametrize("processes", [2, 3])
def test_processes_train_what_one_process_trains_on_the_whole_batch(processes, tmp_path):
    result, _ = _mpiexec(processes, tmp_path, "train")
    assert result.returncode == 0, result.stderr
    params = [np.load(tmp_path / f"train-params-{rank}.npy") for rank in range(processes)]
    histories = [json.load(open(tmp_path / f"train-history-{rank}.json")) for rank in range(processes)]
    assert all(np.array_equal(params[0], other) for other in params[1:])  # replicas stay identical, bitwise
    assert all(history == histories[0] for history in histories[1:])
    reference, history = _single_process(3)
    scale = np.max(np.abs(reference))
    assert np.max(np.abs(params[0] - reference)) / scale < 1e-12  # float64, dropout and LayerNorm included
    for key in ("loss", "accuracy", "top_2_accuracy", "val_loss", "val_accuracy"):
        assert histories[0][key] == pytest.approx(history[key], rel=1e-12, abs=1e-12), key


@needs_mpiexec
def test_a_dead_process_ends_the_run_instead_of_hanging(tmp_path):
    result, seconds = _mpiexec(2, tmp_path, "die", timeout=120)
    assert result.returncode != 0 and seconds < 90, (result.returncode, seconds, result.stderr[-500:])
    assert not (tmp_path / "die-params-0.npy").exists()


@needs_mpiexec
def test_an_exception_in_one_process_ends_the_job(tmp_path):
    result, seconds = _mpiexec(2, tmp_path, "raise", timeout=120)
    assert result.returncode != 0 and seconds < 30
    assert "RuntimeError: only process 1 fails" in result.stderr  # reported first, then the job is aborted


@needs_mpiexec
def test_a_stop_decided_on_one_process_stops_every_process(tmp_path):
    """Review of issue 21: a callback that stopped one process left the other waiting in a collective."""
    result, seconds = _mpiexec(2, tmp_path, "stop", epochs=3, timeout=120)
    assert result.returncode == 0 and seconds < 30, result.stderr
    histories = [json.loads((tmp_path / f"stop-history-{rank}.json").read_text()) for rank in (0, 1)]
    assert [len(history["loss"]) for history in histories] == [1, 1]
    params = [np.load(tmp_path / f"stop-params-{rank}.npy") for rank in (0, 1)]
    assert np.array_equal(params[0], params[1])


@needs_mpiexec
def test_a_stalled_process_is_a_timeout_error(tmp_path):
    result, seconds = _mpiexec(2, tmp_path, "stall", timeout=120)
    assert result.returncode != 0 and seconds < 60
    assert "DistributedError" in result.stderr and "waited more than 3 s" in result.stderr, result.stderr[-3000:]


#: what process 0's and process 1's ValueError names, for each mismatch of mpi_worker.MISMATCHES
MISMATCH_MESSAGES = {
    "optimizer.lr": "optimizer.lr differs: process 0: 0.01, process 1: 0.1",
    "optimizer": "optimizer differs: process 0: Adam, process 1: SGD",
    "optimizer.betas": "optimizer.betas differs: process 0: (0.9, 0.999), process 1: (0.8, 0.999)",
    "schedule": "optimizer.lr differs: process 0: 0.01, process 1: cosine(",
    "batch_size": "batch_size differs: process 0: 16, process 1: 32",
    "epochs": "epochs differs: process 0: 3, process 1: 2",
    "shuffle": "shuffle differs: process 0: True, process 1: False",
    "loss": "loss.label_smoothing differs: process 0: 0.0, process 1: 0.1",
    "precision": "precision differs: process 0: float32, process 1: float16",
    "dtype": "dtype differs: process 0: float64, process 1: float32",
    "on_nonfinite": "on_nonfinite differs: process 0: raise, process 1: skip_batch",
    "sync_every": "sync_every differs: process 0: None, process 1: 2",
    "metrics": "metrics differs: process 0: [Accuracy(), TopKAccuracy(k=2)], process 1: [Accuracy()]",
    "samples": "samples differs: process 0: 50, process 1: 40",
    "weights": "weights_digest differs: process 0: sha256 ",
}


def test_every_mismatch_has_its_message():
    assert sorted(MISMATCH_MESSAGES) == sorted(worker.MISMATCHES)


@needs_mpiexec
@pytest.mark.parametrize("field", sorted(MISMATCH_MESSAGES))
def test_processes_that_disagree_on_the_configuration_refuse_at_the_start(field, tmp_path):
    """Process 1 differs in one field: every process raises the ValueError that names it, at once
    (before, a different learning rate trained "ok" into different replicas, and a different batch
    size or epoch count hung in mismatched collectives until the reduction timeout)."""
    result, seconds = _mpiexec_bounded(2, tmp_path, f"mismatch:{field}", timeout=60)
    assert result is not None, f"the job hung for {seconds:.0f} s"
    assert result.returncode != 0, "the job finished: " + result.stderr[-500:]
    assert seconds < 30, seconds  # (well under the worker's 40 s reduction timeout)
    errors = [line for line in result.stderr.splitlines() if line.startswith("ValueError: ")]
    assert len(errors) == 2, result.stderr[-2000:]  # one from each process
    for error in errors:
        assert error.startswith("ValueError: distributed training needs the same configuration on every process: ")
        assert MISMATCH_MESSAGES[field] in error, error
    assert not list(tmp_path.glob("mismatch-params-*"))


@needs_mpiexec
def test_only_process_0_writes_and_every_process_resumes(tmp_path):
    result, _ = _mpiexec(2, tmp_path, "checkpoint", epochs=2)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-history-0.json", "checkpoint-history-1.json", "checkpoint-params-0.npy",
        "checkpoint-params-1.npy", "checkpoint.safetensors", "log.csv"]  # no temporaries left by a second writer
    assert len(open(tmp_path / "log.csv").read().splitlines()) == 3  # one header and two epochs: one writer
    result, _ = _mpiexec(2, tmp_path, "resume", epochs=2)
    assert result.returncode == 0, result.stderr
    resumed = [np.load(tmp_path / f"resume-params-{rank}.npy") for rank in range(2)]
    straight, _ = _single_process(4)
    assert np.array_equal(resumed[0], resumed[1])
    assert np.max(np.abs(resumed[0] - straight)) / np.max(np.abs(straight)) < 1e-12


def test_one_process_needs_no_engine():
    assert mx.distributed.resolve(None) is None and mx.distributed.resolve("auto") is None
    with pytest.raises(ValueError, match="distributed must be"):
        mx.distributed.resolve("gloo")


def test_shards_cover_a_batch_once():
    class Fake(mx.distributed.Engine):
        def __init__(self, rank, size):
            self.rank, self.size = rank, size

    for size in (1, 2, 3, 7):
        for rows in (0, 1, 2, 5, 16):
            pieces = [Fake(rank, size).shard(0, rows) for rank in range(size)]
            assert pieces[0][0] == 0 and pieces[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))


def test_the_configuration_check_names_each_difference_and_each_process():
    """Without MPI: three processes' views, as the one all-gather would give them to each."""
    from mlp_xp.train.distributed import check_replicas, replica_fields

    def fields(lr=1e-2, batch_size=16, seed=3, schedule=None, loss=None):
        net = worker.model()
        if seed != 3:
            net = mx.Sequential(*net.layers, dtype="float64", seed=seed)
        return replica_fields(net, 50, loss=loss or mx.losses.CrossEntropy(),
                              optimizer=mx.optim.Adam(lr=schedule or lr), epochs=3, batch_size=batch_size,
                              steps_per_epoch=-(-50 // batch_size), shuffle=True, on_nonfinite="raise",
                              sync_every=None, metrics=[], validation_samples=None)

    class Gathered(mx.distributed.Engine):
        def __init__(self, views):
            self.views, self.size = views, len(views)

        def allgather(self, value):
            return self.views

    def refusal(views):
        with pytest.raises(ValueError) as error:
            check_replicas(Gathered(views), worker.model(), 50, loss=mx.losses.CrossEntropy(),
                           optimizer=mx.optim.Adam(), epochs=3, batch_size=16, steps_per_epoch=4, shuffle=True,
                           on_nonfinite="raise", sync_every=None)
        return str(error.value).removeprefix("distributed training needs the same configuration on every process: ")

    assert fields() == fields()  # (no memory address or other per-process text)
    same = fields()
    check_replicas(Gathered([same] * 3), worker.model(), 50, loss=mx.losses.CrossEntropy(),
                   optimizer=mx.optim.Adam(lr=1e-2), epochs=3, batch_size=16, steps_per_epoch=4, shuffle=True,
                   on_nonfinite="raise", sync_every=None)  # the same everywhere: no error
    assert refusal([same, fields(lr=0.1), same]) == "optimizer.lr differs: processes 0, 2: 0.01, process 1: 0.1"
    assert refusal([same, same, fields(batch_size=32)]) == (
        "batch_size differs: processes 0-1: 16, process 2: 32; "
        "steps_per_epoch differs: processes 0-1: 4, process 2: 2")
    assert refusal([same, fields(loss=mx.losses.MSE()), same]) == (
        "loss differs: processes 0, 2: CrossEntropy, process 1: MSE")
    warm = mx.optim.schedules.warmup(lambda count: 0.01, warmup_steps=2)
    assert fields(schedule=warm) == fields(schedule=mx.optim.schedules.warmup(lambda count: 0.01, warmup_steps=2))
    assert refusal([same, same, fields(schedule=warm)]).startswith(
        "optimizer.lr differs: processes 0-1: 0.01, process 2: warmup(per='step', steps_per_epoch=None, "
        "base=<function ")
    message = refusal([same, same, fields(seed=4)])
    assert message.startswith("weights_digest differs: processes 0-1: sha256 ") and message.count("same seed") == 1


def test_r2_merged_over_processes_equals_r2_of_all_rows():
    rng = np.random.default_rng(0)
    y = rng.normal(1e4, 3.0, size=(40, 2))
    prediction = y + rng.normal(size=(40, 2))
    metric = mx.metrics.R2Score()
    xp = mx.Sequential(mx.Linear(1, 1)).xp
    whole = metric.result(metric.update(None, prediction, y, xp), 40)
    parts = [(metric.update(None, prediction[a:b], y[a:b], xp), b - a) for a, b in ((0, 7), (7, 30), (30, 40))]
    assert metric.result(metric.merge(parts), 40) == pytest.approx(whole, rel=1e-12)


@needs_mpiexec
def test_the_command_line_under_mpiexec(tmp_path):
    script = shutil.which("mlp-xp", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert script, "the mlp-xp console script is not installed"
    model_path = tmp_path / "digits.safetensors"
    result = subprocess.run([MPIEXEC, "-n", "2", script, "train", "--epochs", "2", "--layers", "32",
                             "--save", str(model_path)], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "x 2 processes" in lines[0] and sum(line.startswith("epoch ") for line in lines) == 2  # process 0 only
    assert sum(line.startswith("test accuracy") for line in lines) == 1 and model_path.exists()
    single = subprocess.run([script, "train", "--epochs", "2", "--layers", "32", "--quiet"], capture_output=True,
                            text=True, timeout=180, cwd=tmp_path)
    two = float(lines[-2].split()[2].rstrip(","))
    one = float(single.stdout.split()[2].rstrip(","))
    assert abs(two - one) <= 0.005  # float32: the same training, summed in another order
    # an error only process 0 sees (it alone checks the output paths) ends every process at once
    failed = subprocess.run([MPIEXEC, "-n", "2", script, "train", "--save", str(tmp_path / "missing" / "m.st")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert failed.returncode == 2 and "mlp-xp: error: --save" in failed.stderr


@pytest.mark.gpu
def test_nccl_on_one_gpu():
    """The 1-GPU run of the NCCL engine: a reduction over one process is the identity, and the
    sharded step gives the plain step's loss and gradient (runs where CuPy finds a GPU)."""
    import cupy

    from mlp_xp.train.step import sharded_loss_and_grad

    engine = mx.distributed.NCCL()
    assert engine.size == 1 and engine.is_main
    values = cupy.arange(5, dtype=cupy.float64)
    assert cupy.array_equal(engine.allreduce_sum(values.copy(), cupy), values)
    net = mx.Sequential(mx.Linear(6, 8), mx.ReLU(), mx.Linear(8, 3), mx.Softmax(), backend="cupy", dtype="float64",
                        seed=0)
    X, y = worker.data()
    x, target = cupy.asarray(X[:16]), cupy.asarray(y[:16])
    value, grad, _, _, _ = sharded_loss_and_grad(net, engine, net.params, x, target, mx.losses.CrossEntropy())
    plain, plain_grad, _ = net.value_and_grad(x, target, mx.losses.CrossEntropy())
    assert float(abs(value - plain)) < 1e-12 and float(cupy.max(cupy.abs(grad - plain_grad))) < 1e-12


def test_two_learning_rate_functions_of_one_name_are_told_apart_by_their_values():
    """Review of issue 21: lambdas (or closures) differ only in the rates they give."""
    from mlp_xp.train.distributed import replica_fields

    def fields(lr):
        model = mx.Sequential(mx.Linear(3, 2), seed=0)
        return replica_fields(model, 10, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(lr=lr), epochs=2,
                              batch_size=5, steps_per_epoch=2, shuffle=True, on_nonfinite="raise", sync_every=None)

    make = lambda value: (lambda count: value)  # noqa: E731
    one, other, same = fields(make(0.01)), fields(make(0.5)), fields(make(0.01))
    assert one["optimizer.lr"] == other["optimizer.lr"]  # (the same qualified name)
    assert one["optimizer.lr_values"] != other["optimizer.lr_values"] and one == same
    warm = [fields(mx.optim.schedules.warmup(make(value), 2)) for value in (0.01, 0.5)]
    assert warm[0]["optimizer.lr_values"] != warm[1]["optimizer.lr_values"]
