"""sandbox_images/base/build-rootfs.sh against a stand-in debootstrap (no mirror, no engine).

The stand-in records how it was called and makes a tiny root filesystem, so
what the script asks of debootstrap, and what it leaves behind, is seen
without downloading anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import cast

import docker
import pytest

from orchestrator.errors import InfrastructureError
from orchestrator.sandbox import _image_steps
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


def run_script(
    fake_bin: Path, tmp_path: Path, *args: str, **variables: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "RECORD": str(tmp_path / "called"),
        "STOCKADE_DEBIAN_MIRROR": "http://127.0.0.1:9/debian",
        "STOCKADE_DEBIAN_SUITE": "bookworm",
        **variables,
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


def make_fake(fake_bin: Path, body: str) -> None:
    script = fake_bin / "debootstrap"
    script.write_text(
        '#!/usr/bin/env bash\ntarget="${@: -2:1}"\nmkdir -p "$target"\n'
        'echo "$target" >"$RECORD.target"\necho $$ >"$RECORD.pid"\n' + body
    )
    script.chmod(0o755)


def mounts_under(directory: Path) -> list[str]:
    mounts = Path("/proc/mounts").read_text().splitlines()
    return [line.split()[1] for line in mounts if line.split()[1].startswith(f"{directory}/")]


def test_what_a_failed_debootstrap_left_mounted_is_unmounted_not_crossed(
    fake_bin: Path, tmp_path: Path
) -> None:
    # debootstrap mounts /proc, /sys and binds of the host's /dev into the root filesystem;
    # stopped midway it may leave them. Removing the work directory across them would fail
    # on each (or worse, reach into the host's), and leave the directory behind.
    make_fake(
        fake_bin,
        'mkdir -p "$target/dev" && mount -t tmpfs stockade-test "$target/dev"\n'
        'echo device >"$target/dev/null"\nexit 1\n',
    )
    done = run_script(fake_bin, tmp_path, str(tmp_path / "rootfs.tar"))
    work = Path((tmp_path / "called.target").read_text().strip()).parent
    try:
        assert done.returncode == 1, done.stderr
        assert mounts_under(work) == []
        assert not work.exists(), "the work directory is removed"
    finally:
        for mount in mounts_under(work):
            subprocess.run(["umount", "-l", mount], check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_debootstrap_past_its_deadline_is_stopped_and_its_directory_removed(
    fake_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deadline killed the script alone (SIGKILL, no cleanup): debootstrap went on,
    # unattended, and its work directory in /var/tmp stayed (hundreds of MB each time).
    make_fake(fake_bin, "exec sleep 300\n")
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")
    monkeypatch.setenv("RECORD", str(tmp_path / "called"))
    monkeypatch.setenv("STOCKADE_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    monkeypatch.setenv("STOCKADE_DEBIAN_SUITE", "bookworm")
    monkeypatch.setattr(_image_steps, "_DEBOOTSTRAP_TIMEOUT_S", 2)
    with pytest.raises(InfrastructureError, match="did not finish"):
        _image_steps.debootstrap_import(
            cast(docker.DockerClient, None),
            script=SCRIPT,
            packages=(),
            tag="stockade-base:test",
            deb_cache=tmp_path / "debs",
            progress=lambda _message: None,
        )
    pid = int((tmp_path / "called.pid").read_text())
    work = Path((tmp_path / "called.target").read_text().strip()).parent
    try:
        assert not alive(pid), "debootstrap is stopped with its script"
        assert not work.exists(), "the work directory is removed"
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STOCKADE_DEBIAN_SUITE", "--no-check-gpg"),
        ("STOCKADE_DEBIAN_SUITE", "bookworm\n--no-check-gpg"),
        ("STOCKADE_DEBIAN_MIRROR", "--no-check-gpg"),
        ("STOCKADE_DEBIAN_MIRROR", "http://deb.debian.org/debian --no-check-gpg"),
    ],
)
def test_a_suite_or_mirror_debootstrap_would_read_as_an_option_is_refused(
    fake_bin: Path, tmp_path: Path, variable: str, value: str
) -> None:
    done = run_script(fake_bin, tmp_path, str(tmp_path / "rootfs.tar"), **{variable: value})
    assert done.returncode == 2, done.stderr
    assert not (tmp_path / "called").exists(), "debootstrap is not run"
