"""sandbox_images/base/build-rootfs.sh against a stand-in debootstrap (no mirror, no engine).

The stand-in records how it was called and makes a tiny root filesystem, so
what the script asks of debootstrap, and what it leaves behind, is seen
without downloading anything.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from orchestrator.sandbox.images import default_images_dir

SCRIPT = default_images_dir() / "base" / "build-rootfs.sh"

FAKE_DEBOOTSTRAP = """#!/usr/bin/env bash
# Stand-in for debootstrap: records its arguments, makes "$target" (the second-to-last one).
printf '%s\\n' "$@" >"$RECORD"
target="${@: -2:1}"
mkdir -p "$target/etc" && echo fake >"$target/etc/os-release"
"""


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    debootstrap = directory / "debootstrap"
    debootstrap.write_text(FAKE_DEBOOTSTRAP)
    debootstrap.chmod(0o755)
    return directory


def run_script(fake_bin: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "RECORD": str(tmp_path / "called"),
        "STOCKADE_DEBIAN_MIRROR": "http://127.0.0.1:9/debian",
        "STOCKADE_DEBIAN_SUITE": "bookworm",
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_debootstrap_must_check_the_mirrors_signature(fake_bin: Path, tmp_path: Path) -> None:
    # Without the suite's keyring, debootstrap given a mirror only warns (into a log
    # nobody reads) and installs what a plain-http mirror served, unchecked.
    done = run_script(fake_bin, tmp_path, str(tmp_path / "rootfs.tar"), "jq")
    assert done.returncode == 0, done.stderr
    called = (tmp_path / "called").read_text().splitlines()
    assert "--force-check-gpg" in called
    assert "--no-check-gpg" not in called
    assert called[-3:-2] == ["bookworm"] and called[-1] == "http://127.0.0.1:9/debian"
    assert any(arg.startswith("--include=") and arg.endswith(",jq") for arg in called)
    assert (tmp_path / "rootfs.tar").stat().st_size > 0
