"""A sandbox host: the Ray actor that owns one node's Docker engine (issue 14).

One detached, named actor per node that carries the ``stockade_host``
resource. The operator names the host with a second resource on the same
node, ``stockade_host:<name>`` (e.g. ``ray start --resources
'{"stockade_host": 1, "stockade_host:host-b": 1}'``), and tells it the
node's engine with ``DOCKER_HOST`` in ``ray start``'s environment (default:
the local engine). The actor is shared by every orchestrator in the
Ray namespace; each orchestrator gets its own warm pools on it, whose
containers carry the orchestrator's id (``org.stockade.backend``), so the
host can remove exactly one orchestrator's containers.

A host is a stateless executor and a dumb pipe: it takes the request frames
the orchestrator encoded (header, stdin, workspace archive), writes them to a
warm container and hands back **raw bytes** (the runner's reply frames, as
the runner sent them; the container's stderr, which carries the runner's live
frames) and a **JSON record** (how the exchange ended, the container, its
image, the engine's view of a container that died, the egress proxy's
connection records). It never returns pickled objects and judges none of the
reply's content: the orchestrator parses and checks everything, as it does for
the Docker backend. The only things it reads are the frame lengths (to stop at
the caps the orchestrator gave), the report (to know whether a workspace
follows) and the live stream's end frame. It runs the egress proxy of its own
containers (one per container of a profile that allows egress, with the
policy the call's profile carries), as the Docker backend's process does.

An orchestrator whose configuration binds credentials registers its
deployment CA's certificate (and, optionally, what its proxies trust
upstream); its containers of the bound profiles get the CA beside their egress
socket. A call bound to credentials brings them sealed to this host's key,
with its hosts' leaves (:mod:`orchestrator.sandbox._host_credentials`); they
live in the call's proxy, in memory, until its container is destroyed.

At :meth:`SandboxHost.register` the host checks that every image it is asked
to serve exists on its engine under the tag its inputs hash to; a host where
one is missing or different refuses, naming the command that fixes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import pydantic
import requests

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.sandbox._code import code_fingerprint
from orchestrator.sandbox._container import POOL_IDLE_S, ContainerFactory, SandboxContainer
from orchestrator.sandbox._egress_gate import EgressGates
from orchestrator.sandbox._egress_tls import Interception, default_upstream_tls
from orchestrator.sandbox._host_credentials import CallCredentials, HostCA, SealingKey
from orchestrator.sandbox._ray_auth import token_authentication
from orchestrator.sandbox._report import HEADER_LIMIT, RunnerReport, workspace_follows
from orchestrator.sandbox._wire import (
    ENTRY_FILE,
    ENTRY_LIMIT,
    AttachedStream,
    FrameTooLargeError,
    frame,
)
from orchestrator.sandbox.engine import engine_client, engine_errors
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.labels import BACKEND_LABEL
from orchestrator.sandbox.live import LIVE_CAP_BYTES, LiveDecoder
from orchestrator.sandbox.pool import WarmPool
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.reaper import reap

__all__ = [
    "CODE_FINGERPRINT",
    "HOST_RESOURCE",
    "LIVE_KEEP",
    "LIVE_OFF",
    "LIVE_STREAM",
    "SandboxHost",
    "host_actor_name",
]

_log = logging.getLogger(__name__)

HOST_RESOURCE = "stockade_host"
"""The custom Ray resource of nodes with a Docker engine; ``stockade_host:<name>`` names one."""
_REPORT_GRACE_S = 2.0
# After the reply, the end of the live stream (the engine passes stderr on apart
# from stdout) is awaited this long at most, as the Docker backend does.
_LIVE_END_WAIT_S = 0.5
# A call's cleanup (its container's removal, its replacement's start) waits this
# long after the call: docker-py's work in the host's threads would otherwise take
# the GIL (and the 2 cores) from Ray while it sends the reply.
_AFTER_REPLY_S = 0.05
LIVE_OFF, LIVE_KEEP, LIVE_STREAM = 0, 1, 2
"""What a host does with a call's live frames: drop them (the runner sends none), keep
them for the end (a tool call's printed output, should it time out or die), stream them."""
# The runner streams at most LIVE_CAP_BYTES of output live, in frames of at most
# LIVE_FRAME_LIMIT; kept for the end, more than this is not the runner's doing.
_LIVE_KEEP_LIMIT = 2 * LIVE_CAP_BYTES + 64 * 1024
_DEFAULT_LEASE_S = 30.0
# The longest lease a renewal may ask for: a bad value never keeps containers a day.
_MAX_LEASE_S = 3600.0
CODE_FINGERPRINT = code_fingerprint()
"""The sandbox code this process loaded (at import: a host's actor keeps it for its life);
an orchestrator places nothing on a host whose record gives another."""


def host_actor_name(host: str) -> str:
    """The Ray actor name of the host the operator named ``host``."""
    return f"stockade-host:{host}"


class _Pool:
    def __init__(self, pool: WarmPool[SandboxContainer], image_id: str) -> None:
        self.pool = pool
        self.image_id = image_id


class SandboxHost:
    """The actor's body (wrapped with ``ray.remote`` by the Ray backend; async methods)."""

    def __init__(self, name: str, *, max_threads: int = 8) -> None:
        self._name = name
        # The node's engine: DOCKER_HOST in `ray start`'s environment, read by the SDK.
        self._client = engine_client()
        self._images = ImageBuilder(self._client)
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="host")
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._lock = asyncio.Lock()
        self._factories: dict[str, ContainerFactory] = {}
        # One directory of egress gates for every orchestrator's containers; a host
        # killed with its node leaves it, and the next one started here removes it.
        self._gates = EgressGates()
        # Orchestrators that bind credentials: their CA and their own gates (whose
        # proxies terminate TLS for the bound hosts), by orchestrator id.
        self._egress: dict[str, tuple[HostCA, EgressGates]] = {}
        # Credentials come sealed to this key, which never leaves this process.
        self._sealing = SealingKey()
        self._in_flight = 0
        self._served = 0
        self._last_error = ""
        # Why this host refuses each orchestrator that registered (their image sets
        # differ: one may be served while another is refused), by orchestrator id.
        self._refused: dict[str, str] = {}
        self._reaped = False
        # Set by `stockade hosts drain`: placement sends this host nothing new.
        self._draining = False
        # Orchestrators' leases: (last renewal, length), and the task expiring them.
        self._leases: dict[str, tuple[float, float]] = {}
        self._janitor: asyncio.Task[None] | None = None
        self._destroying: set[asyncio.Task[None]] = set()

    async def _blocking(self, func: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def _prepare_gates(self) -> None:
        """Once per host: what a host killed here before left of its gates goes now."""
        try:
            await self._gates.prepare()
        except OSError as exc:
            _log.warning("host %s: cannot make its egress gates' directory: %s", self._name, exc)

    async def register(
        self,
        images: list[str],
        orchestrator: str,
        lease_s: float,
        *,
        fresh: bool = False,
        egress: str = "",
    ) -> str:
        """Check the engine and ``images`` (logical names); a JSON record of this host.

        The record's ``refused`` names what is wrong for this orchestrator and
        the command that fixes it; a host refuses an orchestrator whose images
        it lacks and serves nothing to it (other orchestrators, with other
        images, are judged on their own). ``orchestrator`` takes a lease of
        ``lease_s``, renewed by each :meth:`describe` and call: when it expires
        (the orchestrator was killed, or cut off), the host removes that
        orchestrator's pools and containers. ``fresh``: the orchestrator has
        not used this host since it started, so whatever this host holds for
        its id belongs to an earlier life of it (killed, then restarted with
        the same identity) and is removed now, not at the lease's end.

        ``egress`` (JSON, for an orchestrator that binds credentials): ``ca``, its
        deployment CA's certificate (PEM); ``profiles``, those whose sandboxes
        trust it; ``upstream_ca``, PEM its proxies trust upstream besides this
        host's store (may be empty). Kept for the orchestrator's life.
        """
        await self._prepare_gates()
        if fresh:
            try:
                removed = await self.release(orchestrator)
            except InfrastructureError as exc:  # the engine is away: the lease or reap
                self._last_error = f"releasing {orchestrator[:8]}'s earlier life: {exc}"
            else:
                if removed:
                    _log.info(
                        "host %s removed %d container(s) of %s's earlier life",
                        self._name,
                        removed,
                        orchestrator[:8],
                    )
        self._leases[orchestrator] = (time.monotonic(), lease_s)
        if self._janitor is None:
            self._janitor = asyncio.get_running_loop().create_task(self._expire_leases())
        self._refused.pop(orchestrator, None)
        refusal = await self._register_egress(orchestrator, egress)
        refusal = refusal or await self._check_images(images)
        if refusal:
            self._refused[orchestrator] = refusal
        elif not self._reaped:
            # Containers of orchestrators (or of an earlier life of this host) that are gone.
            removed = await self._blocking(reap, self._client)
            self._reaped = True
            if removed:
                _log.info("host %s reaped %d leftover container(s)", self._name, len(removed))
        return await self.describe(orchestrator)

    async def _check_images(self, images: list[str]) -> str:
        """Why this host cannot serve ``images`` (logical names), or ``""``."""
        problems, missing, unresolved = [], [], False
        for image in images:
            try:
                tag = await self._blocking(self._images.resolve, image)
            except InfrastructureError as exc:
                # A tag names its base's image id: without the base here, the
                # host cannot say which tag the orchestrator's checkout wants.
                problems.append(f"{image}: {exc}")
                unresolved = True
                continue
            try:
                await self._blocking(self._images.image_id, tag)
            except InfrastructureError as exc:
                problems.append(f"{image}: {exc}")
                missing.append(tag)
        if unresolved:
            missing.append("<the tags `stockade images build` lists there>")
        if not problems:
            return ""
        return (
            f"host {self._name} refuses to register: its engine lacks images built from "
            f"the orchestrator's inputs ({'; '.join(problems)}); fix: on node "
            f"{os.uname().nodename}, with the DOCKER_HOST that `ray start` was given, run "
            "`stockade images build` from the same checkout, or copy the images from an "
            f"engine that has them: `docker save {' '.join(missing)} | "
            "docker -H <the node's engine> load`"
        )

    async def _register_egress(self, orchestrator: str, egress: str) -> str:
        """Keep the orchestrator's CA and make its gates (see :meth:`register`); why this
        host refuses it, or ``""``."""
        if not egress or orchestrator in self._egress:
            return ""
        try:
            parsed = json.loads(egress)
            ca = HostCA(str(parsed["ca"]).encode("ascii"))
            upstream = default_upstream_tls()
            if parsed.get("upstream_ca"):
                upstream.load_verify_locations(cadata=str(parsed["upstream_ca"]))
            profiles = frozenset(map(str, parsed["profiles"]))
            gates = EgressGates(
                interception=Interception(ca=ca, profiles=profiles, upstream_tls=upstream)
            )
            await gates.prepare()
        except (ValueError, KeyError, TypeError, ssl.SSLError, OSError) as exc:
            return (
                f"host {self._name} refuses to register: the orchestrator's egress CA "
                f"is unusable here ({type(exc).__name__}: {exc})"
            )
        self._egress[orchestrator] = (ca, gates)
        return ""

    async def _expire_leases(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for orchestrator, (renewed, lease_s) in list(self._leases.items()):
                if now - renewed > lease_s:
                    del self._leases[orchestrator]
                    try:
                        removed = await self.release(orchestrator)
                    except Exception as exc:  # the engine is away: next round
                        # Never ends this task: it alone expires leases, for the host's life.
                        self._leases[orchestrator] = (renewed, lease_s)
                        self._last_error = f"expiring {orchestrator[:8]}: {exc}"
                        continue
                    _log.info("lease of %s expired: %d container(s)", orchestrator[:8], removed)

    def _renew(self, orchestrator: str, lease_s: float = 0.0) -> None:
        if not orchestrator:
            return
        if not (0.0 < lease_s <= _MAX_LEASE_S):
            # A call's renewal names no length: the lease keeps its own. One that ran
            # out (the orchestrator was cut off) gets the default until the
            # orchestrator's next describe says its length again.
            lease_s = self._leases.get(orchestrator, (0.0, _DEFAULT_LEASE_S))[1]
        self._leases[orchestrator] = (time.monotonic(), lease_s)

    async def describe(self, orchestrator: str = "", lease_s: float = 0.0) -> str:
        """This host as a JSON record: node, engine, pools, load, drain state, last error.

        Renews ``orchestrator``'s lease, for ``lease_s`` when given (its length as
        registered: a lease that ran out while the orchestrator was cut off comes
        back with it, not the default). Only JSON text leaves the host, never a
        pickled object (``stockade hosts``, ``doctor`` and placement read it).
        """
        self._renew(orchestrator, lease_s)
        if orchestrator:
            refused = self._refused.get(orchestrator, "")
        elif self._refused and set(self._leases) <= set(self._refused):
            # An operator's view: refused when it refuses every orchestrator it knows.
            refused = "; ".join(sorted(set(self._refused.values())))
        else:
            refused = ""
        engine_error = ""
        try:
            version = (await self._blocking(self._client.version)).get("Version", "")
            runtimes = sorted((await self._blocking(self._client.info)).get("Runtimes", {}))
        except (docker.errors.DockerException, requests.RequestException) as exc:
            # The SDK raises requests' own errors for an engine that does not answer.
            # The record still goes out: it renews the lease and says why no call fits.
            version, runtimes = "", []
            engine_error = f"its engine does not answer: {exc}"[:500]
            self._last_error = f"engine: {exc}"
        # Warm containers per orchestrator and profile, for placement; per profile
        # name over every orchestrator, for operators.
        ready: dict[str, dict[str, int]] = {}
        profiles: dict[str, dict[str, int]] = {}
        for (orch, key), entry in self._pools.items():
            if entry.pool.ready:
                ready.setdefault(orch, {})[key] = entry.pool.ready
            sizes = profiles.setdefault(entry.pool.name, {"ready": 0, "starting": 0, "target": 0})
            sizes["ready"] += entry.pool.ready
            sizes["starting"] += entry.pool.starting
            sizes["target"] += entry.pool.size
        node_id = _node_id()
        return json.dumps(
            {
                "host": self._name,
                "node": os.uname().nodename,
                "node_id": node_id,
                "pid": os.getpid(),
                "engine_version": version,
                "code": CODE_FINGERPRINT,
                # Not empty: the host is lost to placement until its engine answers.
                "engine_error": engine_error,
                "runtimes": runtimes,
                # The node's Ray processes inherit `ray start`'s environment: a node
                # started without token authentication says so here (doctor fails it).
                "token_auth": token_authentication()[0],
                # What a call's credentials are sealed to (see _host_credentials).
                "sealing_key": self._sealing.public,
                # For this orchestrator (an operator: for all of them), and per
                # orchestrator (short ids): a host may refuse one and serve another.
                "refused": refused,
                "refused_for": {orch[:8]: why for orch, why in self._refused.items()},
                "draining": self._draining,
                "pools": {
                    f"{orch[:8]}/{json.loads(key)['name']}": entry.pool.ready
                    for (orch, key), entry in self._pools.items()
                },
                "profiles": profiles,
                "ready": ready,
                "orchestrators": len(self._leases),
                # Whether this host holds the asking orchestrator's egress CA: one whose
                # lease ran out (cut off for a while) was released, CA included, and
                # registers again when it sees False here.
                "egress_registered": orchestrator in self._egress,
                "in_flight": self._in_flight,
                "served": self._served,
                "last_error": self._last_error,
            }
        )

    async def drain(self, draining: bool) -> str:
        """Stop (``True``) or resume (``False``) taking new calls; this host's record.

        Every orchestrator's placement reads the flag from the host's record at
        its next refresh and sends nothing new; calls in flight finish. The
        flag lives in this actor: a host whose node restarts comes back serving.
        """
        self._draining = draining
        _log.info("host %s %s", self._name, "draining" if draining else "serving again")
        return await self.describe()

    def _factory(self, orchestrator: str) -> ContainerFactory:
        factory = self._factories.get(orchestrator)
        if factory is None:
            egress = self._egress.get(orchestrator)
            gates = self._gates if egress is None else egress[1]
            factory = ContainerFactory(self._client, self._executor, gates, backend=orchestrator)
            self._factories[orchestrator] = factory
        return factory

    async def _pool(self, orchestrator: str, profile_json: str) -> _Pool:
        key = (orchestrator, profile_json)
        entry = self._pools.get(key)
        if entry is not None:
            return entry
        async with self._lock:
            entry = self._pools.get(key)
            if entry is None:
                profile = SandboxProfile.model_validate_json(profile_json)
                tag = await self._blocking(self._images.resolve, profile.image)
                image_id = await self._blocking(self._images.image_id, tag)
                factory = self._factory(orchestrator)

                async def launch(waited_for: bool) -> SandboxContainer:
                    return await factory.launch(profile, tag, image_id, lean=waited_for)

                pool = WarmPool(
                    name=profile.name,
                    launch=launch,
                    destroy=factory.destroy,
                    size=profile.pool_size,
                    max_starting=2,
                    max_idle_s=POOL_IDLE_S,
                )
                pool.start()
                entry = _Pool(pool, image_id)
                self._pools[key] = entry
        return entry

    async def warm(self, orchestrator: str, profile_json: str, timeout_s: float) -> str:
        """Start the orchestrator's pool for the profile and wait up to ``timeout_s`` for it
        to fill (0: do not wait); this host's record."""
        entry = await self._pool(orchestrator, profile_json)
        if timeout_s > 0:
            await entry.pool.wait_ready(timeout_s=timeout_s)
        return await self.describe()

    async def execute(
        self,
        orchestrator: str,
        profile_json: str,
        request: bytes,
        timeout_s: float,
        return_workspace: bool,
        *,
        live: int = LIVE_OFF,
        credentials: bytes = b"",
    ) -> tuple[str, bytes, bytes]:
        """:meth:`stream` as one return value: the end record, the reply, the live bytes.

        For a call that may run again (no egress, or an idempotent tool) and has no
        listener: nobody needs to know when it started or what it prints as it
        runs, and one return value costs Ray less than a streaming generator
        (``benchmarks/ray_bench.py``, row (e)).
        """
        record, reply, kept = "", b"", bytearray()
        items = self.stream(
            orchestrator,
            profile_json,
            request,
            timeout_s,
            return_workspace,
            live=live,
            credentials=credentials,
        )
        async for kind, text, data in items:
            if kind == "live":
                kept += data
            elif kind == "end":
                record, reply = text, data
        return record, reply, bytes(kept)

    async def stream(
        self,
        orchestrator: str,
        profile_json: str,
        request: bytes,
        timeout_s: float,
        return_workspace: bool,
        *,
        live: int = LIVE_OFF,
        credentials: bytes = b"",
    ) -> AsyncIterator[tuple[str, str, bytes]]:
        """Relay one call: ``request`` (framed header, stdin, workspace) into a warm container.

        A Ray streaming generator (``num_returns="streaming"``) of ``(kind, record, data)``:

        - ``("started", record, b"")`` once a container is in hand, just before the
          request goes into it: a host lost after this may have run the call;
        - ``("live", "", data)`` the container's stderr (the runner's live frames, not
          decoded here) as it comes, when ``live`` is :data:`LIVE_STREAM`;
        - ``("end", record, reply)`` last: how the exchange ended (JSON) and the
          runner's reply frames as raw bytes. With :data:`LIVE_KEEP` the live bytes
          come with it (``data`` of a ``("live", ...)`` item just before), for a
          call that timed out or died: what it printed.

        ``credentials``: the call's credentials and leaves, sealed to this host
        (see :mod:`orchestrator.sandbox._host_credentials`); the container's proxy
        adds them, and the call does not start when they cannot be opened or used.

        The container is destroyed whatever happens, cancellation included.
        """
        started, began_at = time.monotonic(), time.time()
        self._renew(orchestrator)
        self._in_flight += 1
        try:
            entry, container, from_pool = await self._take(orchestrator, profile_json, credentials)
        except InfrastructureError as exc:
            self._in_flight -= 1
            self._last_error = str(exc)
            failure = {"code": exc.code.value, "retryable": exc.retryable, "message": str(exc)}
            yield "end", json.dumps({"ended": "engine", **failure}), b""
            return
        except BaseException:  # cancelled while waiting for a container
            self._in_flight -= 1
            raise
        record: dict[str, Any] = {
            "host": self._name,
            "container_id": container.id,
            "image_digest": container.image_id,
            "from_pool": from_pool,
        }
        factory = self._factory(orchestrator)
        relay = _Relay(container, live)
        try:
            # For a call that may not run twice the backend asks for a
            # back-pressure of one item: this yield returns once the
            # orchestrator has the item, so it knows the call may have started
            # before anything could have. That wait is Ray's, not the host's.
            paused = time.monotonic()
            yield "started", json.dumps(record), b""
            waited = time.monotonic() - paused
            task = asyncio.get_running_loop().create_task(
                relay.run(request, timeout_s, return_workspace)
            )
            try:
                while not task.done():
                    await relay.wait(task)
                    if live == LIVE_STREAM and relay.live:
                        yield "live", "", relay.take_live()
                ended = await task
            finally:
                if not task.done():  # cancelled: the relay stops with it
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            await self._ended(record, ended, factory, container)
            if relay.live:
                paused = time.monotonic()
                yield "live", "", relay.take_live()
                waited += time.monotonic() - paused
            record["host_s"] = time.monotonic() - started - waited
            # Wall clock when the host began and ended: with the orchestrator's own
            # (one machine, or synchronised clocks) Ray's time splits into its legs.
            record["clock"] = [began_at, time.time()]
            yield "end", json.dumps(record), bytes(relay.reply)
        finally:
            self._in_flight -= 1
            self._served += 1
            # Destroying the container ends a call on every path (cancellation
            # too: the orchestrator's ray.cancel lands here), off the reply's path.
            asyncio.get_running_loop().call_later(
                _AFTER_REPLY_S, self._after_call, factory, container, entry.pool
            )

    async def _take(
        self, orchestrator: str, profile_json: str, credentials: bytes
    ) -> tuple[_Pool, SandboxContainer, bool]:
        """The call's pool, a container from it (armed with the call's credentials), and
        whether it was warm."""
        bound = await self._unseal(orchestrator, credentials) if credentials else None
        entry = await self._pool(orchestrator, profile_json)
        # The replacement starts after the call (if another container is
        # ready meanwhile), not on the same cores during it.
        container, from_pool = await entry.pool.acquire(defer_refill=True)
        self._arm(orchestrator, entry, container, bound)
        return entry, container, from_pool

    def _arm(
        self,
        orchestrator: str,
        entry: _Pool,
        container: SandboxContainer,
        bound: CallCredentials | None,
    ) -> None:
        """Give the container's proxy the call's credentials. A call that cannot have
        them never runs: its container goes, and :class:`InfrastructureError` says why."""
        if bound is None:
            return
        try:
            if container.gate is None:
                raise ValueError(f"profile {container.profile.name!r} has no egress proxy")
            container.gate.arm(bound.credentials)
        except ValueError as exc:
            self._after_call(self._factory(orchestrator), container, entry.pool)
            raise self._uncredentialed(exc) from None

    async def _unseal(self, orchestrator: str, sealed: bytes) -> CallCredentials:
        """Open a call's sealed credentials and install their leaves in the orchestrator's CA."""
        egress = self._egress.get(orchestrator)
        try:
            if egress is None:
                raise ValueError("the orchestrator registered no egress CA with this host")
            bound = CallCredentials.decode(
                self._sealing.open(sealed, host=self._name, orchestrator=orchestrator)
            )
            ca = egress[0]
            if not ca.holds(bound.leaves):  # a new leaf: its key is loaded through a file
                await self._blocking(ca.install, bound.leaves)
        except (ValueError, ssl.SSLError) as exc:
            raise self._uncredentialed(exc) from None
        return bound

    def _uncredentialed(self, exc: Exception) -> InfrastructureError:
        """Why a call does not run: its credentials cannot be opened or added here."""
        return InfrastructureError(
            f"host {self._name} cannot add the call's credentials: {exc}",
            code=ErrorCode.ENGINE_ERROR,
            op="sandbox.execute",
            retryable=False,
        )

    @staticmethod
    async def _ended(
        record: dict[str, Any], ended: str, factory: ContainerFactory, container: SandboxContainer
    ) -> None:
        """Complete the call's record: how it ended, a dead container's state, its egress."""
        record["ended"] = ended
        if ended == "timeout":
            # Killed before the answer says so: every process in it dies.
            with contextlib.suppress(InfrastructureError):
                await factory.destroy(container)
        elif ended == "died":
            record["state"] = await factory.state(container.id)
        if container.gate is not None:
            # The runner exits after its reply, closing the tool's proxy
            # connections: their reports come in now.
            settled = await container.gate.settle()
            record["egress"] = [event.model_dump(mode="json") for event in settled]

    def _after_call(
        self,
        factory: ContainerFactory,
        container: SandboxContainer,
        pool: WarmPool[SandboxContainer],
    ) -> None:
        """Remove the call's container and start its replacement (the reply has left)."""
        self._destroy_later(factory, container)
        pool.refill()

    def _destroy_later(self, factory: ContainerFactory, container: SandboxContainer) -> None:
        async def destroy() -> None:
            try:
                await factory.destroy(container)
            except InfrastructureError as exc:  # release() or the next reap removes it
                self._last_error = f"could not remove {container.id[:12]}: {exc}"

        task = asyncio.get_running_loop().create_task(destroy())
        self._destroying.add(task)
        task.add_done_callback(self._destroying.discard)

    async def release(self, orchestrator: str) -> int:
        """Close the orchestrator's pools and remove every container it has here."""
        self._leases.pop(orchestrator, None)
        self._refused.pop(orchestrator, None)
        for key in [key for key in self._pools if key[0] == orchestrator]:
            await self._pools.pop(key).pool.close()
        if self._destroying:
            await asyncio.gather(*self._destroying, return_exceptions=True)
        factory = self._factories.pop(orchestrator, None)
        label = f"{BACKEND_LABEL}={orchestrator}"
        # The SDK's own errors (requests' for an engine that does not answer) become
        # InfrastructureError: the callers keep the lease to expire it again.
        with engine_errors("host.release"):
            listed = await self._blocking(
                lambda: self._client.api.containers(all=True, filters={"label": label})
            )
            for info in listed:
                if factory is not None:
                    await factory.destroy_id(info["Id"])
                else:
                    await self._blocking(
                        lambda cid=info["Id"]: self._client.api.remove_container(cid, force=True)
                    )
        egress = self._egress.pop(orchestrator, None)
        if egress is not None:  # its CA and gates go with its containers
            await egress[1].close()
        return len(listed)


class _Relay:
    """One call's exchange with its container, the host's side (a dumb pipe with caps)."""

    def __init__(self, container: SandboxContainer, live: int) -> None:
        self._container = container
        self._live_mode = live
        self.reply = bytearray()
        """The runner's reply frames, copied as they came (cut at the orchestrator's caps)."""
        self.live = bytearray()
        """The container's stderr (live frames) not yet handed on."""
        self._kept = 0
        # Only to know when the live stream ended (L0): the orchestrator decodes it.
        self._ending = LiveDecoder(None)
        self._woken = asyncio.Event()

    def _stderr(self, data: bytes) -> None:
        self._ending.feed(data)
        if self._kept + len(data) > _LIVE_KEEP_LIMIT:
            return
        self._kept += len(data)
        self.live += data
        if self._live_mode == LIVE_STREAM:
            self._woken.set()

    def take_live(self) -> bytes:
        """The live bytes received since the last call."""
        data = bytes(self.live)
        self.live.clear()
        return data

    async def wait(self, task: asyncio.Task[str]) -> None:
        """Until live bytes came in (when streaming) or ``task`` ended."""
        waiter = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        self._woken.clear()

    async def run(self, request: bytes, timeout_s: float, return_workspace: bool) -> str:
        """Write the request and copy the reply: ``complete``, ``timeout`` or ``died``."""
        stream = self._container.stream
        if self._live_mode != LIVE_OFF:
            stream.on_stderr = self._stderr
        try:
            async with asyncio.timeout(timeout_s + _REPORT_GRACE_S):
                await stream.write_framed([request])
                await self._copy_reply(stream, self._container.profile, return_workspace)
                if self._live_mode != LIVE_OFF:  # the live stream's last frames
                    await stream.drain(lambda: self._ending.ended, _LIVE_END_WAIT_S)
        except TimeoutError:
            return "timeout"
        except (asyncio.IncompleteReadError, ConnectionError):
            return "died"
        finally:
            self._woken.set()
        return "complete"

    async def _copy_reply(
        self, stream: AttachedStream, profile: SandboxProfile, return_workspace: bool
    ) -> None:
        """Copy the reply's frames, at most the caps the orchestrator checks against.

        A frame past its cap is passed on as an announcement of cap + 1 bytes,
        so the orchestrator refuses it as it would from the container itself.
        """
        reply = self.reply

        async def copy(limit: int) -> bytes | None:
            try:
                payload = await stream.read_frame(limit)
            except FrameTooLargeError:
                reply.extend((limit + 1).to_bytes(4, "big"))
                return None
            reply.extend(frame(payload))
            return payload

        report = await copy(HEADER_LIMIT)
        if report is None:
            return
        for _ in range(2):  # stdout, stderr
            if await copy(profile.output_limit_bytes) is None:
                return
        try:
            parsed = RunnerReport.model_validate_json(report)
        except pydantic.ValidationError:
            return  # the orchestrator refuses it in its own check
        if not workspace_follows(parsed, return_workspace):
            return
        room = profile.workspace_bytes
        # The orchestrator's reader takes at most workspace_max_files entries and refuses
        # at most as many, then refuses the whole workspace at the next one: what comes
        # after is never read there, so it is neither held here nor sent. Without the
        # bound a runner could fill the host's memory with empty entries.
        entries = 2 * profile.workspace_max_files + 1
        while entries and (header := await copy(ENTRY_LIMIT)):
            entries -= 1
            if header[:1] == ENTRY_FILE:
                content = await copy(room)
                if content is None:
                    return
                room -= len(content)


def _node_id() -> str:
    """Ray's id of the node this actor runs on (for operators; never a metric label)."""
    import ray  # noqa: PLC0415 - only inside a Ray worker

    return str(ray.get_runtime_context().get_node_id())
