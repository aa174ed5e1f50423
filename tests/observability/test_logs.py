"""Structured logs: one JSON object per line, carrying what metrics must not (run, call, tool…)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.config import StockadeConfig
from orchestrator.metrics import JsonLinesFormatter, configure_logging
from orchestrator.platform import Platform
from orchestrator.testing.backend import ScriptedBackend
from orchestrator.tools import ToolCall


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_each_call_is_one_json_line_with_its_identifiers(
    tmp_path: Path, json_log: io.StringIO
) -> None:
    async with Platform.open(StockadeConfig(state_dir=tmp_path), backend=ScriptedBackend()) as p:
        await p.gateway.call(
            ToolCall(
                id="c-1",
                name="files.read",
                arguments={"path": "a"},
                run_id="run-7",
                principal="alice",
            )
        )
        await p.gateway.call(ToolCall(id="c-2", name="no.such", arguments={}, run_id="run-7"))
    calls = [line for line in lines(json_log) if line["logger"] == "orchestrator.gateway._gateway"]
    assert [c["call_id"] for c in calls] == ["c-1", "c-2"]
    first, second = calls
    assert first["level"] == "info" and first["run_id"] == "run-7"
    assert first["tool"] == "files.read" and first["principal"] == "alice"
    assert first["decision"] == "allow" and first["rule"] == "files-read"
    assert first["status"] == "ok" and isinstance(first["duration_s"], float)
    assert str(first["ts"]).endswith("+00:00")
    assert second["status"] == "unknown_tool" and "decision" not in second


def test_exceptions_are_kept_in_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("hard",), sys.exc_info()
        )
    line = json.loads(JsonLinesFormatter().format(record))
    assert line["message"] == "failed hard" and "ValueError: boom" in line["exception"]


@pytest.mark.docker
def test_stockade_log_format_json_on_the_command_line(tmp_path: Path) -> None:
    env = {**os.environ, "STOCKADE_HOME": str(tmp_path)}
    env.pop("STOCKADE_CONFIG", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "--log-format",
            "json",
            "tools",
            "call",
            "python.run",
            "--args",
            '{"code": "print(6 * 7)"}',
        ],
        capture_output=True,
        check=False,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    [call] = [r for r in records if r.get("tool") == "python.run"]
    assert call["call_id"].startswith("cli-") and call["status"] == "ok"
    assert call["decision"] == "allow"
