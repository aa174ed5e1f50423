"""The ``python`` toolkit: run Python code in the run's workspace."""

from __future__ import annotations

import os
import sys
import tempfile

from stockade_sdk import tool
from stockade_sdk.process import run_captured

__all__ = ["run"]

# The snippet travels in a file, not as the -c argument: one argument is capped
# near 128 KB by the kernel, and the policy admits longer programs. The
# bootstrap keeps -c's behaviour (the workspace first on sys.path, a fresh
# __main__, tracebacks naming "<string>").
_BOOTSTRAP = (
    "import sys\n"
    "with open(sys.argv.pop(1), encoding='utf-8') as snippet:\n"
    "    source = snippet.read()\n"
    "exec(compile(source, '<string>', 'exec'), {'__name__': '__main__'})\n"
)


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
    with tempfile.NamedTemporaryFile("w", suffix=".py", encoding="utf-8", delete=False) as file:
        file.write(code)
    try:
        return run_captured([sys.executable, "-c", _BOOTSTRAP, file.name], timeout_s)
    finally:
        os.unlink(file.name)
