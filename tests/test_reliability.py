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
    live = tmp_path / f".tmp-mlp_xp-{os.getpid()}-def456.safetensors"
    other = tmp_path / ".tmp-someone-else.safetensors"
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    mx.save(model, tmp_path / "model.safetensors")
    assert not stale.exists() and live.exists() and other.exists()


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
