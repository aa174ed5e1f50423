"""Turning the runner's (hostile) report, or its absence, into an :class:`ExecResult`."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import Field

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.sandbox.execution import ExecResult, ExecStatus
from orchestrator.sandbox.workspace import WorkspaceChanges
from orchestrator.strict import StrictModel

if TYPE_CHECKING:
    from orchestrator.sandbox._archive import SafeWorkspace
    from orchestrator.sandbox.live import LiveDecoder
    from orchestrator.sandbox.profile import SandboxProfile
    from orchestrator.sandbox.workspace import Outgoing, Workspace

__all__ = [
    "HEADER_LIMIT",
    "FrameSource",
    "RunnerReport",
    "died",
    "effects_unknown",
    "failed",
    "head_and_tail",
    "read_reply",
    "replied",
    "replied_applying",
    "status_of",
    "with_printed",
    "workspace_follows",
]

_log = logging.getLogger(__name__)

HEADER_LIMIT = 64 * 1024
"""Largest report frame (JSON) a runner may send."""

_SIGKILL_EXIT = 128 + 9


class FrameSource(Protocol):
    """Where a runner's reply frames are read from: a container's stream, a host's bytes."""

    async def read_frame(self, limit: int) -> bytes:
        """The next frame; :class:`~orchestrator.sandbox._wire.FrameTooLargeError` past
        ``limit``, :class:`asyncio.IncompleteReadError` when the source ends early."""
        ...


class RunnerReport(StrictModel):
    """What the runner says happened. Validated strictly; it may be forged by the tool."""

    exit_code: int | None = None
    """Exit code, None when killed by a signal."""
    signal: int | None = Field(default=None, ge=1, le=128)
    """Signal that ended the program."""
    timed_out: bool = False
    """The runner killed the program at its deadline."""
    oom_kills: int = Field(default=0, ge=0)
    """OOM kills counted in the container's memory cgroup during the call."""
    duration_s: float = Field(default=0.0, ge=0)
    """Program run time measured inside."""
    stdout_total: int = Field(default=0, ge=0)
    """Bytes written to stdout in all."""
    stderr_total: int = Field(default=0, ge=0)
    """Bytes written to stderr in all."""
    workspace_error: str | None = Field(default=None, max_length=1000)
    """Why the workspace could not be returned."""
    spawn_error: str | None = Field(default=None, max_length=1000)
    """Why the program could not be started."""
    stdout_cut: int | None = Field(default=None, ge=0)
    """After a timeout, where in the stdout frame the head ends and the tail begins."""
    stderr_cut: int | None = Field(default=None, ge=0)
    """The same for stderr."""


async def read_reply(source: FrameSource, output_limit: int) -> tuple[RunnerReport, bytes, bytes]:
    """The runner's report (validated as hostile), then the program's stdout and stderr."""
    report_raw = await source.read_frame(HEADER_LIMIT)
    stdout = await source.read_frame(output_limit)
    stderr = await source.read_frame(output_limit)
    return RunnerReport.model_validate_json(report_raw), stdout, stderr


def workspace_follows(report: RunnerReport, asked: bool) -> bool:
    """Whether the runner sends the workspace after ``report`` (``asked``: the request did).

    After a timeout, or when the runner could not list it, it does not: the old one stays.
    """
    return asked and not report.timed_out and report.workspace_error is None


def head_and_tail(data: bytes, total: int, cut: int | None) -> str:
    """A stream the runner cut at ``cut`` (head, then tail) as text saying what is omitted."""
    if cut is None or cut > len(data) or total <= len(data):
        return data.decode("utf-8", errors="replace")
    omitted = total - len(data)
    return (
        data[:cut].decode("utf-8", errors="replace")
        + f"\n[... {omitted} bytes omitted ...]\n"
        + data[cut:].decode("utf-8", errors="replace")
    )


def status_of(  # noqa: PLR0911 - one return per status, most severe first
    report: RunnerReport, *, truncated: bool
) -> tuple[ExecStatus, str]:
    """Status and a model-readable message, most severe first."""
    if report.timed_out:
        return ExecStatus.TIMEOUT, "the call ran past its deadline and was killed"
    if report.oom_kills and report.exit_code != 0:
        return ExecStatus.OOM_KILLED, "the program ran out of memory and was killed"
    if report.spawn_error:
        return ExecStatus.ERROR, f"the program could not be started: {report.spawn_error}"
    if report.workspace_error:
        return ExecStatus.WORKSPACE_REJECTED, f"{report.workspace_error}; workspace left unchanged"
    if report.exit_code != 0:
        how = (
            f"killed by signal {report.signal}"
            if report.exit_code is None
            else f"exited with code {report.exit_code}"
        )
        return ExecStatus.ERROR, f"the program {how}"
    if truncated:
        return ExecStatus.OUTPUT_TRUNCATED, "output exceeded the cap and was truncated"
    return ExecStatus.OK, ""


def replied(
    report: RunnerReport,
    stdout: bytes,
    stderr: bytes,
    *,
    rejection: str | None,
    changes: WorkspaceChanges,
    **fields: Any,
) -> ExecResult:
    """The result of a call whose runner replied, whichever backend carried the reply.

    ``rejection`` says why the returned workspace was refused (then ``changes`` is
    empty); ``fields`` are the backend's own (container, image, profile, duration…).
    """
    stdout_truncated = report.stdout_total > len(stdout)
    truncated = stdout_truncated or report.stderr_total > len(stderr)
    status, message = status_of(report, truncated=truncated)
    if rejection is not None:
        status, message = ExecStatus.WORKSPACE_REJECTED, f"{rejection}; workspace left unchanged"
    return ExecResult(
        status=status,
        exit_code=report.exit_code,
        stdout=head_and_tail(stdout, report.stdout_total, report.stdout_cut),
        stderr=head_and_tail(stderr, report.stderr_total, report.stderr_cut),
        truncated=truncated,
        stdout_truncated=stdout_truncated,
        stdout_bytes=report.stdout_total,
        stderr_bytes=report.stderr_total,
        message=message,
        files_changed=changes.changed,
        files_rejected=changes.rejected,
        outputs=changes.outputs,
        **fields,
    )


async def replied_applying(
    report: RunnerReport,
    stdout: bytes,
    stderr: bytes,
    *,
    rejection: str | None,
    workspace: Workspace | None,
    sent: Outgoing | None,
    returned: SafeWorkspace | None,
    **fields: Any,
) -> ExecResult:
    """:func:`replied`, once the workspace the runner returned (when one came back and
    was not rejected) is written into the run's, in a thread; if the host cannot write it,
    the call's workspace is rejected (the run's stays as it was, or, when the failure came
    after the changes were committed, the run's next call writes the rest first)."""
    changes = WorkspaceChanges(changed=(), rejected=())
    if rejection is None and returned is not None and workspace is not None and sent is not None:
        try:
            changes = await asyncio.to_thread(workspace.apply, returned, sent)
        except OSError as exc:
            # The host's disk (full, failing), not the tool: the operator gets the
            # path, the caller the cause and what the tool printed.
            _log.warning("could not save the workspace of run %s: %s", workspace.run_id, exc)
            cause = exc.strerror or type(exc).__name__
            rejection = f"the host could not save the workspace the call left ({cause})"
    return replied(report, stdout, stderr, rejection=rejection, changes=changes, **fields)


def with_printed(ended: ExecResult, live: LiveDecoder | None) -> ExecResult:
    """``ended`` with what streamed live as its output (head and tail), if anything did.

    For a call ended without a reply (a deadline, an OOM kill, a lost host): what
    it printed is all there is to show, whichever backend ran it.
    """
    if live is None or not live.total:
        return ended
    printed, cut = live.printed()
    return ended.model_copy(
        update={"stdout": printed, "truncated": cut, "stdout_bytes": live.total}
    )


def failed(fields: dict[str, Any], started: float, status: ExecStatus, message: str) -> ExecResult:
    """A call that ended without the runner's report: no exit code, no output (yet).

    ``fields`` name its sandbox (image, profile, runtime, container, pool, host).
    """
    return ExecResult(
        status=status,
        exit_code=None,
        stdout="",
        stderr="",
        truncated=False,
        stdout_bytes=0,
        stderr_bytes=0,
        duration_s=time.monotonic() - started,
        message=message,
        **fields,
    )


def effects_unknown(happened: str) -> InfrastructureError:
    """A call that may have run (``happened`` says what cut it short) and may not run again:
    its sandbox could reach the network and its tool is not idempotent (not retryable)."""
    return InfrastructureError(
        f"{happened}; its effects are unknown: it may have done all, part or none of its work "
        "(its sandbox could reach the network) and it was not run again. Check its effects "
        "before repeating it",
        code=ErrorCode.EFFECTS_UNKNOWN,
        op="sandbox.execute",
        retryable=False,
    )


def died(
    state: dict[str, Any],
    profile: SandboxProfile,
    fields: dict[str, Any],
    started: float,
    live: LiveDecoder | None,
) -> ExecResult:
    """A container that ended before its runner replied, read from the engine's ``state`` of it.

    Whichever backend ran it (on a sandbox host, ``state`` comes with the
    host's record). Raises a retryable ``CONTAINER_DIED`` error when the
    engine did it, not the tool: the container is gone or the engine did not
    answer (no state), or, under runc, it was SIGKILLed by anything but the
    kernel's OOM killer (which the engine flags).
    """
    killed = state.get("ExitCode") == _SIGKILL_EXIT and not state.get("OOMKilled")
    if not state or (killed and profile.runtime == "runc"):
        raise InfrastructureError(
            "the container was killed or removed by the engine before it replied",
            code=ErrorCode.CONTAINER_DIED,
            op="sandbox.execute",
            retryable=True,
        )
    # Under gVisor the host kills the whole sandbox on OOM without the
    # engine flagging it: a SIGKILL (137) there is the memory limit.
    if state.get("OOMKilled") or killed:
        limit = f"limit {profile.memory_mb} MiB"
        return with_printed(
            failed(
                fields,
                started,
                ExecStatus.OOM_KILLED,
                f"the sandbox ran out of memory and was killed ({limit})",
            ),
            live,
        )
    return failed(
        fields,
        started,
        ExecStatus.ERROR,
        f"the sandbox died before replying (exit code {state.get('ExitCode', 'unknown')})",
    )
