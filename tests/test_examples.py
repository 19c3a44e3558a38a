"""The scripts in examples/ run with tiny settings."""

import importlib.util
import pathlib

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart(capsys):
    result = _load("quickstart").main(["--epochs", "3", "--backend", "array_api_strict"])
    assert result["accuracy"] > 0.85
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("test accuracy")
