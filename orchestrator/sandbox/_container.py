"""Creating, attaching to and destroying one hardened sandbox container."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import RUN_CREATE_KWARGS, RUN_HOST_CONFIG_KWARGS

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.metrics import SandboxMetrics
from orchestrator.sandbox._egress_gate import MOUNT_POINT, EgressGate, EgressGates
from orchestrator.sandbox._wire import READY, AttachedStream
from orchestrator.sandbox.engine import engine_error
from orchestrator.sandbox.labels import container_labels
from orchestrator.sandbox.profile import SandboxProfile

__all__ = ["ContainerFactory", "SandboxContainer", "container_options"]

R = TypeVar("R")

_RUNNER_READY_TIMEOUT_S = 30.0
_EXIT_WAIT_S = 5
# A pooled container may idle this long before the pool recycles it; the
# deadline label adds the call's own timeout and a margin on top.
POOL_IDLE_S = 600.0
_LABEL_MARGIN_S = 120.0


def _runtime(profile: SandboxProfile, *, egress: bool) -> str:
    # gVisor refuses host Unix sockets unless told otherwise; only egress
    # containers run under the runtime entry that may open them.
    return "runsc-egress" if egress and profile.runtime == "runsc" else profile.runtime


def _host_pids_limit(profile: SandboxProfile) -> int:
    if profile.runtime == "runc":
        return profile.pids
    # Under gVisor the sandbox kernel's own threads (Sentry, gofer) and the
    # platform's stub processes (several per guest process) count in the
    # container's pids cgroup: at the guest's limit the whole sandbox would
    # die. The guest limit is enforced inside gVisor instead (RLIMIT_NPROC,
    # which gVisor counts per sandbox); the cgroup keeps a looser host bound.
    return profile.pids * 4 + 256


def container_options(
    profile: SandboxProfile,
    image: str,
    egress_dir: Path | None = None,
    *,
    backend: str | None = None,
    lean: bool = False,
) -> dict[str, Any]:
    """Keyword arguments for ``containers.create``: the hardened container of a profile.

    ``lean``: a caller already waits for this container (see
    :mod:`orchestrator.sandbox.pool`).
    """
    tmpfs_opts = "rw,nosuid,nodev"
    uid, gid = profile.user.split(":")
    return {
        "image": image,
        "user": profile.user,
        "detach": True,
        "stdin_open": True,
        "tty": False,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {
            "/tmp": f"{tmpfs_opts},size={profile.tmp_mb}m,mode=1777",
            "/workspace": (
                f"{tmpfs_opts},size={profile.workspace_mb}m,mode=0700,uid={uid},gid={gid}"
            ),
        },
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "mem_limit": profile.memory_bytes,
        "memswap_limit": profile.memory_bytes,
        "nano_cpus": int(profile.cpus * 1e9),
        "pids_limit": _host_pids_limit(profile),
        # The runner is the container's init (pid 1): it reaps, and its exit
        # ends every process. docker-init there would be a same-uid process
        # the tool could ptrace or write into (see the runner's docstring).
        "init": False,
        "ipc_mode": "private",
        "shm_size": 16 * 1024 * 1024,
        "hostname": "sandbox",
        # Nothing of the host's: at most the profile's preload list for the
        # runner's tool host; a request's environment goes with the request.
        "environment": profile.container_env(lean=lean),
        # Output travels over the attach stream only; a log driver would
        # store whatever a hostile tool prints on the host's disk.
        "log_config": {"type": "none", "config": {}},
        "ulimits": [
            docker.types.Ulimit(name="core", soft=0, hard=0),
            docker.types.Ulimit(name="nofile", soft=1024, hard=1024),
            # Under runc RLIMIT_NPROC would count the uid's processes in every
            # container on the host; there the pids cgroup is the limit.
            *(
                [docker.types.Ulimit(name="nproc", soft=profile.pids, hard=profile.pids)]
                if profile.runtime == "runsc"
                else []
            ),
        ],
        # Under memory pressure, the sandbox dies before anything on the host.
        "oom_score_adj": 1000,
        "runtime": _runtime(profile, egress=egress_dir is not None),
        # The egress socket directory is the only mount, read-only, and only
        # for profiles that allow egress.
        "mounts": [
            docker.types.Mount(
                target=MOUNT_POINT, source=str(egress_dir), type="bind", read_only=True
            )
        ]
        if egress_dir
        else [],
        "labels": container_labels(
            profile.name,
            lifetime_s=POOL_IDLE_S + profile.timeout_s + _LABEL_MARGIN_S,
            backend=backend,
        ),
    }


@dataclass(eq=False, kw_only=True)
class SandboxContainer:
    """A started container whose runner waits for its one request."""

    id: str
    profile: SandboxProfile
    image_id: str
    stream: AttachedStream
    started_at: float
    gate: EgressGate | None = None


def _take_socket(raw: Any) -> socket.socket:
    """Own the hijacked connection: a private duplicate of its descriptor.

    The SDK hands back a socket wrapped in file objects that hold references
    to it; closing those here means the asyncio transport alone owns the
    connection and closes it exactly once.
    """
    inner: socket.socket = getattr(raw, "_sock", raw)
    duplicate = socket.socket(fileno=os.dup(inner.fileno()))
    raw.close()
    inner.close()
    return duplicate


class ContainerFactory:
    """Starts and destroys sandbox containers; blocking SDK calls run in a bounded pool."""

    def __init__(
        self,
        client: docker.DockerClient,
        executor: ThreadPoolExecutor,
        gates: EgressGates,
        metrics: SandboxMetrics | None = None,
        backend: str | None = None,
    ) -> None:
        """``gates`` serve the egress profiles' containers (their owner closes them, which
        removes their directory); ``metrics`` times create, start and remove.
        ``backend`` labels every container with the backend instance that launched it."""
        self._backend = backend
        self._client = client
        self._executor = executor
        self._gates = gates
        self._metrics = metrics

    async def _blocking(self, op: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, partial(func, *args, **kwargs))
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise engine_error(op, exc) from exc

    async def launch(
        self,
        profile: SandboxProfile,
        image: str,
        image_id: str,
        *,
        on_created: Callable[[str], None] = lambda _id: None,
        lean: bool = False,
    ) -> SandboxContainer:
        """Create, attach, start and wait for the runner's ready frame.

        ``on_created`` learns the container's id as soon as the engine made it;
        ``lean``: a caller already waits for it (see :mod:`orchestrator.sandbox.pool`).
        """
        gate = (
            await self._gates.open(profile.egress, profile=profile.name) if profile.egress else None
        )
        try:
            began = time.perf_counter()
            container_id = await self._create_shielded(
                container_options(
                    profile,
                    image,
                    gate.directory if gate else None,
                    backend=self._backend,
                    lean=lean,
                )
            )
            created = time.perf_counter()
            on_created(container_id)
            stream = await self._start(container_id)
            if self._metrics is not None:
                self._metrics.operation("create", profile.runtime, created - began)
                self._metrics.operation("start", profile.runtime, time.perf_counter() - created)
        except BaseException:
            if gate:
                await gate.close()
            raise
        return SandboxContainer(
            id=container_id,
            profile=profile,
            image_id=image_id,
            stream=stream,
            started_at=time.monotonic(),
            gate=gate,
        )

    async def _create_shielded(self, options: dict[str, Any]) -> str:
        create = asyncio.ensure_future(self._blocking("container.create", self._create, options))
        try:
            return str(await asyncio.shield(create))
        except asyncio.CancelledError:
            # The engine goes on creating it in its thread: wait for it and
            # remove it, or it would outlive the cancelled caller.
            with contextlib.suppress(InfrastructureError):
                await self.destroy_id(await create)
            raise

    async def _start(self, container_id: str) -> AttachedStream:
        api = self._client.api
        stream: AttachedStream | None = None
        try:
            # Attach before start so not a byte of the runner's output is missed.
            # Stderr is the live output stream (display only), apart from the
            # reply on stdout: the runner never takes that out for live writes.
            attach = asyncio.ensure_future(
                self._blocking(
                    "container.attach",
                    api.attach_socket,
                    container_id,
                    params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1},
                )
            )
            try:
                raw = await asyncio.shield(attach)
            except asyncio.CancelledError:
                # The engine's thread goes on and returns a connected socket that
                # nobody would close (a ResourceWarning whenever the GC finds it):
                # wait for it and close it.
                with contextlib.suppress(Exception):
                    _take_socket(await attach).close()
                raise
            stream = await AttachedStream.from_socket(_take_socket(raw))
            await self._blocking("container.start", api.start, container_id)
            async with asyncio.timeout(_RUNNER_READY_TIMEOUT_S):
                ready = await stream.read_frame(4096)
            if ready != READY:
                raise ValueError(f"unexpected first frame {ready[:100]!r}")
        except BaseException as exc:
            if stream is not None:
                stream.close()  # else its socket lingers until the GC finds it
            await self.destroy_id(container_id)
            if isinstance(exc, InfrastructureError | asyncio.CancelledError):
                raise
            if not isinstance(exc, Exception):
                raise
            raise InfrastructureError(
                f"sandbox runner did not come up: {type(exc).__name__}: {exc}",
                code=ErrorCode.CONTAINER_START_FAILED,
                op="container.start",
                retryable=True,
            ) from exc
        return stream

    def _create(self, options: dict[str, Any]) -> str:
        # The low-level call: the high-level one inspects the new container
        # afterwards, an engine round trip a single-use container never needs.
        api = self._client.api
        create = {key: value for key, value in options.items() if key in RUN_CREATE_KWARGS}
        host = {key: value for key, value in options.items() if key in RUN_HOST_CONFIG_KWARGS}
        created = api.create_container(**create, host_config=api.create_host_config(**host))
        return str(created["Id"])

    async def destroy(self, container: SandboxContainer) -> None:
        """Kill and remove a container; its processes die with it."""
        container.stream.close()
        began = time.perf_counter()
        try:
            await self.destroy_id(container.id)
            if self._metrics is not None:
                self._metrics.operation(
                    "remove", container.profile.runtime, time.perf_counter() - began
                )
        finally:
            if container.gate:
                await container.gate.close()

    async def destroy_id(self, container_id: str) -> None:
        """Kill and remove by id; a container already gone is fine."""
        try:
            await self._blocking(
                "container.remove", self._client.api.remove_container, container_id, force=True
            )
        except InfrastructureError as exc:
            cause = exc.__cause__
            if isinstance(cause, docker.errors.NotFound):
                return
            if isinstance(cause, docker.errors.APIError) and cause.status_code == 409:
                return  # removal already in progress
            raise

    async def state(self, container_id: str) -> dict[str, Any]:
        """The engine's view of the container (``State`` of inspect), empty if gone.

        Waits (briefly) for the container to have exited first: the engine
        records how it ended (``OOMKilled``, the exit code) only then.
        """
        with contextlib.suppress(InfrastructureError):
            await self._blocking(
                "container.wait", self._client.api.wait, container_id, timeout=_EXIT_WAIT_S
            )
        try:
            info = await self._blocking(
                "container.inspect", self._client.api.inspect_container, container_id
            )
        except InfrastructureError:
            return {}
        state: dict[str, Any] = info.get("State", {})
        return state
