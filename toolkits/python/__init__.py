"""The ``python`` toolkit: run Python in the run's workspace, its namespace kept as a notebook's."""

from __future__ import annotations

from stockade_sdk import _state, tool
from stockade_sdk.process import run_python

__all__ = ["run"]


@tool
def run(
    code: str, timeout_s: float = 20.0, reset: bool = False, stateless: bool = False
) -> dict[str, object]:
    """Run a Python 3 snippet in the workspace; return its stdout, stderr and exit code.

    Within a run the namespace is kept between calls, as in a notebook: names,
    functions, classes and imports defined by one call are there in the next.
    Names that cannot be kept (open files, sockets, threads, generators) are
    listed in `not_kept`; `state` says when the namespace was not saved (too
    big, or the snippet was killed: the next call then starts from the previous
    one) or could not be restored. A call the sandbox itself ends at its deadline
    keeps the previous namespace too. A trailing expression's value is shown as in
    the interactive interpreter. numpy and matplotlib are available: figures
    still open at the end (or shown with plt.show()) are saved as PNG under
    outputs/ and listed in `figures`. Files written to the current directory
    persist for the run. An exception shows as its traceback in stderr, with
    exit code 1. If the snippet was killed, `killed` says why (out of memory,
    timed out, a signal) with the limit. Long output keeps its head and tail
    (`truncated`, with the sizes in bytes). The call ends when the snippet does:
    processes it left running are killed and listed in `left_behind`.

    Args:
        code: The Python source to execute.
        timeout_s: Seconds the snippet may run (the sandbox's own deadline still applies).
        reset: Start from an empty namespace, forgetting what earlier calls defined.
        stateless: Neither restore nor keep a namespace for this call.
    """
    # STOCKADE_PYTHON_STATE is set (to the size cap) when the call belongs to a run
    # whose workspace is kept and its profile keeps state; otherwise stateless.
    # In the tools image's warm host the snippet's process is forked from it
    # (no interpreter start); elsewhere a python3 of its own.
    cap = None if stateless else _state.cap_from_env()
    return run_python(code, timeout_s, state_cap=cap, reset=reset)
