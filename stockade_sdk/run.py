"""Runs one tool inside a sandbox: ``python3 -m stockade_sdk.run module:function``.

Reads the (host-validated) arguments as a JSON object on stdin, calls the
function, and writes the outcome as the last line of stdout, after a record
separator, so whatever the tool prints itself cannot be mistaken for it:

    <anything the tool printed>\\x1e{"ok": true, "value": ...}
    <anything the tool printed>\\x1e{"ok": false, "error": "...", "traceback": "..."}

A :class:`~stockade_sdk.ToolError` is reported by its message alone (no
``traceback``): the call, not the tool, went wrong.

The tools image usually serves the same call from its warm tool host
(:mod:`stockade_sdk.host`), which calls :func:`serve` just as :func:`main`
does here; this entry point is what runs where no host is waiting.
"""

from __future__ import annotations

import importlib
import json
import sys

from stockade_sdk import ToolError

__all__ = ["ENTRY_ARGV", "RESULT_SEPARATOR", "main", "serve"]

TYPE_CHECKING = False  # typing itself costs start-up time in the sandbox
if TYPE_CHECKING:
    from typing import Any

RESULT_SEPARATOR = "\x1e"
ENTRY_ARGV = ("python3", "-S", "-m", "stockade_sdk.run")
"""This entry point's command, completed by ``MODULE:FUNCTION``."""


def _call(entrypoint: str, arguments: dict[str, Any]) -> dict[str, Any]:
    module_name, _, function_name = entrypoint.partition(":")
    function: Any = importlib.import_module(module_name)
    for part in function_name.split("."):
        function = getattr(function, part)
    try:
        value = function(**arguments)
    except ToolError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # the tool's failure is a result for the model
        import traceback  # noqa: PLC0415 - only failures pay for it

        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=-8),
        }
    return {"ok": True, "value": value}


def serve(entrypoint: str, arguments: bytes) -> int:
    """Call ``entrypoint`` with the JSON ``arguments``; write the outcome line; the exit code."""
    outcome = _call(entrypoint, json.loads(arguments))
    try:
        encoded = json.dumps(outcome, default=str)
    except (TypeError, ValueError) as exc:
        encoded = json.dumps({"ok": False, "error": f"result is not JSON: {exc}", "traceback": ""})
    sys.stdout.flush()
    sys.stdout.write(f"\n{RESULT_SEPARATOR}{encoded}\n")
    sys.stdout.flush()
    return 0 if outcome["ok"] else 1


def main() -> int:
    """Entry point inside the container."""
    return serve(sys.argv[1], sys.stdin.buffer.read())


if __name__ == "__main__":
    sys.exit(main())
