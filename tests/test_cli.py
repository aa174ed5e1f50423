"""The `stockade` command line, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker


def stockade(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STOCKADE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_sandbox_run_prints_the_result(tmp_path: Path, images: object) -> None:
    done = stockade("sandbox", "run", "--", "sh", "-c", "echo hi", home=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ok"
    assert result["stdout"] == "hi\n"
    failed = stockade("sandbox", "run", "--", "sh", "-c", "exit 4", home=tmp_path)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["exit_code"] == 4


def test_workspace_persists_between_cli_calls(tmp_path: Path, images: object) -> None:
    write = stockade(
        "sandbox", "run", "--run-id", "r1", "--", "sh", "-c", "echo kept > f", home=tmp_path
    )
    assert json.loads(write.stdout)["files_changed"] == ["f"]
    read = stockade("sandbox", "run", "--run-id", "r1", "--", "cat", "f", home=tmp_path)
    assert json.loads(read.stdout)["stdout"] == "kept\n"
    other = stockade("sandbox", "run", "--run-id", "r2", "--", "ls", home=tmp_path)
    assert json.loads(other.stdout)["stdout"] == "", "another run sees nothing"


def test_bad_profile_names_file_and_field(tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_text("memory_mb: 99999\n")
    done = stockade("sandbox", "run", "--profile", str(profile), "--", "true", home=tmp_path)
    assert done.returncode == 2
    assert str(profile) in done.stderr
    assert "memory" in done.stderr and "loosen" in done.stderr


def test_images_build_is_idempotent(tmp_path: Path, images: object) -> None:
    done = stockade("images", "build", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("up to date") == 3


def test_demo_main_job(tmp_path: Path, images: object) -> None:
    done = stockade("demo", "--calls", "3", home=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "fork bomb (3 s deadline):  [timeout" in out
    assert "memory bomb:               [oom_killed" in out
    assert "read it back in a new container:   [ok" in out and "kept between calls" in out
    assert '6. tool call python.run (numpy): [ok] {"stdout": "5.0\\n"' in out
    assert "7. files.read outside the workspace: [error] PermissionError" in out
    assert not (tmp_path / "workspaces").exists() or not any((tmp_path / "workspaces").iterdir())
