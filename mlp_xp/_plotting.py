"""A matplotlib figure that leaves the process's backend alone."""

from __future__ import annotations


def new_figure(what: str, columns: int, figsize, window: bool):
    """(figure, row of ``columns`` axes). With ``window`` the figure is pyplot's, to be shown;
    without, it is a bare ``matplotlib.figure.Figure``, which saves to a file with no backend and
    no pyplot state: a notebook keeps its inline plots. ``what`` names the caller in the error
    raised without matplotlib."""
    try:
        if window:
            import matplotlib.pyplot as plt

            figure, axes = plt.subplots(1, columns, figsize=figsize, squeeze=False)
        else:
            from matplotlib.figure import Figure

            figure = Figure(figsize=figsize)
            axes = figure.subplots(1, columns, squeeze=False)
    except ImportError:
        raise ImportError(f"{what} needs matplotlib: pip install matplotlib") from None
    return figure, axes[0]
