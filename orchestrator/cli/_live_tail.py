"""The live tail under a running tool call in ``stockade run``: its last few output lines.

Shown only on a terminal: each new chunk redraws the tail in place (the lines
it drew are erased first), and the call's finished line replaces it. The
output is untrusted: control sequences and control characters are stripped
(:func:`~orchestrator.display.for_display`) and each line is cut to the
terminal's width, so nothing a tool prints can move the cursor or recolour
the screen.
"""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

from orchestrator.agent import ToolOutput
from orchestrator.display import for_display

__all__ = ["LiveTail"]

_LINES = 5
_PREFIX = "        │ "
_PARTIAL_LIMIT = 4096  # a line without a newline is cut here


class LiveTail:
    """The last ``lines`` lines of running calls' output, redrawn on a terminal."""

    def __init__(self, stream: TextIO | None = None, lines: int = _LINES) -> None:
        self._stream = stream or sys.stderr
        self._keep = lines
        self._lines: list[str] = []
        self._partial: dict[tuple[str, str], str] = {}
        self._drawn = 0

    def add(self, event: ToolOutput) -> None:
        """Take a chunk of output and redraw the tail."""
        key = (event.call_id, event.stream)
        text = self._partial.pop(key, "") + for_display(event.text).replace("\t", "    ")
        *complete, rest = text.split("\n")
        self._lines += complete
        if rest:
            self._partial[key] = rest[-_PARTIAL_LIMIT:]
        del self._lines[: -self._keep]
        self._draw()

    def clear(self) -> None:
        """Erase the tail (before a progress line is printed); forget what it held."""
        self._erase()
        self._lines.clear()
        self._partial.clear()

    def _erase(self) -> None:
        if self._drawn:
            # Up to the tail's first line, then clear to the end of the screen.
            self._stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        width = max(shutil.get_terminal_size().columns - len(_PREFIX) - 1, 10)
        shown = self._lines + [part for part in self._partial.values() if part]
        shown = shown[-self._keep :]
        self._erase()
        for line in shown:
            self._stream.write(f"{_PREFIX}{line[:width]}\n")
        self._drawn = len(shown)
        self._stream.flush()
