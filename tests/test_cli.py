"""The mlp-xp command line: training on the bundled data and on the user's files, predict and
evaluate with the original labels, and one clear line (never a traceback) for every failure."""

import csv
import json
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp import cli

rng = np.random.default_rng(0)
N = 240
FEATURES = rng.normal(size=(N, 3)) * [1.0, 10.0, 100.0] + [0.0, 50.0, 1000.0]
SPECIES = np.where(FEATURES[:, 0] > 0.3, "setosa", np.where(FEATURES[:, 1] > 50, "virginica", "versicolor"))
PRICE = 3 * FEATURES[:, 0] + 0.2 * FEATURES[:, 1] + 0.01 * FEATURES[:, 2] + 1000.0


def _write_csv(path, columns):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(list(columns))
        writer.writerows(zip(*columns.values()))
    return str(path)


@pytest.fixture
def table(tmp_path):
    return _write_csv(tmp_path / "plants.csv", {"sepal": FEATURES[:, 0], "petal": FEATURES[:, 1],
                                                "stem": FEATURES[:, 2], "species": SPECIES, "price": PRICE})


def _run(argv, capsys):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def _one_line_error(status, err, expected_status, message):
    assert status == expected_status and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlp-xp: error: ") and message in lines[0], err


# ---------------------------------------------------------------- the bundled data


def test_train_prints_epochs_and_test_accuracy(capsys):
    status, out, _ = _run(["train", "--epochs", "5", "--layers", "32", "--lr", "3e-3"], capsys)
    lines = out.splitlines()
    assert status == 0 and lines[0].startswith("digits: 1350 train / 447 test samples, 64 features")
    assert [line.split(" - ")[0] for line in lines[1:6]] == [f"epoch {i}/5" for i in range(1, 6)]
    assert lines[-1].startswith("test accuracy ") and float(lines[-1].split()[2].rstrip(",")) > 0.9


@pytest.mark.parametrize("args", [["--backend", "array_api_strict", "--dtype", "float64", "--optimizer", "sgd",
                                   "--lr", "0.05", "--activation", "tanh", "--dropout", "0.1"],
                                  ["--optimizer", "rmsprop", "--activation", "gelu", "--layers", "16,16"]])
def test_train_flags(args, capsys):
    status, out, _ = _run(["train", "--epochs", "2", "--quiet"] + args, capsys)
    assert status == 0 and out.strip().splitlines()[0].startswith("test accuracy ")


def test_progress_bar_on_a_terminal_one_line_per_epoch_otherwise(capsys, monkeypatch):
    status, out, err = _run(["train", "--epochs", "2", "--layers", "8"], capsys)
    assert status == 0 and "epoch 2/2 - loss" in out and "sample/s" not in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    status, out, err = _run(["train", "--epochs", "2", "--layers", "8"], capsys)
    assert status == 0 and "epoch 2/2 - loss" not in out and "epoch 2/2" in err and "sample" in err


@pytest.mark.parametrize("args,message", [(["--layers", "12,x"], "comma-separated widths"),
                                          (["--epochs", "0"], "must be >= 1"),
                                          (["--lr", "nan"], "finite number > 0"),
                                          (["--test-size", "1.5"], "must be in [0, 1)"),
                                          (["--activation", "swish"], "invalid choice")])
def test_bad_flags_exit_with_usage_error(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train"] + args)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_every_flag_has_help_with_its_default():
    parser = cli.build_parser()
    commands = next(action for action in parser._actions if action.choices and "train" in action.choices).choices
    for name, command in commands.items():
        formatter = command._get_formatter()
        for action in command._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if action.option_strings and action.default is not None and action.default is not False:
                assert "%(default)s" in formatter._get_help_string(action), f"{name} {action.option_strings}"
    assert "(default: 20)" in commands["train"].format_help()
    assert "(default: 3)" in commands["compare"].format_help()


def test_console_script_and_module_entry_points(tmp_path):
    script = shutil.which("mlp-xp")
    assert script is not None, "the mlp-xp console script is not installed"
    for command in ([script], [sys.executable, "-m", "mlp_xp"]):
        result = subprocess.run(command + ["train", "--epochs", "1", "--quiet"], capture_output=True, text=True,
                                timeout=120, cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.startswith("test accuracy "), result.stderr


# ---------------------------------------------------------------- the user's data


def test_csv_classification_trains_saves_predicts_and_evaluates_with_original_labels(table, tmp_path, capsys):
    model_path, json_path = str(tmp_path / "plants.safetensors"), str(tmp_path / "run.json")
    status, out, _ = _run(["train", "--data", table, "--target", "species", "--features", "sepal,petal,stem",
                           "--epochs", "40", "--save", model_path, "--json", json_path], capsys)
    assert status == 0 and "target 'species': classification, 3 classes (text labels)" in out
    report = json.load(open(json_path))
    assert report["classes"] == ["setosa", "versicolor", "virginica"] and report["test"]["accuracy"] > 0.85
    assert len(report["history"]["val_loss"]) == 40

    # new rows, columns in another order and without the target: picked by name
    new = _write_csv(tmp_path / "new.csv", {"stem": FEATURES[:30, 2], "sepal": FEATURES[:30, 0],
                                            "petal": FEATURES[:30, 1]})
    output = str(tmp_path / "predictions.csv")
    status, _, err = _run(["predict", model_path, "--data", new, "--output", output, "--proba"], capsys)
    assert status == 0 and "30 predictions" in err
    rows = list(csv.DictReader(open(output)))
    assert list(rows[0]) == ["species", "probability_setosa", "probability_versicolor", "probability_virginica"]

    model = mx.load(model_path)  # the same answer by hand: the saved scaler, the model, the saved labels
    assert model.data.feature_names == ("sepal", "petal", "stem") and model.data.target_name == "species"
    proba = mx.to_numpy(model.predict(model.data.scaler.transform(FEATURES[:30])))
    assert [row["species"] for row in rows] == [model.data.classes[i] for i in proba.argmax(axis=1)]
    assert np.mean([row["species"] for row in rows] == SPECIES[:30]) > 0.8
    assert np.allclose([[float(row[f"probability_{c}"]) for c in model.data.classes] for row in rows], proba)

    status, out, _ = _run(["evaluate", model_path, "--data", table, "--json", json_path], capsys)
    scores = json.load(open(json_path))
    assert status == 0 and out.startswith("plants.csv: 240 samples; accuracy ") and scores["accuracy"] > 0.85
    expected = model.evaluate(model.data.scaler.transform(FEATURES),
                              mx.datasets.encode_labels(SPECIES)[0], mx.losses.CrossEntropy())
    assert scores["accuracy"] == pytest.approx(expected["accuracy"]) and scores["loss"] == pytest.approx(
        expected["loss"], rel=1e-6)


def test_csv_regression_predicts_in_the_original_units(table, tmp_path, capsys):
    model_path = str(tmp_path / "price.safetensors")
    status, out, _ = _run(["train", "--data", table, "--features", "sepal,petal,stem", "--epochs", "60",
                           "--save", model_path], capsys)
    assert status == 0 and "target 'price': regression (numeric target)" in out
    assert float(out.strip().splitlines()[-2].split()[2].rstrip(",")) > 0.95  # test r2
    status, out, _ = _run(["predict", model_path, "--data", table], capsys)
    predicted = np.array([float(line) for line in out.splitlines()[1:]])
    assert status == 0 and out.startswith("price\n") and np.mean(np.abs(predicted - PRICE)) < 1.0
    status, out, _ = _run(["evaluate", model_path, "--data", table], capsys)
    assert status == 0 and "r2 0.9" in out


def test_npz_and_npy_pairs(tmp_path, capsys):
    labels = (FEATURES[:, 0] > 0).astype(int)
    np.savez(tmp_path / "data.npz", X=FEATURES, y=labels)
    np.save(tmp_path / "X.npy", FEATURES)
    np.save(tmp_path / "y.npy", PRICE)
    status, out, _ = _run(["train", "--data", str(tmp_path / "data.npz"), "--epochs", "20"], capsys)
    assert status == 0 and "classification, 2 classes (whole numbers with 2 distinct values" in out
    status, out, _ = _run(["train", "--data", str(tmp_path / "X.npy"), "--target", str(tmp_path / "y.npy"),
                           "--epochs", "5", "--save", str(tmp_path / "m.safetensors")], capsys)
    assert status == 0 and "target 'y': regression" in out
    status, out, _ = _run(["predict", str(tmp_path / "m.safetensors"), "--data", str(tmp_path / "X.npy")], capsys)
    assert status == 0 and len(out.splitlines()) == N + 1


def test_the_task_follows_the_target_and_can_be_overridden(tmp_path, capsys):
    many = _write_csv(tmp_path / "many.csv", {"a": FEATURES[:, 0], "count": np.arange(N) * 7})
    status, out, _ = _run(["train", "--data", many, "--epochs", "1"], capsys)
    assert status == 0 and "regression (whole numbers with 240 distinct values, more than 20" in out
    few = _write_csv(tmp_path / "few.csv", {"a": FEATURES[:, 0], "grade": (FEATURES[:, 0] > 0).astype(int) + 1})
    status, out, _ = _run(["train", "--data", few, "--epochs", "1", "--task", "regression"], capsys)
    assert status == 0 and "regression (--task regression)" in out
    status, _, err = _run(["train", "--data", str(tmp_path / "many.csv"), "--epochs", "1", "--task",
                           "classification"], capsys)
    _one_line_error(status, err, 2, "has 1 row(s): too few to keep it in both")  # 240 classes of one sample each


@pytest.mark.parametrize("columns,args,message", [
    ({"a": ["1", "2", "x"] * 10, "y": [0, 1, 1] * 10}, [], "line 4, column 'a': 'x' is not a number, where most"),
    ({"a": ["1", ""] * 10, "y": [0, 1] * 10}, [], "has missing values (empty, NA, nan, ?...): 'a' 10 of 20 rows"),
    ({"a": [1.0] * 20, "y": [0, 1] * 10}, ["--target", "label"], "has no column 'label'"),
    ({"a": [1.0] * 20, "y": [3] * 20}, [], "single class 3"),
    ({"a": [1.0] * 20, "y": ["x", "y"] * 10}, ["--task", "regression"], "needs a numeric target"),
])
def test_bad_data_files_are_one_clear_line(columns, args, message, tmp_path, capsys):
    path = _write_csv(tmp_path / "bad.csv", columns)
    status, _, err = _run(["train", "--data", path, "--epochs", "1"] + args, capsys)
    _one_line_error(status, err, 2, message)


def test_predict_names_missing_columns_and_unknown_labels(table, tmp_path, capsys):
    model_path = str(tmp_path / "m.safetensors")
    assert _run(["train", "--data", table, "--target", "species", "--features", "sepal,petal,stem", "--epochs", "1",
                 "--quiet", "--save", model_path], capsys)[0] == 0
    partial = _write_csv(tmp_path / "partial.csv", {"sepal": [1.0], "petal": [2.0]})
    status, _, err = _run(["predict", model_path, "--data", partial], capsys)
    _one_line_error(status, err, 2, "lacks the feature column(s) ['stem']")
    odd = _write_csv(tmp_path / "odd.csv", {"sepal": [1.0], "petal": [2.0], "stem": [3.0], "species": ["rose"]})
    status, _, err = _run(["evaluate", model_path, "--data", odd], capsys)
    _one_line_error(status, err, 2, "labels the model was not trained on: ['rose']")


# ---------------------------------------------------------------- failures: one line, non-zero


def test_failures_are_one_line(tmp_path, capsys):
    cases = [
        (["train", "--lr", "1e30", "--optimizer", "sgd", "--epochs", "3"], 1, "training diverged: non-finite"),
        (["train", "--layers", "300000,300000,300000"], 1, "out of memory: a model of"),
        (["train", "--backend", "tensorflow"], 2, "backend must be one of"),
        (["train", "--json", str(tmp_path / "missing" / "run.json")], 2, "does not exist"),
        (["train", "--save", str(tmp_path)], 2, "is a folder"),
        (["train", "--data", str(tmp_path / "nope.csv")], 2, "no such data file"),
        (["train", "--data", str(tmp_path / "data.parquet")], 2, "no such data file"),
        (["predict", str(tmp_path / "nope.safetensors"), "--data", "x.csv"], 2, "no such checkpoint file"),
    ]
    for argv, expected, message in cases:
        status, out, err = _run(argv, capsys)
        _one_line_error(status, err, expected, message)
        assert "epoch" not in out, f"{argv} started training before failing"


def test_unwritable_outputs_are_refused_before_the_run(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for flag in ("--json", "--plot", "--save"):
        status, out, err = _run(["train", "--epochs", "1", flag, str(blocker / "out")], capsys)
        _one_line_error(status, err, 2, f"{flag} ")
        assert out == "", "the run started before the output path was checked"


def test_a_torch_device_that_does_not_exist(capsys):
    pytest.importorskip("torch")
    status, _, err = _run(["train", "--backend", "torch", "--device", "cuda:7", "--epochs", "1"], capsys)
    _one_line_error(status, err, 2, "torch device 'cuda:7' is not available here")


def test_an_unexpected_error_is_one_line_too(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "train", broken)
    status, _, err = _run(["train"], capsys)
    _one_line_error(status, err, 1, "unexpected RuntimeError: boom (set MLP_XP_TRACEBACK=1")


def test_jax_float64_from_the_command_line(tmp_path):
    pytest.importorskip("jax")
    result = subprocess.run([sys.executable, "-m", "mlp_xp", "train", "--backend", "jax", "--dtype", "float64",
                             "--epochs", "1", "--layers", "16", "--quiet"], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("test accuracy "), result.stderr


def test_broken_pipe_is_quiet(tmp_path, capsys):
    table = _write_csv(tmp_path / "t.csv", {"a": FEATURES[:, 0], "y": SPECIES})
    model_path = str(tmp_path / "m.safetensors")
    assert _run(["train", "--data", table, "--epochs", "1", "--quiet", "--save", model_path], capsys)[0] == 0
    np.savez(tmp_path / "many.npz", X=rng.normal(size=(100_000, 1)))
    process = subprocess.Popen([sys.executable, "-m", "mlp_xp", "predict", model_path, "--data",
                                str(tmp_path / "many.npz")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=tmp_path)
    assert process.stdout.readline() == b"y\n"
    process.stdout.close()  # like `| head -1`
    status = process.wait(timeout=120)
    err = process.stderr.read().decode()
    assert status == 1 and err == "", err


def test_ctrl_c_is_one_line(tmp_path):
    process = subprocess.Popen([sys.executable, "-u", "-m", "mlp_xp", "train", "--epochs", "100000", "--layers",
                                "64"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, text=True)
    assert process.stdout.readline().startswith("digits:")
    assert process.stdout.readline().startswith("epoch 1/100000")
    process.send_signal(signal.SIGINT)
    status = process.wait(timeout=60)
    assert status == 130 and process.stderr.read() == "mlp-xp: interrupted\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"mlp-xp {mx.__version__}"


def test_help_states_each_default_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text and "(default: 20)" in text
