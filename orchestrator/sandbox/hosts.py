"""The sandbox hosts of a Ray cluster as operators see them (issue 14).

Shared by the Ray backend (discovery, placement), ``stockade hosts`` (listing,
drain) and ``stockade doctor`` (cluster checks), so each finds the hosts the
same way and talks to the same actors:

- a host is a live node carrying ``stockade_host:<name>`` (the operator's name
  for it); its actor is the detached actor named :func:`host_actor_name`, in
  the configured Ray namespace, created on first use;
- a host's :class:`HostView` is read from its actor's ``describe`` record (JSON
  text: never a pickled object) plus what the cluster says of its node.

Every function here expects Ray to be imported and connected (:func:`connect`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.errors import ConfigError, NotFoundError
from orchestrator.sandbox.ray_host import (
    CODE_FINGERPRINT,
    HOST_RESOURCE,
    SandboxHost,
    host_actor_name,
)

__all__ = [
    "HOST_STATES",
    "HostState",
    "HostView",
    "connect",
    "host_actor",
    "list_hosts",
    "named_nodes",
    "reachable",
    "set_draining",
    "unnamed_nodes",
]

HostState = Literal["up", "draining", "lost", "refused"]
HOST_STATES: tuple[HostState, ...] = ("up", "draining", "lost", "refused")
"""up: takes calls; draining: finishes its calls, takes no new ones; lost: node or actor
gone; refused: its images are missing or differ (the reason names the fix)."""

_DESCRIBE_TIMEOUT_S = 30.0


@dataclass(frozen=True, kw_only=True)
class NodeSeen:
    """A node of the cluster that carries a host name, as Ray's node table has it."""

    name: str
    alive: bool
    node_id: str
    address: str


@dataclass(frozen=True, kw_only=True)
class HostView:
    """One host, as ``stockade hosts`` prints it."""

    name: str
    """The operator-assigned name (``stockade_host:<name>``)."""
    state: HostState
    reason: str = ""
    """Why the host is lost or refused (with the command that fixes a refusal)."""
    node: str = ""
    """The node's address (and Ray's node id in :attr:`node_id`)."""
    node_id: str = ""
    engine_version: str = ""
    runtimes: tuple[str, ...] = ()
    profiles: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Warm pools by profile name, over every orchestrator: ready, starting, target."""
    in_flight: int = 0
    served: int = 0
    last_error: str = ""
    token_auth: bool = False
    """The node runs with Ray's token authentication (``RAY_AUTH_MODE=token``)."""
    refused_for: Mapping[str, str] = field(default_factory=dict)
    """Orchestrators (first 8 characters of their ids) this host refuses, and why: images
    are per orchestrator, so a host up for one may refuse another. The state is
    ``refused`` only when it refuses every orchestrator it knows."""

    def as_json(self) -> dict[str, Any]:
        """The view as ``stockade hosts --json`` prints it."""
        return {
            "name": self.name,
            "state": self.state,
            "reason": self.reason,
            "node": self.node,
            "node_id": self.node_id,
            "engine_version": self.engine_version,
            "runtimes": list(self.runtimes),
            "profiles": {name: dict(sizes) for name, sizes in self.profiles.items()},
            "in_flight": self.in_flight,
            "served": self.served,
            "last_error": self.last_error,
            "token_auth": self.token_auth,
            "refused_for": dict(self.refused_for),
        }


def state_of(record: Mapping[str, Any]) -> HostState:
    """A live host's state from its ``describe`` record (lost: its engine does not answer)."""
    if record.get("engine_error"):
        return "lost"
    if record.get("refused"):
        return "refused"
    return "draining" if record.get("draining") else "up"


async def reachable(address: str, timeout_s: float = 5.0) -> str:
    """ "" when a TCP connection to ``address`` (``host:port``) opens in time, else why not.

    Checked before joining: Ray's own connect retries an unreachable address for
    a long while before it fails.
    """
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except (OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    writer.close()
    return ""


def connect(address: str, namespace: str) -> None:
    """Join the cluster at ``address`` as a driver in ``namespace`` (blocking; the ray extra)."""
    try:
        import ray  # noqa: PLC0415 - optional dependency (the ray extra)
    except ImportError:
        raise ConfigError(
            "sandbox.engine is ray but Ray is not installed: pip install 'stockade[ray]'",
            field="sandbox.engine",
        ) from None
    if not ray.is_initialized():
        ray.init(
            address=address,
            namespace=namespace,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )


def named_nodes(nodes: list[dict[str, Any]]) -> dict[str, NodeSeen]:
    """Hosts by name from ``ray.nodes()``; a name on a live node wins over a dead one's."""
    prefix = f"{HOST_RESOURCE}:"
    found: dict[str, NodeSeen] = {}
    for node in nodes:
        for key in node.get("Resources", {}):
            if not key.startswith(prefix):
                continue
            seen = NodeSeen(
                name=key[len(prefix) :],
                alive=bool(node.get("Alive")),
                node_id=str(node.get("NodeID", "")),
                address=str(node.get("NodeManagerAddress", "")),
            )
            if seen.alive or seen.name not in found:
                found[seen.name] = seen
    return found


def unnamed_nodes(nodes: list[dict[str, Any]]) -> list[str]:
    """Addresses of live nodes marked ``stockade_host`` without a ``stockade_host:<name>``."""
    prefix = f"{HOST_RESOURCE}:"
    return [
        str(node.get("NodeManagerAddress", ""))
        for node in nodes
        if node.get("Alive")
        and HOST_RESOURCE in node.get("Resources", {})
        and not any(key.startswith(prefix) for key in node.get("Resources", {}))
    ]


def host_actor(name: str, namespace: str) -> Any:
    """The host actor of ``name``: the existing one, or a new one on that node.

    Typed Any: Ray's stubs do not know the async methods' ``.remote``.
    """
    import ray  # noqa: PLC0415

    return (
        ray.remote(SandboxHost)
        .options(
            name=host_actor_name(name),
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            resources={HOST_RESOURCE: 1, f"{HOST_RESOURCE}:{name}": 1},
            max_concurrency=256,
            max_restarts=0,
        )
        .remote(name)
    )


def view(name: str, record: Mapping[str, Any], *, node: str = "") -> HostView:
    """The view of a live host from its ``describe`` record.

    A host running other Stockade code than this process is ``refused``, as every
    orchestrator of this version refuses it (``docs/scale-out.md``: upgrades).
    """
    state = state_of(record)
    reason = str(record.get("refused" if state == "refused" else "engine_error", ""))
    theirs = str(record.get("code", "")) or "older, without a fingerprint"
    if state in ("up", "draining") and theirs != CODE_FINGERPRINT:
        state = "refused"
        reason = (
            f"runs other Stockade code (code {theirs} there, {CODE_FINGERPRINT} here): "
            f"orchestrators of this version place nothing there; replace its actor "
            f"{host_actor_name(name)} (docs/scale-out.md, upgrades)"
        )
    return HostView(
        name=name,
        state=state,
        reason=reason,
        node=node,
        node_id=str(record.get("node_id", "")),
        engine_version=str(record.get("engine_version", "")),
        runtimes=tuple(record.get("runtimes", ())),
        profiles=dict(record.get("profiles", {})),
        in_flight=int(record.get("in_flight", 0)),
        served=int(record.get("served", 0)),
        last_error=str(record.get("last_error", "")),
        token_auth=bool(record.get("token_auth", False)),
        refused_for={str(k): str(v) for k, v in record.get("refused_for", {}).items()},
    )


async def _describe(seen: NodeSeen, namespace: str) -> HostView:
    import ray  # noqa: PLC0415

    if not seen.alive:
        return HostView(
            name=seen.name,
            state="lost",
            reason="its node is not alive in the cluster",
            node=seen.address,
            node_id=seen.node_id,
        )
    try:
        raw = await asyncio.wait_for(
            host_actor(seen.name, namespace).describe.remote(), _DESCRIBE_TIMEOUT_S
        )
    except (ray.exceptions.RayError, TimeoutError) as exc:
        return HostView(
            name=seen.name,
            state="lost",
            reason=f"its actor does not answer: {type(exc).__name__}: {exc}"[:500],
            node=seen.address,
            node_id=seen.node_id,
        )
    return view(seen.name, json.loads(raw), node=seen.address)


async def list_hosts(namespace: str) -> list[HostView]:
    """Every named host of the cluster, by name, asked at once."""
    import ray  # noqa: PLC0415

    nodes = await asyncio.to_thread(ray.nodes)
    seen = sorted(named_nodes(nodes).values(), key=lambda node: node.name)
    return list(await asyncio.gather(*(_describe(node, namespace) for node in seen)))


async def set_draining(name: str, namespace: str, draining: bool) -> HostView:
    """Drain (or undrain) the host ``name``; its view after the change."""
    import ray  # noqa: PLC0415

    nodes = named_nodes(await asyncio.to_thread(ray.nodes))
    seen = nodes.get(name)
    if seen is None or not seen.alive:
        known = ", ".join(sorted(n for n, s in nodes.items() if s.alive)) or "none"
        raise NotFoundError(
            f"no live sandbox host named {name!r} in the cluster (live hosts: {known})"
        )
    raw = await asyncio.wait_for(
        host_actor(name, namespace).drain.remote(draining), _DESCRIBE_TIMEOUT_S
    )
    return view(name, json.loads(raw), node=seen.address)
