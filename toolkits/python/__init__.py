"""The ``python`` toolkit: run Python code in the run's workspace."""

from __future__ import annotations

import sys

from stockade_sdk import tool
from stockade_sdk.process import run_captured

__all__ = ["run"]


@tool
def run(code: str, timeout_s: float = 20.0) -> dict[str, object]:
    """Run a Python 3 snippet in the workspace; return its stdout, stderr and exit code.

    numpy is available. Files written to the current directory persist for the run.
    An exception shows as its traceback in stderr, with exit code 1.

    Args:
        code: The Python source to execute.
        timeout_s: Seconds the snippet may run (the sandbox's own deadline still applies).
    """
    return run_captured([sys.executable, "-c", code], timeout_s)
