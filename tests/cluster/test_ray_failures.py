"""A host lost mid-call on a real two-node cluster: the retry rule of issue 14, point 3.

A call whose host is lost is an infrastructure error, never a tool result. It
runs again on another host only when it had not started (the host never had a
container in hand for it), when its profile has no egress (its workspace
changes are applied only when it returns: what it did died with its
sandbox), or when its tool is idempotent; otherwise it fails with
``effects_unknown``. Node 2 (host-b) is killed (every Ray process, SIGKILL)
and started again in each test, so the other modules find both hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections import defaultdict
from collections.abc import Iterator

import docker
import pytest

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.sandbox.egress import EgressPolicy
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus
from orchestrator.sandbox.hosts import set_draining
from orchestrator.sandbox.labels import BACKEND_LABEL
from orchestrator.sandbox.live import OutputChunk
from orchestrator.sandbox.profile import DEFAULT_IMAGE, SandboxProfile
from orchestrator.sandbox.ray_backend import RayBackend
from orchestrator.testing.ray_cluster import RayCluster

pytestmark = [pytest.mark.cluster, pytest.mark.docker, pytest.mark.timeout(600)]

CLOSED = SandboxProfile(name="ray-lost-closed", pool_size=0, timeout_s=30)
# Egress to a name nothing resolves: what matters is that the sandbox could reach out.
OPEN = SandboxProfile(
    name="ray-lost-open",
    pool_size=0,
    timeout_s=30,
    egress=EgressPolicy(allow=("nothing.invalid",)),
    loosen=frozenset({"egress"}),
)


async def _rejoined(cluster: RayCluster, backend: RayBackend) -> None:
    """Start node 2 again and wait until host-b serves this backend."""
    await asyncio.to_thread(cluster.restart_node, 1)
    for _ in range(240):
        await backend.refresh()
        if "host-b" in backend.hosts and not _lost(backend, "host-b"):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"host-b did not rejoin: {backend.hosts.get('host-b')}")


def _lost(backend: RayBackend, host: str) -> bool:
    """Whether ``backend`` counts ``host`` lost (a call, not an attribute: it changes)."""
    return backend.hosts[host].lost


async def _none_left(
    engines: list[docker.DockerClient], backend: RayBackend, bound_s: float = 10.0
) -> None:
    label = f"{BACKEND_LABEL}={backend.instance_id}"
    for _ in range(int(bound_s / 0.2)):
        left = [e.api.containers(all=True, filters={"label": label}) for e in engines]
        if not any(left):
            return
        await asyncio.sleep(0.2)
    assert not any(left), left


async def test_a_host_lost_mid_call_retries_or_reports_effects_unknown_by_the_rule(
    cluster: RayCluster, docker_client: docker.DockerClient, second_engine: docker.DockerClient
) -> None:
    """12 calls running on both hosts (each prints ``begun``, sleeps, prints its tag); node 2
    killed once all have begun: on host-b the calls without egress and the idempotent ones
    run again on host-a (their live output shows ``begun`` twice), the others with egress
    end as effects-unknown; none ends as a tool result other than its own output."""
    backend = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE], refresh_s=60)
    await backend.start()
    kinds = ["closed", "open", "idempotent"]
    begun: dict[int, asyncio.Event] = defaultdict(asyncio.Event)
    printed: dict[int, str] = defaultdict(str)

    def listener(index: int) -> object:
        def take(chunk: OutputChunk) -> None:
            printed[index] += chunk.text
            if "begun" in chunk.text:
                begun[index].set()

        return take

    async def call(index: int) -> ExecResult | InfrastructureError:
        kind = kinds[index % 3]
        request = ExecRequest(
            argv=("sh", "-c", f"echo begun; sleep 12; echo done-{index}"),
            on_output=listener(index),  # type: ignore[arg-type]
            idempotent=kind == "idempotent",
        )
        try:
            return await backend.execute(request, CLOSED if kind == "closed" else OPEN)
        except InfrastructureError as exc:
            return exc

    try:
        # Sent together, the calls alternate between the hosts (least in flight first).
        calls = [asyncio.create_task(call(index)) for index in range(12)]
        await asyncio.wait_for(asyncio.gather(*(begun[i].wait() for i in range(12))), 120)
        await asyncio.to_thread(cluster.kill_node, 1)
        outcomes = await asyncio.wait_for(asyncio.gather(*calls), 240)
        assert _lost(backend, "host-b")
        unknown = []
        for index, outcome in enumerate(outcomes):
            kind = kinds[index % 3]
            if isinstance(outcome, InfrastructureError):
                # Only a started call with egress, not idempotent, may end this way.
                assert kind == "open", (index, outcome)
                assert outcome.code is ErrorCode.EFFECTS_UNKNOWN and not outcome.retryable
                assert "host-b" in str(outcome) and "effects are unknown" in str(outcome)
                unknown.append(index)
                continue
            assert outcome.status is ExecStatus.OK, (index, outcome)
            assert outcome.stdout == f"begun\ndone-{index}\n", (index, outcome)
        assert unknown, "no call with egress ran on host-b"
        again = [i for i in range(12) if printed[i].count("begun") == 2]
        assert {kinds[i % 3] for i in again} == {"closed", "idempotent"}, (again, printed)
        assert not set(again) & set(unknown)
        await _rejoined(cluster, backend)
    finally:
        await backend.close()
    await _none_left([docker_client, second_engine], backend)


async def test_a_call_sent_to_a_host_already_lost_runs_on_the_other(
    cluster: RayCluster,
    docker_client: docker.DockerClient,
    second_engine: docker.DockerClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Node 2 killed before the calls, the backend not told yet (no refresh): the calls sent
    to host-b never started there, so even with egress and not idempotent they run on
    host-a."""
    backend = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE], refresh_s=60)
    await backend.start()
    try:
        assert not _lost(backend, "host-b")
        await asyncio.to_thread(cluster.kill_node, 1)
        with caplog.at_level(logging.WARNING, logger="orchestrator.sandbox.ray_backend"):
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(backend.execute(ExecRequest(argv=("echo", f"n{i}")), OPEN) for i in range(4))
                ),
                240,
            )
        assert [r.stdout for r in results] == [f"n{i}\n" for i in range(4)]
        assert all(r.status is ExecStatus.OK for r in results)
        assert _lost(backend, "host-b")
        assert "host host-b lost during a call (not started)" in caplog.text
        assert "(started)" not in caplog.text
        await _rejoined(cluster, backend)
    finally:
        await backend.close()
    await _none_left([docker_client, second_engine], backend)


@contextlib.contextmanager
def _engine_hung(cluster: RayCluster) -> Iterator[None]:
    """Node 2's Docker engine stops answering (SIGSTOP) until the block ends: every engine
    call of host-b waits, as with an engine stuck on a full disk."""
    pid = int((cluster.root / "d2" / "docker.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def test_a_hung_host_does_not_let_the_lease_on_the_others_run_out(
    cluster: RayCluster, docker_client: docker.DockerClient, second_engine: docker.DockerClient
) -> None:
    """A call runs on host-a (host-b drained) when host-b's engine hangs: renewing host-b's
    lease waits, and so does registering it again once it counts as lost. The call, lasting
    well past the lease, returns its own output: the lease on host-a was renewed on time,
    so host-a never took this orchestrator for gone and removed its containers (the
    running call's with them)."""
    backend = RayBackend(
        address=cluster.address, images=[DEFAULT_IMAGE], refresh_s=1.0, lease_s=3.0
    )
    await backend.start()
    try:
        await set_draining("host-b", "stockade", True)
        for _ in range(50):
            if backend.hosts["host-b"].state == "draining":
                break
            await asyncio.sleep(0.2)
        call = asyncio.create_task(
            backend.execute(ExecRequest(argv=("sh", "-c", "sleep 12; echo outlived")), CLOSED)
        )
        await asyncio.sleep(2)  # the call holds its container on host-a
        with _engine_hung(cluster):
            result = await asyncio.wait_for(call, 60)
            for _ in range(100):  # the hang is seen: renewing host-b timed out
                if _lost(backend, "host-b"):
                    break
                await asyncio.sleep(0.2)
            assert _lost(backend, "host-b")
        assert result.status is ExecStatus.OK, result
        assert (result.stdout, result.host) == ("outlived\n", "host-a")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(set_draining("host-b", "stockade", False), 90)
        await backend.close()
    # Host-b, lost to this backend, is not released by it: its lease removes the rest.
    await _none_left([docker_client, second_engine], backend, bound_s=60.0)


async def test_a_host_whose_engine_hangs_holds_up_neither_the_start_nor_the_other_host(
    cluster: RayCluster,
    docker_client: docker.DockerClient,
    second_engine: docker.DockerClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Host-b's engine hangs as an orchestrator starts: registering host-b waits (up to
    120 s), but each host registers on its own, so the start goes on with host-a after its
    grace (the warning names host-b), calls run there, and host-b joins by itself once its
    engine answers again."""
    backend = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE], refresh_s=1.0)
    try:
        with _engine_hung(cluster):
            with caplog.at_level(logging.WARNING, logger="orchestrator.sandbox.ray_backend"):
                await asyncio.wait_for(backend.start(), 60)
            assert set(backend.hosts) == {"host-a"}, backend.hosts
            assert "starting without host(s) host-b" in caplog.text
            result = await asyncio.wait_for(
                backend.execute(ExecRequest(argv=("echo", "served")), CLOSED), 60
            )
            assert (result.status, result.stdout, result.host) == (
                ExecStatus.OK,
                "served\n",
                "host-a",
            )
        for _ in range(240):  # no refresh called: the registration in flight completes
            if "host-b" in backend.hosts and not _lost(backend, "host-b"):
                break
            await asyncio.sleep(0.5)
        assert "host-b" in backend.hosts and not _lost(backend, "host-b"), backend.hosts
    finally:
        await backend.close()
    await _none_left([docker_client, second_engine], backend)


async def test_a_container_removed_by_its_engine_mid_call_follows_the_retry_rule(
    cluster: RayCluster, docker_client: docker.DockerClient, second_engine: docker.DockerClient
) -> None:
    """Its engine removes a call's container while it runs (the engine restarted, or someone
    removed it): like a lost host, a call with egress, not idempotent, fails as
    effects-unknown and is not retried; one without egress stays a retryable
    ``container_died`` (its effects died with its container)."""
    backend = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE], refresh_s=60)
    await backend.start()
    label = f"{BACKEND_LABEL}={backend.instance_id}"
    try:
        for profile, code, retryable in (
            (OPEN, ErrorCode.EFFECTS_UNKNOWN, False),
            (CLOSED, ErrorCode.CONTAINER_DIED, True),
        ):
            begun = asyncio.Event()
            request = ExecRequest(
                argv=("sh", "-c", "echo begun; sleep 30"),
                on_output=lambda chunk, begun=begun: begun.set(),  # type: ignore[misc]
            )
            call = asyncio.create_task(backend.execute(request, profile))
            await asyncio.wait_for(begun.wait(), 60)
            for engine in (docker_client, second_engine):
                for container in engine.api.containers(filters={"label": label}):
                    engine.api.remove_container(container["Id"], force=True)
            with pytest.raises(InfrastructureError) as raised:
                await asyncio.wait_for(call, 60)
            assert (raised.value.code, raised.value.retryable) == (code, retryable), raised.value
    finally:
        await backend.close()
    await _none_left([docker_client, second_engine], backend)
