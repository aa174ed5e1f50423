"""What hosts keep per orchestrator, and removing it (issue 14, point 3), on the real cluster.

- An orchestrator SIGKILLed while its containers are out on both hosts, started
  again with the same identity (its state directory), removes them on both
  engines at once: long before the killed life's lease would have run out.
- A host judges each orchestrator's images on their own: refusing one
  orchestrator (images it lacks) does not refuse another, nor show the host
  refused to an operator while it serves someone.

- Containers left on a lost host (its node's Ray processes SIGKILLed, its
  engine still running them) are reaped by the host's next life when it
  registers, while the orchestrator that owns them still runs.

(A host reaping the containers of an orchestrator whose lease expired is in
``test_ray_backend.py``.)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from orchestrator.sandbox.execution import ExecRequest
from orchestrator.sandbox.hosts import list_hosts
from orchestrator.sandbox.labels import BACKEND_LABEL
from orchestrator.sandbox.profile import DEFAULT_IMAGE, TOOLS_IMAGE, SandboxProfile
from orchestrator.sandbox.ray_backend import RayBackend
from orchestrator.testing.ray_cluster import RayCluster

pytestmark = [pytest.mark.cluster, pytest.mark.docker, pytest.mark.timeout(300)]

PROFILE = SandboxProfile(name="reap-test", pool_size=1, timeout_s=20)
FIRST_LEASE_S = 600.0
"""The killed life's lease: far longer than the test, so only the restart can remove them."""

# The first life: an orchestrator with a warm container on each host, then idle.
FIRST_LIFE = f"""
import asyncio, sys
from pathlib import Path
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.ray_backend import RayBackend

async def main() -> None:
    backend = RayBackend(
        address=sys.argv[1], images=[{DEFAULT_IMAGE!r}], state_dir=Path(sys.argv[2]),
        profiles=[SandboxProfile.model_validate_json({PROFILE.model_dump_json()!r})],
        lease_s={FIRST_LEASE_S},
    )
    await backend.start()
    print(backend.instance_id, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _own(engine: docker.DockerClient, instance_id: str) -> set[str]:
    label = f"{BACKEND_LABEL}={instance_id}"
    return {c["Id"] for c in engine.api.containers(all=True, filters={"label": label})}


async def test_a_killed_orchestrator_restarted_removes_its_containers_on_every_host(
    cluster: RayCluster,
    docker_client: docker.DockerClient,
    second_engine: docker.DockerClient,
    tmp_path: Path,
) -> None:
    engines = (docker_client, second_engine)
    state_dir = tmp_path / "state"
    first = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{cluster.head_netns}", sys.executable, "-c", FIRST_LIFE,
         cluster.address, str(state_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    try:
        assert first.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(first.stdout.readline), 180)
        instance_id = line.strip()
        assert len(instance_id) == 32, (line, first.poll())
        left = [_own(engine, instance_id) for engine in engines]
        assert all(left), left  # a warm container on each host
    finally:
        # nsenter execs Python: this pid is the orchestrator's. No close, no release.
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        if first.stdout is not None:
            first.stdout.close()
        if first.stderr is not None:
            first.stderr.close()

    again = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE], state_dir=state_dir)
    await again.start()
    try:
        assert again.instance_id == instance_id  # the same identity, from the state directory
        assert set(again.hosts) == {"host-a", "host-b"}
        # Registering removed the earlier life's containers on both engines.
        still = [_own(engine, instance_id) & old for engine, old in zip(engines, left, strict=True)]
        assert still == [set(), set()], still
        result = await again.execute(ExecRequest(argv=("echo", "again")), PROFILE)
        assert result.stdout == "again\n"
    finally:
        await again.close()
    for _ in range(50):  # the last call's container goes after its reply
        if not any(_own(engine, instance_id) for engine in engines):
            break
        await asyncio.sleep(0.2)
    assert [_own(engine, instance_id) for engine in engines] == [set(), set()]


def _hosts_table(cluster: RayCluster, tmp_path: Path) -> str:
    """``stockade hosts`` as an operator runs it: a separate driver in the head's namespace."""
    config = cluster.write_config(tmp_path)
    done = subprocess.run(
        ["nsenter", f"--net=/run/netns/{cluster.head_netns}", sys.executable, "-m",
         "orchestrator", "hosts", "--config", str(config)],
        capture_output=True, text=True, check=False, timeout=240, env=os.environ.copy(),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr  # no host lost or refused
    return done.stdout


async def test_a_host_refusing_one_orchestrator_serves_another(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """host-b lacks the tools image: it refuses the orchestrator that needs it, only that one."""
    plain = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE], refresh_s=0.5)
    tools = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE, TOOLS_IMAGE])
    await plain.start()
    try:
        await tools.start()
        try:
            # Registered after the plain one: it used to set "refused" for everyone.
            assert set(tools.hosts) == {"host-a"} and "host-b" in tools.refused
            actor = plain.hosts["host-b"].actor
            for_plain = json.loads(await actor.describe.remote(plain.instance_id))
            for_tools = json.loads(await actor.describe.remote(tools.instance_id))
            assert for_plain["refused"] == ""
            assert "host host-b refuses to register" in for_tools["refused"]
            # The copy command names what is missing, not the images the host has.
            assert "docker save <the tags `stockade images build` lists" in for_tools["refused"]
            assert "stockade-sandbox:" not in for_tools["refused"].split("docker save")[1]
            assert set(for_plain["refused_for"]) == {tools.instance_id[:8]}
            await plain.refresh()
            assert plain.hosts["host-b"].state == "up"
            # The operator sees a host that serves: up, naming whom it refuses.
            views = {view.name: view for view in await list_hosts("stockade")}
            assert views["host-b"].state == "up" and views["host-b"].reason == ""
            assert set(views["host-b"].refused_for) == {tools.instance_id[:8]}
            table = await asyncio.to_thread(_hosts_table, cluster, tmp_path)
            (row,) = [line for line in table.splitlines() if line.startswith("host-b ")]
            assert f"up (refuses orchestrator(s) {tools.instance_id[:8]})" in row, table
            # And placement still sends the plain orchestrator's calls there.
            before = plain.hosts["host-b"].served
            results = await asyncio.gather(
                *(plain.execute(ExecRequest(argv=("echo", str(i))), PROFILE) for i in range(6))
            )
            assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]
            assert plain.hosts["host-b"].served > before
        finally:
            await tools.close()
        # Closed, the refused orchestrator's lease and refusal are gone from the host.
        views = {view.name: view for view in await list_hosts("stockade")}
        assert views["host-b"].refused_for == {}
    finally:
        await plain.close()


async def test_containers_left_on_a_lost_host_are_reaped_when_it_comes_back(
    cluster: RayCluster, second_engine: docker.DockerClient
) -> None:
    backend = RayBackend(
        address=cluster.address, images=[DEFAULT_IMAGE], profiles=[PROFILE], refresh_s=0.5
    )
    await backend.start()
    try:
        left = _own(second_engine, backend.instance_id)
        assert left  # host-b's warm container of this orchestrator
        await asyncio.to_thread(cluster.kill_node, 1)
        try:
            await _until(lambda: backend.hosts["host-b"].lost, "host-b lost", 60)
            # Its engine still runs them: nothing else removes them while the host is away.
            assert _own(second_engine, backend.instance_id) >= left
        finally:
            await asyncio.to_thread(cluster.restart_node, 1)
        await _until(lambda: backend.hosts["host-b"].state == "up", "host-b back", 120)
        # The new host actor reaped them at registration (their owner, the old actor, is
        # gone); the orchestrator did not release anything: it never closed.
        await _until(
            lambda: not (_own(second_engine, backend.instance_id) & left), "leftovers reaped", 30
        )
        result = await backend.execute(ExecRequest(argv=("echo", "back")), PROFILE)
        assert result.stdout == "back\n"
    finally:
        await backend.close()


async def _until(condition: Callable[[], bool], what: str, bound_s: float) -> None:
    """Wait for ``condition()`` (the backend's refreshes, the host's reaper), at most ``bound_s``."""
    deadline = time.monotonic() + bound_s
    while not condition():
        assert time.monotonic() < deadline, f"not reached in {bound_s:g} s: {what}"
        await asyncio.sleep(0.2)
