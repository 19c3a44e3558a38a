"""Save / load in safetensors: round trips, exact resume, atomic writes, bad files."""

import json
import os
import struct

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import numpy_of


def _data():
    X, y = mx.datasets.load_digits()
    return mx.datasets.standardize(X)[:400], y[:400]


def _model(**kwargs):
    return mx.Sequential(mx.Linear(64, 32), mx.ReLU(), mx.Dropout(0.2), mx.LayerNorm(), mx.Linear(32, 10),
                         mx.Softmax(), seed=3, **kwargs)


def _optimizer():
    return mx.optim.AdamW(lr=mx.optim.schedules.warmup(mx.optim.schedules.cosine(3e-3, 100), 10),
                          weight_decay=0.01, clip_norm=1.0)


def test_round_trip_keeps_architecture_weights_and_predictions(tmp_path):
    X, y = _data()
    model = _model()
    model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), epochs=1, verbose=0)
    path = tmp_path / "model.safetensors"
    mx.save(model, path)
    loaded = mx.load(path)
    assert loaded.layers == model.layers and loaded.dtype_name == "float32" and loaded.seed == 3
    for key, value in model.state_dict().items():
        assert np.array_equal(numpy_of(loaded.state_dict()[key]), numpy_of(value))
    assert np.array_equal(numpy_of(loaded.predict(X)), numpy_of(model.predict(X)))
    assert loaded.optimizer is None


def test_load_onto_another_backend_and_dtype(tmp_path, backend):
    model = _model()
    mx.save(model, tmp_path / "m.safetensors")
    loaded = mx.load(tmp_path / "m.safetensors", **backend.options, dtype="float64")
    assert loaded.backend.name == backend and loaded.dtype_name == "float64"
    np.testing.assert_allclose(numpy_of(loaded.predict(_data()[0])), numpy_of(model.predict(_data()[0])),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernels", ["fast", "generic"])
def test_resume_is_bitwise_identical_to_uninterrupted_training(tmp_path, kernels):
    """10 epochs == 5 epochs, save, load, 5 more: weights, optimizer, batch order, dropout."""
    X, y = _data()
    loss = mx.losses.CrossEntropy()

    straight = _model()
    if kernels == "generic":
        straight.ops = None
    straight.fit(X, y, loss=loss, optimizer=_optimizer(), epochs=10, batch_size=32, verbose=0)

    first = _model()
    if kernels == "generic":
        first.ops = None
    optimizer = _optimizer()
    first.fit(X, y, loss=loss, optimizer=optimizer, epochs=5, batch_size=32, verbose=0)
    mx.save(first, tmp_path / "ckpt.safetensors", optimizer=optimizer)

    # a) mx.load rebuilds model and optimizer
    loaded = mx.load(tmp_path / "ckpt.safetensors")
    loaded.fit(X, y, loss=loss, optimizer=loaded.optimizer, epochs=5, batch_size=32, verbose=0)
    # b) a fresh model resumes from the file inside fit
    fresh = _model()
    fresh.fit(X, y, loss=loss, optimizer=_optimizer(), epochs=5, batch_size=32, verbose=0,
              resume_from=tmp_path / "ckpt.safetensors")
    assert np.array_equal(numpy_of(loaded.params), numpy_of(straight.params))
    assert np.array_equal(numpy_of(fresh.params), numpy_of(straight.params))


def test_model_checkpoint_and_resume(tmp_path):
    X, y = _data()
    loss = mx.losses.CrossEntropy()
    straight = _model()
    straight.fit(X, y, loss=loss, optimizer=mx.optim.SGD(lr=0.05, momentum=0.9), epochs=4, verbose=0)
    model = _model()
    checkpoint = mx.callbacks.ModelCheckpoint(str(tmp_path / "epoch-{epoch:02d}.safetensors"))
    model.fit(X, y, loss=loss, optimizer=mx.optim.SGD(lr=0.05, momentum=0.9), epochs=2, verbose=0,
              callbacks=[checkpoint])
    assert [os.path.basename(p) for p in checkpoint.saved] == ["epoch-01.safetensors", "epoch-02.safetensors"]
    resumed = mx.load(checkpoint.saved[-1])
    resumed.fit(X, y, loss=loss, optimizer=resumed.optimizer, epochs=2, verbose=0)
    assert np.array_equal(numpy_of(resumed.params), numpy_of(straight.params))


def test_model_checkpoint_best_only(tmp_path):
    X, y = _data()
    checkpoint = mx.callbacks.ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_accuracy",
                                              save_best_only=True)
    model = _model()
    history = model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(lr=1e-2), epochs=4,
                        validation_data=(X[:100], y[:100]), callbacks=[checkpoint], verbose=0)
    best = max(history["val_accuracy"])
    assert checkpoint.best == best and 1 <= len(checkpoint.saved) <= 4
    assert mx.load(tmp_path / "best.safetensors").evaluate(X[:100], y[:100], mx.losses.CrossEntropy())[
        "accuracy"] == pytest.approx(best)


def test_save_without_fit_optimizer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has no state in the model"):
        mx.save(_model(), tmp_path / "m.safetensors", optimizer=mx.optim.Adam())


def test_resume_checks_architecture_and_optimizer(tmp_path):
    X, y = _data()
    model = _model()
    optimizer = mx.optim.Adam()
    model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=1, verbose=0)
    mx.save(model, tmp_path / "c.safetensors", optimizer=optimizer)
    mx.save(model, tmp_path / "no-opt.safetensors")
    other = mx.Sequential(mx.Linear(64, 10), seed=0)
    with pytest.raises(ValueError, match="different architecture"):
        other.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), verbose=0,
                  resume_from=tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="holds Adam state but fit was given SGD"):
        _model().fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(), verbose=0,
                     resume_from=tmp_path / "c.safetensors")
    with pytest.raises(ValueError, match="no optimizer state"):
        _model().fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), verbose=0,
                     resume_from=tmp_path / "no-opt.safetensors")


def test_bad_files_give_clear_errors(tmp_path):
    model = _model()
    good = tmp_path / "good.safetensors"
    mx.save(model, good)
    data = good.read_bytes()
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        mx.load(tmp_path / "missing.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        mx.load(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model at all, just text")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        mx.load(garbage)
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, dtype=np.float32)}, str(foreign))
    with pytest.raises(ValueError, match="not an mlp_xp model"):
        mx.load(foreign)
    # valid container, inconsistent metadata: a layer type that does not exist
    header_length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_length])
    header["__metadata__"]["layers"] = header["__metadata__"]["layers"].replace("ReLU", "Relu")
    encoded = json.dumps(header).encode()
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + header_length:])
    with pytest.raises(ValueError, match="unknown layer type 'Relu'"):
        mx.load(tampered)


def test_write_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous checkpoint intact and no temporary file."""
    import safetensors.numpy

    path = tmp_path / "model.safetensors"
    model = _model()
    mx.save(model, path)
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as file:
            file.write(b"partial")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        mx.save(_model(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_files_contain_no_pickle(tmp_path):
    model = _model()
    optimizer = mx.optim.Adam()
    model.fit(*_data(), loss=mx.losses.CrossEntropy(), optimizer=optimizer, verbose=0)
    mx.save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    data = (tmp_path / "m.safetensors").read_bytes()
    header = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])
    assert set(header) - {"__metadata__"} == {"0.weight", "0.bias", "3.weight", "3.bias", "4.weight", "4.bias",
                                              "optimizer.exp_avg", "optimizer.exp_avg_sq"}
    assert header["0.weight"]["shape"] == [64, 32] and header["0.weight"]["dtype"] == "F32"
    assert all(isinstance(value, str) for value in header["__metadata__"].values())
