"""The engine restarts under load: calls ride it out, and no container is left.

Calls through one platform at concurrency 4; a few seconds in, dockerd is
stopped (it kills the running containers on its way down), stays away for a
few seconds, and is started again the way the setup script starts it. Every
call's retry budget outlasts the outage, so every call must succeed: attempts
that failed while the engine was away are not spent, containers the engine
killed are infrastructure errors (retried), never the tool's failure.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from orchestrator.config import load_config
from orchestrator.platform import Platform
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.labels import OWNER_LABEL, current_owner
from orchestrator.tools import ToolCall, ToolResult, ToolStatus

pytestmark = [
    pytest.mark.docker,
    pytest.mark.exclusive,  # stops every dockerd on the machine
    # While the engine is away, the SDK's Unix-socket connection leaks the socket of
    # every failed connect (docker-py closes it only on success); the GC finds them.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

ROOT = Path(__file__).resolve().parents[2]
CALLS = 48
CONCURRENCY = 4
OUTAGE_S = 3.0
POLICY = """
version: 1
rules:
  - name: python
    tools: python.run
    decision: allow
    retry: {max_attempts: 4, max_total_s: 120}
"""


def answers(client: docker.DockerClient) -> bool:
    try:
        client.ping()
    except Exception:
        return False
    return True


def wait_until(condition: bool, client: docker.DockerClient, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while answers(client) is not condition:
        assert time.monotonic() < deadline, f"the engine did not {'start' if condition else 'stop'}"
        time.sleep(0.1)


def start_engine() -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup.sh"), "engine"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def restart_engine(client: docker.DockerClient) -> None:
    subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=True)
    wait_until(False, client, timeout_s=90)  # it stops its containers first
    time.sleep(OUTAGE_S)  # the outage itself: the engine stays away this long
    start_engine()
    wait_until(True, client, timeout_s=90)


def own_containers(client: docker.DockerClient) -> list[str]:
    label = f"{OWNER_LABEL}={current_owner().label()}"
    return [c["Id"] for c in client.api.containers(all=True, filters={"label": label})]


@pytest.fixture
def engine_client(images: ImageBuilder) -> Iterator[docker.DockerClient]:
    """A client of our own: the outage breaks its connections, and none of that may
    linger in the session's client (its leaked sockets would surface in later tests)."""
    client = docker.from_env()
    yield client
    client.close()
    gc.collect()


async def test_calls_ride_out_an_engine_restart(
    tmp_path: Path, engine_client: docker.DockerClient
) -> None:
    docker_client = engine_client
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    config = tmp_path / "stockade.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\npolicy: {policy}\ntoolkits: [toolkits.python]\n"
        "sandbox:\n  profiles:\n    default: {pool_size: 2}\n"
    )
    results: list[ToolResult] = []
    done = asyncio.Event()
    try:
        async with Platform.open(load_config(config, environ={})) as platform:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for number in range(CALLS):
                queue.put_nowait(number)

            async def worker() -> None:
                while not queue.empty():
                    number = queue.get_nowait()
                    call = ToolCall(
                        id=f"c{number}", name="python.run",
                        arguments={"code": f"import time; time.sleep(0.2); print({number})"},
                    )  # fmt: skip
                    results.append(await platform.gateway.call(call))
                    if len(results) == 8:
                        done.set()  # the restart begins with calls in flight

            workers = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
            await done.wait()
            await asyncio.to_thread(restart_engine, docker_client)
            await asyncio.gather(*workers)
        gc.collect()  # the SDK's leaked sockets are found here, under this module's filter
    finally:
        if not answers(docker_client):
            start_engine()
    statuses = [result.status for result in results]
    failed = [result for result in results if result.status is not ToolStatus.OK]
    assert len(results) == CALLS
    assert failed == [], f"{len(failed)} of {CALLS} failed: {failed[:3]} (all: {statuses})"
    printed = sorted(
        int(result.output.split('"stdout": "')[1].split("\\n")[0]) for result in results
    )
    assert printed == list(range(CALLS))
    assert own_containers(docker_client) == [], "the platform left containers behind"
