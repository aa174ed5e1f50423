"""``stockade doctor``: every check ok on a ready machine; the right line fails otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.assets import shipped
from orchestrator.sandbox.images import TOOLS_PACKAGES, ImageBuilder

pytestmark = pytest.mark.docker


def doctor(tmp_path: Path, *args: str, **env: str) -> tuple[int, dict[str, dict[str, Any]]]:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "doctor", "--json", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "STOCKADE_HOME": str(tmp_path / "home"), **env},
        timeout=180,
        check=False,
    )
    checks = {check["name"]: check for check in json.loads(done.stdout)}
    return done.returncode, checks


def outcomes(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: check["outcome"] for name, check in checks.items()}


def test_a_ready_machine_passes_every_check(tmp_path: Path, images: ImageBuilder) -> None:
    config = tmp_path / "stockade.yaml"
    # A machine's bases may be older than the default age the doctor warns at (that
    # warning has a test of its own below).
    config.write_text(
        "sandbox:\n  profiles:\n    isolated: {runtime: runsc, pool_size: 0}\n"
        "images:\n  base_max_age_days: 3650\n"
    )
    code, checks = doctor(tmp_path, "--config", str(config))
    assert code == 0, checks
    assert set(outcomes(checks).values()) == {"ok"}
    assert images.base_tag(TOOLS_PACKAGES) in checks["base images recent"]["detail"]
    assert "runc, runsc" in checks["runtimes registered"]["detail"]
    for profile, runtime in (("default", "runc"), ("http", "runc"), ("isolated", "runsc")):
        assert outcomes(checks)[f"profile {profile} starts a container ({runtime})"] == "ok"


def test_engine_down_fails_that_line_with_the_fix(tmp_path: Path) -> None:
    # A client pointed at a socket nobody serves sees exactly a stopped engine.
    code, checks = doctor(tmp_path, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    assert code == 1
    engine = checks["engine answers"]
    assert engine["outcome"] == "failed"
    assert "cannot reach the Docker engine" in engine["detail"]
    assert "setup.sh" in engine["fix"]
    assert outcomes(checks)["policy loads"] == "ok"
    assert outcomes(checks)["images built and current"] == "skipped"


def test_a_missing_image_fails_that_line_with_the_fix(tmp_path: Path, images: ImageBuilder) -> None:
    sources = tmp_path / "images"
    shutil.copytree(shipped("sandbox_images"), sources)
    with (sources / "tools" / "Dockerfile").open("a") as dockerfile:
        dockerfile.write("# a change no image was built from\n")
    config = tmp_path / "stockade.yaml"
    config.write_text(f"images:\n  sources: {sources}\n")
    code, checks = doctor(tmp_path, "--config", str(config))
    assert code == 1
    line = checks["images built and current"]
    assert line["outcome"] == "failed"
    assert "is not built" in line["detail"]
    assert line["fix"] == f"stockade images build --config {config}"
    assert outcomes(checks)["engine answers"] == "ok"
    assert outcomes(checks)["profiles start containers"] == "skipped"


def test_a_bad_policy_fails_that_line_with_the_fix(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nrules:\n  - name: a\n    tools: x\n    decision: alow\n")
    config = tmp_path / "stockade.yaml"
    config.write_text(f"policy: {policy}\n")
    code, checks = doctor(tmp_path, "--config", str(config))
    assert code == 1
    line = checks["policy loads"]
    assert line["outcome"] == "failed"
    assert f"{policy}:5: rules[0].decision" in line["detail"]
    assert line["fix"] == f"stockade policy check {policy}"
    assert outcomes(checks)["toolkits load"] == "ok"
    assert outcomes(checks)["engine answers"] == "ok"


def test_a_broken_configuration_file_is_the_failing_line(tmp_path: Path) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text("sandbox:\n  runtime: kata\n")
    code, checks = doctor(tmp_path, "--config", str(config))
    assert code == 1
    line = checks["configuration file"]
    assert line["outcome"] == "failed" and f"{config}:2" in line["detail"]
    assert line["fix"] == f"stockade config check {config}"


def test_state_files_open_to_others_fail_that_line_with_the_fix(tmp_path: Path) -> None:
    """An audit log an older version (or a loose umask) left readable by everyone."""
    state = tmp_path / "home"
    state.mkdir()
    log = state / "audit.jsonl"
    log.write_text("")
    log.chmod(0o644)
    (state / "limits.db").write_bytes(b"")
    (state / "limits.db").chmod(0o600)
    code, checks = doctor(tmp_path, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    assert code == 1
    line = checks["state files private"]
    assert line["outcome"] == "failed"
    assert line["detail"] == f"readable or writable by others: {log}"
    assert line["fix"] == f"chmod 600 {log}"
    log.chmod(0o600)
    _, checks = doctor(tmp_path, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    assert checks["state files private"]["outcome"] == "ok"


def test_an_old_base_image_is_a_warning_that_names_the_refresh(
    tmp_path: Path, images: ImageBuilder
) -> None:
    # A base keeps the packages of the day it was built: past the configured age, the
    # security updates Debian published since are missing from every sandbox.
    config = tmp_path / "stockade.yaml"
    config.write_text(
        "images:\n  base_max_age_days: 0\n"
        "sandbox:\n  profiles:\n    plain: {image: stockade-sandbox, pool_size: 0}\n"
    )
    code, checks = doctor(tmp_path, "--config", str(config))
    assert code == 0, "a warning is no failure"
    line = checks["base images recent"]
    assert line["outcome"] == "warning"
    assert line["fix"] == f"stockade images build --refresh-base --config {config}"
    assert f"{images.base_tag()} (under stockade-sandbox) built " in line["detail"]
    assert f"{images.base_tag(TOOLS_PACKAGES)} (under stockade-tools) built " in line["detail"]
    assert "Older than images.base_max_age_days (0)" in line["detail"]
    assert "Debian's security updates published since are not in the sandboxes" in line["detail"]
    assert {outcome for name, outcome in outcomes(checks).items() if name != line["name"]} == {"ok"}
    shown = subprocess.run(
        [sys.executable, "-m", "orchestrator", "doctor", "--config", str(config)],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "STOCKADE_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert [row for row in shown.stdout.splitlines() if row.startswith("warn ")], shown.stdout
    assert "fix: stockade images build --refresh-base" in shown.stdout
    assert shown.stdout.splitlines()[-1] == "all checks passed, 1 warning(s)"
