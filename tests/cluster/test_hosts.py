"""Hosts an operator can see and steer, on the real two-node cluster (issue 14, points 2 and 6).

``stockade hosts`` (and drain / undrain) and ``stockade doctor`` run as the
commands they are: a second driver process inside the head's namespace, with
the cluster's token in its environment. The orchestrator under test is this
process's :class:`RayBackend`, whose placement must follow a drain and whose
metrics must name hosts by the operator's names. Nothing leaves the
namespaces the fixture made: the bad address is the head's own, on a closed port.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import docker
import pytest
import pytest_asyncio
from prometheus_client import generate_latest

from orchestrator.metrics import Metrics
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.hosts import connect, named_nodes
from orchestrator.sandbox.labels import BACKEND_LABEL
from orchestrator.sandbox.profile import DEFAULT_IMAGE, SandboxProfile
from orchestrator.sandbox.ray_backend import RayBackend
from orchestrator.testing.ray_cluster import RayCluster

pytestmark = [pytest.mark.cluster, pytest.mark.docker, pytest.mark.timeout(600)]

PROFILE = SandboxProfile(name="hosts-test", pool_size=1, timeout_s=20)
HOSTS = {"host-a", "host-b"}


def _config(cluster: RayCluster, tmp_path: Path, address: str | None = None) -> Path:
    """A configuration whose profiles use only the image both engines have."""
    return cluster.write_config(
        tmp_path,
        address=address,
        sandbox=f"  profiles:\n    default: {{image: {DEFAULT_IMAGE}, pool_size: 1}}\n"
        f"    http: {{image: {DEFAULT_IMAGE}, pool_size: 1}}\n",
    )


def _stockade(
    cluster: RayCluster, *args: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``stockade ARGS`` as a separate driver in the head's namespace."""
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{cluster.head_netns}", sys.executable, "-m",
         "orchestrator", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        env=os.environ.copy() if environ is None else environ,
    )  # fmt: skip


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON (exit {done.returncode}): {done.stdout}\n{done.stderr}")


async def _until(condition: Any, what: str, bound_s: float = 20.0) -> None:
    """Wait for ``condition()`` (the backend's next refreshes), at most ``bound_s``."""
    for _ in range(int(bound_s / 0.2)):
        if condition():
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"not reached in {bound_s:g} s: {what}")


@pytest_asyncio.fixture
async def backend(cluster: RayCluster) -> AsyncIterator[RayBackend]:
    """An orchestrator on the cluster, refreshing its hosts twice a second, with metrics."""
    made = RayBackend(
        address=cluster.address,
        images=[DEFAULT_IMAGE],
        profiles=[PROFILE],
        refresh_s=0.5,
        metrics=Metrics(),
    )
    await made.start()
    try:
        yield made
    finally:
        await made.close()


def _echo(text: str) -> ExecRequest:
    return ExecRequest(argv=("sh", "-c", f"echo {text}"))


async def test_stockade_hosts_lists_both_hosts_with_their_fields(
    cluster: RayCluster, backend: RayBackend, tmp_path: Path
) -> None:
    assert set(backend.hosts) == HOSTS
    done = _stockade(cluster, "hosts", "--json", "--config", str(_config(cluster, tmp_path)))
    assert done.returncode == 0, done.stderr
    listed = {host["name"]: host for host in _json(done)}
    assert set(listed) == HOSTS
    addresses = {node.name: node.address for node in cluster.nodes}
    for name, host in listed.items():
        assert host["state"] == "up" and host["reason"] == ""
        assert host["node"] == addresses[name]
        assert host["node_id"] and host["engine_version"]
        assert "runc" in host["runtimes"]
        # This orchestrator's pool of the profile is among the host's pools.
        assert host["profiles"][PROFILE.name]["target"] >= 1
        assert isinstance(host["in_flight"], int) and isinstance(host["served"], int)
        assert host["token_auth"] is True
        assert "last_error" in host
    table = _stockade(cluster, "hosts", "--config", str(_config(cluster, tmp_path)))
    assert table.returncode == 0, table.stderr
    assert "host-a" in table.stdout and "host-b" in table.stdout and "IN FLIGHT" in table.stdout


async def test_a_drained_host_gets_no_new_calls_until_undrained(
    cluster: RayCluster, backend: RayBackend, tmp_path: Path
) -> None:
    config = str(_config(cluster, tmp_path))
    try:
        drained = _stockade(cluster, "hosts", "drain", "host-b", "--json", "--config", config)
        assert drained.returncode == 0, drained.stderr
        assert _json(drained)[0]["state"] == "draining"
        await _until(lambda: backend.hosts["host-b"].state == "draining", "host-b draining")
        before = backend.hosts["host-b"].served
        results = await asyncio.gather(
            *(backend.execute(_echo(f"d{i}"), PROFILE) for i in range(6))
        )
        assert [r.stdout for r in results] == [f"d{i}\n" for i in range(6)]
        assert backend.hosts["host-b"].served == before
        listed = _stockade(cluster, "hosts", "--json", "--config", config)
        states = {host["name"]: host["state"] for host in _json(listed)}
        assert states == {"host-a": "up", "host-b": "draining"}
    finally:
        undrained = _stockade(cluster, "hosts", "undrain", "host-b", "--json", "--config", config)
    assert undrained.returncode == 0, undrained.stderr
    assert _json(undrained)[0]["state"] == "up"
    await _until(lambda: backend.hosts["host-b"].state == "up", "host-b up again")
    before = backend.hosts["host-b"].served
    results = await asyncio.gather(*(backend.execute(_echo(f"u{i}"), PROFILE) for i in range(6)))
    assert all(result.status is ExecStatus.OK for result in results)
    assert backend.hosts["host-b"].served > before


async def test_draining_an_unknown_host_names_the_live_ones(
    cluster: RayCluster, tmp_path: Path
) -> None:
    config = str(_config(cluster, tmp_path))
    done = _stockade(cluster, "hosts", "drain", "host-z", "--config", config)
    assert done.returncode == 2
    # Ray may print warnings of its own first: the command's line is an error, not a
    # configuration error.
    lines = done.stderr.splitlines()
    assert any(line.startswith("error: no live sandbox host named 'host-z'") for line in lines), (
        done.stderr
    )
    assert "host-a, host-b" in done.stderr


async def test_hosts_of_an_unreachable_cluster_is_a_clear_error(
    cluster: RayCluster, tmp_path: Path
) -> None:
    head = cluster.nodes[0].address  # its own address, a closed port: inside the namespace
    done = _stockade(cluster, "hosts", "--config", str(_config(cluster, tmp_path, f"{head}:1")))
    assert done.returncode == 1
    assert f"the Ray cluster at {head}:1 does not answer" in done.stderr
    assert "stockade doctor" in done.stderr and "Traceback" not in done.stderr


async def test_metrics_carry_the_operators_host_names(
    cluster: RayCluster, backend: RayBackend
) -> None:
    await asyncio.gather(*(backend.execute(_echo(f"m{i}"), PROFILE) for i in range(8)))
    metrics = backend._metrics
    text = generate_latest(metrics.registry).decode()
    for host in HOSTS:
        assert f'stockade_host_up{{host="{host}"}} 1.0' in text
        assert f'stockade_host_draining{{host="{host}"}} 0.0' in text
        assert f'stockade_host_calls_in_flight{{host="{host}"}} 0.0' in text
        assert f'stockade_host_calls_total{{host="{host}"}}' in text
    calls = sum(backend.hosts[host].served for host in HOSTS)
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("stockade_host_calls_total{")
    )
    assert counted == calls >= 8
    dispatched = [
        line for line in text.splitlines()
        if line.startswith("stockade_host_dispatch_duration_seconds_count{")
    ]  # fmt: skip
    assert dispatched and all('host="host-' in line for line in dispatched)
    # Bounded label values: the operator's names, never Ray's node ids.
    values = {
        part.split('"')[1]
        for line in text.splitlines()
        if line.startswith("stockade_host_")
        for part in line.split("{", 1)[1:]
        if part.startswith('host="')
    }
    assert values <= HOSTS and values
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/setup.sh installs it (Debian prometheus)"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_doctor_passes_on_the_cluster(cluster: RayCluster, tmp_path: Path) -> None:
    done = _stockade(cluster, "doctor", "--json", "--config", str(_config(cluster, tmp_path)))
    checks = {check["name"]: check for check in _json(done)}
    failed = {name: check for name, check in checks.items() if check["outcome"] != "ok"}
    assert done.returncode == 0 and not failed, failed
    for name in (
        "cluster address reachable",
        "token authentication on",
        "cluster joined",
        "sandbox hosts registered",
        "host host-a registered",
        "host host-b registered",
        "host host-a engine answers",
        "host host-b engine answers",
    ):
        assert name in checks
    assert any(name.startswith("profile default starts a container") for name in checks)


async def test_doctor_fails_a_bad_address_and_a_driver_without_the_token(
    cluster: RayCluster, tmp_path: Path
) -> None:
    # The head's own address, a closed port: refused at once, inside the namespace.
    head = cluster.nodes[0].address
    done = _stockade(
        cluster, "doctor", "--json", "--config", str(_config(cluster, tmp_path, f"{head}:1"))
    )
    assert done.returncode == 1
    checks = {check["name"]: check for check in _json(done)}
    reach = checks["cluster address reachable"]
    assert reach["outcome"] == "failed" and f"{head}:1" in reach["detail"]
    assert "ray start --head" in reach["fix"] and "sandbox.ray.address" in reach["fix"]
    for later in ("token authentication on", "cluster joined", "sandbox hosts registered"):
        assert checks[later]["outcome"] == "skipped"

    open_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    done = _stockade(
        cluster,
        "doctor",
        "--json",
        "--config",
        str(_config(cluster, tmp_path)),
        environ=open_env,
    )
    assert done.returncode == 1
    token = {check["name"]: check for check in _json(done)}["token authentication on"]
    assert token["outcome"] == "failed" and "without RAY_AUTH_MODE=token" in token["detail"]
    assert "export RAY_AUTH_MODE=token" in token["fix"]


async def test_doctor_names_the_fix_of_a_host_that_lacks_an_image(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """The built-in profiles use the tools image, which the second engine does not have."""
    config = cluster.write_config(tmp_path)
    done = _stockade(cluster, "doctor", "--json", "--config", str(config))
    assert done.returncode == 1
    checks = {check["name"]: check for check in _json(done)}
    refused = checks["host host-b registered"]
    assert refused["outcome"] == "failed"
    assert "host host-b refuses to register" in refused["detail"]
    assert "stockade images build" in refused["detail"] and "docker save" in refused["detail"]
    assert checks["profiles start containers"]["outcome"] == "skipped"


async def test_a_host_that_joins_later_is_used_without_a_restart(
    cluster: RayCluster, second_engine: docker.DockerClient
) -> None:
    """host-b's node is away when the orchestrator starts; it joins, and the refresh uses it."""
    import ray

    await asyncio.to_thread(connect, cluster.address, "stockade")

    nodes: Callable[[], list[dict[str, Any]]] = ray.nodes

    def host_b_alive() -> bool:
        seen = named_nodes(nodes()).get("host-b")
        return seen is not None and seen.alive

    await asyncio.to_thread(cluster.kill_node, 1)
    backend: RayBackend | None = None
    try:
        await _until(lambda: not host_b_alive(), "host-b's node declared dead", 60)
        backend = RayBackend(
            address=cluster.address, images=[DEFAULT_IMAGE], profiles=[PROFILE], refresh_s=0.5
        )
        await backend.start()
        assert set(backend.hosts) == {"host-a"}
    finally:
        await asyncio.to_thread(cluster.restart_node, 1)
    assert backend is not None
    try:
        await _until(
            lambda: "host-b" in backend.hosts and backend.hosts["host-b"].state == "up",
            "host-b registered by the refresh loop",
            90,
        )
        # The refresh started this orchestrator's pool there too.
        await _until(
            lambda: bool(backend.hosts["host-b"].record.get("ready", {}).get(backend.instance_id)),
            "host-b's pool for this orchestrator warm",
            90,
        )
        results = await asyncio.gather(
            *(backend.execute(_echo(f"j{i}"), PROFILE) for i in range(6))
        )
        assert [r.stdout for r in results] == [f"j{i}\n" for i in range(6)]
        assert backend.hosts["host-b"].served > 0
    finally:
        await backend.close()
    assert _own(second_engine, backend) == []


def _own(engine: docker.DockerClient, backend: RayBackend) -> list[str]:
    label = f"{BACKEND_LABEL}={backend.instance_id}"
    return [c["Id"] for c in engine.api.containers(all=True, filters={"label": label})]
