"""scripts/setup.sh, the one command that sets a machine up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_mistyped_command_fails_before_anything_is_installed(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # Its own process group: if the script went on to install, all of it is stopped.
    script = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "setup.sh"), "tset"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "STOCKADE_VENV": str(venv)},
        start_new_session=True,
    )
    try:
        _, stderr = script.communicate(timeout=30)
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
            script.wait()
    assert script.returncode == 1, stderr
    assert "unknown command 'tset' (expected: test, demo, engine, or nothing)" in stderr
    assert not venv.exists(), "no virtual environment made (nor images built) for a typo"


def configure_daemon(tmp_path: Path, daemon_json: Path) -> subprocess.CompletedProcess[str]:
    """setup.sh's configure_daemon step alone, on ``daemon_json``, with no engine to reload."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("runsc", "exit 0"), ("docker", "exit 1")):  # docker: no engine answers
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return subprocess.run(
        ["bash", "-c", f'source "{ROOT / "scripts" / "setup.sh"}" && configure_daemon'],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "STOCKADE_DAEMON_JSON": str(daemon_json),
        },
    )


def test_registering_the_runtimes_keeps_the_operators_daemon_settings(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    own = {
        "registry-mirrors": ["https://mirror.example"],
        "log-driver": "local",
        "runtimes": {"kata": {"path": "/usr/bin/kata-runtime"}},
    }
    daemon_json.write_text(json.dumps(own))
    done = configure_daemon(tmp_path, daemon_json)
    assert done.returncode == 0, done.stderr
    written = json.loads(daemon_json.read_text())
    runsc = str(tmp_path / "bin" / "runsc")
    assert written == {
        **own,
        "runtimes": {
            "kata": {"path": "/usr/bin/kata-runtime"},
            "runsc": {"path": runsc, "runtimeArgs": ["--network=none"]},
            "runsc-egress": {"path": runsc, "runtimeArgs": ["--network=none", "--host-uds=open"]},
        },
    }
    # A second run changes nothing, and says nothing.
    before = daemon_json.stat().st_mtime_ns
    again = configure_daemon(tmp_path, daemon_json)
    assert again.returncode == 0 and "registering" not in again.stderr
    assert daemon_json.stat().st_mtime_ns == before


def test_a_daemon_json_that_is_not_json_is_left_alone(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text('{"log-driver": "local",\n')
    done = configure_daemon(tmp_path, daemon_json)
    assert done.returncode == 1
    assert f"{daemon_json} is not JSON" in done.stderr
    assert daemon_json.read_text() == '{"log-driver": "local",\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bin", "daemon.json"]
