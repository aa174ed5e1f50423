"""A sandbox backend that answers from a script, for testing what sits above the sandbox.

The sandbox layer itself is tested against a real Docker engine; this fake is
for the gateway's own logic (policy, limits, approvals, audit) and for
measuring the gateway's overhead with the sandbox taken out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from orchestrator.sandbox.backend import SandboxBackend
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus
from orchestrator.sandbox.profile import SandboxProfile
from stockade_sdk.run import RESULT_SEPARATOR

__all__ = ["ScriptedBackend", "tool_output"]

Step = ExecResult | Exception


def tool_output(value: Any = "ok", *, ok: bool = True, profile: str = "default") -> ExecResult:
    """The result of a tool that returned ``value`` (or, with ``ok=False``, raised it)."""
    outcome = {"ok": True, "value": value} if ok else {"ok": False, "error": str(value)}
    stdout = f"\n{RESULT_SEPARATOR}{json.dumps(outcome)}\n"
    return ExecResult(
        status=ExecStatus.OK if ok else ExecStatus.ERROR,
        exit_code=0 if ok else 1,
        stdout=stdout,
        stderr="",
        truncated=False,
        stdout_bytes=len(stdout),
        stderr_bytes=0,
        duration_s=0.0,
        image_digest="sha256:" + "0" * 64,
        profile=profile,
        runtime="scripted",
        container_id="scripted",
        from_pool=True,
    )


class ScriptedBackend(SandboxBackend):
    """Plays ``script`` one step per call (an exception is raised), then ``then`` forever.

    ``requests`` keeps every (request, profile) it was asked to run.
    """

    def __init__(self, script: Iterable[Step] = (), *, then: Step | None = None) -> None:
        self._script = list(script)
        self._then = then if then is not None else tool_output()
        self.requests: list[tuple[ExecRequest, SandboxProfile]] = []

    async def start(self) -> None:
        """Nothing to prepare."""

    async def execute(self, request: ExecRequest, profile: SandboxProfile) -> ExecResult:
        """The next step of the script."""
        self.requests.append((request, profile))
        step = self._script.pop(0) if self._script else self._then
        if isinstance(step, Exception):
            raise step
        return step

    async def close(self) -> None:
        """Nothing to release."""
