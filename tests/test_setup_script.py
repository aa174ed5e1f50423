"""scripts/setup.sh, the one command that sets a machine up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
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


def test_a_failed_image_build_stops_the_phoenix_install_beside_it(tmp_path: Path) -> None:
    """`setup.sh test` installs Phoenix while the images build: when the build fails, the
    install (pip, a child of the step's subshell, stood in for by a sleep) stops too, not
    only the subshell that waits for it."""
    pidfile = tmp_path / "pip.pid"
    steps = "install_packages configure_daemon start_dockerd setup_venv"
    script = f"""
source "{ROOT / "scripts" / "setup.sh"}"
for step in {steps}; do eval "$step() {{ :; }}"; done
setup_phoenix() {{ sleep 300 & echo $! > "{pidfile}"; wait; }}
build_images() {{
    for _ in $(seq 100); do [ -s "{pidfile}" ] && return 1; sleep 0.1; done
    return 1
}}
main test
"""
    log = tmp_path / "setup.log"
    with log.open("w") as output:  # not a pipe: a survivor holding it would hang the test
        done = subprocess.run(
            ["bash", "-c", script], stdout=output, stderr=output, timeout=60, check=False
        )
    pip = int(pidfile.read_text())
    try:
        assert done.returncode == 1, log.read_text()
        assert "building the images failed" in log.read_text()
        for _ in range(50):
            if not _running(pip):
                break
            time.sleep(0.1)
        assert not _running(pip), "the Phoenix install outlived the failed setup"
    finally:
        if _running(pip):
            os.kill(pip, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
