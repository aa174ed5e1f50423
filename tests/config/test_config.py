"""stockade.yaml: sections, errors with file/line/field, precedence, schema, one place for env."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.config import (
    ENVIRONMENT_FIELDS,
    StockadeConfig,
    load_config,
    render_config_schema,
)
from orchestrator.config._schema import SCHEMA_FILE
from orchestrator.errors import ConfigError
from orchestrator.platform import check_configuration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = SCHEMA_FILE.with_name("stockade.example.yaml")

FULL = {
    "version": 1,
    "state_dir": "/srv/stockade",
    "policy": "/etc/stockade/policy.yaml",
    "workspaces_dir": "/srv/ws",
    "toolkits": ["toolkits.files", "toolkits.python"],
    "sandbox": {
        "runtime": "runsc",
        "engine": "docker",
        "docker": {"max_threads": 4, "max_starting": 1},
        "ray": {"address": "10.77.0.1:6390", "namespace": "team-a"},
        "profiles": {
            "big": {
                "name": "big",
                "image": "stockade-tools-science",
                "image_spec": "science",
                "runtime": "runc",
                "user": "10001:10001",
                "memory_mb": 2048,
                "cpus": 1.0,
                "pids": 64,
                "timeout_s": 10.0,
                "tmp_mb": 8,
                "workspace_mb": 16,
                "workspace_max_files": 100,
                "output_limit_bytes": 4096,
                "pool_size": 0,
                "env": {"LANG": "C.UTF-8"},
                "egress": {
                    "allow": ["api.example.org"],
                    "allow_networks": [],
                    "max_bytes": 1000,
                    "max_seconds": 5.0,
                    "connect_timeout_s": 1.0,
                },
                "loosen": ["egress", "memory"],
                "python_state": False,
                "python_state_mb": 8,
                "python_preload": ["numpy", "scipy.stats"],
                "host_toolkits": ["toolkits.python", "acme_tools"],
            }
        },
    },
    "images": {
        "base_image": "python:3.12-slim",
        "sources": "/opt/images",
        "specs": {"science": {"debian": ["graphviz"], "python": ["sympy>=1.12"]}},
        "base_max_age_days": 14,
    },
    "audit": {"path": "/var/log/audit.jsonl", "max_value_bytes": 512, "rotate_mb": 8},
    "approvals": {"database": "/srv/approvals.db", "approvers": "/etc/approvers.yaml"},
    "limits": {
        "store": "redis://:secret@127.0.0.1:6390/2",
        "on_unavailable": "open",
        "password_env": "LIMITS_PASSWORD",
        "key_prefix": "org:",
        "timeout_s": 0.25,
    },
    "model": {
        "base_url": "http://127.0.0.1:8000/v1",
        "name": "local",
        "api_key_env": "LOCAL_KEY",
        "temperature": 0.2,
        "timeout_s": 30.0,
        "stream": True,
        "max_attempts": 3,
        "retry_max_total_s": 60.0,
        "backoff_initial_s": 0.25,
        "backoff_max_s": 8.0,
        "accepts_images": True,
    },
    "artifacts": {"max_per_call": 4, "max_file_mb": 2.0, "run_quota_mb": 8.0},
    "memory": {
        "enabled": False,
        "namespace": "team",
        "embedder": {
            "type": "openai",
            "model": "embed",
            "base_url": "http://127.0.0.1:8001/v1",
            "api_key_env": "EMBED_KEY",
            "dimensions": 256,
            "threshold": 0.4,
            "timeout_s": 10.0,
            "max_retries": 1,
        },
        "top_k": 3,
        "threshold": 0.5,
        "max_memories": 100,
        "max_age_days": 30.0,
        "short_term_size": 8,
        "max_prompt_chars": 1000,
    },
    "metrics": {
        "enabled": False,
        "serve": True,
        "host": "127.0.0.1",
        "port": 9100,
        "targets_dir": "/srv/stockade-targets",
    },
    "logging": {"format": "json", "level": "debug"},
    "server": {
        "host": "127.0.0.1",
        "port": 8080,
        "tokens": "/srv/tokens.db",
        "max_body_bytes": 65536,
        "max_json_depth": 16,
        "body_timeout_s": 12.5,
        "max_runs_per_principal": 3,
        "self_approval": False,
        "unauthenticated_loopback": False,
        "shutdown_grace_s": 30,
        "mcp_path": "/tools/mcp",
        "resume_runs": False,
        "run_lease_s": 90.0,
    },
    "tracing": {
        "enabled": True,
        "endpoint": "https://otel.example.org:4318/v1/traces",
        "headers": {"Authorization": "OTLP_TOKEN"},
        "sampling_ratio": 0.25,
        "capture_content": True,
        "service_name": "stockade-prod",
        "timeout_s": 5.0,
    },
    "secrets": {
        "example-token": {
            "env": "EXAMPLE_TOKEN",
            "file": None,
            "header": "X-Api-Key",
            "format": "{secret}",
            "bind": [
                {
                    "profile": "big",
                    "host": "api.example.org",
                    "port": 443,
                    "principals": ["ada"],
                    "ca_file": "/srv/corp-ca.pem",
                }
            ],
        }
    },
}


def write(tmp_path: Path, text: str, name: str = "stockade.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_section_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump(FULL))
    config = load_config(path, environ={}).config
    dumped = config.model_dump(mode="json")
    assert dumped == FULL
    again = load_config(write(tmp_path, yaml.safe_dump(dumped), "again.yaml"), environ={})
    assert again.config == config


def test_the_engine_is_docker_unless_the_file_names_ray(tmp_path: Path) -> None:
    default = load_config(write(tmp_path, "sandbox: {}\n"), environ={}).config.sandbox
    assert (default.engine, default.ray) == ("docker", None)
    text = "sandbox:\n  engine: ray\n  ray:\n    address: 10.77.0.1:6390\n"
    sandbox = load_config(write(tmp_path, text), environ={}).config.sandbox
    assert sandbox.engine == "ray" and sandbox.ray is not None
    assert (sandbox.ray.address, sandbox.ray.namespace) == ("10.77.0.1:6390", "stockade")


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf", "state_dir: state\npolicy: ../p.yaml\n")
    config = load_config(path, environ={}).config
    assert config.state_dir == tmp_path / "conf" / "state"
    assert config.policy == tmp_path / "conf" / ".." / "p.yaml"
    assert config.audit_path == tmp_path / "conf" / "state" / "audit.jsonl"


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        ("audit:\n  rotate_mbb: 3\n", 2, "audit.rotate_mbb", "did you mean 'rotate_mb'"),
        ("sandbox:\n  runtime: kata\n", 2, "sandbox.runtime", "expected one of runc, runsc"),
        ("metrics:\n  port: many\n", 2, "metrics.port", "expected a whole number, got 'many'"),
        # "" was the file's own directory: the state written beside the configuration.
        ('state_dir: ""\n', 1, "state_dir", "an empty path; leave the key out for the default"),
        ("audit:\n  path: '  '\n", 2, "audit.path", "an empty path"),
        (
            "sandbox:\n  profiles:\n    wide:\n      pids: 4096\n",
            3,
            "sandbox.profiles.wide",
            "looser than the hardened defaults in ['pids']",
        ),
        (
            "sandbox:\n  profiles:\n    net:\n      egress: {allow: [a.org]}\n",
            3,
            "sandbox.profiles.net",
            "name them in 'loosen'",
        ),
        ("toolkits: []\n", 1, "toolkits", "name at least one toolkit"),
        (
            "version: 1\nlimits:\n  on_unavailable: closed\n  store: redis://127.0.0.1:port/0\n",
            4,
            "limits.store",
            "give sqlite or a Redis URL",
        ),
        ("limits:\n  store: http://r:6379\n", 2, "limits.store", "the scheme must be"),
        ("limits:\n  on_unavailable: maybe\n", 2, "limits.on_unavailable", "closed, open"),
        (
            "images:\n  base_max_age_days: -1\n",
            2,
            "images.base_max_age_days",
            "expected a number of at least 0, got -1",
        ),
        ("images:\n  base_max_age_days: soon\n", 2, "images.base_max_age_days", "whole number"),
        ("x: &a 1\ny: *a\n", 1, None, "anchors and aliases are refused"),
        ("sandbox:\n  engine: ray\n", 2, "sandbox.engine", "give the cluster as `ray: {address"),
        (
            "sandbox:\n  engine: ray\n  ray:\n    namespace: a\n",
            3,
            "sandbox.ray.address",
            "required field is missing",
        ),
        (
            "sandbox:\n  engine: ray\n  ray: {address: head}\n",
            3,
            "sandbox.ray.address",
            "pattern",
        ),
        ("sandbox:\n  engine: kubernetes\n", 2, "sandbox.engine", "docker, ray"),
        (
            "sandbox:\n  backend:\n    type: ray\n",
            2,
            "sandbox.backend",
            "sandbox.backend was replaced: write `engine: docker` or `engine: ray`",
        ),
    ],
)
def test_mistakes_name_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str | None, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    error = caught.value
    assert (error.file, error.line, error.field) == (str(path), line, field)
    assert message in str(error)


def test_a_rule_naming_an_unknown_profile_names_the_policy_line(tmp_path: Path) -> None:
    policy = write(
        tmp_path,
        "version: 1\nrules:\n  - name: a\n    tools: python.run\n    decision: allow\n"
        "    sandbox_profile: gpu\n",
        "policy.yaml",
    )
    config = write(tmp_path, f"policy: {policy}\n")
    with pytest.raises(ConfigError) as caught:
        check_configuration(load_config(config, environ={}))
    error = caught.value
    assert (error.file, error.line, error.field) == (str(policy), 6, "rules[0].sandbox_profile")
    assert "'gpu', which is not configured; configured profiles: default, http" in str(error)


def test_a_tool_needing_an_unconfigured_profile_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "tools"))
    # sample_toolkit.greet runs in profile "tiny".
    config = write(tmp_path, "toolkits: [sample_toolkit]\n")
    with pytest.raises(ConfigError) as caught:
        check_configuration(load_config(config, environ={}))
    error = caught.value
    assert (error.file, error.field) == (str(config), "sandbox.profiles")
    assert "tool sample_toolkit.greet runs in sandbox profile 'tiny'" in str(error)
    assert "configured profiles: default, http" in str(error)
    fixed = write(
        tmp_path,
        "toolkits: [sample_toolkit]\nsandbox:\n  profiles:\n    tiny: {}\n",
        "fixed.yaml",
    )
    check_configuration(load_config(fixed, environ={}))


def test_precedence_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    path = write(tmp_path, "sandbox:\n  runtime: runsc\npolicy: /from/file.yaml\n")
    env = {"STOCKADE_POLICY": "/from/env.yaml", "STOCKADE_HOME": "/from/env-home"}
    loaded = load_config(path, environ=env, flags={"policy": "/from/flag.yaml"})
    config = loaded.config
    assert config.policy == Path("/from/flag.yaml")
    assert loaded.source_of("policy") == "flag --policy"
    assert config.state_dir == Path("/from/env-home")
    assert loaded.source_of("state_dir") == "env STOCKADE_HOME"
    assert config.sandbox.runtime == "runsc"
    assert loaded.source_of("sandbox.runtime") == f"{path}:2"
    assert config.metrics.port == 9464
    assert loaded.source_of("metrics.port") == "default"
    # The section's runtime is every profile's default, built-ins included.
    assert {p.runtime for p in config.sandbox.effective_profiles().values()} == {"runsc"}
    env_only = load_config(path, environ={"STOCKADE_RUNTIME": "runc"}).config
    assert env_only.sandbox.runtime == "runc"


def test_stockade_config_names_the_file_and_the_flag_beats_it(tmp_path: Path) -> None:
    from_env = write(tmp_path, "metrics: {port: 1111}\n", "env.yaml")
    from_flag = write(tmp_path, "metrics: {port: 2222}\n", "flag.yaml")
    env = {"STOCKADE_CONFIG": str(from_env)}
    assert load_config(environ=env).config.metrics.port == 1111
    assert load_config(from_flag, environ=env).config.metrics.port == 2222


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"set by env STOCKADE_RUNTIME") as caught:
        load_config(environ={"STOCKADE_RUNTIME": "kata"})
    assert caught.value.field == "sandbox.runtime"


def test_toolkits_from_the_environment_are_a_comma_list() -> None:
    config = load_config(environ={"STOCKADE_TOOLKITS": "toolkits.files, toolkits.shell"}).config
    assert config.toolkits == ("toolkits.files", "toolkits.shell")


@pytest.mark.parametrize("name", ["../../etc", ".hidden", "team/tools", "json", "os.path", "a..b"])
def test_a_toolkit_name_that_is_no_package_of_ours_names_the_setting(name: str) -> None:
    # An external toolkit is copied into the tools image's library under its name (a path),
    # which comes before the standard library on the tools' PYTHONPATH.
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"STOCKADE_TOOLKITS": f"toolkits.files,{name}"})
    assert caught.value.field == "toolkits" and repr(name) in str(caught.value)


def test_the_shipped_schema_is_in_step_with_the_code() -> None:
    assert SCHEMA_FILE.read_text() == render_config_schema(), (
        "regenerate with: stockade config schema > orchestrator/config/stockade.schema.json"
    )
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(StockadeConfig.model_fields)


def test_the_example_has_every_section_and_checks(tmp_path: Path) -> None:
    loaded = load_config(EXAMPLE, environ={})
    text = EXAMPLE.read_text()
    for section in StockadeConfig.model_fields:
        assert re.search(rf"^#? ?{section}:", text, re.MULTILINE), f"{section} missing"
    check_configuration(loaded)
    assert loaded.config.sandbox.effective_profiles()["http"].egress is not None


def test_environment_is_read_in_one_module_only() -> None:
    allowed = {ROOT / "orchestrator" / "config" / "_env.py"}
    pattern = re.compile(r"os\.environ|os\.getenv|getenv\(|envvar=")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("orchestrator", "toolkits")
        for path in (ROOT / folder).rglob("*.py")
        if "_assets" not in path.parts and path not in allowed and pattern.search(path.read_text())
    ]
    assert offenders == []
    assert all(name.startswith("STOCKADE_") for name in ENVIRONMENT_FIELDS)


def test_cli_config_check_show_schema_example(tmp_path: Path) -> None:
    runner = CliRunner()
    good = write(tmp_path, "sandbox:\n  runtime: runsc\n")
    checked = runner.invoke(cli, ["config", "check", str(good)])
    assert checked.exit_code == 0, checked.output
    assert "ok (profiles: default, http" in checked.output
    bad = write(tmp_path, "sandbox:\n  runtime: kata\n", "bad.yaml")
    failed = runner.invoke(cli, ["config", "check", str(bad)])
    assert isinstance(failed.exception, ConfigError)

    shown = runner.invoke(
        cli, ["config", "show", "--config", str(good), "--json"], env={"STOCKADE_HOME": "/h"}
    )
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.output)
    assert document["sandbox.runtime"] == {"value": "runsc", "source": f"{good}:2"}
    assert document["state_dir"] == {"value": "/h", "source": "env STOCKADE_HOME"}
    assert document["sandbox.profiles.http.runtime"]["value"] == "runsc"
    assert document["audit.path"]["value"] == "/h/audit.jsonl"
    table = runner.invoke(cli, ["config", "show", "--config", str(good)])
    assert re.search(rf"sandbox\.runtime\s+runsc\s+{re.escape(str(good))}:2", table.output)

    schema = runner.invoke(cli, ["config", "schema"])
    assert schema.output == render_config_schema()
    example = runner.invoke(cli, ["config", "example"])
    assert example.output == EXAMPLE.read_text()


def test_config_file_read_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file") as caught:
        load_config(tmp_path / "missing.yaml", environ={})
    assert caught.value.file == str(tmp_path / "missing.yaml")
    broken = write(tmp_path, "sandbox: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        load_config(broken, environ={})
    assert caught.value.file == str(broken)
