"""/metrics over HTTP: the endpoint, its discovery file, the ASGI app, promtool on a live scrape."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from orchestrator.config import StockadeConfig, load_config
from orchestrator.errors import ConfigError
from orchestrator.metrics import Metrics, live_targets, metrics_app, serve_metrics
from orchestrator.platform import Platform
from orchestrator.tools import ToolCall, ToolStatus

from .conftest import StockadeProcess, tool


async def test_the_endpoint_serves_on_loopback_and_registers_for_discovery(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.tool_calls.labels("python.run", "ok").inc(3)
    targets = tmp_path / "targets"
    (targets).mkdir()
    # A discovery file left by a process that died without removing it.
    (targets / "999999999-9464.json").write_text('[{"targets": ["127.0.0.1:9464"]}]')
    async with serve_metrics(metrics, port=0, targets_dir=targets, labels={"command": "t"}) as ep:
        assert ep.host == "127.0.0.1" and ep.port > 0
        assert ep.url == f"http://127.0.0.1:{ep.port}/metrics"
        document = json.loads(ep.target_file.read_text()) if ep.target_file else None
        assert document == [{"targets": [f"127.0.0.1:{ep.port}"], "labels": {"command": "t"}}]
        assert [p.name for p in targets.iterdir()] == [f"{os.getpid()}-{ep.port}.json"]
        assert live_targets(targets) == [ep.url]
        async with httpx.AsyncClient(timeout=10) as client:
            page = await client.get(ep.url)
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert 'stockade_tool_calls_total{status="ok",tool="python.run"} 3.0' in page.text
            open_metrics = await client.get(
                ep.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
            )
            assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
            assert open_metrics.text.endswith("# EOF\n")
            assert (await client.head(ep.url)).content == b""
            assert (await client.get(ep.url.replace("/metrics", "/other"))).status_code == 404
            assert (await client.post(ep.url)).status_code == 405
    assert list(targets.iterdir()) == []
    assert live_targets(targets) == []


async def test_prometheus_of_another_user_reads_the_discovery_file(tmp_path: Path) -> None:
    """Prometheus runs as its own user (Debian's package; nobody in its container): the
    discovery file is readable whatever the process's umask, and ``metrics.targets_dir``
    puts it outside the state directory, which only Stockade's user may enter."""
    shared = Path(tempfile.mkdtemp(prefix="stk-targets-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        config = tmp_path / "stockade.yaml"
        config.write_text(f"state_dir: state\nmetrics:\n  targets_dir: {shared}/targets\n")
        settings = load_config(config, environ={}).config
        assert settings.metrics_targets_dir == shared / "targets"
        umask = os.umask(0o077)
        try:
            async with serve_metrics(
                Metrics(), port=0, targets_dir=settings.metrics_targets_dir
            ) as endpoint:
                assert endpoint.target_file is not None
                as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
                read = await asyncio.to_thread(
                    subprocess.run,
                    [*as_nobody, "cat", str(endpoint.target_file)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
        finally:
            os.umask(umask)
        assert read.returncode == 0, read.stderr
        assert json.loads(read.stdout)[0]["targets"] == [f"127.0.0.1:{endpoint.port}"]
    finally:
        shutil.rmtree(shared)


async def test_a_busy_port_is_a_configuration_error(tmp_path: Path) -> None:
    metrics = Metrics()
    async with serve_metrics(metrics, port=0) as first:
        with pytest.raises(ConfigError, match=r"metrics\.port"):
            async with serve_metrics(metrics, port=first.port):
                pass


async def test_nothing_is_served_when_metrics_are_off() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.enabled"):
        async with serve_metrics(Metrics(enabled=False), port=0):
            pass


async def test_the_asgi_app_serves_the_metrics_it_is_given_late() -> None:
    holder: list[Metrics] = []
    app = metrics_app(lambda: holder[0])
    holder.append(Metrics())
    holder[0].approvals.labels("denied").inc()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        page = await client.get("/metrics")
        assert page.status_code == 200
        assert 'stockade_approvals_total{outcome="denied"} 1.0' in page.text
        assert (await client.post("/metrics")).status_code == 405


@pytest.mark.docker
async def test_promtool_accepts_a_live_scrape_after_real_tool_calls(tmp_path: Path) -> None:
    config = StockadeConfig(state_dir=tmp_path, policy=None)
    async with (
        Platform.open(config, pools=False) as platform,
        serve_metrics(platform.metrics, port=0) as endpoint,
    ):
        results = []
        for number, code in enumerate(["print(6 * 7)", "print(1)"]):
            result = await platform.gateway.call(
                ToolCall(
                    id=f"real-{number}",
                    name="python.run",
                    arguments={"code": code},
                    run_id="r",
                    principal="p",
                )
            )
            results.append(result.status)
        assert results == [ToolStatus.OK, ToolStatus.OK], results
        async with httpx.AsyncClient(timeout=30) as client:
            body = (await client.get(endpoint.url)).content
    check = await asyncio.to_thread(
        subprocess.run,
        [tool("promtool"), "check", "metrics"],
        input=body,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert check.returncode == 0 and check.stdout == b"" and check.stderr == b"", check
    text = body.decode()
    assert (
        f'stockade_tool_calls_total{{status="{ToolStatus.OK.value}",tool="python.run"}} 2.0' in text
    )
    assert (
        'stockade_sandbox_operation_duration_seconds_count{operation="create",runtime="runc"}'
        in text
    )
    assert (
        'stockade_sandbox_executions_total{profile="default",runtime="runc",status="ok"} 2.0'
        in text
    )


def test_promtool_accepts_the_scripted_process(stockade_process: StockadeProcess) -> None:
    body = httpx.get(stockade_process.url, timeout=30).content
    check = subprocess.run(
        [tool("promtool"), "check", "metrics"],
        input=body,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert check.returncode == 0 and not check.stdout and not check.stderr, check


def test_stockade_metrics_prints_what_the_running_processes_serve(
    stockade_process: StockadeProcess, tmp_path: Path
) -> None:
    env = {**os.environ, "STOCKADE_HOME": str(stockade_process.state)}
    env.pop("STOCKADE_CONFIG", None)
    shown = subprocess.run(
        [sys.executable, "-m", "orchestrator", "metrics"],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert 'stockade_tool_calls_total{status="denied",tool="shell.run"} 1.0' in shown.stdout
    idle = subprocess.run(
        [sys.executable, "-m", "orchestrator", "metrics"],
        capture_output=True,
        check=False,
        text=True,
        env={**env, "STOCKADE_HOME": str(tmp_path / "nobody")},
        timeout=120,
    )
    assert idle.returncode == 0
    assert "no Stockade process is serving" in idle.stderr
    assert "# TYPE stockade_tool_calls_total counter" in idle.stdout


def test_the_configured_endpoint_defaults_to_loopback() -> None:
    settings = load_config(None, flags={}).config.metrics
    assert settings.host == "127.0.0.1" and settings.enabled and not settings.serve
