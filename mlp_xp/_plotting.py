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


def finish(figure, path):
    """Write ``figure`` to ``path`` and return it; with no path show it (inline in a notebook) and
    return None, since a returned figure would show a second time as a notebook cell's value."""
    if path is not None:
        figure.savefig(path, dpi=120)
        return figure
    import matplotlib.pyplot as plt

    plt.show()
    if not plt.isinteractive():  # show has returned: its window was closed, or none opened (Agg)
        plt.close(figure)
    return None
