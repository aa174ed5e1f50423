"""The Ray backend: each call runs on one of the cluster's sandbox hosts (issue 14).

Steps of a call, top to bottom in :meth:`RayBackend.execute`:

1. the workspace is packed here as the runner-protocol frames the Docker
   backend would write (header, stdin, archive), one ``bytes`` value — Ray
   moves it through its object store when it is large;
2. the call goes to the least-loaded registered host, a host with a warm
   container for the profile first (:mod:`orchestrator.sandbox.ray_host`); a
   call bound to credentials brings them and its bound hosts' leaves sealed
   to that host's key (:mod:`orchestrator.sandbox._host_credentials`);
3. the host relays the frames into a container and answers with raw reply
   bytes and a JSON record: as one return value for a call that may run
   again and has no listener, else as a Ray streaming generator that first
   says ``started`` (it holds a container; for a call that may not run twice
   nothing is written into it before that item is here) and passes on the
   container's live frames; every check of that hostile reply (live frames
   and egress records included) runs here, with the Docker backend's own
   readers, and the workspace is replaced only now;
4. a host lost mid-call (actor, node or engine gone) is an
   :class:`~orchestrator.errors.InfrastructureError`, never a tool result. The
   call runs again on another host when it had not started there, when its
   profile has no egress (its workspace changes are applied only on return:
   what it did died with its sandbox) or when its tool is idempotent;
   otherwise it fails with ``effects_unknown``. A container its host's engine
   kills or removes mid-call follows the same rule (``container_died``, which
   the gateway retries, only for a call that may run again). Cancelling the
   caller cancels the host's task, which removes the container.

Hosts are discovered from the cluster's nodes (``stockade_host:<name>``
resources) at start and every ``refresh_s``, so a host that joins later is
used without a restart. Each host registers on a task of its own: one whose
engine hangs (its registration may wait 120 s) holds up neither the others
nor the start, which goes on once some host serves and the rest had
``_START_GRACE_S`` to answer; the late ones join when they do.
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
from pathlib import Path
from typing import Any

import pydantic

from orchestrator.errors import ConfigError, ErrorCode, InfrastructureError
from orchestrator.metrics import HostSample, Metrics
from orchestrator.sandbox._egress_gate import MOUNT_POINT, SOCKET_NAME, ca_environment
from orchestrator.sandbox._host_credentials import CallCredentials, seal
from orchestrator.sandbox._ray_auth import token_authentication
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
    FrameTooLargeError,
    encode_request,
    frame,
)
from orchestrator.sandbox.backend import SandboxBackend
from orchestrator.sandbox.credentials import Credential
from orchestrator.sandbox.egress import EgressConnection
from orchestrator.sandbox.egress_ca import DeploymentCA
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus, container_acquired
from orchestrator.sandbox.hosts import HostState, connect, host_actor, named_nodes, state_of
from orchestrator.sandbox.live import LIVE_CAP_BYTES, LIVE_ENV, LiveDecoder
from orchestrator.sandbox.profile import DEFAULT_IMAGE, TOOLS_IMAGE, SandboxProfile
from orchestrator.sandbox.ray_host import (
    CODE_FINGERPRINT,
    HOST_RESOURCE,
    LIVE_KEEP,
    LIVE_OFF,
    LIVE_STREAM,
    host_actor_name,
)
from orchestrator.sandbox.ray_identity import InstanceClaim, claim_instance_id
from orchestrator.sandbox.workspace import ArchiveLimitError, Outgoing

__all__ = ["HostInfo", "RayBackend"]

_log = logging.getLogger(__name__)

# How long past a call's own deadline the host may stay silent before the
# call counts as lost (Ray reports a dead node itself within seconds).
_LOST_AFTER_S = 30.0
# How long a start waits for the slowest hosts' registrations once one host
# serves: a hung host must not hold the orchestrator back for 120 s.
_START_GRACE_S = 10.0
# What a host's registration may take (its engine checks its images).
_REGISTER_S = 120.0
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
        state_dir: Path | None = None,
        egress_ca: DeploymentCA | None = None,
        credential_profiles: Iterable[str] = (),
        upstream_ca: bytes | None = None,
    ) -> None:
        """``address`` is the cluster's GCS (``host:port``), ``namespace`` the Ray namespace
        the host actors live in; ``images`` must exist on every host, ``profiles`` are warmed.

        Every ``refresh_s`` the backend looks for hosts and renews its lease on
        each; a host removes the pools and containers of an orchestrator whose
        lease (``lease_s``) ran out (it was killed, or lost the cluster). ``metrics``
        gets the hosts' series (``host`` label: the operator's host names).
        ``state_dir`` keeps this orchestrator's id across restarts
        (:mod:`~orchestrator.sandbox.ray_identity`): started again after a kill,
        it removes its earlier life's containers on every host at once.

        ``egress_ca`` (the deployment's CA; needed when credentials are bound) is
        registered with every host, by its certificate: sandboxes of
        ``credential_profiles`` trust it, and a call's credentials go to its host
        with their leaves, sealed to that host (never the CA's key).
        ``upstream_ca`` (PEM) is what the hosts' proxies trust upstream besides
        their own trust store, for bound hosts with a private CA."""
        self._address = address
        self._namespace = namespace
        self._warm = list(profiles)
        self._images = list(images)
        self._refresh_s = refresh_s
        self._lease_s = max(lease_s, 3 * refresh_s)
        self._id = uuid.uuid4().hex
        self._state_dir = state_dir
        self._claim: InstanceClaim | None = None
        # Hosts registered with since start (refused ones too): a first registration
        # tells the host that what it holds for this id is an earlier life's.
        self._registered: set[str] = set()
        self._hosts: dict[str, HostInfo] = {}
        self._refused: dict[str, str] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        # One renewal in flight per host at most: a host slow to answer holds only its own.
        self._renewing: dict[str, asyncio.Task[None]] = {}
        # The same for registrations; and the last reason each host did not register.
        self._registering: dict[str, asyncio.Task[None]] = {}
        self._silent: dict[str, str] = {}
        self._closed = False
        # What Ray adds to each call (the orchestrator's wall time of the host's task
        # minus the host's own time): the last calls' values, for benchmarks.
        self._overheads: deque[float] = deque(maxlen=10_000)
        self._legs: deque[tuple[float, float]] = deque(maxlen=10_000)
        self._metrics = metrics if metrics is not None else Metrics(enabled=False)
        self._metrics.hosts.watch(self._host_samples)
        self._ca = egress_ca
        self._credential_profiles = frozenset(credential_profiles)
        self._egress = ""
        if egress_ca is not None:
            self._egress = json.dumps(
                {
                    "ca": egress_ca.certificate_pem.decode("ascii"),
                    "profiles": sorted(self._credential_profiles),
                    "upstream_ca": (upstream_ca or b"").decode("ascii"),
                }
            )

    @property
    def instance_id(self) -> str:
        """This orchestrator's id on the hosts (labels its containers there)."""
        return self._id

    @property
    def dispatch_overheads(self) -> list[float]:
        """Seconds Ray added to each of the last calls (round trip minus the host's time)."""
        return list(self._overheads)

    @property
    def dispatch_legs(self) -> list[tuple[float, float]]:
        """Seconds of the last calls' two legs through Ray: sent until the host began, and
        the host's end until the answer was here — by the wall clocks of both sides, so
        meaningful only where they agree (one machine, as in ``benchmarks/ray_bench.py``)."""
        return list(self._legs)

    def _legs_of(self, record: dict[str, Any], attempt: _Attempt) -> None:
        clock = record.get("clock")
        if isinstance(clock, list) and len(clock) == 2:
            with contextlib.suppress(TypeError, ValueError):
                began, ended = float(clock[0]), float(clock[1])
                self._legs.append((began - attempt.sent_wall, time.time() - ended))

    @property
    def hosts(self) -> dict[str, HostInfo]:
        """Registered hosts by name (lost ones included, flagged)."""
        return dict(self._hosts)

    @property
    def refused(self) -> dict[str, str]:
        """Hosts that refused to register, and why (with the command that fixes it)."""
        return dict(self._refused)

    async def start(self) -> None:
        """Join the cluster, register its hosts and warm the configured profiles there.

        Refused (:class:`ConfigError`) without Ray's token authentication in this
        process: a driver joins a cluster without a token only when the cluster
        has none, and then anyone who reaches it runs code beside its hosts'
        Docker sockets.
        """
        _require_token_authentication()
        if self._state_dir is not None and self._claim is None:
            self._claim = await asyncio.to_thread(claim_instance_id, self._state_dir)
            self._id = self._claim.instance_id
        await asyncio.to_thread(connect, self._address, self._namespace)
        await self._first_registrations(await self._discover())
        if not self._hosts:
            raise InfrastructureError(
                f"no sandbox host registered in the Ray cluster at {self._address} "
                f"(refused: {self._refused or 'none'}; did not answer: {self._silent or 'none'}); "
                f"nodes need the {HOST_RESOURCE} resource",
                code=ErrorCode.ENGINE_UNAVAILABLE,
                op="sandbox.start",
                retryable=True,
            )
        # Renewing the leases from now on: warming may take longer than one.
        self._renewer = asyncio.create_task(self._renew_loop())
        self._refresher = asyncio.create_task(self._refresh_loop())
        await asyncio.gather(*(self._warm_host(host, 120.0) for host in list(self._hosts.values())))

    async def _first_registrations(self, tasks: dict[str, asyncio.Task[None]]) -> None:
        """Wait for the start's registrations: all of them for ``_START_GRACE_S``, then
        only until one host serves (the others go on registering and join later)."""
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks.values(), timeout=_START_GRACE_S)
        while pending and not self._hosts:
            _done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            late = [name for name, task in tasks.items() if task in pending]
            _log.warning(
                "starting without host(s) %s: their registration has not answered in %g s "
                "(each joins when it does)",
                ", ".join(late),
                _START_GRACE_S,
            )

    async def _warm_host(self, host: HostInfo, wait_s: float) -> None:
        """Start this orchestrator's pools of the warmed profiles on ``host``; wait up to
        ``wait_s`` for each to fill."""
        for profile in self._warm:
            raw = await self._remote(
                host, host.actor.warm.remote(self._id, profile.model_dump_json(), wait_s)
            )
            if raw is not None:
                host.record = json.loads(raw)

    async def _remote(self, host: HostInfo, ref: Any, timeout_s: float = 60.0) -> Any:
        import ray  # noqa: PLC0415

        try:
            return await asyncio.wait_for(ref, timeout_s)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            # RayError: the actor is gone, or its own code failed (a RayTaskError):
            # either way it serves nothing until it registers again.
            host.lost, host.last_error = True, f"{type(exc).__name__}: {exc}"[:500]
            return None

    async def refresh(self) -> None:
        """Find the cluster's hosts: register new ones, mark lost ones, re-admit returned
        ones; wait for every registration (they run at once, each host on its own)."""
        tasks = await self._discover()
        if tasks:
            await asyncio.wait(tasks.values())

    async def _discover(self) -> dict[str, asyncio.Task[None]]:
        """Mark the hosts gone from the cluster lost and start registering each alive host
        that is new or lost (unless it is being registered); by host, those in flight."""
        import ray  # noqa: PLC0415

        nodes = named_nodes(await asyncio.to_thread(ray.nodes))
        alive = {name for name, node in nodes.items() if node.alive}
        for name, known in self._hosts.items():
            if name not in alive:
                known.lost = True
        tasks: dict[str, asyncio.Task[None]] = {}
        for name in sorted(alive):
            host = self._hosts.get(name)
            if host is not None and not host.lost:
                continue
            task = self._registering.get(name)
            if task is None or task.done():
                task = asyncio.create_task(
                    self._register_host(name, host), name=f"stockade-register-{name}"
                )
                self._registering[name] = task
            tasks[name] = task
        return tasks

    async def _register_host(self, name: str, host: HostInfo | None) -> None:
        """Register with host ``name`` (``host``: its earlier entry, lost) and serve from it."""
        try:
            await self._register_with(name, host)
        except Exception as exc:  # a malformed record: the host stays out
            self._not_answered(name, f"registering: {type(exc).__name__}: {exc}"[:500])

    async def _register_with(self, name: str, host: HostInfo | None) -> None:
        actor = host_actor(name, self._namespace)
        info = HostInfo(name=name, actor=actor)
        fresh = name not in self._registered
        raw = await self._remote(info, self._register(actor, fresh=fresh), _REGISTER_S)
        if raw is None:
            self._not_answered(name, info.last_error)
            return
        self._registered.add(name)
        self._silent.pop(name, None)
        record = json.loads(raw)
        refusal = record["refused"] or self._other_code(name, record)
        if refusal:
            if self._refused.get(name) != refusal:  # once, not every refresh
                _log.warning("%s", refusal)
            self._refused[name] = refusal
            return
        self._refused.pop(name, None)
        info.record = record
        if host is not None:
            info.served = host.served
        if host is not None or self._refresher is not None:
            # A host that came back (or joined later) gets this orchestrator's pools started.
            await self._warm_host(info, 0.0)
        self._hosts[name] = info

    def _not_answered(self, name: str, error: str) -> None:
        """Host ``name``'s registration failed with ``error``: logged once per reason."""
        if self._silent.get(name) != error:
            _log.warning("host %s did not register: %s", name, error)
        self._silent[name] = error

    def _other_code(self, name: str, record: dict[str, Any]) -> str:
        """Why ``name`` may not serve: its actor runs other sandbox code than this process
        (started by an orchestrator of another version), or ``""``."""
        theirs = str(record.get("code", "")) or "older, without a fingerprint"
        if theirs == CODE_FINGERPRINT:
            return ""
        replace = (
            f"import ray; ray.init(address='{self._address}', namespace='{self._namespace}'); "
            f"ray.kill(ray.get_actor('{host_actor_name(name)}'))"
        )
        return (
            f"host {name} runs other Stockade sandbox code than this orchestrator (code "
            f"{theirs} there, {CODE_FINGERPRINT} here): its actor keeps the code of the "
            "orchestrator that started it until it is replaced. Once every orchestrator "
            "using it runs this version, replace it (the next orchestrator starts a new one "
            f'with its own code; its leftovers are reaped): python -c "{replace}" with the '
            "cluster's token in the environment, or restart Ray on that node"
        )

    async def _refresh_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._refresh_s)
            try:
                await self._discover()  # not waiting: a slow host holds up only itself
            except Exception as exc:
                _log.info("refreshing hosts: %s", exc)

    async def _renew_loop(self) -> None:
        """Renew this orchestrator's lease on every host every ``refresh_s``, each host
        on its own task.

        Apart from :meth:`refresh`, and never waiting for a host: a registration
        may wait 120 s and a host whose engine hangs 10 s, and the healthy hosts
        would meanwhile let this orchestrator's lease run out and remove its
        containers, the running calls' with them.
        """
        while not self._closed:
            await asyncio.sleep(self._refresh_s)
            for host in list(self._hosts.values()):
                running = self._renewing.get(host.name)
                if host.lost or (running is not None and not running.done()):
                    continue
                self._renewing[host.name] = asyncio.create_task(self._renew_quietly(host))

    async def _renew_quietly(self, host: HostInfo) -> None:
        try:
            await self._renew(host)
        except Exception as exc:  # a malformed record: the host counts as lost
            host.lost, host.last_error = True, f"renewing: {type(exc).__name__}: {exc}"[:500]

    def _register(self, actor: Any, *, fresh: bool = False) -> Any:
        """The host's ``register`` call for this orchestrator (its images, lease and CA)."""
        return actor.register.remote(
            self._images, self._id, self._lease_s, fresh=fresh, egress=self._egress
        )

    async def _renew(self, host: HostInfo) -> None:
        """Renew this orchestrator's lease on ``host`` and read its record."""
        raw = await self._remote(host, host.actor.describe.remote(self._id, self._lease_s), 10.0)
        if raw is None:
            return
        host.record = json.loads(raw)
        if self._egress and not host.record.get("egress_registered"):
            # Released while this orchestrator was cut off (its lease ran out):
            # its CA goes to the host again.
            raw = await self._remote(host, self._register(host.actor), _REGISTER_S)
            if raw is not None:
                host.record = json.loads(raw)

    def _dispatched(self, host: HostInfo, overhead_s: float) -> None:
        """What Ray added to one call on ``host`` (round trip minus the host's own time)."""
        self._overheads.append(overhead_s)
        self._metrics.hosts.dispatch.labels(host.name).observe(max(overhead_s, 0.0))

    def _host_samples(self) -> list[HostSample]:
        """The hosts' series at scrape time (refused hosts are down, with no pools)."""
        samples = [
            HostSample(
                host=host.name,
                up=host.state != "lost",
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
        if request.credentials and (
            self._ca is None or profile.name not in self._credential_profiles
        ):
            raise ConfigError(
                f"profile {profile.name!r} got credentials, but this ray backend was given "
                "no egress CA for it (credential_profiles), so its hosts cannot add them",
                field="secrets",
            )
        started = time.monotonic()
        timeout = min(request.timeout_s or profile.timeout_s, profile.timeout_s)
        workspace = request.workspace
        limits = {"max_bytes": profile.workspace_bytes, "max_files": profile.workspace_max_files}
        live_mode = _live_mode(request)
        live = None if live_mode == LIVE_OFF else LiveDecoder(request.on_output)
        lock = workspace.lock if workspace else contextlib.nullcontext()
        async with lock:
            sent: Outgoing | None = None
            if workspace is not None:
                try:
                    sent = await asyncio.to_thread(lambda: workspace.outgoing(**limits))
                except ArchiveLimitError as exc:
                    unsent = {"image_digest": "", "container_id": "", "from_pool": False}
                    return failed(
                        {**unsent, "profile": profile.name, "runtime": profile.runtime},
                        started,
                        ExecStatus.WORKSPACE_REJECTED,
                        f"{exc}; the call did not run",
                    )
            if sent is None:  # a few hundred bytes: a thread hop would cost more
                payload = self._payload(request, profile, timeout, sent, live_mode)
            else:  # reads the workspace's files
                payload = await asyncio.to_thread(
                    self._payload, request, profile, timeout, sent, live_mode
                )
            if request.credentials:  # the leaves' key material, issued at most weekly
                await asyncio.to_thread(self._issue_leaves, request.credentials)
            # The rule for a host lost mid-call (docs/scale-out.md): without egress
            # the lost call's effects died with its container (its workspace changes
            # are only applied here), an idempotent tool may run twice; anything else
            # is not run again.
            repeatable = profile.egress is None or request.idempotent
            record, reply = await self._dispatch(
                _Call(
                    profile=profile,
                    payload=payload,
                    deadline_s=timeout,
                    workspace=sent is not None,
                    live_mode=live_mode,
                    live=live,
                    repeatable=repeatable,
                    credentials=request.credentials,
                )
            )
            try:
                return await self._result(
                    record=record,
                    reply=reply,
                    request=request,
                    profile=profile,
                    sent=sent,
                    started=started,
                    live=live,
                )
            except InfrastructureError as exc:
                # Its engine removed or killed the container mid-call (the engine went
                # down, restarted, or someone removed it): the rule for a lost host
                # holds, and CONTAINER_DIED's retry would run a call that may have
                # reached the network a second time.
                if exc.code is not ErrorCode.CONTAINER_DIED or repeatable:
                    raise
                raise effects_unknown(
                    f"the call's container on host {record.get('host')} was killed or "
                    "removed by its engine before it replied"
                ) from None

    def _count_egress(
        self, egress: tuple[EgressConnection, ...], profile: SandboxProfile, request: ExecRequest
    ) -> None:
        """The egress metrics the Docker backend's gates count locally, from the host's
        records: a secret's name only when it is one this call was given (the host's
        word cannot add label values)."""
        sandbox = self._metrics.sandbox
        given = {credential.name for credential in request.credentials}
        for event in egress:
            sandbox.egress(profile.name, allowed=event.allowed)
            if event.secret is not None and event.secret in given:
                sandbox.credential_used(profile.name, event.secret)

    def _issue_leaves(self, credentials: tuple[Credential, ...]) -> None:
        """Have the leaves of ``credentials``' hosts ready (blocking: key generation)."""
        assert self._ca is not None  # checked in execute
        for credential in credentials:
            try:
                self._ca.leaf_pem(credential.host)
            except ValueError as exc:  # a binding outside the CA's names
                raise ConfigError(str(exc), field="secrets") from None

    def _sealed(self, host: HostInfo, credentials: tuple[Credential, ...]) -> bytes:
        """The call's credentials and their hosts' leaves, sealed to ``host``'s key."""
        assert self._ca is not None  # checked in execute
        ca = self._ca
        bound = CallCredentials(credentials, {c.host: ca.leaf_pem(c.host) for c in credentials})
        public_key = str(host.record.get("sealing_key", ""))
        try:
            return seal(public_key, bound.encode(), host=host.name, orchestrator=self._id)
        except ValueError as exc:
            raise InfrastructureError(
                f"{exc}; update its Stockade", code=ErrorCode.ENGINE_ERROR, op=_OP, retryable=False
            ) from None

    def _payload(
        self,
        request: ExecRequest,
        profile: SandboxProfile,
        timeout: float,
        sent: Outgoing | None,
        live_mode: int = LIVE_OFF,
    ) -> bytes:
        tool = (
            len(request.argv) == len(TOOL_ENTRY_ARGV) + 1 and request.argv[:-1] == TOOL_ENTRY_ARGV
        )
        env = {**profile.env, **request.env}
        if profile.egress is not None:
            # The host mounts its proxy's socket there (its own egress gate, as the
            # Docker backend's containers get one).
            env[EGRESS_SOCKET_ENV] = f"{MOUNT_POINT}/{SOCKET_NAME}"
            if profile.name in self._credential_profiles:
                # The host writes the CA's files beside the socket, as the Docker
                # backend's gates do for the same profiles.
                env.update(ca_environment())
        if live_mode != LIVE_OFF:
            env[LIVE_ENV] = str(LIVE_CAP_BYTES)
        header = encode_request(
            argv=request.argv,
            env=env,
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

    async def _dispatch(self, call: _Call) -> tuple[dict[str, Any], bytes]:
        """Send the call to a host, again to another while the rule allows; its end record
        and reply bytes."""
        import ray  # noqa: PLC0415

        profile_json = call.profile.model_dump_json()
        lost: set[str] = set()
        while True:
            host = self._pick(profile_json, lost)
            attempt = _Attempt()
            host.in_flight += 1
            try:
                record, reply = await self._on_host(host, call, profile_json, attempt)
            except (
                ray.exceptions.RayActorError,
                ray.exceptions.ObjectLostError,
                TimeoutError,
            ) as exc:
                host.lost, host.last_error = True, f"{type(exc).__name__}"
                lost.add(host.name)
                _log.warning(
                    "host %s lost during a call (%s): %s",
                    host.name,
                    _progress(attempt, call),
                    host.last_error,
                )
                if attempt.began and not call.repeatable:
                    raise effects_unknown(
                        f"host {host.name} was lost while the call ran ({host.last_error})"
                    ) from None
                continue
            finally:
                host.in_flight -= 1
            host.served += 1
            self._legs_of(record, attempt)
            self._dispatched(
                host, time.perf_counter() - attempt.sent_at - float(record.get("host_s", 0.0))
            )
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
            # Which host served it is ours to say, not the host's (for the audit record).
            record["host"] = host.name
            return record, reply

    async def _on_host(
        self, host: HostInfo, call: _Call, profile_json: str, attempt: _Attempt
    ) -> tuple[dict[str, Any], bytes]:
        """One attempt on ``host``; ``attempt`` notes when it was sent and whether it started."""
        import ray  # noqa: PLC0415

        args = (self._id, profile_json, call.payload, call.deadline_s, call.workspace)
        sealed = self._sealed(host, call.credentials) if call.credentials else b""
        attempt.sent_at, attempt.sent_wall = time.perf_counter(), time.time()
        if call.repeatable and call.live_mode != LIVE_STREAM:
            return await self._returned(host, call, args, sealed)
        # A call that may not run twice asks for a back-pressure of one item: the
        # host's generator waits until its "started" item is here before it writes
        # the request to the container, so a call lost without that item never
        # started. One more round trip, which calls that may run again are spared.
        options: dict[str, Any] = {"num_returns": "streaming"}
        if not call.repeatable:
            options["_generator_backpressure_num_objects"] = 1
        stream = host.actor.stream.options(**options).remote(
            *args, live=call.live_mode, credentials=sealed
        )
        try:
            async with asyncio.timeout(call.deadline_s + _LOST_AFTER_S):
                async for item in stream:
                    kind, text, data = await item
                    if kind == "started":
                        attempt.began = True
                        container_acquired(bool(json.loads(text).get("from_pool", False)))
                    elif kind == "live":
                        if call.live is not None:
                            call.live.feed(data)
                    else:
                        return json.loads(text), data
        except ray.exceptions.RayTaskError as exc:
            if attempt.began and not call.repeatable:
                raise effects_unknown(
                    f"host {host.name} was lost while the call ran (its code failed: {exc.cause})"
                ) from None
            raise _host_failed(host.name, exc) from None
        except BaseException:
            # Cancelled, timed out, lost: the host's task is cancelled too (if it
            # still runs), and its finally removes the container.
            ray.cancel(stream)
            raise
        raise InfrastructureError(
            f"host {host.name} ended the call without its record",
            code=ErrorCode.ENGINE_ERROR,
            op=_OP,
            retryable=not attempt.began or call.repeatable,
        )

    @staticmethod
    async def _returned(
        host: HostInfo, call: _Call, args: tuple[Any, ...], sealed: bytes
    ) -> tuple[dict[str, Any], bytes]:
        """A call nobody needs to see start (it may run again anyway) or print as it runs:
        the host's answer as one return value, Ray's cheapest call."""
        import ray  # noqa: PLC0415

        ref = host.actor.execute.remote(*args, live=call.live_mode, credentials=sealed)
        try:
            async with asyncio.timeout(call.deadline_s + _LOST_AFTER_S):
                text, reply, kept = await ref
        except ray.exceptions.RayTaskError as exc:
            raise _host_failed(host.name, exc) from None
        except BaseException:
            ray.cancel(ref)  # the host's task, if it still runs: its finally cleans up
            raise
        if call.live is not None and kept:
            call.live.feed(kept)
        return json.loads(text), reply

    async def _result(
        self,
        *,
        record: dict[str, Any],
        reply: bytes,
        request: ExecRequest,
        profile: SandboxProfile,
        sent: Outgoing | None,
        started: float,
        live: LiveDecoder | None = None,
    ) -> ExecResult:
        timeout = min(request.timeout_s or profile.timeout_s, profile.timeout_s)
        base: dict[str, Any] = {
            "image_digest": str(record.get("image_digest", "")),
            "container_id": str(record.get("container_id", "")),
            "from_pool": bool(record.get("from_pool", False)),
            "host": record.get("host"),
            "profile": profile.name,
            "runtime": profile.runtime,
        }
        try:
            # The host's report of the proxy's connections: checked as any hostile record.
            egress = tuple(
                EgressConnection.model_validate(event) for event in record.get("egress", ())
            )
        except pydantic.ValidationError as exc:
            return failed(
                base, started, ExecStatus.ERROR, f"the host sent a malformed record: {exc}"
            )
        self._count_egress(egress, profile, request)
        ended = record.get("ended")
        if ended == "timeout":
            return with_printed(
                failed(
                    base,
                    started,
                    ExecStatus.TIMEOUT,
                    f"the call ran past its deadline of {timeout:g} s and was killed",
                ),
                live,
            )
        if ended == "died":
            return died(record.get("state") or {}, profile, base, started, live)
        workspace = request.workspace
        limits = {"max_bytes": profile.workspace_bytes, "max_files": profile.workspace_max_files}
        source = _Reply(reply)
        rejection: str | None = None
        returned = None
        try:
            report, stdout, stderr = await read_reply(source, profile.output_limit_bytes)
            if sent is not None and workspace is not None and workspace_follows(report, True):
                try:
                    returned = await workspace.reader(sent, **limits).read(source)
                except ArchiveLimitError as exc:
                    rejection = str(exc)
        except asyncio.IncompleteReadError:
            return died(record.get("state") or {}, profile, base, started, live)
        except (FrameTooLargeError, pydantic.ValidationError) as exc:
            return failed(
                base,
                started,
                ExecStatus.ERROR,
                f"the sandbox sent a malformed reply and was destroyed: {exc}",
            )
        return await replied_applying(
            report,
            stdout,
            stderr,
            rejection=rejection,
            workspace=workspace,
            sent=sent,
            returned=returned,
            duration_s=time.monotonic() - started,
            egress=egress,
            **base,
        )

    async def close(self) -> None:
        """Remove this orchestrator's pools and containers on every host (not the hosts)."""
        if self._closed:
            return
        self._closed = True
        tasks = (self._refresher, self._renewer, *self._renewing.values())
        for task in (*tasks, *self._registering.values()):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for host in self._hosts.values():
            if not host.lost:
                await self._remote(host, host.actor.release.remote(self._id), 60.0)
        # A host that refused this orchestrator holds its lease (and the refusal
        # `stockade hosts` shows) until released. Only an existing actor: creating
        # one for a node that is gone would wait for that node.
        import ray  # noqa: PLC0415

        for name in self._refused:
            try:
                actor = await asyncio.to_thread(
                    ray.get_actor, host_actor_name(name), namespace=self._namespace
                )
            except ValueError:  # no such actor (its node went away)
                continue
            await self._remote(
                HostInfo(name=name, actor=actor), actor.release.remote(self._id), 10.0
            )
        if self._claim is not None:
            await asyncio.to_thread(self._claim.release)


@dataclass(frozen=True, kw_only=True)
class _Call:
    """One call on its way to a host."""

    profile: SandboxProfile
    payload: bytes
    """The request frames (header, stdin, workspace), as the runner reads them."""
    deadline_s: float
    workspace: bool
    """The workspace comes back (it was sent)."""
    live_mode: int
    live: LiveDecoder | None
    """Decodes the live frames the host passes on (None: the call asked for none)."""
    repeatable: bool
    """A host lost after the call started may be replaced by another (see the rule)."""
    credentials: tuple[Credential, ...] = ()
    """What the host's proxy adds to the call's requests (sealed to the host when sent)."""


@dataclass
class _Attempt:
    """One try of a call on one host."""

    began: bool = False
    """The host had a container in hand and was about to hand it the request: from then
    on the call may have run."""
    sent_at: float = 0.0
    """When the task was sent (``time.perf_counter``)."""
    sent_wall: float = 0.0
    """The same by the wall clock (``time.time``), to compare with the host's."""


def _require_token_authentication() -> None:
    """Raise :class:`ConfigError` unless this process runs with Ray's token authentication."""
    try:
        on, token = token_authentication()
    except ImportError:
        return  # joining says Ray is missing, with the command that installs it
    if on and token:
        return
    raise ConfigError(
        "the ray engine needs Ray's token authentication, and this orchestrator runs "
        + ("with RAY_AUTH_MODE=token but no token" if on else "without RAY_AUTH_MODE=token")
        + ": a cluster joined that way lets anyone who reaches it run code beside its hosts' "
        "Docker sockets. Export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<the cluster's token> "
        "here, and start every node with them (docs/scale-out.md)",
        field="sandbox.engine",
    )


def _live_mode(request: ExecRequest) -> int:
    """What the host does with the runner's live frames, as the Docker backend decides.

    A listener gets them as they come; a tool call without one keeps them (what its
    program printed is the output should the sandbox die or miss its deadline).
    """
    if request.on_output is not None:
        return LIVE_STREAM
    tool = len(request.argv) == len(TOOL_ENTRY_ARGV) + 1 and request.argv[:-1] == TOOL_ENTRY_ARGV
    return LIVE_KEEP if tool else LIVE_OFF


def _progress(attempt: _Attempt, call: _Call) -> str:
    """How far a lost call got, as far as the orchestrator can tell (for the log)."""
    if attempt.began:
        return "started"
    # Only a call that may not run twice waits for the host's "started" item.
    return "may run again" if call.repeatable else "not started"


def _host_failed(host: str, exc: Any) -> InfrastructureError:
    """The host's own code failed (not the tool, not a lost node): ``exc`` is Ray's error."""
    return InfrastructureError(
        f"host {host} failed: {str(exc.cause)[:1000]}",
        code=ErrorCode.ENGINE_ERROR,
        op=_OP,
        retryable=False,
    )
