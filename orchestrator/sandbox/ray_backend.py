"""The Ray backend: each call runs on one of the cluster's sandbox hosts (issue 14).

Steps of a call, top to bottom in :meth:`RayBackend.execute`:

1. the workspace is packed here as the runner-protocol frames the Docker
   backend would write (header, stdin, archive), one ``bytes`` value — Ray
   moves it through its object store when it is large;
2. the call goes to the least-loaded registered host, a host with a warm
   container for the profile first (:mod:`orchestrator.sandbox.ray_host`);
3. the host relays the frames into a container and returns raw reply bytes
   and a JSON record; every check of that hostile reply runs here, with the
   Docker backend's own readers, and the workspace is replaced only now;
4. a host lost mid-call (actor, node or engine gone) is an
   :class:`~orchestrator.errors.InfrastructureError` (``host_lost``), never a
   tool result. Profiles reaching this backend have no egress, so their
   workspace changes were discarded with the lost call: it is retried on
   another host. Cancelling the caller cancels the host's task, which
   removes the container.

Hosts are discovered from the cluster's nodes (``stockade_host:<name>``
resources) at start and every ``refresh_s``, so a host that joins later is
used without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pydantic

from orchestrator.errors import ConfigError, ErrorCode, InfrastructureError
from orchestrator.metrics import HostSample, Metrics
from orchestrator.sandbox._report import RunnerReport, replied
from orchestrator.sandbox._wire import (
    MODE_EXEC,
    MODE_TOOL,
    TOOL_ENTRY_ARGV,
    FrameTooLargeError,
    encode_request,
    frame,
)
from orchestrator.sandbox.backend import SandboxBackend
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus
from orchestrator.sandbox.hosts import HostState, connect, host_actor, named_nodes, state_of
from orchestrator.sandbox.profile import DEFAULT_IMAGE, TOOLS_IMAGE, SandboxProfile
from orchestrator.sandbox.ray_host import HOST_RESOURCE
from orchestrator.sandbox.workspace import ArchiveLimitError, Outgoing, WorkspaceChanges

__all__ = ["HostInfo", "RayBackend"]

_log = logging.getLogger(__name__)

_HEADER_LIMIT = 64 * 1024
_SIGKILL_EXIT = 128 + 9
# How long past a call's own deadline the host may stay silent before the
# call counts as lost (Ray reports a dead node itself within seconds).
_LOST_AFTER_S = 30.0
_OP = "sandbox.execute"


class _Reply:
    """The host's raw reply bytes as a frame source for the Docker backend's readers."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def _take(self, size: int) -> bytes:
        if self._at + size > len(self._data):
            raise asyncio.IncompleteReadError(bytes(self._data[self._at :]), size)
        chunk = bytes(self._data[self._at : self._at + size])
        self._at += size
        return chunk

    async def read_frame(self, limit: int) -> bytes:
        size = int.from_bytes(self._take(4), "big")
        if size > limit:
            raise FrameTooLargeError(f"frame of {size} bytes announced, limit {limit}")
        return self._take(size)


@dataclass
class HostInfo:
    """What the backend knows of one host (from its last record)."""

    name: str
    actor: Any
    record: dict[str, Any] = field(default_factory=dict)
    in_flight: int = 0
    """This orchestrator's calls on the host now."""
    served: int = 0
    """This orchestrator's calls the host answered."""
    lost: bool = False
    last_error: str = ""

    @property
    def state(self) -> HostState:
        """up, draining (``stockade hosts drain``: placement skips it) or lost."""
        return "lost" if self.lost else state_of(self.record)


class RayBackend(SandboxBackend):
    """Runs each call on a sandbox host of a Ray cluster; see the module docstring."""

    def __init__(
        self,
        *,
        address: str,
        namespace: str = "stockade",
        profiles: Iterable[SandboxProfile] = (),
        images: Iterable[str] = (DEFAULT_IMAGE, TOOLS_IMAGE),
        refresh_s: float = 2.0,
        lease_s: float = 30.0,
        metrics: Metrics | None = None,
    ) -> None:
        """``address`` is the cluster's GCS (``host:port``), ``namespace`` the Ray namespace
        the host actors live in; ``images`` must exist on every host, ``profiles`` are warmed.

        Every ``refresh_s`` the backend looks for hosts and renews its lease on
        each; a host removes the pools and containers of an orchestrator whose
        lease (``lease_s``) ran out (it was killed, or lost the cluster). ``metrics``
        gets the hosts' series (``host`` label: the operator's host names)."""
        self._address = address
        self._namespace = namespace
        # Egress is not carried to hosts yet: such profiles are refused per call.
        self._warm = [profile for profile in profiles if profile.egress is None]
        self._images = list(images)
        self._refresh_s = refresh_s
        self._lease_s = max(lease_s, 3 * refresh_s)
        self._id = uuid.uuid4().hex
        self._hosts: dict[str, HostInfo] = {}
        self._refused: dict[str, str] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._closed = False
        # What Ray adds to each call (the orchestrator's wall time of the host's task
        # minus the host's own time): the last calls' values, for benchmarks.
        self._overheads: deque[float] = deque(maxlen=10_000)
        self._metrics = metrics if metrics is not None else Metrics(enabled=False)
        self._metrics.hosts.watch(self._host_samples)

    @property
    def instance_id(self) -> str:
        """This orchestrator's id on the hosts (labels its containers there)."""
        return self._id

    @property
    def dispatch_overheads(self) -> list[float]:
        """Seconds Ray added to each of the last calls (round trip minus the host's time)."""
        return list(self._overheads)

    @property
    def hosts(self) -> dict[str, HostInfo]:
        """Registered hosts by name (lost ones included, flagged)."""
        return dict(self._hosts)

    @property
    def refused(self) -> dict[str, str]:
        """Hosts that refused to register, and why (with the command that fixes it)."""
        return dict(self._refused)

    async def start(self) -> None:
        """Join the cluster, register its hosts and warm the configured profiles there."""
        await asyncio.to_thread(connect, self._address, self._namespace)
        await self.refresh()
        if not self._hosts:
            raise InfrastructureError(
                f"no sandbox host registered in the Ray cluster at {self._address} "
                f"(refused: {self._refused or 'none'}); nodes need the {HOST_RESOURCE} resource",
                code=ErrorCode.ENGINE_UNAVAILABLE,
                op="sandbox.start",
                retryable=True,
            )
        # Renewing the leases from now on: warming may take longer than one.
        self._refresher = asyncio.create_task(self._refresh_loop())
        for profile in self._warm:
            for host in list(self._hosts.values()):
                raw = await self._remote(
                    host, host.actor.warm.remote(self._id, profile.model_dump_json(), 120.0)
                )
                if raw is not None:
                    host.record = json.loads(raw)

    async def _remote(self, host: HostInfo, ref: Any, timeout_s: float = 60.0) -> Any:
        import ray  # noqa: PLC0415

        try:
            return await asyncio.wait_for(ref, timeout_s)
        except (ray.exceptions.RayActorError, TimeoutError) as exc:
            host.lost, host.last_error = True, f"{type(exc).__name__}: {exc}"[:500]
            return None

    async def refresh(self) -> None:
        """Find the cluster's hosts: register new ones, mark lost ones, re-admit returned ones."""
        import ray  # noqa: PLC0415

        nodes = named_nodes(await asyncio.to_thread(ray.nodes))
        alive = {name for name, node in nodes.items() if node.alive}
        for name, known in self._hosts.items():
            if name not in alive:
                known.lost = True
        for name in alive:
            host = self._hosts.get(name)
            if host is not None and not host.lost:
                continue
            actor = host_actor(name, self._namespace)
            info = HostInfo(name=name, actor=actor)
            raw = await self._remote(
                info, actor.register.remote(self._images, self._id, self._lease_s), 120.0
            )
            if raw is None:
                continue
            record = json.loads(raw)
            if record["refused"]:
                if self._refused.get(name) != record["refused"]:  # once, not every refresh
                    _log.warning("%s", record["refused"])
                self._refused[name] = record["refused"]
                continue
            self._refused.pop(name, None)
            info.record = record
            if host is not None:
                info.served = host.served
            if host is not None or self._refresher is not None:
                # A host that came back (or joined later) gets this orchestrator's pools started.
                for profile in self._warm:
                    raw = await self._remote(
                        info, actor.warm.remote(self._id, profile.model_dump_json(), 0.0)
                    )
                    if raw is not None:
                        info.record = json.loads(raw)
            self._hosts[name] = info

    async def _refresh_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
                for host in list(self._hosts.values()):
                    if not host.lost:
                        raw = await self._remote(host, host.actor.describe.remote(self._id), 10.0)
                        if raw is not None:
                            host.record = json.loads(raw)
            except Exception as exc:
                _log.info("refreshing hosts: %s", exc)

    def _dispatched(self, host: HostInfo, overhead_s: float) -> None:
        """What Ray added to one call on ``host`` (round trip minus the host's own time)."""
        self._overheads.append(overhead_s)
        self._metrics.hosts.dispatch.labels(host.name).observe(max(overhead_s, 0.0))

    def _host_samples(self) -> list[HostSample]:
        """The hosts' series at scrape time (refused hosts are down, with no pools)."""
        samples = [
            HostSample(
                host=host.name,
                up=not host.lost,
                draining=host.state == "draining",
                calls=host.served,
                in_flight=host.in_flight,
                pools={
                    json.loads(key)["name"]: ready
                    for key, ready in host.record.get("ready", {}).get(self._id, {}).items()
                },
            )
            for host in self._hosts.values()
        ]
        samples += [HostSample(host=name, up=False) for name in self._refused]
        return samples

    def _pick(self, profile_json: str, avoid: set[str]) -> HostInfo:
        # A draining host (its record says so, read every refresh) gets nothing new.
        candidates = [
            host for host in self._hosts.values() if host.state == "up" and host.name not in avoid
        ]
        if not candidates:
            draining = sorted(h.name for h in self._hosts.values() if h.state == "draining")
            raise InfrastructureError(
                "no sandbox host is available"
                + (f" (lost during this call: {', '.join(sorted(avoid))})" if avoid else "")
                + (f" (draining: {', '.join(draining)})" if draining else ""),
                code=ErrorCode.HOST_LOST,
                op=_OP,
                retryable=True,
            )

        def load(host: HostInfo) -> tuple[bool, int, int]:
            warm = bool(host.record.get("ready", {}).get(self._id, {}).get(profile_json))
            return (not warm, host.in_flight, host.served)

        return min(candidates, key=load)

    async def execute(self, request: ExecRequest, profile: SandboxProfile) -> ExecResult:
        """Run ``request`` on a host; see :class:`SandboxBackend` and the module docstring."""
        if self._closed:
            raise InfrastructureError(
                "backend is closed", code=ErrorCode.CLOSED, op=_OP, retryable=False
            )
        if profile.egress is not None:
            raise ConfigError(
                f"profile {profile.name!r} allows egress, which the ray engine does not carry yet",
                field="sandbox.engine",
            )
        started = time.monotonic()
        timeout = min(request.timeout_s or profile.timeout_s, profile.timeout_s)
        workspace = request.workspace
        limits = {"max_bytes": profile.workspace_bytes, "max_files": profile.workspace_max_files}
        lock = workspace.lock if workspace else contextlib.nullcontext()
        async with lock:
            sent: Outgoing | None = None
            if workspace is not None:
                try:
                    sent = await asyncio.to_thread(lambda: workspace.outgoing(**limits))
                except ArchiveLimitError as exc:
                    return _failed(
                        profile,
                        {},
                        started,
                        ExecStatus.WORKSPACE_REJECTED,
                        f"{exc}; the call did not run",
                    )
            if sent is None:  # a few hundred bytes: a thread hop would cost more
                payload = self._payload(request, profile, timeout, sent)
            else:  # reads the workspace's files
                payload = await asyncio.to_thread(self._payload, request, profile, timeout, sent)
            record, reply = await self._dispatch(profile, payload, timeout, sent is not None)
            return await self._result(
                record=record,
                reply=reply,
                request=request,
                profile=profile,
                sent=sent,
                started=started,
            )

    @staticmethod
    def _payload(
        request: ExecRequest, profile: SandboxProfile, timeout: float, sent: Outgoing | None
    ) -> bytes:
        tool = (
            len(request.argv) == len(TOOL_ENTRY_ARGV) + 1 and request.argv[:-1] == TOOL_ENTRY_ARGV
        )
        header = encode_request(
            argv=request.argv,
            env={**profile.env, **request.env},
            cwd="/workspace",
            timeout_s=timeout,
            output_limit=profile.output_limit_bytes,
            stdin_limit=len(request.stdin),
            workspace_limit=profile.workspace_bytes,
            return_workspace=sent is not None,
            mode=MODE_TOOL if tool else MODE_EXEC,
        )
        parts = [frame(header), frame(request.stdin)]
        if sent is None:
            parts.append(frame(b""))
        else:
            for batch in sent.batches():
                parts.extend(batch)
        return b"".join(parts)

    async def _dispatch(
        self, profile: SandboxProfile, payload: bytes, deadline_s: float, workspace: bool
    ) -> tuple[dict[str, Any], bytes]:
        import ray  # noqa: PLC0415

        profile_json = profile.model_dump_json()
        lost: set[str] = set()
        while True:
            host = self._pick(profile_json, lost)
            host.in_flight += 1
            ref = host.actor.execute.remote(self._id, profile_json, payload, deadline_s, workspace)
            sent_at = time.perf_counter()
            try:
                raw, reply = await asyncio.wait_for(ref, deadline_s + _LOST_AFTER_S)
            except asyncio.CancelledError:
                # The host's task is cancelled too: its finally removes the container.
                ray.cancel(ref)
                raise
            except ray.exceptions.RayTaskError as exc:
                # The host's own code failed (not the tool, not a lost node).
                raise InfrastructureError(
                    f"host {host.name} failed: {str(exc.cause)[:1000]}",
                    code=ErrorCode.ENGINE_ERROR,
                    op=_OP,
                    retryable=False,
                ) from None
            except (ray.exceptions.RayActorError, TimeoutError) as exc:
                ray.cancel(ref)
                host.lost, host.last_error = True, f"{type(exc).__name__}"
                lost.add(host.name)
                _log.warning("host %s lost during a call: %s", host.name, host.last_error)
                # No egress (checked above): the lost call's workspace changes were
                # never applied, so running it again on another host is safe.
                continue
            finally:
                host.in_flight -= 1
            host.served += 1
            record: dict[str, Any] = json.loads(raw)
            self._dispatched(host, time.perf_counter() - sent_at - float(record.get("host_s", 0.0)))
            if record.get("ended") == "engine":
                # The host's engine failed the call (down, image missing): its own code.
                host.last_error = str(record.get("message", ""))
                try:
                    code = ErrorCode(str(record.get("code")))
                except ValueError:
                    code = ErrorCode.ENGINE_ERROR
                raise InfrastructureError(
                    f"host {host.name}: {host.last_error}",
                    code=code,
                    op=_OP,
                    retryable=bool(record.get("retryable", False)),
                )
            return record, reply

    async def _result(
        self,
        *,
        record: dict[str, Any],
        reply: bytes,
        request: ExecRequest,
        profile: SandboxProfile,
        sent: Outgoing | None,
        started: float,
    ) -> ExecResult:
        timeout = min(request.timeout_s or profile.timeout_s, profile.timeout_s)
        base: dict[str, Any] = {
            "image_digest": str(record.get("image_digest", "")),
            "container_id": str(record.get("container_id", "")),
            "from_pool": bool(record.get("from_pool", False)),
        }
        ended = record.get("ended")
        if ended == "timeout":
            return _failed(
                profile,
                base,
                started,
                ExecStatus.TIMEOUT,
                f"the call ran past its deadline of {timeout:g} s and was killed",
            )
        if ended == "died":
            return _died(profile, base, started, record.get("state") or {})
        workspace = request.workspace
        limits = {"max_bytes": profile.workspace_bytes, "max_files": profile.workspace_max_files}
        source = _Reply(reply)
        rejection: str | None = None
        returned = None
        try:
            report_raw = await source.read_frame(_HEADER_LIMIT)
            stdout = await source.read_frame(profile.output_limit_bytes)
            stderr = await source.read_frame(profile.output_limit_bytes)
            report = RunnerReport.model_validate_json(report_raw)
            comes_back = not report.timed_out and report.workspace_error is None
            if sent is not None and workspace is not None and comes_back:
                try:
                    returned = await workspace.reader(sent, **limits).read(source)
                except ArchiveLimitError as exc:
                    rejection = str(exc)
        except asyncio.IncompleteReadError:
            return _died(profile, base, started, record.get("state") or {})
        except (FrameTooLargeError, pydantic.ValidationError) as exc:
            return _failed(
                profile,
                base,
                started,
                ExecStatus.ERROR,
                f"the sandbox sent a malformed reply and was destroyed: {exc}",
            )
        changes = WorkspaceChanges(changed=(), rejected=())
        if (
            rejection is None
            and returned is not None
            and workspace is not None
            and sent is not None
        ):
            changes = await asyncio.to_thread(workspace.apply, returned, sent)
        return replied(
            report,
            stdout,
            stderr,
            rejection=rejection,
            changes=changes,
            duration_s=time.monotonic() - started,
            profile=profile.name,
            runtime=profile.runtime,
            **base,
        )

    async def close(self) -> None:
        """Remove this orchestrator's pools and containers on every host (not the hosts)."""
        if self._closed:
            return
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for host in self._hosts.values():
            if not host.lost:
                await self._remote(host, host.actor.release.remote(self._id), 60.0)


def _died(
    profile: SandboxProfile, base: dict[str, Any], started: float, state: dict[str, Any]
) -> ExecResult:
    """The Docker backend's reading of a container that ended before replying."""
    killed = state.get("ExitCode") == _SIGKILL_EXIT and not state.get("OOMKilled")
    if not state or (killed and profile.runtime == "runc"):
        raise InfrastructureError(
            "the container was killed or removed by the engine before it replied",
            code=ErrorCode.CONTAINER_DIED,
            op=_OP,
            retryable=True,
        )
    if state.get("OOMKilled") or killed:
        return _failed(
            profile,
            base,
            started,
            ExecStatus.OOM_KILLED,
            f"the sandbox ran out of memory and was killed (limit {profile.memory_mb} MiB)",
        )
    return _failed(
        profile,
        base,
        started,
        ExecStatus.ERROR,
        f"the sandbox died before replying (exit code {state.get('ExitCode', 'unknown')})",
    )


def _failed(
    profile: SandboxProfile,
    base: dict[str, Any],
    started: float,
    status: ExecStatus,
    message: str,
) -> ExecResult:
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
        image_digest=str(base.get("image_digest", "")),
        container_id=str(base.get("container_id", "")),
        from_pool=bool(base.get("from_pool", False)),
        profile=profile.name,
        runtime=profile.runtime,
    )
