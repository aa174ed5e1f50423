"""Turning the runner's (hostile) report into an :class:`ExecResult`."""

from __future__ import annotations

from pydantic import Field

from orchestrator.sandbox.execution import ExecStatus
from orchestrator.strict import StrictModel

__all__ = ["RunnerReport", "head_and_tail", "status_of"]


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
