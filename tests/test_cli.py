"""The mlp-xp command line."""

import subprocess
import sys

import pytest

from mlp_xp import cli


def test_train_prints_epochs_and_test_accuracy(capsys):
    assert cli.main(["train", "--epochs", "5", "--layers", "32", "--lr", "3e-3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("digits: 1348 train / 449 test samples") or out[0].startswith("digits:")
    assert [line.split(" - ")[0] for line in out[1:6]] == [f"epoch {i}/5" for i in range(1, 6)]
    accuracy = float(out[-1].split()[2])
    assert out[-1].startswith("test accuracy: ") and accuracy > 0.9


@pytest.mark.parametrize("args", [["--backend", "array_api_strict", "--dtype", "float64", "--optimizer", "sgd",
                                   "--lr", "0.05", "--activation", "tanh", "--dropout", "0.1"],
                                  ["--optimizer", "rmsprop", "--activation", "gelu", "--layers", "16,16"]])
def test_train_flags(args, capsys):
    assert cli.main(["train", "--epochs", "2", "--quiet"] + args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("test accuracy: ")


@pytest.mark.parametrize("args,message", [(["--layers", "12,x"], "comma-separated widths"),
                                          (["--epochs", "0"], "--epochs must be >= 1"),
                                          (["--activation", "swish"], "invalid choice")])
def test_bad_flags_exit_with_usage_error(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train"] + args)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_unknown_backend_is_a_clean_error(capsys):
    assert cli.main(["train", "--backend", "tensorflow", "--epochs", "1"]) == 2
    assert "backend must be one of" in capsys.readouterr().err


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "mlp_xp.cli", "train", "--epochs", "1", "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("test accuracy: ")
