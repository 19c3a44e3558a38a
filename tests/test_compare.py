"""mx.compare and `mlp-xp compare`: same start, same batches, side-by-side results."""

import json

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp import cli


def _setup():
    X, y = mx.datasets.load_digits()
    X = mx.datasets.standardize(X)[:256]
    model = mx.Sequential(mx.Linear(64, 32), mx.ReLU(), mx.Dropout(0.1), mx.Linear(32, 10), mx.Softmax(),
                          dtype="float64", seed=0)
    return model, X, y[:256]


def test_compare_reports_every_configuration(tmp_path):
    model, X, y = _setup()
    before = mx.to_numpy(model.params).copy()
    result = mx.compare(model, X, y, mx.losses.CrossEntropy(), mx.optim.Adam(lr=1e-3),
                        configs=["numpy:float32", "array_api_strict:float64", "array_api_strict:float32",
                                 "cupy:tf32", "array_api_strict:float16"], epochs=2, batch_size=32)
    assert np.array_equal(mx.to_numpy(model.params), before)  # the model itself is untouched
    rows = {row["config"]: row for row in result.rows}
    assert list(rows) == ["numpy:float64", "numpy:float32", "array_api_strict:float64", "array_api_strict:float32"]
    assert set(result.skipped) == {"cupy:tf32", "array_api_strict:float16"}  # no GPU; strict has no float16
    reference = rows["numpy:float64"]
    assert len(reference["loss_curve"]) == 2 * 8 and reference["max_divergence"] == 0
    # same math, same batches: strict float64 equals numpy float64 bitwise, float32 is close
    assert rows["array_api_strict:float64"]["loss_curve"] == reference["loss_curve"]
    assert rows["array_api_strict:float64"]["final_param_rel_error"] == 0.0
    assert rows["array_api_strict:float32"]["loss_curve"] == rows["numpy:float32"]["loss_curve"]
    assert 0 < rows["numpy:float32"]["max_divergence"] < 1e-4
    assert 0 < rows["numpy:float32"]["final_param_rel_error"] < 1e-4
    assert all(row["samples_per_s"] > 0 and 0 <= row["accuracy"] <= 1 for row in result.rows)
    assert rows["numpy:float32"]["peak_memory_mb"] > 0

    text = result.table()
    assert "numpy:float32" in text and "cupy:tf32" in text and "skipped" in text
    data = json.loads(result.to_json(tmp_path / "c.json"))
    assert json.loads((tmp_path / "c.json").read_text()) == data and data["reference"] == "numpy:float64"
    pytest.importorskip("matplotlib")
    result.plot(tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_torch_configuration_tracks_the_reference():
    pytest.importorskip("torch")
    model, X, y = _setup()
    result = mx.compare(model, X, y, mx.losses.CrossEntropy(), mx.optim.SGD(lr=0.05, momentum=0.9),
                        configs=["torch:float64", "torch:float32"])
    rows = {row["config"]: row for row in result.rows}
    assert rows["torch:float64"]["max_divergence"] < 1e-12
    assert rows["torch:float32"]["max_divergence"] < 1e-4


def test_bad_configurations():
    model, X, y = _setup()
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        mx.compare(model, X, y, mx.losses.CrossEntropy(), mx.optim.SGD(), configs=["tensorflow:float32"])
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        mx.compare(model, X, y, mx.losses.CrossEntropy(), mx.optim.SGD(), configs=["numpy:int8"])
    with pytest.raises(ValueError, match="reference configuration 'cupy:float64' cannot run"):
        mx.compare(model, X, y, mx.losses.CrossEntropy(), mx.optim.SGD(), reference="cupy:float64")


def test_cli_compare(tmp_path, capsys):
    status = cli.main(["compare", "--configs", "numpy:float64,numpy:float32,cupy:float32", "--epochs", "1",
                       "--layers", "16", "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")])
    out = capsys.readouterr().out
    assert status == 0 and "numpy:float32" in out and "cupy:float32" in out and "skipped" in out
    assert json.loads((tmp_path / "r.json").read_text())["results"][1]["config"] == "numpy:float32"
