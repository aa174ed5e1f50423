"""scripts/setup.sh, the one command that sets a machine up."""

from __future__ import annotations

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
