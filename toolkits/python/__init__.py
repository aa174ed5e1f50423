"""The ``python`` toolkit: run Python code in the run's workspace."""

from __future__ import annotations

from stockade_sdk import tool
from stockade_sdk.process import run_python

__all__ = ["run"]


@tool
def run(code: str, timeout_s: float = 20.0) -> dict[str, object]:
    """Run a Python 3 snippet in the workspace; return its stdout, stderr and exit code.

    numpy is available. Files written to the current directory persist for the run.
    An exception shows as its traceback in stderr, with exit code 1. If the snippet
    was killed, `killed` says why (out of memory, timed out, a signal) with the limit.
    Long output keeps its head and tail (`truncated`, with the sizes in bytes). The
    call ends when the snippet does: processes it left running are killed and
    listed in `left_behind`.

    Args:
        code: The Python source to execute.
        timeout_s: Seconds the snippet may run (the sandbox's own deadline still applies).
    """
    # In the tools image's warm host the snippet's process is forked from it
    # (no interpreter start); elsewhere a python3 of its own.
    return run_python(code, timeout_s)
