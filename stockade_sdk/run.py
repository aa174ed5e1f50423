"""Runs one tool inside a sandbox: ``python3 -m stockade_sdk.run module:function``.

Reads the (host-validated) arguments as a JSON object on stdin, calls the
function, and writes the outcome as the last line of stdout, after a record
separator, so whatever the tool prints itself cannot be mistaken for it:

    <anything the tool printed>\\x1e{"ok": true, "value": ...}
    <anything the tool printed>\\x1e{"ok": false, "error": "...", "traceback": "..."}
"""

from __future__ import annotations

import importlib
import json
import sys

__all__ = ["RESULT_SEPARATOR", "main"]

TYPE_CHECKING = False  # typing itself costs start-up time in the sandbox
if TYPE_CHECKING:
    from typing import Any

RESULT_SEPARATOR = "\x1e"


def _call(entrypoint: str, arguments: dict[str, Any]) -> dict[str, Any]:
    module_name, _, function_name = entrypoint.partition(":")
    function: Any = importlib.import_module(module_name)
    for part in function_name.split("."):
        function = getattr(function, part)
    try:
        value = function(**arguments)
    except Exception as exc:  # the tool's failure is a result for the model
        import traceback  # noqa: PLC0415 - only failures pay for it

        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=-8),
        }
    return {"ok": True, "value": value}


def main() -> int:
    """Entry point inside the container."""
    arguments = json.load(sys.stdin)
    outcome = _call(sys.argv[1], arguments)
    try:
        encoded = json.dumps(outcome, default=str)
    except (TypeError, ValueError) as exc:
        encoded = json.dumps({"ok": False, "error": f"result is not JSON: {exc}", "traceback": ""})
    sys.stdout.flush()
    sys.stdout.write(f"\n{RESULT_SEPARATOR}{encoded}\n")
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
