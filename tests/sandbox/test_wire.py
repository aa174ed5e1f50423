"""The host's encoder and the runner's decoder agree; bad requests never leave the host."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.errors import ConfigError
from orchestrator.sandbox._report import RunnerReport
from orchestrator.sandbox._wire import PROTOCOL_VERSION, READY, encode_request
from orchestrator.sandbox.execution import ExecRequest

RUNNER = Path(__file__).resolve().parents[2] / "sandbox_images" / "runner" / "stockade_runner.py"


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stockade_runner", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["stockade_runner"] = module
    spec.loader.exec_module(module)
    return module


def test_request_round_trip(runner: ModuleType) -> None:
    argv = ("sh", "-c", "echo 'a b'\n\"quoted\" ü =", "")
    header = encode_request(
        argv=argv,
        env={"A": "1", "B": "x=y"},
        cwd="/workspace",
        timeout_s=2.5,
        output_limit=1024,
        stdin_limit=3,
        workspace_limit=4096,
        return_workspace=True,
    )
    decoded = runner.Request(header)
    assert decoded.argv == list(argv)
    assert decoded.env["A"] == "1" and decoded.env["B"] == "x=y"
    assert decoded.env["PATH"].startswith("/usr/local/bin")
    assert (decoded.timeout_s, decoded.output_limit, decoded.stdin_limit) == (2.5, 1024, 3)
    assert decoded.workspace_limit == 4096 and decoded.return_workspace is True
    assert runner.PROTOCOL_VERSION == PROTOCOL_VERSION and runner.READY == READY


def test_runner_refuses_another_protocol_version(runner: ModuleType) -> None:
    with pytest.raises(ValueError, match="protocol version"):
        runner.Request(b"0\x001")


@pytest.mark.parametrize(
    "value",
    [
        0,
        -3,
        2.5,
        True,
        False,
        None,
        "plain",
        'quote " backslash \\ newline \n tab \t',
        "ü \x00 \x1f",
        "lone \udcff surrogate",
    ],
)
def test_runner_json_is_valid_and_parsed_back(runner: ModuleType, value: object) -> None:
    encoded = runner._json({"workspace_error": value}).encode("utf-8", "backslashreplace")
    parsed = json.loads(encoded)["workspace_error"]
    if isinstance(value, str) and "\udcff" in value:
        assert parsed == value.replace("\udcff", "\ufffd")
    else:
        assert parsed == value


def test_report_validation_refuses_forgeries() -> None:
    with pytest.raises(ValueError, match="extra"):
        RunnerReport.model_validate_json('{"exit_code": 0, "admin": true}')
    with pytest.raises(ValueError, match="greater than or equal"):
        RunnerReport.model_validate_json('{"stdout_total": -1}')


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"argv": ()}, "argv"),
        ({"argv": ("echo", "a\x00b")}, "argv"),
        ({"argv": ("true",), "env": {"A=B": "1"}}, "env"),
        ({"argv": ("true",), "env": {"A": "\x00"}}, "env"),
        ({"argv": ("true",), "timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_requests_are_refused_before_any_container(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        ExecRequest(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
