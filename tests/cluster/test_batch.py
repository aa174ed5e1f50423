"""A batch of agent runs over the two hosts of the test cluster (issue 14's batch case).

50 runs of the scripted model (real ``openai`` SDK over HTTP), each writing a
file through ``files.write``: every run completes, the results file holds one
line per run, and the calls were served by both hosts.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from orchestrator.agent import Agent, AgentConfig, BatchItem, BatchResultsFile, RunStatus, run_batch
from orchestrator.config import load_config
from orchestrator.platform import Platform
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.ray_backend import RayBackend
from orchestrator.testing import ScriptedModelServer, text, tool_call, tool_calls
from orchestrator.testing.model_server import Answer, ChatRequest
from orchestrator.testing.ray_cluster import RayCluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

RUNS = 50


def write_model(request: ChatRequest) -> Answer:
    """``write NAME``: write NAME.txt (content NAME), then answer ``wrote NAME.txt``."""
    goal = next(m["content"] for m in request.messages if m.get("role") == "user")
    name = str(goal).removeprefix("write ")
    if not request.tool_results:
        return tool_calls(tool_call("files__write", {"path": f"{name}.txt", "content": name}))
    return text(f"wrote {name}.txt")


@pytest.fixture(scope="module")
def tools_on_both(
    cluster: RayCluster, images: ImageBuilder, second_engine: docker.DockerClient
) -> Iterator[list[str]]:
    """The tools image (the default profile's), and the base it names, on the second engine too.

    The session's cluster leaves them out of the second engine on purpose (a
    host without them refuses to register); they are removed again afterwards.
    """
    present = {tag for image in second_engine.images.list() for tag in image.tags}
    added = [built.tag for built in images.build_all() if built.tag not in present]
    if added:
        save = subprocess.Popen(["docker", "save", *added], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "-H", cluster.nodes[1].docker_host, "load", "-q"],
            stdin=save.stdout,
            capture_output=True,
            timeout=240,
            check=False,
        )
        if save.stdout is not None:
            save.stdout.close()  # a failed load must not leave save blocked on the pipe
        assert save.wait() == 0 and load.returncode == 0, load.stderr
    yield added
    for tag in added:
        second_engine.images.remove(tag)


async def test_a_batch_of_50_runs_completes_over_both_hosts(
    cluster: RayCluster, tools_on_both: list[str], tmp_path: Path
) -> None:
    items = [BatchItem(id=f"r{n:02}", goal=f"write f{n:02}") for n in range(RUNS)]
    results = BatchResultsFile(tmp_path / "batch.results.jsonl")
    # Started from this thread: its socket is in the head's namespace, with the driver.
    with ScriptedModelServer(handler=write_model) as server:
        config = cluster.write_config(
            tmp_path,
            top="toolkits: [toolkits.files]\n"
            f"model: {{base_url: '{server.base_url}', name: test-model, timeout_s: 30}}\n",
            sandbox="  profiles: {default: {pool_size: 2}}\n",
        )
        async with Platform.open(load_config(config, environ={})) as platform:
            backend = platform.sandbox
            assert isinstance(backend, RayBackend)
            # A host may register a refresh (2 s) after the platform opens, more under load.
            deadline = time.monotonic() + 60
            while set(backend.hosts) != {"host-a", "host-b"}:
                assert time.monotonic() < deadline, (set(backend.hosts), backend.refused)
                await asyncio.sleep(0.2)
            before = {name: host.served for name, host in backend.hosts.items()}
            agent_config = AgentConfig(reflection=False, memory=False)
            async with Agent.open(platform, agent_config) as agent:
                batch = run_batch(agent, items, concurrency=8)
                started = time.monotonic()
                async for result in batch:
                    results.append(result)
                wall_s = time.monotonic() - started
            served = {name: host.served - before[name] for name, host in backend.hosts.items()}
        results.close()
    latest = results.read()
    assert sorted(latest) == [item.id for item in items]
    assert len((tmp_path / "batch.results.jsonl").read_text().splitlines()) == RUNS
    failed = {key: r.error for key, r in latest.items() if r.status is not RunStatus.COMPLETE}
    assert failed == {}
    for key, result in latest.items():
        assert result.answer == f"wrote f{key[1:]}.txt" and result.tool_calls_by_status == {"ok": 1}
        written = tmp_path / "state" / "workspaces" / result.run_id / f"f{key[1:]}.txt"
        assert written.read_text() == f"f{key[1:]}"
    assert batch.progress.tool_calls == RUNS
    print(f"{RUNS} runs in {wall_s:.1f} s ({RUNS / wall_s:.2f} runs/s), calls by host {served}")
    # Both hosts served calls (placement spreads calls by load).
    assert sum(served.values()) >= RUNS and min(served.values()) > 0, served
