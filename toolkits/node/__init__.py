"""The ``node`` toolkit: run JavaScript with Node.js in the run's workspace."""

from __future__ import annotations

import os

from stockade_sdk import tool
from stockade_sdk.process import run_captured

__all__ = ["run"]

# The program travels in a file, not as node's -e argument: one argument is
# capped near 128 KB by the kernel. The bootstrap runs it as -e would: in the
# current directory's module scope (require() finds ./x.js and ./node_modules
# from the workspace), errors reported against "[eval]", the exit code node's.
# Its own names live in a block, so the program may declare any name.
_BOOTSTRAP = (
    "{ const fs = require('fs');"
    " const file = process.argv.splice(1, 1)[0];"
    " const source = fs.readFileSync(file, 'utf8');"
    " fs.unlinkSync(file);"
    " require('vm').runInThisContext(source, {filename: '[eval]'}); }"
)


@tool
def run(code: str, timeout_s: float = 20.0) -> dict[str, object]:
    """Run a JavaScript program with Node.js in the workspace; return its output and exit code.

    CommonJS (`require`), Node's standard library; no network and no npm
    packages. Files written to the current directory persist for the run and
    are seen by the run's other tools. An uncaught exception shows in stderr,
    with exit code 1. If the program was killed, `killed` says why (out of
    memory, timed out, a signal) with the limit. Long output keeps its head and
    tail (`truncated`, with the sizes in bytes). The call ends when the
    program does: processes it left running are killed and listed in
    `left_behind`.

    Args:
        code: The JavaScript source to execute.
        timeout_s: Seconds the program may run (the sandbox's own deadline still applies).
    """
    import tempfile  # noqa: PLC0415 - not loaded into every warm tool host

    handle, path = tempfile.mkstemp(prefix="stockade-node-", suffix=".js")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(code)
        return run_captured(["node", "-e", _BOOTSTRAP, path], timeout_s)
    finally:
        try:  # noqa: SIM105 - contextlib costs start-up time
            os.unlink(path)
        except FileNotFoundError:
            pass  # the bootstrap removed it
