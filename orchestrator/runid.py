"""The one rule for run ids: they name directories (workspaces, artifacts, run logs).

Letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, at
most 128: never a path separator, never ``..``, never hidden.
"""

from __future__ import annotations

import re

__all__ = ["RUN_ID_PATTERN", "run_id_problem"]

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""What a run id matches (also the HTTP API's and the JSON Schemas' pattern)."""

# fullmatch, never match: Python's "$" also matches before a final newline ("r1\n").
_RUN_ID = re.compile(RUN_ID_PATTERN)


def run_id_problem(run_id: str, *, what: str = "run id") -> str | None:
    """Why ``run_id`` cannot name a run (``what`` names it in the message), or None."""
    if _RUN_ID.fullmatch(run_id):
        return None
    return (
        f"invalid {what} {run_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )
