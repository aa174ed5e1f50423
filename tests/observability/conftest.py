"""What the observability tests share: the deploy/ files, the registry's names, a Stockade process."""

from __future__ import annotations

import json
import re
import selectors
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from orchestrator.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "stockade-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "rules" / "stockade-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stockade-overview.json"
PROCESS = Path(__file__).with_name("stockade_process.py")
_STARTUP_S = 60.0


def tool(name: str) -> str:
    """The path of a Prometheus tool (installed by scripts/setup.sh)."""
    path = shutil.which(name)
    assert path, f"{name} is missing: scripts/setup.sh installs it (Debian prometheus)"
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def rule_queries() -> list[tuple[str, str]]:
    """(alert, expression) of every rule."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]


def substitute(expr: str, rate_interval: str = "1m") -> str:
    """A dashboard expression as Grafana sends it with every job and instance chosen."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace('=~"$job"', '=~".*"')
        .replace('=~"$instance"', '=~".*"')
    )


def defined_names() -> set[str]:
    """Every sample name the registry exposes (with _total, _bucket, _sum, _count…)."""
    metrics = Metrics()
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


@dataclass(frozen=True)
class StockadeProcess:
    """A running ``stockade_process.py``."""

    url: str
    state: Path
    process: subprocess.Popen[str]


@pytest.fixture
def stockade_process(tmp_path: Path) -> Iterator[StockadeProcess]:
    """Start the scripted Stockade process; it ends when the test does."""
    state = tmp_path / "state"
    state.mkdir()
    process = subprocess.Popen(
        [sys.executable, str(PROCESS), str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(_STARTUP_S), "the Stockade process did not start in time"
        line = process.stdout.readline()
        assert line, f"the Stockade process ended (exit {process.wait(10)})"
        yield StockadeProcess(url=json.loads(line)["url"], state=state, process=process)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
