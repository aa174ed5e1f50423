"""Figures a snippet drew, saved as PNG files under the workspace's ``outputs/``.

The tools image ships matplotlib; a snippet's environment selects
:mod:`stockade_sdk._mpl_backend` (the Agg renderer, whose ``show`` saves
instead of opening a window) and a writable configuration directory (the
root filesystem is read-only). Whatever the backend, every figure still open
when the snippet ends is saved too, at its own size and dpi, as
``outputs/figure-N.png`` (N: the first number no file has yet, so figures of
earlier calls stay). Another part of the platform turns files under
``outputs/`` into artifacts; this module only writes them.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "BACKEND",
    "MAX_FIGURES",
    "OUTPUTS_DIR",
    "environment",
    "save_open_figures",
    "saved",
    "start",
]

BACKEND = "module://stockade_sdk._mpl_backend"
"""``MPLBACKEND`` of a snippet."""
OUTPUTS_DIR = "outputs"
"""Relative to the working directory, the workspace."""
MAX_FIGURES = 20
"""Figures saved in one call; more are closed unsaved, and the result says how many."""
_CONFIG_DIR = "/tmp/matplotlib"

_saved: list[str] = []
_failed: list[str] = []
_root = "."
"""The working directory the snippet started in (it may change its own)."""


def start(root: str) -> None:
    """Save figures under ``root`` (the workspace), wherever the snippet goes."""
    global _root  # noqa: PLW0603 - one snippet per process
    _root = root


def environment() -> dict[str, str]:
    """What a snippet's environment needs for matplotlib: the backend and a writable config dir."""
    return {"MPLBACKEND": BACKEND, "MPLCONFIGDIR": _CONFIG_DIR}


def _next_name() -> str:
    os.makedirs(os.path.join(_root, OUTPUTS_DIR), exist_ok=True)
    number = 1
    while os.path.lexists(os.path.join(_root, OUTPUTS_DIR, f"figure-{number}.png")):
        number += 1
    return f"{OUTPUTS_DIR}/figure-{number}.png"


def save_open_figures() -> None:
    """Save every open pyplot figure as PNG under ``outputs/``, then close them all.

    Nothing to do (and nothing imported) when the snippet never used pyplot.
    """
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    numbers = pyplot.get_fignums()
    if len(_saved) + len(numbers) > MAX_FIGURES:
        unsaved = len(_saved) + len(numbers) - MAX_FIGURES
        _failed.append(f"{unsaved} more figures not saved (at most {MAX_FIGURES} a call)")
        numbers = numbers[: max(MAX_FIGURES - len(_saved), 0)]
    for number in numbers:
        path = _next_name()
        try:
            # dpi="figure": the figure's own size and resolution, whatever rcParams say.
            figure = pyplot.figure(number)
            figure.savefig(os.path.join(_root, path), format="png", dpi="figure")
        except Exception as exc:
            _failed.append(f"figure {number} could not be saved: {type(exc).__name__}: {exc}")
            continue
        _saved.append(path)
    pyplot.close("all")


def saved() -> tuple[list[str], list[str]]:
    """Paths saved so far in this process, and the figures that failed, in words."""
    return list(_saved), list(_failed)
