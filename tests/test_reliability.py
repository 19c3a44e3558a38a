"""Nothing silent: numeric failures, hostile files and bad hyperparameters get clear errors, and the
weights a model keeps after a failure are good ones."""

import json
import os
import stat
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import numpy_of

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow is what these tests provoke

rng = np.random.default_rng(0)
X = rng.normal(size=(64, 4))
TARGET = X @ np.array([1.0, -1.0, 0.5, 2.0])
LABELS = (X[:, 0] > 0).astype(int)


# ---------------------------------------------------------------- the guard keeps good weights


@pytest.mark.parametrize("path", ["numba", "ufunc", "generic"])
@pytest.mark.parametrize("make", [mx.optim.Adam, mx.optim.RMSprop])
def test_an_overflowing_second_moment_is_an_error_not_frozen_weights(path, make):
    from mlp_xp.ops.numpy_ops import UfuncOps

    model = mx.Sequential(mx.Linear(4, 1), dtype="float32", seed=0)
    if path == "numba":
        pytest.importorskip("numba")
    model.ops = {"numba": model.ops, "ufunc": UfuncOps(np), "generic": None}[path]
    before = numpy_of(model.params)
    with pytest.raises(mx.NonFiniteError, match=r"non-finite optimizer state at epoch 1, step 1: '(exp_avg_sq|"
                                                r"square_avg)'.*overflowed float32") as info:
        model.fit(X * 1e10, TARGET * 1e10, loss=mx.losses.MSE(), optimizer=make(lr=1e-3), epochs=3, verbose=0)
    assert info.value.name in ("optimizer.exp_avg_sq", "optimizer.square_avg") and info.value.step == 1
    assert np.array_equal(numpy_of(model.params), before)  # from before the update that overflowed
    assert model.optimizer is None or model.optimizer_state is None


def test_skip_batch_refuses_gradients_whose_square_overflows():
    y = TARGET.copy()
    y[5] = 1e25  # one batch's gradient squares past float32's range; the others are fine
    model = mx.Sequential(mx.Linear(4, 1), dtype="float32", seed=0)
    history = model.fit(X, y, loss=mx.losses.MSE(), optimizer=mx.optim.Adam(lr=1e-2), epochs=2, batch_size=8,
                        verbose=0, on_nonfinite="skip_batch")
    assert history["skipped_batches"] == [1, 1]
    state = model.optimizer_state
    assert np.all(np.isfinite(numpy_of(state.exp_avg_sq))) and state.count == 14


def test_diverged_weights_are_kept_from_before_the_failing_step_without_a_copy():
    """The guard keeps no copy of the weights: a step whose forward pass overflows leaves the
    model at the weights the last landed update gave (finite), and the error says so."""
    seen = []

    class Record:
        def on_batch_end(self, step, loss, model):
            seen.append(numpy_of(model.params).copy())

    model = mx.Sequential(mx.Linear(4, 8), mx.Tanh(), mx.Linear(8, 2), mx.Softmax(), seed=0)
    with pytest.raises(mx.NonFiniteError, match="forward pass overflowed.*weights from before that step") as info:
        model.fit(X, LABELS, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(lr=1e38), epochs=3, verbose=0,
                  callbacks=[Record()])
    kept = numpy_of(model.params)
    assert info.value.name == "loss" and np.array_equal(kept, seen[-1]) and np.all(np.isfinite(kept))
    assert model.optimizer_state is None


def test_skip_batch_stops_when_skipping_cannot_recover():
    model = mx.Sequential(mx.Linear(4, 8), mx.Tanh(), mx.Linear(8, 2), mx.Softmax(), seed=0)
    with pytest.raises(mx.NonFiniteError, match="skipping cannot recover"):
        model.fit(X, LABELS, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(lr=1e38), epochs=5,
                  batch_size=8, verbose=0, on_nonfinite="skip_batch")
    assert np.all(np.isfinite(numpy_of(model.params)))


def test_stop_mode_keeps_good_weights_and_says_why():
    model = mx.Sequential(mx.Linear(4, 1), dtype="float32", seed=0)
    history = model.fit(X * 1e10, TARGET * 1e10, loss=mx.losses.MSE(), optimizer=mx.optim.Adam(), epochs=2,
                        verbose=0, on_nonfinite="stop")
    assert "optimizer state" in history.stop_reason and np.all(np.isfinite(numpy_of(model.params)))


def test_arrays_handed_to_callbacks_stay_valid():
    kept, copies = [], []

    class Keep:
        def on_epoch_end(self, epoch, logs, model):
            kept.append(model.params)
            copies.append(numpy_of(model.params).copy())

        def on_batch_end(self, step, loss, model):
            kept.append(model.params)
            copies.append(numpy_of(model.params).copy())

    model = mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Linear(8, 2), seed=0)
    model.fit(X, LABELS, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), epochs=3, batch_size=16,
              verbose=0, callbacks=[Keep()])
    assert len(kept) == 15 and all(np.array_equal(numpy_of(a), b) for a, b in zip(kept, copies))
    assert not np.array_equal(copies[0], copies[-1])


def test_a_learning_rate_function_that_goes_bad_stops_before_the_update():
    model = mx.Sequential(mx.Linear(4, 1), seed=0)
    with pytest.raises(ValueError, match=r"gave lr=-0.5 at update 3"):
        model.fit(X, TARGET, loss=mx.losses.MSE(), optimizer=mx.optim.SGD(lr=lambda count: 0.1 if count < 3 else -0.5),
                  batch_size=8, verbose=0)


# ---------------------------------------------------------------- casts and inputs


def test_casts_that_overflow_are_errors(tmp_path):
    wide = mx.Sequential(mx.Linear(2, 2), dtype="float64", seed=0)
    state = wide.state_dict()
    state["0.weight"][0, 0] = 1e300
    narrow = mx.Sequential(mx.Linear(2, 2), dtype="float32", seed=0)
    with pytest.raises(ValueError, match="'0.weight' has values too large for float32"):
        narrow.load_state_dict(state)
    wide.load_state_dict(state)
    with pytest.raises(ValueError, match="too large for float32"):
        wide.to(dtype="float32")
    mx.save(wide, tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match="too large for float32"):
        mx.load(tmp_path / "wide.safetensors", dtype="float32")
    assert mx.load(tmp_path / "wide.safetensors").state_dict()["0.weight"][0, 0] == 1e300


@pytest.mark.parametrize("make,message", [
    (lambda: mx.optim.SGD(lr=-0.1), "lr must be a finite number >= 0"),
    (lambda: mx.optim.SGD(lr=float("inf")), "lr must be a finite number >= 0"),
    (lambda: mx.optim.SGD(momentum=float("inf")), "momentum must be a finite number"),
    (lambda: mx.optim.Adam(eps=float("inf")), "eps must be a finite number"),
    (lambda: mx.optim.Adam(weight_decay=float("inf")), "weight_decay must be a finite number"),
    (lambda: mx.optim.Adam(betas=(0.9,)), "betas must be a pair"),
    (lambda: mx.optim.Adam(clip_norm=float("nan")), "clip_norm must be a finite number > 0"),
    (lambda: mx.optim.schedules.cosine(float("nan"), 10), "lr must be a finite number >= 0"),
    (lambda: mx.optim.schedules.step(-1.0, 10), "lr must be a finite number >= 0"),
    (lambda: mx.optim.schedules.warmup(float("inf"), 10), "base must be a finite number >= 0"),
])
def test_bad_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_numpy_scalars_are_hyperparameters():
    optimizer = mx.optim.Adam(lr=np.float32(1e-3), eps=np.float64(1e-7), weight_decay=np.int64(0))
    assert optimizer.lr == pytest.approx(1e-3) and type(optimizer.lr) is float


def test_complex_inputs_are_refused(backend):
    model = mx.Sequential(mx.Linear(2, 1), **backend.options, seed=0)
    with pytest.raises(ValueError, match="imaginary part would be dropped"):
        model.predict(np.ones((3, 2), dtype=complex))
    if backend == "torch":
        import torch

        with pytest.raises(ValueError, match="imaginary part would be dropped"):
            model.predict(torch.ones(3, 2, dtype=torch.complex64))


# ---------------------------------------------------------------- layers a file cannot rebuild


def test_save_refuses_layers_it_cannot_load_back(tmp_path):
    class ReLU(mx.layers.Layer if hasattr(mx, "layers") else type(mx.ReLU()).__mro__[1]):  # a user's own "ReLU"
        init_family = "he"

        def forward(self, params, x, ctx):
            return ctx.xp.maximum(x, 0.5), lambda dy, need_input_grad=True, out=None: (dy, {})

    model = mx.Sequential(mx.Linear(2, 2), ReLU(), seed=0)
    with pytest.raises(ValueError, match=r"cannot save layer 1 .*custom layer class .*ReLU.*state_dict\(\)"):
        mx.save(model, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- files


@pytest.fixture
def saved(tmp_path):
    model = mx.Sequential(mx.Linear(4, 8), mx.LayerNorm(8), mx.ReLU(), mx.Linear(8, 2), mx.Softmax(), seed=0)
    optimizer = mx.optim.Adam(lr=mx.optim.schedules.cosine(1e-2, 100))
    model.fit(X, LABELS, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=1, verbose=0)
    path = tmp_path / "model.safetensors"
    mx.save(model, path, optimizer=optimizer)
    return model, path


def _fingerprint(model):
    state = model.optimizer_state
    return (repr(model.layers), numpy_of(model.params).tobytes(), model.seed, model.dtype_name,
            None if state is None else (state.count, numpy_of(state.exp_avg).tobytes()),
            repr(model.optimizer), json.dumps(model.shuffle_rng.bit_generator.state, sort_keys=True))


def test_every_single_byte_corruption_is_caught_or_harmless(saved, tmp_path):
    model, path = saved
    blob = path.read_bytes()
    reference = _fingerprint(mx.load(path))
    corrupt = tmp_path / "corrupt.safetensors"
    positions = np.random.default_rng(1).choice(len(blob), size=600, replace=False)
    caught = 0
    for position in positions:
        changed = bytearray(blob)
        changed[position] ^= 1 << int(position % 8)
        corrupt.write_bytes(bytes(changed))
        try:
            loaded = mx.load(corrupt)
        except ValueError:
            caught += 1
            continue
        assert _fingerprint(loaded) == reference, f"a flipped byte at {position} loaded as another model"
    assert caught > 550


def _rewrite(path, change):
    """Edit a file's header JSON with ``change(header)`` and recompute its checksum, as a hostile file would."""
    from safetensors.numpy import load_file

    from mlp_xp.io import _checksum

    blob = path.read_bytes()
    length = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + length])
    change(header)
    metadata = header["__metadata__"]
    metadata["checksum"] = _checksum(load_file(str(path)), metadata) if all(
        key == "__metadata__" or header[key]["shape"] == json.loads(blob[8:8 + length])[key]["shape"]
        for key in header) else metadata.get("checksum", "")
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + blob[8 + length:])


def _set(key, transform):
    def change(header):
        metadata = header["__metadata__"]
        metadata[key] = transform(metadata[key])
    return change


def _json_edit(key, edit):
    def transform(text):
        value = json.loads(text)
        edit(value)
        return json.dumps(value)
    return _set(key, transform)


@pytest.mark.parametrize("change,message", [
    (_set("optimizer", lambda text: text[:-3]), "'optimizer' metadata is not valid JSON"),
    (_json_edit("optimizer", lambda info: info.update(count=-1)), "step count must be an int >= 0"),
    (_set("optimizer", lambda text: text.replace('"count": 2', '"count": Infinity')), "step count"),
    (_json_edit("optimizer", lambda info: info.update(count="2")), "step count"),
    (_json_edit("optimizer", lambda info: info.update(state_type="SGDState")), "for a Adam"),
    (_json_edit("optimizer", lambda info: info.update(fields=["exp_avg"])), "lacks"),
    (_json_edit("optimizer", lambda info: info["config"]["lr"]["args"].update(lr="abc")), "lr must be"),
    (_json_edit("optimizer", lambda info: info["config"].update(eps=-1)), "eps must be"),
    (_json_edit("rng", lambda states: states["shuffle"]["state"].update(state=2 ** 200)), "malformed|rng|state"),
    (_set("rng", lambda text: "[" * 100000 + "]" * 100000), "'rng' metadata is nested too deeply"),
    (_set("seed", lambda text: ""), "seed must be"),
    (_set("dtype", lambda text: ""), "dtype must be"),
    (_set("layers", lambda text: "[]"), "at least one layer|tensors do not match"),
    (_json_edit("layers", lambda layers: layers[0]["config"].update(in_features=10000, out_features=10000)),
     "normalizes 8 features but receives"),
])
def test_malformed_metadata_is_a_value_error_at_load(saved, change, message):
    _, path = saved
    _rewrite(path, change)
    with pytest.raises(ValueError, match=message):
        mx.load(path)


@pytest.mark.parametrize("field,value,message", [("exp_avg_sq", -1.0, "negative"), ("exp_avg", np.nan, "NaN"),
                                                 ("exp_avg", np.inf, "NaN or infinity")])
def test_bad_optimizer_state_is_refused_at_load(saved, field, value, message):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    from mlp_xp.io import _checksum

    _, path = saved
    tensors = load_file(str(path))
    tensors[f"optimizer.{field}"][0] = value
    with safe_open(str(path), framework="numpy") as file:
        metadata = dict(file.metadata())
    metadata["checksum"] = _checksum(tensors, metadata)
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=message):
        mx.load(path)


def test_declared_shapes_are_checked_before_anything_is_allocated(tmp_path):
    path = tmp_path / "tiny.safetensors"
    mx.save(mx.Sequential(mx.Linear(2, 2), seed=0), path)
    _rewrite(path, _json_edit("layers", lambda layers: layers[0]["config"].update(in_features=10000,
                                                                                   out_features=10000)))
    assert path.stat().st_size < 2000
    tracemalloc.start()
    with pytest.raises(mx.ShapeError, match=r"'0.weight' has shape \(2, 2\) but its layer needs \(10000, 10000\)"):
        mx.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6  # the 10000 x 10000 layer would be 800 MB


def test_building_a_model_peaks_near_its_own_size():
    tracemalloc.start()
    model = mx.Sequential(mx.Linear(1000, 1000), mx.ReLU(), mx.Linear(1000, 1000), mx.ReLU(),
                          mx.Linear(1000, 1000), dtype="float32", seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    size = model.num_parameters * 4
    assert peak < 2.5 * size + 1e6  # the vector, one layer drawn in float64 and its scaled copy; was ~4x


def test_temporaries_of_killed_saves_are_cleaned_up(tmp_path):
    model = mx.Sequential(mx.Linear(2, 2), seed=0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".tmp-mlp_xp-{dead}-abc123.safetensors"
    live = tmp_path / f".tmp-mlp_xp-{os.getppid()}-def456.safetensors"  # (another process, running: its save)
    other = tmp_path / ".tmp-someone-else.safetensors"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    mx.save(model, tmp_path / "model.safetensors")
    assert not stale.exists() and live.exists() and other.exists()


def test_a_later_save_of_the_same_process_removes_its_interrupted_saves_temporaries(tmp_path):
    """Ctrl-C can land where the cleanup cannot run (between the temporary's creation and the
    try, or inside the cleanup): the next save of the process removes what it left, but never the
    temporary another thread is writing right now."""
    import threading

    from mlp_xp import io

    model = mx.Sequential(mx.Linear(2, 2), seed=0)
    left = tmp_path / f"{io._OWN_PREFIX}left.safetensors"
    namesake = tmp_path / f".tmp-mlp_xp-{os.getpid()}-0000-another.safetensors"  # (another container's process 1)
    namesake.write_bytes(b"partial")
    left.write_bytes(b"partial")
    entered, release = threading.Event(), threading.Event()
    original = io._write_atomically

    def slow_write(temporary, write=None):  # (another thread's save, paused while its temporary exists)
        entered.set()
        release.wait(10)

    writer = threading.Thread(target=io.write, args=(tmp_path / "other.safetensors", {"a": np.zeros(2)}, {}))
    io._write_atomically = lambda path, write: original(path, lambda temporary: (slow_write(temporary),
                                                                                  write(temporary)))
    try:
        writer.start()
        assert entered.wait(10)
    finally:
        io._write_atomically = original
    try:
        busy = [name for name in os.listdir(tmp_path) if name not in (left.name, namesake.name)
                and name.startswith(".tmp-mlp_xp-")]
        assert len(busy) == 1  # the other thread's temporary, being written
        mx.save(model, tmp_path / "model.safetensors")
        assert not left.exists()  # (was kept: the process id is this one's, which runs)
        assert (tmp_path / busy[0]).exists() and namesake.exists()
    finally:
        release.set()
        writer.join(10)
    assert (tmp_path / "other.safetensors").exists() and not (tmp_path / busy[0]).exists()
    assert mx.load(tmp_path / "model.safetensors").layers == model.layers


def test_a_killed_save_leaves_the_old_file_and_the_next_save_cleans_up(tmp_path):
    path = tmp_path / "model.safetensors"
    script = (f"import os, mlp_xp as mx, safetensors.numpy as s\n"
              f"model = mx.Sequential(mx.Linear(2, 2), seed=0)\n"
              f"s.save_file = lambda *a, **k: os.kill(os.getpid(), 9)\n"
              f"mx.save(model, {str(path)!r})\n")
    mx.save(mx.Sequential(mx.Linear(2, 2), seed=1), path)
    before = path.read_bytes()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9 and path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] != []
    mx.save(mx.Sequential(mx.Linear(2, 2), seed=2), path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_saving_writes_through_symlinks_and_keeps_the_mode(tmp_path):
    target = tmp_path / "real.safetensors"
    link = tmp_path / "link.safetensors"
    mx.save(mx.Sequential(mx.Linear(2, 2), seed=0), target)
    os.chmod(target, 0o644)
    link.symlink_to(target)
    mx.save(mx.Sequential(mx.Linear(2, 2), seed=1), link)
    assert link.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert mx.load(link).seed == 1 and mx.load(target).seed == 1
    fresh = tmp_path / "fresh.safetensors"
    umask = os.umask(0o022)
    try:
        mx.save(mx.Sequential(mx.Linear(2, 2), seed=0), fresh)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644


def test_saving_refuses_targets_that_are_not_regular_files(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        mx.save(mx.Sequential(mx.Linear(2, 2), seed=0), fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    with pytest.raises(ValueError, match="not a regular file"):
        mx.save(mx.Sequential(mx.Linear(2, 2), seed=0), tmp_path)


# ---------------------------------------------------------------- validated before work starts


def test_streamed_data_is_checked_before_the_first_step():
    data = X.copy()
    data[50, 2] = np.nan
    model = mx.Sequential(mx.Linear(4, 2), seed=0)
    before = numpy_of(model.params)
    with pytest.raises(ValueError, match=r"X\[50, 2\] = nan"):
        model.fit(mx.datasets.Batches(data, LABELS, batch_size=8), None, loss=mx.losses.CrossEntropy(),
                  optimizer=mx.optim.SGD(), verbose=0)
    labels = LABELS.copy()
    labels[60] = 7
    with pytest.raises(ValueError, match=r"label out of range: y\[60\] = 7"):
        model.fit(mx.datasets.Batches(X, labels, batch_size=8), None, loss=mx.losses.CrossEntropy(),
                  optimizer=mx.optim.SGD(), verbose=0)
    assert np.array_equal(numpy_of(model.params), before)


def test_streamed_memory_mapped_data_is_checked_in_chunks(tmp_path):
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    model = mx.Sequential(mx.Linear(4, 2), seed=0)
    history = model.fit(mx.datasets.Batches(mapped, LABELS, batch_size=8), None, loss=mx.losses.CrossEntropy(),
                        optimizer=mx.optim.SGD(), verbose=0)
    assert np.isfinite(history["loss"][0])


def test_batches_from_lists_and_dataframes():
    model = mx.Sequential(mx.Linear(4, 2), seed=0)
    listed = model.fit(mx.datasets.Batches(X.tolist(), LABELS.tolist(), 16), None, loss=mx.losses.CrossEntropy(),
                       optimizer=mx.optim.SGD(), verbose=0)
    assert np.isfinite(listed["loss"][0])
    with pytest.raises(ValueError, match="ragged"):
        mx.datasets.Batches([[1.0, 2.0], [1.0]], [0, 1])
    pd = pytest.importorskip("pandas")
    framed = mx.Sequential(mx.Linear(4, 2), seed=0).fit(mx.datasets.Batches(pd.DataFrame(X), pd.Series(LABELS), 16),
                                                        None, loss=mx.losses.CrossEntropy(),
                                                        optimizer=mx.optim.SGD(), verbose=0)
    assert framed["loss"] == listed["loss"]


def test_train_test_split_never_returns_an_empty_test_set():
    for test_size in (1, True, 0, 1.0):
        with pytest.raises(ValueError):
            mx.datasets.train_test_split(X, LABELS, test_size=test_size)


def test_skip_batch_does_not_count_an_update_that_overflowed():
    # one batch per epoch, so the update that overflows is an epoch's last; its gradient is finite
    model = mx.Sequential(mx.Linear(4, 1), dtype="float32", seed=0)
    first = numpy_of(model.params)
    with pytest.raises(mx.NonFiniteError, match=r"epoch 1, step 1: parameter '0.(weight|bias)' became non-finite"):
        model.fit(X, TARGET, loss=mx.losses.MSE(), optimizer=mx.optim.SGD(lr=1e38), epochs=2, batch_size=64,
                  verbose=0, on_nonfinite="skip_batch")
    assert np.array_equal(numpy_of(model.params), first)  # from before the update that overflowed


def test_a_refused_resume_changes_nothing(tmp_path):
    """Issue 21: fit(resume_from=) with another optimizer's file raises and leaves the model as it was."""
    trained = mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Dropout(0.2), mx.Linear(8, 2), seed=1)
    adam = mx.optim.Adam(lr=1e-2)
    trained.fit(X, LABELS, mx.losses.CrossEntropy(), adam, epochs=2, batch_size=16, verbose=0)
    mx.save(trained, tmp_path / "adam.safetensors", optimizer=adam)
    model = mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Dropout(0.2), mx.Linear(8, 2), seed=0)
    before = (numpy_of(model.params), model.shuffle_rng.bit_generator.state, model.dropout_rng.bit_generator.state,
              model.dropout_step, model.optimizer, model.optimizer_state)
    with pytest.raises(ValueError, match="holds Adam state but fit was given SGD"):
        model.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.SGD(), epochs=1, verbose=0,
                  resume_from=tmp_path / "adam.safetensors")
    after = (numpy_of(model.params), model.shuffle_rng.bit_generator.state, model.dropout_rng.bit_generator.state,
             model.dropout_step, model.optimizer, model.optimizer_state)
    assert np.array_equal(after[0], before[0]) and after[1:4] == before[1:4] and after[4:] == before[4:]


def test_ctrl_c_right_after_the_temporary_is_made_leaves_no_file(tmp_path, monkeypatch):
    """Issue 21: the temporary of a save was made before the try that removes it."""
    import os

    from mlp_xp import io

    model = mx.Sequential(mx.Linear(4, 2), seed=0)
    real_close = os.close

    def interrupted_close(handle):
        real_close(handle)
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "close", interrupted_close)
    with pytest.raises(KeyboardInterrupt):
        mx.save(model, tmp_path / "model.safetensors")
    monkeypatch.undo()
    assert sorted(path.name for path in tmp_path.iterdir()) == []


# ---------------------------------------------------------------- resumed runs (issue 21)


def _resumable():
    return mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Dropout(0.2), mx.Linear(8, 2), seed=3)


def _fit_labels(model, optimizer, epochs, **options):
    return model.fit(X, LABELS, mx.losses.CrossEntropy(), optimizer, epochs=epochs, batch_size=16, verbose=0,
                     **options)


def test_a_resumed_cosine_continues_the_interrupted_runs_schedule(tmp_path):
    """The first run planned 4 epochs and was cut after 2: resuming with cosine(0.5) (its length left
    open) continues the saved cosine over 4 epochs, exactly; it used to restart its length from the
    resumed run and train at lr 0."""
    straight = _resumable()
    full = _fit_labels(straight, mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5)), 4)
    first = _resumable()
    _fit_labels(first, mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5)), 4,
                callbacks=[mx.callbacks.ModelCheckpoint(str(tmp_path / "ck-{epoch:02d}.safetensors")),
                           _StopAfter(2)])
    fresh = _resumable()
    optimizer = mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5))
    resumed = _fit_labels(fresh, optimizer, 2, resume_from=tmp_path / "ck-02.safetensors")
    assert resumed["lr"] == full["lr"][2:] and min(resumed["lr"]) > 0
    assert optimizer.lr.total_steps == 4 * 4
    assert np.array_equal(numpy_of(fresh.params), numpy_of(straight.params))


class _Hook(mx.callbacks.Callback):
    def __init__(self, **hooks):
        for name, hook in hooks.items():
            setattr(self, name, hook)


class _StopAfter(mx.callbacks.Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs, model):
        return epoch >= self.epochs


def test_resuming_a_finished_cosine_is_refused_and_changes_nothing(tmp_path):
    """Issue 21's case: e2 ends a 2-epoch cosine; a resumed fit would train at its final lr 0 throughout."""
    first = _resumable()
    optimizer = mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5))
    _fit_labels(first, optimizer, 2)
    mx.save(first, tmp_path / "e2.safetensors", optimizer=optimizer)
    fresh = _resumable()
    before = numpy_of(fresh.params)
    given = mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5))
    with pytest.raises(ValueError, match=r"ended at update 8 and the checkpoint is at update 8: the resumed run "
                                         r"would train at its final rate 0.0 throughout; give every length"):
        _fit_labels(fresh, given, 2, resume_from=tmp_path / "e2.safetensors")
    assert np.array_equal(numpy_of(fresh.params), before) and fresh.optimizer is None and fresh.epoch == 0
    assert given.lr.total_steps is None
    # every length given, counted from the first update: the cosine of a 4-epoch run, continued
    history = _fit_labels(fresh, mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5, total_steps=16)), 2,
                          resume_from=tmp_path / "e2.safetensors")
    straight = _resumable()
    full = _fit_labels(straight, mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5, total_steps=16)), 4)
    assert history["lr"] == full["lr"][2:]


def test_resuming_with_another_open_schedule_is_refused(tmp_path):
    first = _resumable()
    optimizer = mx.optim.SGD(lr=0.1)
    _fit_labels(first, optimizer, 1)
    mx.save(first, tmp_path / "constant.safetensors", optimizer=optimizer)
    with pytest.raises(ValueError, match=r"resuming at update 4 with lr=cosine\(.*lr=0.5.*\), which leaves its "
                                         r"length open, while the checkpoint was trained with lr=0.1"):
        _fit_labels(_resumable(), mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5)), 2,
                    resume_from=tmp_path / "constant.safetensors")
    # a complete schedule, or a number, is taken as given
    history = _fit_labels(_resumable(), mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5, total_steps=12)), 2,
                          resume_from=tmp_path / "constant.safetensors")
    assert history["lr"] == [mx.optim.schedules.cosine(0.5, total_steps=12)(count) for count in (7, 11)]


def test_a_resumed_fit_numbers_its_epochs_after_the_checkpoints(tmp_path, capsys):
    """Issue 21: ModelCheckpoint('ck-{epoch:02d}') in the resumed run overwrote the first run's files."""
    pattern = str(tmp_path / "ck-{epoch:02d}.safetensors")
    first = _resumable()
    optimizer = mx.optim.Adam(lr=1e-2)
    _fit_labels(first, optimizer, 2, callbacks=[mx.callbacks.ModelCheckpoint(pattern)])
    assert first.epoch == 2
    written = {name: (tmp_path / name).read_bytes() for name in ("ck-01.safetensors", "ck-02.safetensors")}
    assert mx.load(tmp_path / "ck-01.safetensors").epoch == 1

    seen = []
    hook = _Hook(on_epoch_begin=lambda epoch, model: seen.append(epoch))
    fresh = _resumable()
    history = fresh.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.Adam(lr=1e-2), epochs=2, batch_size=16,
                        verbose=2, resume_from=tmp_path / "ck-02.safetensors",
                        callbacks=[mx.callbacks.ModelCheckpoint(pattern), hook])
    assert seen == [3, 4] and history.first_epoch == 3 and history.epoch_numbers == [3, 4] and fresh.epoch == 4
    printed = capsys.readouterr().out
    assert "epoch 3/4 - " in printed and "epoch 4/4 - " in printed and "epoch 1/" not in printed
    assert {name: (tmp_path / name).read_bytes() for name in written} == written  # the first run's, untouched
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"ck-0{i}.safetensors" for i in (1, 2, 3, 4)]
    assert mx.load(tmp_path / "ck-04.safetensors").epoch == 4
    # a fit that does not resume numbers from 1, as Keras does without initial_epoch
    assert _fit_labels(fresh, mx.optim.Adam(lr=1e-2), 1).epoch_numbers == [1]


# ---------------------------------------------------------------- files (issue 21)


def test_a_save_refuses_a_scaler_that_load_would_refuse(tmp_path):
    from mlp_xp.data.datasets import Standardizer

    model = mx.Sequential(mx.Linear(2, 2), seed=0)
    scaler = Standardizer().fit(np.array([[1.0, 2.0], [3.0, 5.0]]))
    scaler.scale[1] = np.inf
    model.data = model.data._replace(scaler=scaler)
    with pytest.raises(ValueError, match=r"cannot save model.data.scaler: a Standardizer needs finite means and "
                                         r"finite scales > 0 \(its scale is \[1.0, inf\]"):
        mx.save(model, tmp_path / "model.safetensors")
    assert list(tmp_path.iterdir()) == []


_FULL_DISK = """
import os, resource, signal, sys
import numpy as np
import mlp_xp as mx
model = mx.Sequential(mx.Linear(64, 256), mx.ReLU(), mx.Linear(256, 10), seed=0)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (writes past the limit fail with EFBIG, as on a full disk)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    mx.save(model, sys.argv[1])
except OSError as error:
    print(type(error).__name__, error.errno, error.filename, error)
"""


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="RLIMIT_FSIZE needs Linux")
def test_a_save_that_cannot_write_is_an_os_error_naming_the_file(tmp_path):
    """A full disk raised safetensors' own SafetensorError; a file-size limit fails the same write."""
    import errno

    path = tmp_path / "model.safetensors"
    path.write_bytes(b"the old file")
    result = subprocess.run([sys.executable, "-c", _FULL_DISK, str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == (f"OSError {errno.EFBIG} {path} [Errno {errno.EFBIG}] {os.strerror(errno.EFBIG)}: "
                                     f"'{path}'"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]  # no temporary left
    assert path.read_bytes() == b"the old file"


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="RLIMIT_FSIZE needs Linux")
def test_the_command_line_reports_a_failed_save_in_one_line(tmp_path):
    import errno

    script = ("import resource, signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "from mlp_xp import io\nwrite = io.write\n"
              "def full(*args):  # (the disk fills up when the model is saved, not before)\n"
              "    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n    return write(*args)\n"
              "io.write = full\nfrom mlp_xp.cli import main\nsys.exit(main(sys.argv[1:]))")
    path = tmp_path / "model.safetensors"
    result = subprocess.run([sys.executable, "-c", script, "train", "--epochs", "1", "--save", str(path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"mlp-xp: error: {os.strerror(errno.EFBIG)}: '{path}'"
    assert "please report" not in result.stderr and not path.exists()


@pytest.mark.parametrize("reader", ["load", "resume"])
def test_a_save_replacing_the_file_during_a_read_cannot_mix_two_files(tmp_path, monkeypatch, reader):
    """mx.load (and resume) opened the file twice, header then tensors: a save in between made a
    valid file read as corrupt. One open file is one snapshot: the read gets the file it opened."""
    from mlp_xp import checkpoint

    path = tmp_path / "model.safetensors"
    old, new = _resumable(), _resumable()
    _fit_labels(old, old_optimizer := mx.optim.Adam(lr=1e-2), 1)
    _fit_labels(new, new_optimizer := mx.optim.Adam(lr=1e-2), 2)
    mx.save(old, path, optimizer=old_optimizer)
    real = checkpoint.build_layers

    def build_layers_while_another_process_saves(text):  # (runs between reading the header and the tensors)
        mx.save(new, path, optimizer=new_optimizer)
        return real(text)

    monkeypatch.setattr(checkpoint, "build_layers", build_layers_while_another_process_saves)
    if reader == "load":
        model = mx.load(path)
    else:
        model = _resumable()
        model.load_checkpoint(path, mx.optim.Adam(lr=1e-2))
    assert np.array_equal(numpy_of(model.params), numpy_of(old.params)) and model.epoch == 1
    monkeypatch.undo()
    assert np.array_equal(numpy_of(mx.load(path).params), numpy_of(new.params))


# ---------------------------------------------------------------- concurrency (issue 21)


def test_a_second_concurrent_fit_on_a_model_raises_and_leaves_the_first_alone():
    import threading

    entered, release = threading.Event(), threading.Event()
    pause = _Hook(on_epoch_begin=lambda epoch, model: (entered.set(), release.wait(20)))
    model, alone = _resumable(), _resumable()
    _fit_labels(alone, mx.optim.Adam(lr=1e-2), 2)
    errors = []

    def first():
        try:
            _fit_labels(model, mx.optim.Adam(lr=1e-2), 2, callbacks=[pause])
        except BaseException as error:  # pragma: no cover (reported below)
            errors.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert entered.wait(20)
        with pytest.raises(RuntimeError, match="this model is being trained by another fit call, in another "
                                               "thread: two fits at once would write into the same parameters"):
            _fit_labels(model, mx.optim.SGD(lr=0.1), 1)
    finally:
        release.set()
        thread.join(60)
    assert errors == [] and np.array_equal(numpy_of(model.params), numpy_of(alone.params))
    # a fit from a callback of the model's own fit is refused too; after the fits end, fit works again
    nested = _Hook(on_epoch_end=lambda epoch, logs, model: _fit_labels(model, mx.optim.SGD(lr=0.1), 1))
    with pytest.raises(RuntimeError, match=r"in this thread \(a callback\?\)"):
        _fit_labels(model, mx.optim.Adam(lr=1e-2), 1, callbacks=[nested])
    assert _fit_labels(model, mx.optim.SGD(lr=0.1), 1).epochs == 1


# ---------------------------------------------------------------- review of issue 21's fixes


def _cosine_run(tmp_path, epochs_planned=4, cut=2, **schedule):
    """A run planned for ``epochs_planned`` epochs under cosine(0.5), checkpointed after each epoch, cut after ``cut``."""
    first = _resumable()
    _fit_labels(first, mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5, **schedule)), epochs_planned,
                callbacks=[mx.callbacks.ModelCheckpoint(str(tmp_path / "ck-{epoch:02d}.safetensors")),
                           _StopAfter(cut)])
    return tmp_path / f"ck-{cut:02d}.safetensors"


def test_a_resumed_run_that_would_outlast_the_saved_schedule_is_refused(tmp_path):
    """Six more epochs of a cosine that has two left trained four of them at lr 0."""
    path = _cosine_run(tmp_path)
    model = _resumable()
    before = numpy_of(model.params)
    with pytest.raises(ValueError, match=r"ends at update 16, 8 updates \(2 epochs\) after the checkpoint's 8, and "
                                         r"this run takes 24: its last 16 would train at the final rate 0.0"):
        _fit_labels(model, mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5)), 6, resume_from=path)
    assert np.array_equal(numpy_of(model.params), before) and model.epoch == 0
    # another batch size: more updates per epoch, past the end as well
    with pytest.raises(ValueError, match="this run takes 16: its last 8 would train at the final rate"):
        model.fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.SGD(lr=mx.optim.schedules.cosine(0.5)), epochs=2,
                  batch_size=8, verbose=0, resume_from=path)


@pytest.mark.parametrize("make", [lambda: mx.optim.schedules.cosine(0.5, total_steps=4, per="epoch"),
                                  lambda: mx.optim.schedules.step(0.1, step_size=2, gamma=0.5, per="epoch")])
def test_a_per_epoch_schedule_resumed_with_another_epoch_length_is_refused(tmp_path, make):
    first = _resumable()
    _fit_labels(first, optimizer := mx.optim.SGD(lr=make()), 2)
    mx.save(first, tmp_path / "e2.safetensors", optimizer=optimizer)
    with pytest.raises(ValueError, match=r"counted 4 updates per epoch while this run has 8 \(another batch size"):
        _resumable().fit(X, LABELS, mx.losses.CrossEntropy(), mx.optim.SGD(lr=make()), epochs=1, batch_size=8,
                         verbose=0, resume_from=tmp_path / "e2.safetensors")
    # the same batch size continues it
    assert _fit_labels(_resumable(), mx.optim.SGD(lr=make()), 1,
                       resume_from=tmp_path / "e2.safetensors").epoch_numbers == [3]


class _Disagreeing(mx.distributed.Engine):
    """Two processes, the other of which was given another batch size."""

    size = 2

    def allgather(self, value):
        other = dict(value, batch_size="8") if isinstance(value, dict) else value
        return [value, other]


def test_a_distributed_fit_refused_after_its_resume_changes_nothing(tmp_path):
    first = _resumable()
    _fit_labels(first, optimizer := mx.optim.Adam(lr=1e-2), 2)
    mx.save(first, tmp_path / "e2.safetensors", optimizer=optimizer)
    model = _resumable()
    given = mx.optim.Adam(lr=mx.optim.schedules.cosine(1e-2, total_steps=100))
    before = (numpy_of(model.params), model.epoch, model.optimizer, repr(model.shuffle_rng.bit_generator.state))
    with pytest.raises(ValueError, match="batch_size differs: process 0: 16, process 1: 8"):
        _fit_labels(model, given, 1, resume_from=tmp_path / "e2.safetensors", distributed=_Disagreeing())
    after = (numpy_of(model.params), model.epoch, model.optimizer, repr(model.shuffle_rng.bit_generator.state))
    assert np.array_equal(after[0], before[0]) and after[1:] == before[1:] and model.optimizer_state is None


def test_training_continued_from_a_loaded_model_numbers_epochs_like_a_resume(tmp_path):
    """mx.load then fit(optimizer=loaded.optimizer) is the README's other way to resume: same numbering."""
    first = _resumable()
    _fit_labels(first, optimizer := mx.optim.Adam(lr=1e-2), 2)
    mx.save(first, tmp_path / "e2.safetensors", optimizer=optimizer)
    loaded = mx.load(tmp_path / "e2.safetensors")
    assert _fit_labels(loaded, loaded.optimizer, 2).epoch_numbers == [3, 4]
    assert _fit_labels(loaded, loaded.optimizer, 1).epoch_numbers == [5]  # (the same optimizer goes on)
    assert _fit_labels(loaded, mx.optim.Adam(lr=1e-2), 1).epoch_numbers == [1]  # (a fresh one starts over)


@pytest.mark.parametrize("epoch", [2.0, -1, True, "3"])
def test_a_save_refuses_an_epoch_load_would_refuse(tmp_path, epoch):
    model = _resumable()
    model.epoch = epoch
    with pytest.raises(ValueError, match=r"cannot save model.epoch=.*: it must be an int >= 0"):
        mx.save(model, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [1e300, 0.23643249400513433, -7.5, 0.0])
def test_a_constant_column_is_centred_to_zero(value):
    from mlp_xp.data.datasets import Standardizer

    rows = np.column_stack([np.full(100, value), np.arange(100.0)])
    scaler = Standardizer().fit(rows)
    out = scaler.transform(rows)
    assert np.all(out[:, 0] == 0.0) and scaler.scale[0] == 1.0 and scaler.mean[0] == value
    np.testing.assert_allclose(out[:, 1], (rows[:, 1] - rows[:, 1].mean()) / rows[:, 1].std(), rtol=1e-15)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_save_into_a_read_only_folder_names_the_target(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError) as error:
            mx.save(_resumable(), folder / "m.safetensors")
        assert error.value.filename == str(folder / "m.safetensors")
    finally:
        folder.chmod(0o755)
