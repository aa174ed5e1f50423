"""No leaks: dead owners and passed deadlines are reaped; Ctrl-C removes the pool."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from agent.conftest import containers_of  # the agent tests' leak helper

from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.labels import (
    DEADLINE_LABEL,
    OWNER_LABEL,
    PLATFORM_LABEL,
    PLATFORM_VALUE,
    Owner,
    current_owner,
)
from orchestrator.sandbox.reaper import reap

pytestmark = pytest.mark.docker


def wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


# A long-running orchestrator: the platform with a warm pool of two and one long call,
# run through the CLI's own signal handling (SIGTERM cancels like Ctrl-C).
_ORCHESTRATOR = """
import logging
import signal
import sys
# Ctrl-C as a terminal delivers it: a test run started in the background by a
# non-interactive shell has SIGINT ignored, and its children inherit that.
signal.signal(signal.SIGINT, signal.default_int_handler)
from orchestrator.cli._common import run_async
from orchestrator.config import load_config
from orchestrator.platform import Platform
from orchestrator.sandbox.execution import ExecRequest

async def main():
    async with Platform.open(load_config(sys.argv[1]), warm=True) as platform:
        profile = platform.profiles["reaper-test"]
        # Longer than any wait of the tests, which end it: a call that ended on its own
        # would leave nothing to interrupt.
        await platform.sandbox.execute(ExecRequest(argv=("sleep", "600")), profile)

run_async(main())
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "stockade.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'home'}\ntoolkits: [toolkits.python]\n"
        "sandbox:\n  profiles:\n    default: {pool_size: 0}\n"
        "    reaper-test: {image: stockade-sandbox, pool_size: 2, timeout_s: 660, loosen: [timeout]}\n"
    )
    return path


@pytest.fixture
def orchestrator_process(
    config_file: Path, docker_client: docker.DockerClient, images: ImageBuilder
) -> Iterator[subprocess.Popen[bytes]]:
    """A separate orchestrator running a long call, its pool warm beside it."""
    process = subprocess.Popen(
        [sys.executable, "-c", _ORCHESTRATOR, str(config_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    process.stderr.close()
    for container_id in containers_of(docker_client, process.pid):
        docker_client.api.remove_container(container_id, force=True)


def running_call_and_pool(client: docker.DockerClient, pid: int) -> bool:
    # one container for the call plus the two of the pool
    return len(containers_of(client, pid)) >= 3


def test_sigkilled_orchestrator_is_reaped_at_next_start(
    orchestrator_process: subprocess.Popen[bytes],
    docker_client: docker.DockerClient,
    images: ImageBuilder,
    no_leaks: None,
) -> None:
    pid = orchestrator_process.pid
    wait_for(lambda: running_call_and_pool(docker_client, pid), timeout_s=60, what="call and pool")
    orchestrator_process.send_signal(signal.SIGKILL)
    orchestrator_process.wait()
    leftovers = containers_of(docker_client, pid)
    assert len(leftovers) >= 3, "a SIGKILL leaves containers behind until the next start"

    async def start_and_close() -> None:
        async with DockerBackend(docker_client, images=images):
            pass

    import asyncio

    asyncio.run(start_and_close())
    assert containers_of(docker_client, pid) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_removes_the_pool_and_the_call(
    orchestrator_process: subprocess.Popen[bytes],
    docker_client: docker.DockerClient,
    signum: signal.Signals,
) -> None:
    pid = orchestrator_process.pid
    wait_for(lambda: running_call_and_pool(docker_client, pid), timeout_s=60, what="call and pool")
    orchestrator_process.send_signal(signum)
    exit_code = orchestrator_process.wait(timeout=30)
    assert orchestrator_process.stderr is not None
    assert exit_code == 130, orchestrator_process.stderr.read().decode(errors="replace")
    assert containers_of(docker_client, pid) == []


def _labelled_container(
    client: docker.DockerClient, images: ImageBuilder, *, owner: str, deadline: float
) -> str:
    created = client.api.create_container(
        images.resolve("stockade-sandbox"),
        command=["sleep", "60"],
        network_disabled=True,
        labels={
            PLATFORM_LABEL: PLATFORM_VALUE,
            OWNER_LABEL: owner,
            DEADLINE_LABEL: f"{deadline:.0f}",
        },
        host_config=client.api.create_host_config(network_mode="none"),
    )
    return str(created["Id"])


def test_reap_by_deadline_and_dead_owner_spares_live_ones(
    docker_client: docker.DockerClient, images: ImageBuilder, no_leaks: None
) -> None:
    me = current_owner()
    dead = Owner(boot_id=me.boot_id, pid=me.pid, start_ticks="1").label()  # pid reused: not us
    expired = _labelled_container(docker_client, images, owner=me.label(), deadline=time.time() - 5)
    orphan = _labelled_container(docker_client, images, owner=dead, deadline=time.time() + 3600)
    alive = _labelled_container(
        docker_client, images, owner=me.label(), deadline=time.time() + 3600
    )
    reaped = {entry.id: entry.reason for entry in reap(docker_client)}
    assert reaped.get(expired) == "deadline passed"
    assert reaped.get(orphan, "").startswith("owner process")
    assert alive not in reaped
    everything = {entry.id for entry in reap(docker_client, everything=True)}
    assert alive in everything


def test_two_reapers_at_once_both_leave_nothing_and_warn_of_nothing(
    docker_client: docker.DockerClient,
    images: ImageBuilder,
    no_leaks: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two orchestrators starting at once on one engine both reap a dead owner's running
    containers: the engine refuses the second removal of each (409, already in progress).
    That reaper waits for the removal instead of warning and moving on, so whichever
    returns, none of those containers is left for its caller to find."""
    me = current_owner()
    dead = Owner(boot_id=me.boot_id, pid=me.pid, start_ticks="1").label()
    orphans = [
        _labelled_container(docker_client, images, owner=dead, deadline=time.time() + 3600)
        for _ in range(8)
    ]
    for orphan in orphans:
        docker_client.api.start(orphan)
    barrier = threading.Barrier(2)

    def reaper() -> None:
        barrier.wait()
        reap(docker_client)

    with caplog.at_level(logging.WARNING, logger="orchestrator.sandbox.reaper"):
        other = threading.Thread(target=reaper)
        other.start()
        reaper()
        left = [c["Id"] for c in docker_client.api.containers(all=True) if c["Id"] in orphans]
        other.join(timeout=60)
    assert left == []
    assert "could not reap" not in caplog.text, caplog.text


def test_an_owner_in_another_pid_namespace_is_not_taken_for_gone(
    docker_client: docker.DockerClient, images: ImageBuilder, no_leaks: None
) -> None:
    """A Ray node in a container (as Ray's images and KubeRay run them) shares the machine's
    engine, and its boot id, with processes of other PID namespaces, whose pids mean
    nothing here: its sandbox host's reaper must leave their containers to their deadline,
    not remove the live calls of another host or orchestrator."""
    code = "from orchestrator.sandbox.labels import current_owner; print(current_owner().label())"
    elsewhere = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert Owner.parse(elsewhere) is not None, elsewhere
    assert Owner.parse(elsewhere).is_alive() is None  # type: ignore[union-attr]
    theirs = _labelled_container(
        docker_client, images, owner=elsewhere, deadline=time.time() + 3600
    )
    try:
        assert theirs not in {entry.id for entry in reap(docker_client)}
    finally:
        docker_client.api.remove_container(theirs, force=True)


def test_cleanup_command(
    docker_client: docker.DockerClient, images: ImageBuilder, no_leaks: None
) -> None:
    me = current_owner()
    expired = _labelled_container(docker_client, images, owner=me.label(), deadline=time.time() - 5)
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator", "cleanup"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"removed {expired[:12]}: deadline passed" in completed.stdout
    assert docker_client.api.containers(all=True, filters={"id": expired}) == []
