"""Running a program from inside a tool, with a deadline and captured output."""

from __future__ import annotations

import subprocess

__all__ = ["run_captured"]


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def run_captured(argv: list[str], timeout_s: float) -> dict[str, object]:
    """Run ``argv`` and return its stdout, stderr and exit code (None after a timeout)."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        stderr = _text(exc.stderr) + f"\n[timed out after {timeout_s:g} s]"
        return {"stdout": _text(exc.stdout), "stderr": stderr.lstrip("\n"), "exit_code": None}
    return {
        "stdout": _text(done.stdout),
        "stderr": _text(done.stderr),
        "exit_code": done.returncode,
    }
