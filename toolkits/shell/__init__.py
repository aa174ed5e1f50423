"""The ``shell`` toolkit: run a bash command in the run's workspace."""

from __future__ import annotations

from stockade_sdk import ToolError, tool
from stockade_sdk.process import run_captured

__all__ = ["run"]


@tool
def run(command: str, timeout_s: float = 20.0) -> dict[str, object]:
    """Run a bash command in the workspace; return its stdout, stderr and exit code.

    If the command was killed, `killed` says why (out of memory, timed out, a
    signal) with the limit. Long output keeps its head and tail (`truncated`, with
    the sizes in bytes). The call ends when bash does: processes left running in
    the background are killed and listed in `left_behind`.

    Args:
        command: The command line, interpreted by bash.
        timeout_s: Seconds the command may run (the sandbox's own deadline still applies).
    """
    if "\0" in command:  # bash takes its command as a C string
        raise ToolError("command: a NUL character cannot be passed to bash")
    return run_captured(["bash", "-c", command], timeout_s)
