"""The Ray backend on a real two-node cluster: two namespaces, two Docker engines (issue 14).

One cluster for the module (forming it costs ~30 s and a lot of the machine):
the head and its host in namespace 1 with the main engine, a worker node and
its host in namespace 2 with a second engine. This process is the Ray driver,
inside namespace 1.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import docker
import pytest

from orchestrator.config import load_config
from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.platform import Platform
from orchestrator.sandbox import ray_backend
from orchestrator.sandbox.egress import EgressPolicy
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus
from orchestrator.sandbox.labels import BACKEND_LABEL
from orchestrator.sandbox.live import OutputChunk
from orchestrator.sandbox.profile import DEFAULT_IMAGE, TOOLS_IMAGE, SandboxProfile
from orchestrator.sandbox.ray_backend import RayBackend
from orchestrator.sandbox.workspace import WorkspaceManager
from orchestrator.testing.ray_cluster import RayCluster
from orchestrator.tools import ToolCall, ToolStatus

pytestmark = [pytest.mark.cluster, pytest.mark.docker, pytest.mark.timeout(600)]

PROFILE = SandboxProfile(name="ray-test", pool_size=1, timeout_s=20)
# Egress to a name nothing resolves: what matters is that the sandbox could reach out.
EGRESS = SandboxProfile(
    name="ray-test-egress",
    pool_size=1,
    timeout_s=20,
    egress=EgressPolicy(allow=("nothing.invalid",)),
    loosen=frozenset({"egress"}),
)


def _containers_of(client: docker.DockerClient, backend: RayBackend) -> list[str]:
    """The containers of ``backend`` (its orchestrator id) on ``client``'s engine.

    Only its own: other developers' tests run containers on the main engine meanwhile.
    """
    label = f"{BACKEND_LABEL}={backend.instance_id}"
    return [c["Id"] for c in client.api.containers(all=True, filters={"label": label})]


def _lost(backend: RayBackend, host: str) -> bool:
    """Whether ``backend`` counts ``host`` lost (a call, not an attribute: it changes)."""
    return backend.hosts[host].lost


async def _until_none_of(engines: list[docker.DockerClient], backend: RayBackend) -> None:
    """Wait (10 s at most) until no engine holds a container of ``backend``; assert it."""
    for _ in range(50):
        left = [_containers_of(engine, backend) for engine in engines]
        if not any(left):
            return
        await asyncio.sleep(0.2)
    assert not any(left), left


async def _backend(cluster: RayCluster, **options: object) -> RayBackend:
    backend = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE], **options)  # type: ignore[arg-type]
    await backend.start()
    return backend


def _echo(text: str, **options: object) -> ExecRequest:
    return ExecRequest(argv=("sh", "-c", f"echo {text}"), **options)  # type: ignore[arg-type]


async def test_calls_land_on_both_hosts(
    cluster: RayCluster, docker_client: docker.DockerClient, second_engine: docker.DockerClient
) -> None:
    backend = await _backend(cluster, profiles=[PROFILE])
    try:
        assert set(backend.hosts) == {"host-a", "host-b"}
        results = await asyncio.gather(
            *(backend.execute(_echo(f"n{i}"), PROFILE) for i in range(12))
        )
        assert [r.stdout for r in results] == [f"n{i}\n" for i in range(12)]
        assert all(r.status is ExecStatus.OK for r in results)
        served = {name: host.served for name, host in backend.hosts.items()}
        assert served["host-a"] > 0 and served["host-b"] > 0, served
        assert served["host-a"] + served["host-b"] == 12
        # Each result names the host that ran it, as the hosts counted them.
        named = {name: sum(r.host == name for r in results) for name in served}
        assert named == served, (named, served)
    finally:
        await backend.close()
    await _until_none_of([docker_client, second_engine], backend)


async def test_workspace_written_on_one_host_is_read_on_the_other(
    cluster: RayCluster, tmp_path: Path
) -> None:
    backend = await _backend(cluster, profiles=[PROFILE])
    workspace = WorkspaceManager(tmp_path).open("run-1")
    try:
        served = {name: host.served for name, host in backend.hosts.items()}
        wrote = await backend.execute(
            ExecRequest(argv=("sh", "-c", "echo written-remotely > note.txt"), workspace=workspace),
            PROFILE,
        )
        assert wrote.status is ExecStatus.OK, wrote
        assert wrote.files_changed == ("note.txt",)
        writer = next(n for n, h in backend.hosts.items() if h.served != served[n])
        # Placement spreads load; read until a read lands on the other host (bounded).
        readers = set()
        for _ in range(8):
            served = {name: host.served for name, host in backend.hosts.items()}
            read = await backend.execute(
                ExecRequest(argv=("cat", "note.txt"), workspace=workspace), PROFILE
            )
            assert read.stdout == "written-remotely\n"
            readers.add(next(n for n, h in backend.hosts.items() if h.served != served[n]))
            if readers - {writer}:
                break
        assert readers - {writer}, f"every read ran on {writer}"
        assert (workspace.path / "note.txt").read_text() == "written-remotely\n"
    finally:
        await backend.close()


async def test_hostile_reply_is_checked_by_the_orchestrator(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """A symlink out of the workspace and output past the cap, through a host: both refused here."""
    profile = SandboxProfile(name="ray-caps", pool_size=0, timeout_s=20, output_limit_bytes=1024)
    backend = await _backend(cluster)
    workspace = WorkspaceManager(tmp_path).open("run-2")
    try:
        result = await backend.execute(
            ExecRequest(
                argv=("sh", "-c", "ln -s /etc/passwd leak; head -c 5000 /dev/zero | tr '\\0' x"),
                workspace=workspace,
            ),
            profile,
        )
        assert result.truncated and len(result.stdout) == 1024
        assert result.files_rejected and not (workspace.path / "leak").exists()
    finally:
        await backend.close()


async def test_a_timeout_reaches_the_host_and_removes_the_container(
    cluster: RayCluster, docker_client: docker.DockerClient, second_engine: docker.DockerClient
) -> None:
    backend = await _backend(cluster)
    profile = SandboxProfile(name="ray-slow", pool_size=0, timeout_s=2)
    try:
        results = await asyncio.gather(
            *(backend.execute(ExecRequest(argv=("sleep", "60")), profile) for _ in range(2))
        )
        assert {r.status for r in results} == {ExecStatus.TIMEOUT}
        # A cancelled caller cancels the host's task; its container goes.
        patient = SandboxProfile(name="ray-slow", pool_size=0, timeout_s=30)
        call = asyncio.create_task(backend.execute(ExecRequest(argv=("sleep", "60")), patient))
        await asyncio.sleep(3)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        await backend.close()
    await _until_none_of([docker_client, second_engine], backend)


async def test_hosts_remove_the_containers_of_an_orchestrator_whose_lease_expired(
    cluster: RayCluster, docker_client: docker.DockerClient, second_engine: docker.DockerClient
) -> None:
    backend = await _backend(cluster, profiles=[PROFILE], refresh_s=1.0, lease_s=3.0)
    label = f"org.stockade.backend={backend.instance_id}"
    try:
        held = [e.api.containers(filters={"label": label}) for e in (docker_client, second_engine)]
        assert all(held), held  # a warm pool on each host
        # The orchestrator goes silent (as if killed): nothing renews its lease.
        assert backend._refresher is not None and backend._renewer is not None
        backend._refresher.cancel()
        backend._renewer.cancel()
        for _ in range(100):
            left = [
                e.api.containers(all=True, filters={"label": label})
                for e in (docker_client, second_engine)
            ]
            if not any(left):
                break
            await asyncio.sleep(0.2)
        assert not any(left), left
    finally:
        await backend.close()


async def test_a_host_with_a_missing_image_refuses_to_register(cluster: RayCluster) -> None:
    # The second engine was given the sandbox image only, not the tools image.
    backend = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE, TOOLS_IMAGE])
    await backend.start()
    try:
        assert set(backend.hosts) == {"host-a"}
        refusal = backend.refused["host-b"]
        assert "refuses to register" in refusal and "stockade images build" in refusal
        assert "stockade-tools:" in refusal and "docker save" in refusal  # what to copy
    finally:
        await backend.close()


async def test_a_host_running_other_sandbox_code_is_refused_with_the_fix(
    cluster: RayCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host actors outlive the orchestrator that started them: one upgraded since (here, one
    whose sandbox code differs) places nothing on them and says how to replace them."""
    monkeypatch.setattr(ray_backend, "CODE_FINGERPRINT", "0123456789abcdef", raising=False)
    backend = RayBackend(address=cluster.address, images=[DEFAULT_IMAGE])
    try:
        with pytest.raises(InfrastructureError, match="no sandbox host registered"):
            await backend.start()
        assert set(backend.refused) == {"host-a", "host-b"} and not backend.hosts
        refusal = backend.refused["host-b"]
        assert "runs other Stockade sandbox code" in refusal and "0123456789abcdef here" in refusal
        assert "ray.kill(ray.get_actor('stockade-host:host-b'))" in refusal
    finally:
        await backend.close()


async def test_a_node_killed_during_calls(
    cluster: RayCluster, docker_client: docker.DockerClient, second_engine: docker.DockerClient
) -> None:
    """300 calls at concurrency 8 (every fifth with egress), one node killed after 40: every
    call returns with its own output or an infrastructure error — a call without egress
    always with its output (retried on the survivor), a call with egress that had started
    on the lost host as effects-unknown, nothing else; the node rejoins; nothing is left on
    either engine."""
    backend = await _backend(cluster, profiles=[PROFILE, EGRESS], refresh_s=0.5)
    done = 0
    try:
        semaphore = asyncio.Semaphore(8)

        async def call(index: int) -> ExecResult | InfrastructureError:
            nonlocal done
            async with semaphore:
                try:
                    profile = EGRESS if index % 5 == 0 else PROFILE
                    result = await backend.execute(_echo(f"c{index}"), profile)
                except InfrastructureError as exc:
                    return exc
                finally:
                    done += 1
                return result

        calls = [asyncio.create_task(call(i)) for i in range(300)]
        while done < 40:
            await asyncio.sleep(0.05)
        scratch = cluster.root / f"{cluster.nodes[1].name}-tmp"  # the node's TMPDIR
        killed_gates = set(scratch.glob("stockade-egress-*"))
        assert killed_gates, "host-b served egress calls: its gates' directory exists"
        await asyncio.to_thread(cluster.kill_node, 1)
        outcomes = await asyncio.wait_for(asyncio.gather(*calls), 240)
        unknown = 0
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, InfrastructureError):
                # Only a call with egress that had started on the lost host.
                assert index % 5 == 0, (index, outcome)
                assert outcome.code is ErrorCode.EFFECTS_UNKNOWN, outcome
                assert "host-b" in str(outcome)
                unknown += 1
            else:
                assert outcome.status is ExecStatus.OK and outcome.stdout == f"c{index}\n"
        assert _lost(backend, "host-b")
        assert unknown <= 8

        # The node comes back: it rejoins, serves, and its leftovers are reaped.
        await asyncio.to_thread(cluster.restart_node, 1)
        for _ in range(120):
            await backend.refresh()
            if not _lost(backend, "host-b"):
                break
            await asyncio.sleep(0.5)
        assert not _lost(backend, "host-b")
        # The new host removed what the killed one left of its gates, and made its own.
        now = set(scratch.glob("stockade-egress-*"))
        assert not now & killed_gates and len(now) == 1, (killed_gates, now)
        for _ in range(120):  # its pool for this orchestrator fills again
            if backend.hosts["host-b"].record.get("ready", {}).get(backend.instance_id):
                break
            await asyncio.sleep(0.5)
        before = backend.hosts["host-b"].served
        results = await asyncio.gather(
            *(backend.execute(_echo(f"r{i}"), PROFILE) for i in range(6))
        )
        assert all(r.stdout == f"r{i}\n" for i, r in enumerate(results))
        assert backend.hosts["host-b"].served > before
    finally:
        await backend.close()
    await _until_none_of([docker_client, second_engine], backend)


async def test_the_platform_runs_tool_calls_on_the_cluster(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """sandbox.engine: ray in stockade.yaml: a gateway call runs on a host, audited."""
    config = cluster.write_config(tmp_path)
    async with Platform.open(load_config(config, environ={}), pools=False) as platform:
        backend = platform.sandbox
        assert isinstance(backend, RayBackend)
        # The second engine has no tools image: that host refuses, the first serves.
        assert set(backend.hosts) == {"host-a"} and "host-b" in backend.refused
        call = ToolCall(id="c1", name="python.run", arguments={"code": "print(6 * 7)"})
        result = await platform.gateway.call(call)
        assert result.status is ToolStatus.OK, result
        assert '"stdout": "42\\n"' in (result.output or "")
        assert backend.hosts["host-a"].served == 1
    audit = (tmp_path / "state").rglob("*.jsonl")
    assert any("c1" in path.read_text() for path in audit)


async def test_live_output_from_a_host_reaches_the_gateways_listener(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """Gateway.call(on_output=) with the ray engine: python.run's lines come while it runs."""
    config = cluster.write_config(tmp_path)
    seen: list[tuple[float, OutputChunk]] = []
    code = "import time\nfor i in range(3):\n    print(f'tick {i}', flush=True)\n    time.sleep(1)"
    async with Platform.open(load_config(config, environ={}), pools=False) as platform:
        call = ToolCall(id="live-1", name="python.run", arguments={"code": code})
        result = await platform.gateway.call(
            call, on_output=lambda chunk: seen.append((time.monotonic(), chunk))
        )
        ended = time.monotonic()
    assert result.status is ToolStatus.OK, result
    # A tool's program prints to the SDK, which passes its output on through stderr.
    streamed = "".join(chunk.text for _, chunk in seen if chunk.stream != "notice")
    assert streamed == "tick 0\ntick 1\ntick 2\n", seen
    # The first line came while the call still slept (about 2 s before it ended).
    first = next(at for at, chunk in seen if "tick 0" in chunk.text)
    assert ended - first > 1.5, (ended - first, seen)


async def test_a_tool_call_killed_on_a_host_at_its_deadline_returns_what_it_printed(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """The host keeps a tool call's live frames (streams them to a listener): the result of a
    call killed at its deadline holds what it printed, with a listener and without."""
    config = cluster.write_config(
        tmp_path,
        top="toolkits: [toolkits.python]\n",
        sandbox="  profiles:\n    default: {pool_size: 1, timeout_s: 4}\n",
    )
    code = "import time\nfor i in range(1000):\n    print(f'step {i}', flush=True)\n    time.sleep(0.2)"
    # The snippet's own deadline is past the sandbox's: the host's deadline kills it.
    arguments = {"code": code, "timeout_s": 60, "stateless": True}
    seen: list[OutputChunk] = []
    async with Platform.open(load_config(config, environ={}), pools=False) as platform:
        heard = await platform.gateway.call(
            ToolCall(id="t1", name="python.run", arguments=arguments), on_output=seen.append
        )
        quiet = await platform.gateway.call(
            ToolCall(id="t2", name="python.run", arguments=arguments)
        )
    for result in (heard, quiet):
        assert result.status is ToolStatus.TIMEOUT, result
        assert "step 0\n" in (result.output or "") and "step 5\n" in (result.output or ""), result
    assert "step 0" in "".join(chunk.text for chunk in seen)
