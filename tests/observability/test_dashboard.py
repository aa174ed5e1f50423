"""The Grafana dashboard: generated from code, valid for Grafana 11.6, linted; every query parses.

No machine-readable schema of Grafana 11.6's dashboard can be had offline
(Grafana keeps it as CUE in its repository; the foundation SDK publishes a
JSON Schema only in its Git repository, not in its PyPI or npm packages), so
the dashboard is validated against the structure the SDK's Grafana 11.6
types define: it must load into them and come back identical, with no key
they do not know.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from importlib.metadata import version
from types import ModuleType

import promql_parser
import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from .conftest import DASHBOARD, DEPLOY, dashboard_queries, defined_names, rule_queries, substitute

_RATE_FUNCTIONS = ("rate", "irate", "increase")
_COUNTER_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "stockade_dashboard", DEPLOY / "grafana" / "dashboard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_the_dashboard_is_in_step_with_its_code() -> None:
    assert DASHBOARD.read_text() == _generator().render(), "run: python deploy/grafana/dashboard.py"


def test_the_sdk_is_the_grafana_11_build_the_compose_file_runs() -> None:
    sdk = version("grafana-foundation-sdk")
    assert sdk.endswith("!11.6.0"), sdk
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["services"]["grafana"]["image"] == "grafana/grafana:11.6.0"


def test_the_dashboard_has_the_structure_of_grafana_11_6() -> None:
    raw = json.loads(DASHBOARD.read_text())
    loaded = Dashboard.from_json(raw)
    again = json.loads(JSONEncoder(sort_keys=True).encode(loaded))
    assert again == raw, "a key the Grafana 11.6 types do not know, or a value they change"
    assert raw["schemaVersion"] >= 39  # Grafana 11's dashboards


@pytest.mark.parametrize(("where", "expr"), dashboard_queries() + rule_queries())
def test_every_query_parses_and_reads_only_defined_metrics(where: str, expr: str) -> None:
    defined = defined_names()
    for selector in _selectors(substitute(expr)):
        assert selector.name in defined, f"{where}: {selector.name} is not a Stockade metric"


def test_the_dashboard_passes_the_linter_rules() -> None:
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    # template-datasource-rule, template-job-rule, template-instance-rule
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query" and variables[name]["includeAll"]
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    titles = [panel["title"] for panel in board["panels"] if panel["type"] != "row"]
    assert len(titles) == len(set(titles)), "duplicate panel titles"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        where = panel["title"]
        # panel-datasource-rule, panel-units-rule, panel-title-description-rule
        assert panel["datasource"]["uid"] == "${datasource}", where
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
        assert panel.get("description"), f"{where}: no description"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)) and all(ref_ids), where
        for target in panel["targets"]:
            expr = target["expr"]
            assert target["datasource"]["uid"] == "${datasource}", where
            # target-rate-interval-rule: every range is Grafana's rate interval
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert window == "$__rate_interval", f"{where}: [{window}]"
            for selector in _selectors(substitute(expr)):
                # target-job-rule, target-instance-rule
                matchers = {m.name: m.value for m in selector.matchers.matchers}
                assert matchers.get("job") == ".*" and matchers.get("instance") == ".*", where
                # a counter is only ever read through a rate
                assert selector.name is not None, where
                if selector.name.endswith(_COUNTER_SUFFIXES):
                    assert any(f"{f}({selector.name}" in expr for f in _RATE_FUNCTIONS), where


def test_the_provisioning_points_at_the_dashboards() -> None:
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "stockade.yml").read_text()
    )
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in mounts
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["type"] == "prometheus"
