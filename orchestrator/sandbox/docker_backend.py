"""The Docker backend: one hardened single-use container per call, from a warm pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
import pydantic
import requests.exceptions

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.metrics import Metrics, PoolSize
from orchestrator.sandbox._archive import SafeWorkspace
from orchestrator.sandbox._container import POOL_IDLE_S, ContainerFactory, SandboxContainer
from orchestrator.sandbox._egress_gate import MOUNT_POINT, SOCKET_NAME, EgressGates
from orchestrator.sandbox._report import (
    died,
    effects_unknown,
    failed,
    read_reply,
    replied_applying,
    with_printed,
    workspace_follows,
)
from orchestrator.sandbox._wire import (
    EGRESS_SOCKET_ENV,
    MODE_EXEC,
    MODE_TOOL,
    TOOL_ENTRY_ARGV,
    AttachedStream,
    FrameTooLargeError,
    encode_request,
    frame,
)
from orchestrator.sandbox.backend import SandboxBackend
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus, container_acquired
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.labels import BACKEND_LABEL
from orchestrator.sandbox.live import LIVE_CAP_BYTES, LIVE_ENV, LiveDecoder, LiveFrameError
from orchestrator.sandbox.pool import WarmPool
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.reaper import reap
from orchestrator.sandbox.workspace import ArchiveLimitError, Outgoing

__all__ = ["DockerBackend"]

_log = logging.getLogger(__name__)

# Time the runner gets past the call's deadline to kill the program and
# report; after that the host destroys the container itself.
_REPORT_GRACE_S = 2.0
# After the reply, the end of the live stream (stderr, passed on by the engine
# apart from stdout) is awaited this long at most.
_LIVE_END_WAIT_S = 0.5
# A container of ours that no call or pool holds is removed by the janitor once
# it is this old: younger ones may be between the engine's create and our books.
_ORPHAN_GRACE_S = 60.0
# A finished call's container is removed, and the pool's replacement started,
# this long after the call returns: the caller's own work on the result (the
# gateway's durable outcome record) runs first, not beside the engine's kill,
# remove and create, which on a small machine tripled its time (see
# docs/benchmarks.md, "Where the gateway's time went").
_AFTER_CALL_S = 0.05


class _ProfilePool:
    def __init__(self, pool: WarmPool[SandboxContainer], image_id: str) -> None:
        self.pool = pool
        self.image_id = image_id


class DockerBackend(SandboxBackend):
    """Runs each call in a fresh container of the profile's pool, then destroys it."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        images: ImageBuilder | None = None,
        profiles: Iterable[SandboxProfile] = (),
        max_threads: int = 8,
        max_starting: int = 2,
        reap_on_start: bool = True,
        egress_gates: EgressGates | None = None,
        metrics: Metrics | None = None,
        janitor_interval_s: float = 30.0,
        orphan_grace_s: float = _ORPHAN_GRACE_S,
    ) -> None:
        """``profiles`` are warmed at start; others get a pool on first use.

        ``egress_gates`` serves the egress sockets of profiles that allow
        egress (its resolver and connector can be replaced, e.g. in tests).
        ``metrics`` records engine operations, executions, pools and reaping
        (default: nothing is recorded). Every ``janitor_interval_s`` the
        backend retries removals that failed (the engine was away) and
        removes containers of this process that nothing holds any more, so a
        long-lived orchestrator does not accumulate them (only those older
        than ``orphan_grace_s``, a younger one may still be on its way into
        a pool, and found unheld by two sweeps in a row).
        """
        self._client = client
        self._images = images or ImageBuilder(client)
        self._warm = list(profiles)
        self._metrics = metrics if metrics is not None else Metrics(enabled=False)
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="docker")
        # Labels this backend's containers, so it can sweep exactly its own.
        self._id = uuid.uuid4().hex
        # Closed with the backend: their upstream pool, and their directory.
        self._egress_gates = egress_gates or EgressGates(metrics=self._metrics.sandbox)
        self._factory = ContainerFactory(
            client,
            self._executor,
            self._egress_gates,
            metrics=self._metrics.sandbox,
            backend=self._id,
        )
        self._stop_watching = self._metrics.sandbox.watch_pools(self.pool_sizes)
        self._max_starting = max_starting
        self._reap_on_start = reap_on_start
        self._pools: dict[str, _ProfilePool] = {}
        self._pool_lock = asyncio.Lock()
        self._destroying: set[asyncio.Task[None]] = set()
        # Containers this process launched and has not removed; and those whose
        # removal failed, for the janitor.
        self._held: set[str] = set()
        self._unremoved: set[str] = set()
        self._janitor_interval_s = janitor_interval_s
        self._orphan_grace_s = orphan_grace_s
        self._suspects: set[str] = set()
        self._janitor: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Reap leftovers of dead orchestrators, then warm the configured pools."""
        if self._reap_on_start:
            loop = asyncio.get_running_loop()
            removed = await loop.run_in_executor(self._executor, reap, self._client)
            if removed:
                _log.info("reaped %d leftover container(s)", len(removed))
                self._metrics.sandbox.reaped.inc(len(removed))
        for profile in self._warm:
            await self._pool_for(profile)
        self._janitor = asyncio.create_task(self._janitor_loop())

    async def wait_ready(self, timeout_s: float) -> float | None:
        """Wait, at most ``timeout_s``, for the engine to answer; how long it did not.

        See :meth:`SandboxBackend.wait_ready`.
        """
        loop = asyncio.get_running_loop()
        began, delay, answered_at_once = loop.time(), 0.1, True
        while True:
            try:
                await loop.run_in_executor(self._executor, self._client.ping)
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                answered_at_once = False
            else:
                return 0.0 if answered_at_once else loop.time() - began
            remaining = began + timeout_s - loop.time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    @property
    def instance_id(self) -> str:
        """Labels (``org.stockade.backend``) every container this backend launches."""
        return self._id

    async def wait_warm(self, profile: SandboxProfile, *, timeout_s: float = 120.0) -> None:
        """Wait until the profile's pool is full (for benchmarks, tests, demos)."""
        entry = await self._pool_for(profile)
        await entry.pool.wait_ready(timeout_s=timeout_s)

    def pool_sizes(self) -> list[PoolSize]:
        """Every pool's containers: ready, starting, target (metrics and readiness read it)."""
        return [
            PoolSize(
                profile=entry.pool.name,
                ready=entry.pool.ready,
                starting=entry.pool.starting,
                target=entry.pool.size,
            )
            for entry in list(self._pools.values())
        ]

    async def _pool_for(self, profile: SandboxProfile) -> _ProfilePool:
        key = profile.model_dump_json()
        entry = self._pools.get(key)
        if entry is not None:
            return entry
        async with self._pool_lock:
            entry = self._pools.get(key)
            if entry is None:
                loop = asyncio.get_running_loop()
                tag = await loop.run_in_executor(
                    self._executor, self._images.resolve, profile.image
                )
                image_id = await loop.run_in_executor(self._executor, self._images.image_id, tag)

                async def launch(waited_for: bool) -> SandboxContainer:
                    created: list[str] = []

                    def hold(container_id: str) -> None:
                        created.append(container_id)
                        self._held.add(container_id)

                    try:
                        return await self._factory.launch(
                            profile, tag, image_id, on_created=hold, lean=waited_for
                        )
                    except BaseException:
                        # A start that failed (the engine went away mid-way) may
                        # leave its container: the janitor makes sure it goes.
                        for container_id in created:
                            self._held.discard(container_id)
                            self._unremoved.add(container_id)
                        raise

                pool = WarmPool(
                    name=profile.name,
                    launch=launch,
                    destroy=self._destroy_quietly,
                    size=profile.pool_size,
                    max_starting=self._max_starting,
                    max_idle_s=POOL_IDLE_S,
                )
                pool.start()
                entry = _ProfilePool(pool, image_id)
                self._pools[key] = entry
        return entry

    async def execute(self, request: ExecRequest, profile: SandboxProfile) -> ExecResult:
        """Run ``request`` in a single-use container; see :class:`SandboxBackend`."""
        if self._closed:
            raise InfrastructureError(
                "backend is closed", code=ErrorCode.CLOSED, op="sandbox.execute", retryable=False
            )
        started = time.monotonic()
        entry = await self._pool_for(profile)
        workspace_lock = request.workspace.lock if request.workspace else contextlib.nullcontext()
        async with workspace_lock:
            # Its replacement starts after this call, not on the cores it runs on.
            container, from_pool = await entry.pool.acquire(defer_refill=True)
            container_acquired(from_pool)
            sandbox = self._metrics.sandbox
            sandbox.pool_acquisitions.labels(profile.name).inc()
            if not from_pool:
                sandbox.pool_misses.labels(profile.name).inc()
            try:
                result = await self._call(container, request, from_pool, started)
            except InfrastructureError as exc:
                if exc.code in (ErrorCode.CONTAINER_DIED, ErrorCode.EFFECTS_UNKNOWN):
                    # The engine killed or removed it: the pool's other
                    # containers are from before that too, and as dead.
                    entry.pool.discard_ready()
                raise
            finally:
                self._after_call(container, entry.pool)
        self._count(result, profile, time.monotonic() - started)
        return result

    def _count(self, result: ExecResult, profile: SandboxProfile, seconds: float) -> None:
        sandbox = self._metrics.sandbox
        sandbox.operation("exec", profile.runtime, seconds)
        sandbox.executions.labels(profile.name, profile.runtime, result.status.value).inc()
        if result.status is ExecStatus.OOM_KILLED:
            sandbox.oom_kills.labels(profile.name).inc()
        elif result.status is ExecStatus.TIMEOUT:
            sandbox.timeouts.labels(profile.name).inc()

    def _after_call(self, container: SandboxContainer, pool: WarmPool[SandboxContainer]) -> None:
        """Remove the call's container and start its replacement, :data:`_AFTER_CALL_S` on."""

        async def settle() -> None:
            if not self._closed:  # closing: at once
                await asyncio.sleep(_AFTER_CALL_S)
            pool.refill()
            await self._destroy_quietly(container)

        task = asyncio.create_task(settle())
        self._destroying.add(task)
        task.add_done_callback(self._destroying.discard)

    async def _destroy_quietly(self, container: SandboxContainer) -> None:
        try:
            await self._factory.destroy(container)
        except InfrastructureError as exc:
            # The janitor tries again when the engine answers (and the reaper
            # of any later orchestrator would: its labels carry a deadline).
            _log.warning("could not remove container %s: %s", container.id[:12], exc)
            self._unremoved.add(container.id)
        finally:
            self._held.discard(container.id)

    async def _janitor_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._janitor_interval_s)
            try:
                await self.sweep()
            except InfrastructureError as exc:  # the engine is away: next round
                _log.info("janitor: %s", exc)

    async def sweep(self) -> int:
        """Remove what failed to be removed, and this backend's containers nothing holds.

        Runs every ``janitor_interval_s``; returns how many containers went.
        """
        removed = 0
        for container_id in list(self._unremoved):
            await self._factory.destroy_id(container_id)
            self._unremoved.discard(container_id)
            removed += 1
        loop = asyncio.get_running_loop()
        label = f"{BACKEND_LABEL}={self._id}"
        listed = await loop.run_in_executor(
            self._executor,
            lambda: self._client.api.containers(all=True, filters={"label": label}),
        )
        # Closed: nothing is on its way into a pool any more, so no grace.
        grace = 0.0 if self._closed else self._orphan_grace_s
        now = time.time()
        suspects, self._suspects = self._suspects, set()
        for info in listed:
            container_id = info["Id"]
            if container_id in self._held or now - float(info.get("Created", now)) < grace:
                continue
            if not self._closed and container_id not in suspects:
                # Unheld in one listing only: the engine may have made it a moment ago, its
                # launch not yet told (the listing ran on another thread). Gone if still
                # unheld at the next sweep.
                self._suspects.add(container_id)
                continue
            await self._factory.destroy_id(container_id)
            removed += 1
        if removed:
            self._metrics.sandbox.reaped.inc(removed)
        return removed

    async def _call(
        self, container: SandboxContainer, request: ExecRequest, from_pool: bool, started: float
    ) -> ExecResult:
        profile = container.profile
        timeout = min(request.timeout_s or profile.timeout_s, profile.timeout_s)
        workspace = request.workspace
        loop = asyncio.get_running_loop()
        base: dict[str, Any] = {
            "image_digest": container.image_id,
            "profile": profile.name,
            "runtime": profile.runtime,
            "container_id": container.id,
            "from_pool": from_pool,
        }
        limits = {"max_bytes": profile.workspace_bytes, "max_files": profile.workspace_max_files}
        sent: Outgoing | None = None
        if workspace is not None:
            try:
                sent = await loop.run_in_executor(None, lambda: workspace.outgoing(**limits))
            except ArchiveLimitError as exc:
                return failed(
                    base, started, ExecStatus.WORKSPACE_REJECTED, f"{exc}; the call did not run"
                )
        env = {**profile.env, **request.env}
        if container.gate:
            env[EGRESS_SOCKET_ENV] = f"{MOUNT_POINT}/{SOCKET_NAME}"
            # The deployment CA's files beside the socket, and the call's credentials,
            # which stay in the proxy: never in this environment or the container.
            env.update(container.gate.environment)
            container.gate.arm(request.credentials)
        # The SDK's tool entry point may be served by the image's warm tool host.
        tool = (
            len(request.argv) == len(TOOL_ENTRY_ARGV) + 1 and request.argv[:-1] == TOOL_ENTRY_ARGV
        )
        live = self._live(request, env, tool=tool)
        header = encode_request(
            argv=request.argv,
            env=env,
            cwd="/workspace",
            timeout_s=timeout,
            output_limit=profile.output_limit_bytes,
            stdin_limit=len(request.stdin),
            workspace_limit=profile.workspace_bytes,
            return_workspace=workspace is not None,
            mode=MODE_TOOL if tool else MODE_EXEC,
        )
        stream = container.stream
        stream.on_stderr = live.feed if live is not None else None
        returned: SafeWorkspace | None = None
        rejection: str | None = None
        begun = False
        try:
            async with asyncio.timeout(timeout + _REPORT_GRACE_S):
                await stream.write_framed([frame(header), frame(request.stdin)])
                await self._send_workspace(stream, sent)
                begun = True  # the runner has all it needs: the program may be running
                report, stdout, stderr = await read_reply(stream, profile.output_limit_bytes)
                if workspace is not None and sent is not None and workspace_follows(report, True):
                    try:
                        returned = await workspace.reader(sent, **limits).read(stream)
                    except ArchiveLimitError as exc:
                        rejection = str(exc)
                if live is not None:  # its last frames, for the listener
                    await stream.drain(lambda: live.ended, _LIVE_END_WAIT_S)
        except TimeoutError:
            # Destroying the container is how a call is killed: every process
            # in it dies, whatever it does with signals.
            await self._factory.destroy(container)
            return self._killed(base, started, timeout, live)
        except (asyncio.IncompleteReadError, ConnectionError):
            try:
                return await self._died(container, base, started, live)
            except InfrastructureError as exc:
                # The engine killed or removed the container mid-call. The gateway retries
                # that (CONTAINER_DIED), which is safe unless the program may have begun,
                # could reach the network, and its tool may not run twice.
                repeatable = not begun or profile.egress is None or request.idempotent
                if exc.code is not ErrorCode.CONTAINER_DIED or repeatable:
                    raise
                raise effects_unknown(
                    "the call's container was killed or removed by the engine before it replied"
                ) from None
        except (FrameTooLargeError, pydantic.ValidationError, LiveFrameError) as exc:
            return failed(
                base,
                started,
                ExecStatus.ERROR,
                f"the sandbox sent a malformed reply and was destroyed: {exc}",
            )

        # The runner exits after its reply, closing the tool's proxy
        # connections; wait for them to report before the result is final.
        egress = await container.gate.settle() if container.gate else []
        return await replied_applying(
            report,
            stdout,
            stderr,
            rejection=rejection,
            workspace=workspace,
            sent=sent,
            returned=returned,
            duration_s=time.monotonic() - started,
            egress=tuple(egress),
            **base,
        )

    @staticmethod
    async def _send_workspace(stream: AttachedStream, sent: Outgoing | None) -> None:
        """The workspace's entries; each batch is read (in a thread) while the last is sent."""
        if sent is None:
            await stream.write_framed([frame(b"")])
            return
        loop = asyncio.get_running_loop()
        batches = sent.batches()
        reading = loop.run_in_executor(None, next, batches, None)
        while (batch := await reading) is not None:
            reading = loop.run_in_executor(None, next, batches, None)
            await stream.write_framed(batch)

    async def _died(
        self,
        container: SandboxContainer,
        base: dict[str, Any],
        started: float,
        live: LiveDecoder | None,
    ) -> ExecResult:
        state = await self._factory.state(container.id)
        return died(state, container.profile, base, started, live)

    @staticmethod
    def _live(request: ExecRequest, env: dict[str, str], *, tool: bool) -> LiveDecoder | None:
        """Ask the runner for live output (``env`` is the request's), if worth it.

        With a listener, for it; for a tool request also without one: its
        program's output (which the SDK passes on through stderr) is then what
        the host keeps should the whole sandbox die (gVisor's OOM kill) or
        miss its deadline. Live frames come on the container's stderr, a
        stream of their own (see ``docs/runner-protocol.md``).
        """
        if request.on_output is None and not tool:
            return None
        env[LIVE_ENV] = str(LIVE_CAP_BYTES)
        return LiveDecoder(request.on_output)

    @staticmethod
    def _killed(
        base: dict[str, Any], started: float, timeout: float, live: LiveDecoder | None
    ) -> ExecResult:
        """The runner did not report by the deadline: what streamed live is what it printed."""
        ended = failed(
            base,
            started,
            ExecStatus.TIMEOUT,
            f"the call ran past its deadline of {timeout:g} s and was killed",
        )
        return with_printed(ended, live)

    async def close(self) -> None:
        """Destroy the pools and wait for every pending removal; closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        self._stop_watching()
        await asyncio.gather(*(entry.pool.close() for entry in self._pools.values()))
        if self._destroying:
            await asyncio.gather(*self._destroying, return_exceptions=True)
        try:  # one last sweep: failed removals, and starts cut short by an outage
            await self.sweep()
        except InfrastructureError as exc:
            _log.warning("containers of this backend may remain (`stockade cleanup`): %s", exc)
        # Last: no container holds a gate any more.
        await self._egress_gates.close()
        self._executor.shutdown(wait=True)
