"""matplotlib backend of ``python.run`` snippets: Agg, with a ``show`` that saves.

Selected through ``MPLBACKEND=module://stockade_sdk._mpl_backend``. There is no
window in a sandbox: ``plt.show()`` saves every open figure as a PNG under the
workspace's ``outputs/`` (see :mod:`stockade_sdk._figures`) and closes them,
where plain Agg would only warn that it cannot show anything.
"""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg

from stockade_sdk import _figures

__all__ = ["FigureCanvas", "show"]

FigureCanvas = FigureCanvasAgg


def show(*args: object, **kwargs: object) -> None:
    """Save the open figures (``block`` and other arguments mean nothing here)."""
    _figures.save_open_figures()
