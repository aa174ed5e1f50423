"""The tracing section: strict, errors naming file/line/field, header values from the env."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.tracing import open_tracer

HEADERS = """\
tracing:
  enabled: true
  endpoint: http://127.0.0.1:4318/v1/traces
  headers:
    Authorization: OTLP_TOKEN
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stockade.yaml"
    path.write_text(f"state_dir: {tmp_path}\n{text}")
    return path


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("tracing: {enabled: true, sampling_ratio: 1.5}\n", "tracing.sampling_ratio"),
        ("tracing: {endpoint: 'not a url'}\n", "tracing.endpoint"),
        ("tracing: {headers: {Authorization: 'Bearer abc'}}\n", "tracing.headers.Authorization"),
        ("tracing: {enabled: true, capture: true}\n", "tracing.capture"),
    ],
)
def test_mistakes_name_file_line_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.file == str(path)
    assert caught.value.line == 2
    assert caught.value.field == field


def test_a_header_whose_variable_is_unset_stops_the_start(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, HEADERS), environ={})
    with pytest.raises(ConfigError) as caught:
        open_tracer(loaded, environ={})
    error = caught.value
    assert error.field == "tracing.headers.Authorization" and error.line == 6
    assert "OTLP_TOKEN" in str(error)
    tracer = open_tracer(loaded, environ={"OTLP_TOKEN": "Bearer s3cret-value"})
    assert tracer is not None
    tracer.shutdown()


def test_off_is_no_tracer_and_the_plain_gateway(tmp_path: Path) -> None:
    from orchestrator.gateway import Gateway
    from orchestrator.tracing import gateway_type

    loaded = load_config(write(tmp_path, "tracing: {enabled: false}\n"), environ={})
    assert open_tracer(loaded) is None
    assert gateway_type(None) is Gateway


def test_without_the_extra_the_error_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = load_config(write(tmp_path, "tracing: {enabled: true}\n"), environ={})
    real_import = builtins.__import__

    def no_opentelemetry(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("opentelemetry"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "orchestrator.tracing._tracer", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_opentelemetry)
    with pytest.raises(ConfigError) as caught:
        open_tracer(loaded)
    assert caught.value.field == "tracing.enabled"
    assert "stockade[tracing]" in str(caught.value)
