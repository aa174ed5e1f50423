"""A real Prometheus scrapes a running Stockade process; every dashboard query finds its series.

The Stockade process (``stockade_process.py``) makes known tool calls and
reports one agent run; Prometheus (Debian's, on 127.0.0.1, a temporary data
directory, a 1 s scrape interval) finds it through the discovery file the
process left in its state directory. Then every query of the dashboard runs
through Prometheus' HTTP API: each must return series, and the panels with
known answers must show what the process did (read as totals: the same
expression with each rate replaced by the counter itself).
"""

from __future__ import annotations

import math
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .conftest import StockadeProcess, dashboard_queries, substitute, tool
from .stockade_process import EXPECTED_DECISIONS, EXPECTED_STATUSES

_DEADLINE_S = 60.0
_RATE = re.compile(r"rate\(([^\[]+)\[\$__rate_interval\]\)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Prometheus:
    """Queries one Prometheus server."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=10)

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = self.client.get("/api/v1/query", params={"query": expr}).json()
        assert reply["status"] == "success", (expr, reply)
        result: list[dict[str, Any]] = reply["data"]["result"]
        return result

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expr)}

    def wait_for(self, expr: str, value: float) -> None:
        """Poll until ``expr`` is ``value`` (bounded)."""
        deadline = time.monotonic() + _DEADLINE_S
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            last = self.query(expr)
            if last and float(last[0]["value"][1]) == value:
                return
            time.sleep(0.2)
        pytest.fail(f"{expr} did not reach {value} within {_DEADLINE_S} s: {last}")


@pytest.fixture
def prometheus(stockade_process: StockadeProcess, tmp_path: Path) -> Iterator[Prometheus]:
    targets = stockade_process.state / "metrics" / "targets"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "stockade",
                "file_sd_configs": [{"files": [f"{targets}/*.json"], "refresh_interval": "1s"}],
            }
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("w")
    server = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + _DEADLINE_S
        while True:
            assert server.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)
        queries = Prometheus(url)
        try:
            yield queries
        finally:
            queries.client.close()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()


def test_every_dashboard_query_finds_what_the_process_did(prometheus: Prometheus) -> None:
    total = sum(EXPECTED_STATUSES.values())
    prometheus.wait_for('sum(stockade_tool_calls_total{job="stockade"})', total)
    # The target came from the discovery file, with its labels.
    up = prometheus.query('up{job="stockade"}')
    assert len(up) == 1 and up[0]["metric"]["command"] == "test" and up[0]["value"][1] == "1"
    # Enough scrapes for every rate over the window to have two samples.
    prometheus.wait_for('count_over_time(up{job="stockade"}[1m]) >= bool 3', 1)

    for title, expr in dashboard_queries():
        if "stockade_host_" in expr:
            # The ray engine's hosts: none under docker (tests/cluster/test_hosts.py has them).
            continue
        result = prometheus.query(substitute(expr))
        assert result, f"{title}: {expr} found no series"
        summed = prometheus.query(substitute(_RATE.sub(r"\1", expr)))
        assert summed, f"{title}: totals of {expr} found no series"

    def totals(title: str, label: str) -> dict[str, float]:
        [expr] = [e for t, e in dashboard_queries() if t == title][:1]
        values = prometheus.by(substitute(_RATE.sub(r"\1", expr)), label)
        return {key: value for key, value in values.items() if value and not math.isnan(value)}

    assert totals("Tool calls by status", "status") == EXPECTED_STATUSES
    assert totals("Policy decisions", "decision") == EXPECTED_DECISIONS
    assert totals("Denials by rule", "rule") == {"no-shell": 1}
    assert totals("Rate-limit refusals", "limit") == {"reads-per-run": 1}
    assert totals("Approvals by outcome", "outcome") == {"approved": 1}
    assert totals("Runs by outcome", "outcome") == {"complete": 1}
    assert totals("Token usage", "gen_ai_token_type") == {"input": 240, "output": 60}
    assert totals("Pending approvals", "") == {}
    pool = prometheus.by(
        substitute('sum by (profile) (stockade_sandbox_pool_target_size{job=~"$job"})'), "profile"
    )
    assert set(pool) == {"default", "http"}
    assert prometheus.by('sum(stockade_build_info{job="stockade"})', "") == {"": 1.0}
