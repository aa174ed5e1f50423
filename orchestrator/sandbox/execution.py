"""What goes into a sandbox and what comes back out of it."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import Field

from orchestrator.errors import ConfigError
from orchestrator.sandbox.credentials import Credential
from orchestrator.sandbox.egress import EgressConnection
from orchestrator.sandbox.live import OutputChunk
from orchestrator.sandbox.workspace import Workspace
from orchestrator.strict import StrictModel

__all__ = ["ExecRequest", "ExecResult", "ExecStatus", "container_acquired", "on_acquired"]

on_acquired: ContextVar[Callable[[bool], None] | None] = ContextVar(
    "stockade_on_acquired", default=None
)
"""Set by whoever times a call's steps (the traced gateway, per attempt): called with
``from_pool`` once the call's container is in hand. Unset (tracing off): nothing is called."""


def container_acquired(from_pool: bool) -> None:
    """A backend's report that the call's container is in hand (taken warm from the pool or
    just made), splitting "sandbox acquire" from "execution" in traces; a backend that does
    not report it gets one execution span for both."""
    watch = on_acquired.get()
    if watch is not None:
        watch(from_pool)


@dataclass(frozen=True, kw_only=True)
class ExecRequest:
    """One command to run in one single-use container."""

    argv: tuple[str, ...]
    """Program and arguments, executed directly (no shell unless argv names one)."""
    stdin: bytes = b""
    """Bytes fed to the program's standard input."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for this call, on top of the profile's."""
    workspace: Workspace | None = None
    """The run's workspace, copied in before and taken back after the call."""
    timeout_s: float | None = None
    """Deadline for this call; may only be shorter than the profile's."""
    credentials: tuple[Credential, ...] = ()
    """Secrets the egress proxy adds to this call's requests to their hosts; they stay in
    the proxy and never enter the sandbox."""
    on_output: Callable[[OutputChunk], None] | None = field(default=None, compare=False, repr=False)
    """Called (never awaited) with the program's output as it comes, while the call runs;
    it must not block. None: no live output. A backend without live output ignores it."""
    idempotent: bool = False
    """Running the call twice does what running it once does (``@tool(idempotent=True)``):
    a backend may run it again after losing it mid-way, even with egress."""

    def __post_init__(self) -> None:
        if not self.argv:
            raise ConfigError("argv must name a program", field="argv")
        for index, arg in enumerate(self.argv):
            if "\0" in arg:
                raise ConfigError(f"argument {index} contains a NUL byte", field="argv")
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ConfigError(f"invalid environment entry {key!r}", field="env")
        # NaN too (no comparison holds for it): min(NaN, the profile's) became the
        # runner's deadline, and the runner died on it.
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ConfigError(f"must be positive, got {self.timeout_s}", field="timeout_s")


class ExecStatus(StrEnum):
    """How a sandboxed call ended."""

    OK = "ok"
    ERROR = "error"
    """The program exited non-zero or could not be started."""
    TIMEOUT = "timeout"
    OOM_KILLED = "oom_killed"
    OUTPUT_TRUNCATED = "output_truncated"
    """Exit 0, but stdout or stderr went past the profile's cap."""
    WORKSPACE_REJECTED = "workspace_rejected"
    """The program ran, but what it left in the workspace was not kept: it broke the quota,
    or the host could not write it; the run's workspace is as it was."""


class ExecResult(StrictModel):
    """The outcome of one sandboxed call, built host-side from hostile data."""

    status: ExecStatus
    """How the call ended."""
    exit_code: int | None
    """The program's exit code; None when it was killed by a signal or never ran."""
    stdout: str
    """Standard output, decoded as UTF-8 (invalid bytes replaced), capped."""
    stderr: str
    """Standard error, decoded as UTF-8 (invalid bytes replaced), capped."""
    truncated: bool
    """True when stdout or stderr was cut at the profile's cap."""
    stdout_truncated: bool = False
    """True when stdout itself was cut: a tool's result travels there, while its stderr
    carries diagnostics and the program output it passes on as it comes."""
    stdout_bytes: int
    """Bytes the program wrote to stdout in all, kept or not."""
    stderr_bytes: int
    """Bytes the program wrote to stderr in all, kept or not."""
    duration_s: float
    """Wall-clock time of the call as seen by the host, container hand-over included."""
    image_digest: str
    """Content digest (image ID) of the image the container ran."""
    profile: str
    """Name of the sandbox profile."""
    runtime: str
    """OCI runtime the container ran under."""
    container_id: str
    """The (now destroyed) container, for correlating with engine logs."""
    from_pool: bool
    """True when a warm container served the call, False for a fresh one."""
    host: str | None = None
    """The sandbox host that ran the call, by the operator's name for it
    (``sandbox.engine: ray``); None on the orchestrator's own engine."""
    message: str = ""
    """Why the call did not succeed, in words a model can read."""
    files_changed: tuple[str, ...] = ()
    """Workspace paths added, modified or deleted by the call."""
    files_rejected: tuple[str, ...] = ()
    """Workspace entries refused on the way out (links, devices, bad paths)."""
    outputs: tuple[tuple[str, bytes], ...] = Field(default=(), exclude=True, repr=False)
    """Files under the workspace's ``outputs/`` the call added or changed (path below it,
    bytes), for the artifact store; never serialised."""
    egress: tuple[EgressConnection, ...] = ()
    """Connections the call tried through the egress proxy, allowed and refused."""
