"""Running a validated tool call in a sandbox and turning the outcome into a ToolResult."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from orchestrator.artifacts import ArtifactStore
from orchestrator.display import well_formed
from orchestrator.errors import ConfigError, InfrastructureError
from orchestrator.sandbox.backend import SandboxBackend
from orchestrator.sandbox.credentials import CredentialBindings
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus
from orchestrator.sandbox.live import current_listener
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.workspace import WorkspaceManager
from orchestrator.tools._models import ToolCall, ToolResult, ToolStatus
from orchestrator.tools._registry import ToolRegistry, ValidatedCall
from stockade_sdk.run import ENTRY_ARGV, RESULT_SEPARATOR

__all__ = [
    "SANDBOX_STATUS",
    "ToolExecutor",
    "infrastructure_result",
    "tool_result",
]

_LIBRARY = "/opt/stockade/lib"
# What a call ended from outside (its deadline, the memory limit) shows of its output.
_KILLED_HEAD = _KILLED_TAIL = 8 * 1024

SANDBOX_STATUS: Mapping[ExecStatus, ToolStatus | None] = MappingProxyType(
    {
        # The tool process ran to its end: its outcome line decides (ok, or the
        # error it reported); without one, the output was cut or the tool died.
        ExecStatus.OK: None,
        ExecStatus.ERROR: None,
        ExecStatus.OUTPUT_TRUNCATED: None,
        # The sandbox ended the call: the tool had no say.
        ExecStatus.TIMEOUT: ToolStatus.TIMEOUT,
        ExecStatus.OOM_KILLED: ToolStatus.OOM_KILLED,
        ExecStatus.WORKSPACE_REJECTED: ToolStatus.ERROR,
    }
)
"""Every sandbox status → the tool status it forces, or None where the tool's own outcome decides.
Total over :class:`ExecStatus` (a test keeps it so)."""


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _head_and_tail(text: str) -> tuple[str, bool]:
    """``text`` cut to its head and tail when long (the tail says how far a call got)."""
    if len(text) <= _KILLED_HEAD + _KILLED_TAIL:
        return text, False
    omitted = len(text) - _KILLED_HEAD - _KILLED_TAIL
    return (
        f"{text[:_KILLED_HEAD]}\n[... {omitted} characters omitted ...]\n{text[-_KILLED_TAIL:]}",
        True,
    )


def tool_result(call: ToolCall, result: ExecResult) -> ToolResult:
    """The model's view of a sandboxed tool run."""
    common: dict[str, Any] = {
        "call_id": call.id,
        "name": call.name,
        "exit_code": result.exit_code,
        "duration_s": result.duration_s,
        "files_changed": result.files_changed,
        "files_rejected": result.files_rejected,
        "image_digest": result.image_digest,
        "host": result.host,
        "truncated": result.truncated,
        "egress": result.egress,
    }
    printed, separator, encoded = result.stdout.rpartition(RESULT_SEPARATOR)
    forced = SANDBOX_STATUS[result.status]
    if forced is not None:
        # Ended from outside: what it printed up to then tells the model how far it got.
        streams = (printed if separator else result.stdout, result.stderr)
        seen, cut = _head_and_tail("\n".join(text for text in streams if text))
        common["truncated"] = result.truncated or cut
        return ToolResult(status=forced, output=seen, error=result.message, **common)
    if not separator:
        # No outcome line: the tool died, or its output was cut before the end.
        status = ToolStatus.OUTPUT_TRUNCATED if result.truncated else ToolStatus.ERROR
        detail = result.message or "the tool ended without a result"
        return ToolResult(
            status=status, output=result.stdout, error=f"{detail}\n{result.stderr[-2000:]}".strip(),
            **common,
        )  # fmt: skip
    try:
        outcome = json.loads(encoded)
    except (ValueError, RecursionError):  # too deep a nesting is a RecursionError
        outcome = None
    # A tool may print the separator itself, then die before the runner writes its line.
    if not isinstance(outcome, dict):
        return ToolResult(
            status=ToolStatus.ERROR, error="the tool's result was malformed", **common
        )
    printed = printed.removesuffix("\n")
    # Strings the tool returned may hold lone surrogates (a file name that is not UTF-8, as
    # Python reads one, JSON-escaped), which no log, checkpoint or page can hold.
    if not outcome.get("ok"):
        error = f"{outcome.get('error', 'the tool failed')}\n{outcome.get('traceback', '')}".strip()
        return ToolResult(
            status=ToolStatus.ERROR, output=printed, error=well_formed(error), **common
        )
    value = well_formed(_as_text(outcome.get("value")))
    output = f"{printed}\n{value}" if printed else value
    # The tool reported its result whole: only a cut in what it printed before it
    # counts. Its stderr (diagnostics, and the program output it passes on live)
    # may pass the cap without the result losing anything.
    common["truncated"] = result.stdout_truncated
    return ToolResult(status=ToolStatus.OK, output=output, **common)


class ToolExecutor:
    """Runs a validated call's tool in a single-use sandbox and returns a ToolResult.

    The gateway's last step: it validates, decides and limits before calling
    :meth:`run`. There is no path from here that skips the policy; entrances
    get the gateway from :class:`orchestrator.platform.Platform`.
    """

    def __init__(
        self,
        registry: ToolRegistry,
        backend: SandboxBackend,
        *,
        profiles: Iterable[SandboxProfile],
        workspaces: WorkspaceManager | None = None,
        credentials: CredentialBindings | None = None,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        """``credentials`` pick, per call, the secrets the egress proxy adds for it;
        ``artifacts`` keeps what a run's calls write under ``outputs/`` (none: nothing kept)."""
        self._registry = registry
        self._backend = backend
        self._profiles = {profile.name: profile for profile in profiles}
        self._workspaces = workspaces
        self._credentials = credentials or CredentialBindings()
        self._artifacts = artifacts
        for spec in registry.tools():
            if spec.profile not in self._profiles:
                raise ConfigError(
                    f"tool {spec.name} needs sandbox profile {spec.profile!r}; "
                    f"known: {', '.join(sorted(self._profiles))}",
                    field="profile",
                )

    @property
    def registry(self) -> ToolRegistry:
        """The tools this executor runs."""
        return self._registry

    @property
    def profiles(self) -> frozenset[str]:
        """Names of the sandbox profiles this executor can run tools in."""
        return frozenset(self._profiles)

    async def wait_ready(self, timeout_s: float) -> float | None:
        """The sandbox backend's :meth:`~orchestrator.sandbox.SandboxBackend.wait_ready`."""
        return await self._backend.wait_ready(timeout_s)

    async def run(
        self,
        checked: ValidatedCall,
        *,
        profile: str | None = None,
        timeout_s: float | None = None,
    ) -> ToolResult:
        """Run a validated call once, in a fresh single-use sandbox.

        ``profile`` overrides the tool's own sandbox profile, ``timeout_s``
        shortens the profile's deadline. Raises
        :class:`~orchestrator.errors.InfrastructureError` when the platform
        failed (so a caller can retry); a tool's own failure is a result.
        """
        name = profile or checked.spec.profile
        if name not in self._profiles:
            raise ConfigError(
                f"unknown sandbox profile {name!r}; known: {', '.join(sorted(self._profiles))}",
                field="sandbox_profile",
            )
        call = checked.call
        workspace = None
        if call.run_id and self._workspaces is not None:
            workspace = self._workspaces.open(call.run_id)
        request = ExecRequest(
            # The tools image's warm tool host serves exactly this command.
            argv=(*ENTRY_ARGV, checked.spec.entrypoint),
            stdin=json.dumps(checked.arguments).encode(),
            # A call with a kept workspace (a run's) keeps python.run's namespace there.
            env={
                "PYTHONPATH": _LIBRARY,
                **(self._profiles[name].python_state_env() if workspace is not None else {}),
            },
            workspace=workspace,
            timeout_s=timeout_s,
            credentials=self._credentials.for_call(name, call.principal),
            # The gateway's per-call listener (Gateway.call(on_output=...)), if any.
            on_output=current_listener(),
            # A backend that loses the call mid-way may run it again (Ray hosts).
            idempotent=checked.spec.idempotent,
        )
        result = await self._backend.execute(request, self._profiles[name])
        answer = tool_result(call, result)
        if result.outputs and call.run_id and self._artifacts is not None:
            kept = await asyncio.to_thread(self._artifacts.keep, call.run_id, result.outputs)
            answer = answer.model_copy(
                update={"artifacts": kept.artifacts, "artifacts_dropped": kept.dropped}
            )
        return answer


def infrastructure_result(call: ToolCall, exc: InfrastructureError) -> ToolResult:
    """The model's view of a platform failure: not its fault, maybe worth another try."""
    return ToolResult(
        call_id=call.id,
        name=call.name,
        status=ToolStatus.INFRASTRUCTURE_ERROR,
        error=f"the sandbox could not run the tool: {exc}",
    )
