"""The one assembly on a real engine: runtimes and allowlists from the file, clean teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from agent.conftest import containers_of  # the agent tests' leak helper

from orchestrator.config import load_config
from orchestrator.platform import Platform, image_builder
from orchestrator.sandbox._egress_gate import EgressGates
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing import FixedResolver, HttpRequest, LoopbackOnlyConnector, serve_http
from orchestrator.tools import ToolCall, ToolStatus

pytestmark = pytest.mark.docker

KERNEL = "import os; print(os.uname().release); print(open('/proc/version').read())"


def python_call(code: str, call_id: str = "c1") -> ToolCall:
    return ToolCall(id=call_id, name="python.run", arguments={"code": code})


async def test_a_profile_configured_with_runsc_really_runs_under_gvisor(
    tmp_path: Path, images: ImageBuilder, no_leaks: None
) -> None:
    host_release = os.uname().release
    config = tmp_path / "stockade.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nsandbox:\n  runtime: runsc\n")
    async with Platform.open(load_config(config, environ={}), pools=False) as platform:
        assert {p.runtime for p in platform.profiles.values()} == {"runsc"}
        result = await platform.gateway.call(python_call(KERNEL))
    assert result.status is ToolStatus.OK, result
    stdout = json.loads(result.output or "{}")["stdout"]
    # gVisor's user-space kernel answers with its own release, not the host's.
    assert stdout.split("\n")[0] != host_release
    assert "4.4.0" in stdout
    runc = tmp_path / "runc.yaml"
    runc.write_text(f"state_dir: {tmp_path / 'state'}\n")
    async with Platform.open(load_config(runc, environ={}), pools=False) as platform:
        plain = await platform.gateway.call(python_call(KERNEL, "c2"))
    assert json.loads(plain.output or "{}")["stdout"].split("\n")[0] == host_release


@pytest.fixture
def origin() -> Iterator[int]:
    def hello(request: HttpRequest) -> tuple[int, bytes]:
        return 200, f"hello {request.path}".encode()

    with serve_http(hello) as port:
        yield port


async def test_the_http_allowlist_from_the_file_is_the_one_the_proxy_enforces(
    tmp_path: Path,
    docker_client: docker.DockerClient,
    images: ImageBuilder,
    no_leaks: None,
    origin: int,
) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "sandbox:\n  profiles:\n    http:\n      pool_size: 0\n      loosen: [egress]\n"
        f"      egress:\n        allow: ['allowed.test:{origin}']\n"
        "        allow_networks: [127.0.0.1/32]\n"
    )
    loaded = load_config(config, environ={})
    # The allowed name resolves to 127.0.0.1; the proxy must refuse the other
    # before resolving it; nothing but loopback may be dialled.
    resolver = FixedResolver({"allowed.test": ["127.0.0.1"]})
    connector = LoopbackOnlyConnector()
    backend = DockerBackend(
        docker_client,
        images=image_builder(loaded.config, docker_client),
        reap_on_start=False,
        egress_gates=EgressGates(resolver=resolver, connector=connector),
    )
    async with Platform.open(loaded, backend=backend) as platform:
        allowed = await platform.gateway.call(
            ToolCall(
                id="h1", name="http.fetch", arguments={"url": f"http://allowed.test:{origin}/x"}
            )
        )
        refused = await platform.gateway.call(
            ToolCall(id="h2", name="http.fetch", arguments={"url": f"http://other.test:{origin}/x"})
        )
    assert allowed.status is ToolStatus.OK, allowed
    assert json.loads(allowed.output or "{}")["body"] == "hello /x"
    assert [(e.host, e.allowed) for e in allowed.egress] == [("allowed.test", True)]
    assert json.loads(refused.output or "{}")["status"] == 403
    assert [(e.host, e.allowed) for e in refused.egress] == [("other.test", False)]
    assert connector.violations == [] and resolver.unknown == []


def test_sigterm_during_a_call_leaves_no_container(
    tmp_path: Path, docker_client: docker.DockerClient, images: ImageBuilder
) -> None:
    env = {**os.environ, "STOCKADE_HOME": str(tmp_path)}
    code = json.dumps({"code": "import time; time.sleep(120)"})
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "tools", "call", "python.run", "--args", code],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not containers_of(docker_client, process.pid):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the call never started a container"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, err
    assert "interrupted; sandboxes removed" in err
    assert containers_of(docker_client, process.pid) == []


def test_warm_platform_fills_its_pools_and_removes_them(
    tmp_path: Path, docker_client: docker.DockerClient, images: ImageBuilder
) -> None:
    script = (
        "import asyncio, sys\n"
        "from orchestrator.config import load_config\n"
        "from orchestrator.platform import Platform\n"
        "async def main():\n"
        "    async with Platform.open(load_config(sys.argv[1]), warm=True):\n"
        "        print('warm', flush=True)\n"
        "        sys.stdin.readline()\n"
        "asyncio.run(main())\n"
    )
    config = tmp_path / "stockade.yaml"
    config.write_text(
        f"state_dir: {tmp_path}\ntoolkits: [toolkits.python]\n"
        "sandbox:\n  profiles:\n    default: {pool_size: 3}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(config)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline().strip() == "warm", process.stderr
        assert len(containers_of(docker_client, process.pid)) == 3
        _, err = process.communicate("\n", timeout=60)
        assert process.returncode == 0, err
    finally:
        process.kill()
        process.communicate()
    assert containers_of(docker_client, process.pid) == []
