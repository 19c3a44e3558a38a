"""The examples in the docstrings of the installed package run and print what they show."""

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import mlp_xp

MODULES = sorted(info.name for info in pkgutil.walk_packages(mlp_xp.__path__, "mlp_xp.")
                 if not info.name.endswith("__main__"))
#: modules whose optional dependency may be missing here
OPTIONAL = {"mlp_xp.sklearn": "sklearn"}


def test_every_module_is_listed():
    assert "mlp_xp.model" in MODULES and "mlp_xp.ops.numba_ops" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name in OPTIONAL and importlib.util.find_spec(OPTIONAL[name]) is None:
        pytest.skip(f"{name} needs {OPTIONAL[name]}")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"
