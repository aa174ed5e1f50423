"""``stockade doctor`` under ``sandbox.engine: ray``: the cluster and every sandbox host.

In order, each check skipped when one it needs failed: Ray is installed; the
cluster's address answers (a plain TCP connect, bounded); this orchestrator
has token authentication on (``RAY_AUTH_MODE=token`` and a token: a Ray node
holds a Docker socket, so a cluster without it fails); the driver joins; every
node marked ``stockade_host`` carries a name; each host registers the way an
orchestrator registers it (images present and built from this checkout's
inputs), runs with token authentication and its engine answers with the
runtimes the profiles name. Every failure names the command that fixes it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from orchestrator.config import LoadedConfig, RayBackendSettings
from orchestrator.errors import StockadeError
from orchestrator.sandbox.hosts import reachable

__all__ = ["check_cluster"]

_CONNECT_TIMEOUT_S = 5.0
_JOIN_TIMEOUT_S = 60.0

Report = Callable[[str, str, str], None]
"""(check name, detail, fix): ``fix`` empty for a passed check."""


_NAMES = (
    "cluster address reachable",
    "token authentication on",
    "cluster joined",
    "sandbox hosts registered",
)
_TOKEN_FIX = (
    "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<the cluster's token> for this "  # noqa: S105
    "orchestrator, and start every node with them (docs/scale-out.md)"
)
_NAME_FIX = (
    'restart the node with ray start ... --resources \'{"stockade_host": 1, '
    '"stockade_host:<name>": 1}\''
)


async def check_cluster(
    loaded: LoadedConfig,
    cluster: RayBackendSettings,
    *,
    ok: Report,
    failed: Report,
    skipped: Callable[[str, str], None],
) -> bool:
    """Run the cluster's checks, reporting each; whether every one passed."""

    def skip_after(name: str | None, because: str) -> bool:
        start = _NAMES.index(name) + 1 if name else 0
        for later in _NAMES[start:]:
            skipped(later, because)
        return False

    try:
        import ray  # noqa: PLC0415 - optional dependency (the ray extra)
    except ImportError:
        failed("ray installed", "sandbox.engine is ray", "pip install 'stockade[ray]'")
        return skip_after(None, "Ray is not installed")
    ok("ray installed", f"Ray {ray.__version__}", "")

    head, _, port = cluster.address.rpartition(":")
    why = await reachable(cluster.address, _CONNECT_TIMEOUT_S)
    if why:
        where = f" in {loaded.file}" if loaded.file else ""
        failed(
            _NAMES[0],
            f"{cluster.address}: {why}",
            f"start the head there (RAY_AUTH_MODE=token ray start --head --port={port} "
            f"--node-ip-address={head} ...; docs/scale-out.md), or correct sandbox.ray.address"
            f"{where}",
        )
        return skip_after(_NAMES[0], "the cluster's address does not answer")
    ok(_NAMES[0], cluster.address, "")

    from orchestrator.sandbox._ray_auth import token_authentication  # noqa: PLC0415

    on, token = token_authentication()
    if not (on and token):
        failed(
            _NAMES[1],
            "this orchestrator runs "
            + ("with RAY_AUTH_MODE=token but no token" if on else "without RAY_AUTH_MODE=token")
            + ": a cluster without token authentication lets anyone who reaches it run code "
            "with its nodes' Docker sockets",
            _TOKEN_FIX,
        )
        return skip_after(_NAMES[1], "token authentication is off")

    from orchestrator.sandbox.hosts import connect  # noqa: PLC0415 - the ray extra

    try:
        await asyncio.wait_for(
            asyncio.to_thread(connect, cluster.address, cluster.namespace), _JOIN_TIMEOUT_S
        )
    except (StockadeError, TimeoutError, ray.exceptions.RayError, ConnectionError) as exc:
        failed(
            _NAMES[1],
            f"joining {cluster.address} failed: {type(exc).__name__}: {exc}"[:800],
            _TOKEN_FIX + "; the orchestrator must run on a node of the cluster",
        )
        return skip_after(_NAMES[1], "the cluster could not be joined")
    nodes: list[dict[str, Any]] = await asyncio.to_thread(ray.nodes)
    refused, records = await _register(loaded, cluster)
    unauthenticated = sorted(n for n, record in records.items() if not record.get("token_auth"))
    if unauthenticated:
        failed(
            _NAMES[1],
            f"host(s) {', '.join(unauthenticated)} run without RAY_AUTH_MODE=token",
            "restart those nodes with RAY_AUTH_MODE=token RAY_AUTH_TOKEN=<the cluster's token> "
            "in `ray start`'s environment",
        )
    else:
        ok(_NAMES[1], "this orchestrator and every registered host", "")
    ok(_NAMES[2], f"{cluster.address}, namespace {cluster.namespace}", "")
    hosts_ok = _hosts(loaded, cluster, nodes, refused, records, ok=ok, failed=failed)
    return hosts_ok and not unauthenticated


def _hosts(
    loaded: LoadedConfig,
    cluster: RayBackendSettings,
    nodes: list[dict[str, Any]],
    refused: dict[str, str],
    records: dict[str, dict[str, Any]],
    *,
    ok: Report,
    failed: Report,
) -> bool:
    """Every node marked stockade_host is named, and each named host serves."""
    from orchestrator.sandbox.hosts import named_nodes, unnamed_nodes  # noqa: PLC0415

    named = named_nodes(nodes)
    unnamed = unnamed_nodes(nodes)
    if unnamed:
        failed(_NAMES[3], f"node(s) {', '.join(unnamed)} carry stockade_host unnamed", _NAME_FIX)
    if not named:
        failed(_NAMES[3], "no node of the cluster carries stockade_host:<name>", _NAME_FIX)
        return False
    if not unnamed:
        ok(_NAMES[3], ", ".join(sorted(named)), "")
    passed = not unnamed
    for name, node in sorted(named.items()):
        label = f"host {name} registered"
        if not node.alive:
            failed(
                label,
                f"its node ({node.address}) is not alive",
                f"on that node: ray start --address={cluster.address} ... (docs/scale-out.md)",
            )
        elif name in refused:
            # The refusal names its fix: the missing images and the command that builds or
            # copies them, or the command that replaces an actor running other sandbox code.
            failed(
                label,
                refused[name],
                "build or copy the images, or replace the host's actor, as the detail says",
            )
        elif name not in records:
            failed(label, "its actor did not answer", f"stockade hosts {_flag(loaded)}".strip())
        else:
            ok(label, f"node {node.address}, images match", "")
            passed = _engine(name, records[name], loaded, ok=ok, failed=failed) and passed
            continue
        passed = False
    return passed


def _flag(loaded: LoadedConfig) -> str:
    return f"--config {loaded.file}" if loaded.file else ""


def _engine(
    name: str, record: dict[str, Any], loaded: LoadedConfig, *, ok: Report, failed: Report
) -> bool:
    """The host's engine answers and has every runtime the profiles name."""
    label = f"host {name} engine answers"
    fix = (
        f"on host {name}'s node: start its Docker engine (bash scripts/setup.sh registers "
        "runsc too), then restart the node's Ray with that DOCKER_HOST"
    )
    version = str(record.get("engine_version", ""))
    if not version:
        failed(label, str(record.get("last_error", "")) or "no engine version", fix)
        return False
    wanted = {p.runtime for p in loaded.config.sandbox.effective_profiles().values()}
    missing = sorted(wanted - set(record.get("runtimes", ())))
    if missing:
        failed(label, f"Docker {version} lacks the runtime(s) {', '.join(missing)}", fix)
        return False
    ok(label, f"Docker {version}, runtimes {', '.join(record.get('runtimes', ()))}", "")
    return True


async def _register(
    loaded: LoadedConfig, cluster: RayBackendSettings
) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Register with every host as an orchestrator would (then leave): the backend, records."""
    from orchestrator.sandbox.ray_backend import RayBackend  # noqa: PLC0415 - the ray extra

    images = sorted({p.image for p in loaded.config.sandbox.effective_profiles().values()})
    backend = RayBackend(address=cluster.address, namespace=cluster.namespace, images=images)
    records: dict[str, dict[str, Any]] = {}
    try:
        await backend.refresh()
        for name, host in backend.hosts.items():
            if not host.lost:
                raw = await asyncio.wait_for(host.actor.describe.remote(), 30.0)
                records[name] = json.loads(raw)
    finally:
        await backend.close()
    return backend.refused, records
