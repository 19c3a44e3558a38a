"""Notebooks keep working: plots leave matplotlib's backend and pyplot's figures alone and display once;
the default progress bar falls back to text, without a warning, when ipywidgets is missing."""

import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp.train import loop as training

X = np.random.default_rng(0).normal(size=(32, 3))
Y = np.arange(32) % 2


def _history():
    model = mx.Sequential(mx.Linear(3, 2), mx.Softmax(), seed=0)
    return model.fit(X, Y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(), epochs=2,
                     validation_data=(X, Y), verbose=0)


def _comparison():
    return mx.compare(mx.Sequential(mx.Linear(3, 2), mx.Softmax(), seed=0), X, Y, mx.losses.CrossEntropy(),
                      mx.optim.SGD(), configs=["numpy:float64", "numpy:float32"], epochs=1, batch_size=8)


@pytest.fixture
def plots():
    """History.plot and Comparison.plot, with matplotlib (and pyplot, to watch its figures)."""
    pytest.importorskip("matplotlib")
    return {"History.plot": _history().plot, "Comparison.plot": _comparison().plot}


@pytest.mark.parametrize("which", ["History.plot", "Comparison.plot"])
def test_plot_to_a_file_returns_one_figure_and_leaves_matplotlib_alone(plots, which, tmp_path, monkeypatch):
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    def refuse(*args, **kwargs):
        raise AssertionError("the backend was changed")

    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    monkeypatch.setattr(matplotlib, "use", refuse)
    monkeypatch.setattr(plt, "switch_backend", refuse)
    figure = plots[which](tmp_path / "plot.png")
    assert type(figure) is Figure and figure.canvas.manager is None  # one bare Figure, not pyplot's
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend and plt.get_fignums() == figures


@pytest.mark.parametrize("which", ["History.plot", "Comparison.plot"])
def test_plot_shows_one_figure_and_returns_none(plots, which, monkeypatch):
    """Shown (no path): pyplot shows exactly the one figure, and nothing is returned that a notebook
    would display a second time as the cell's value; pyplot keeps no figure once shown."""
    import matplotlib.pyplot as plt

    figures, shown = plt.get_fignums(), []
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: shown.append(len(plt.get_fignums()) - len(figures)))
    assert plots[which]() is None
    assert shown == [1]
    assert plt.get_fignums() == figures


def test_plot_to_a_file_without_a_display(tmp_path):
    """No display and no backend chosen (a server, CI): saving works, and pyplot is never imported, so
    a notebook's inline backend, chosen later, is untouched."""
    pytest.importorskip("matplotlib")
    script = f"""
import sys, numpy as np, mlp_xp as mx
model = mx.Sequential(mx.Linear(2, 2), mx.Softmax(), seed=0)
figure = model.fit(np.ones((8, 2)), np.arange(8) % 2, mx.losses.CrossEntropy(), mx.optim.SGD(),
                   verbose=0).plot({str(tmp_path / "h.svg")!r})
assert type(figure).__name__ == "Figure", figure
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported (and with it a backend)"
"""
    env = {key: value for key, value in os.environ.items()
           if key not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "h.svg").read_text().lstrip().startswith("<?xml")


@pytest.fixture
def notebook_without_ipywidgets(monkeypatch):
    """A Jupyter kernel as ``_in_notebook`` and tqdm.auto detect it (IPython's ZMQInteractiveShell,
    ipykernel.zmqshell imported), with no ipywidgets; tqdm.auto is imported afresh, as on a kernel's
    first fit."""
    shell = type("ZMQInteractiveShell", (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets: ImportError
    for name in [name for name in os.environ if name == "QT_API" or name.startswith("SPYDER")]:
        monkeypatch.delenv(name)
    tqdm_modules = ("tqdm.auto", "tqdm.autonotebook", "tqdm.notebook")
    before = {name: sys.modules.pop(name) for name in tqdm_modules if name in sys.modules}
    yield
    for name in tqdm_modules:  # the modules imported in the fake notebook go
        sys.modules.pop(name, None)
    sys.modules.update(before)


def test_notebook_without_ipywidgets_gets_a_text_bar_and_no_warning(notebook_without_ipywidgets, capsys):
    pytest.importorskip("tqdm")
    assert training._resolve_verbose("auto") == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bar = training._progress_bar(1, 1, 1, 10)
        bar.close()
        mx.Sequential(mx.Linear(3, 2), mx.Softmax(), seed=0).fit(
            X, Y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(), epochs=2)
    assert [str(warning.message) for warning in caught] == []
    assert not any(cls.__module__ == "tqdm.notebook" for cls in type(bar).__mro__)  # not the widget
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "sample" in err  # tqdm's text bar, one per epoch, on stderr


def test_terminal_keeps_tqdm_auto(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    from tqdm.auto import tqdm as auto_bar

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert training._resolve_verbose("auto") == 1
    bar = training._progress_bar(1, 1, 3, 10)
    bar.close()
    assert type(bar) is auto_bar and "epoch 1/3" in capsys.readouterr().err
