"""sandbox_images/base/build-rootfs.sh against a stand-in debootstrap (no mirror, no engine).

The stand-ins record how they were called: debootstrap makes a tiny root
filesystem, chroot answers as apt would there. So what the script asks of
them, and what it leaves behind, is seen without downloading anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tarfile
from pathlib import Path
from typing import cast

import docker
import pytest

from orchestrator.errors import InfrastructureError
from orchestrator.sandbox import _image_steps
from orchestrator.sandbox.images import default_images_dir

SCRIPT = default_images_dir() / "base" / "build-rootfs.sh"

FAKE_DEBOOTSTRAP = """#!/usr/bin/env bash
# Stand-in for debootstrap: records its arguments, makes "$target" (the second-to-last one)
# with the list of the packages it used (--keep-debootstrap-dir), $DEBURIS.
printf '%s\\n' "$@" >"$RECORD"
target="${@: -2:1}"
mkdir -p "$target/etc/apt/sources.list.d" "$target/debootstrap"
echo fake >"$target/etc/os-release"
printf '%s' "${DEBURIS:-}" >"$target/debootstrap/deburis"
"""

FAKE_CHROOT = """#!/usr/bin/env bash
# Stand-in for chroot: records each command run in the root filesystem (and whether /proc
# is mounted there), and answers as apt would: $APT_UPDATE on update.
root="$1"; shift
printf '%s\\n' "$*" >>"$RECORD.chroot"
if grep -q " $root/proc proc " /proc/mounts; then echo "proc mounted" >>"$RECORD.chroot"; fi
case "$*" in
    *" update") printf '%s\\n' "${APT_UPDATE:-Hit:1 http://127.0.0.1:9/debian bookworm InRelease}" ;;
    *" upgrade") echo "2 upgraded, 0 newly installed, 0 to remove and 0 not upgraded." ;;
esac
"""


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name, text in (("debootstrap", FAKE_DEBOOTSTRAP), ("chroot", FAKE_CHROOT)):
        (directory / name).write_text(text)
        (directory / name).chmod(0o755)
    return directory


def run_script(
    fake_bin: Path, tmp_path: Path, *args: str, **variables: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "RECORD": str(tmp_path / "called"),
        "STOCKADE_DEBIAN_MIRROR": "http://127.0.0.1:9/debian",
        "STOCKADE_DEBIAN_SECURITY_MIRROR": "http://127.0.0.1:9/debian-security",
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


def members(tar: Path) -> dict[str, bytes]:
    with tarfile.open(tar) as archive:
        return {
            member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.isfile()
        }


def test_the_updates_and_security_fixes_since_the_point_release_are_applied(
    fake_bin: Path, tmp_path: Path
) -> None:
    # debootstrap installs the suite as its last point release left it: libssl3 and
    # python3.11 from bookworm, without the fixes bookworm-security has published since.
    tar = tmp_path / "rootfs.tar"
    done = run_script(fake_bin, tmp_path, str(tar))
    assert done.returncode == 0, done.stderr
    assert "--keep-debootstrap-dir" in (tmp_path / "called").read_text().splitlines()
    in_root = (tmp_path / "called.chroot").read_text().splitlines()
    update, mounted, upgrade, _ = in_root
    assert update.endswith("apt-get -q update") and "DEBIAN_FRONTEND=noninteractive" in update
    assert mounted == "proc mounted", "dpkg's scripts see a /proc"
    assert "apt-get -q -y --with-new-pkgs" in upgrade and upgrade.endswith(" upgrade")
    files = members(tar)
    assert files["./etc/apt/sources.list.d/stockade-updates.list"].decode().splitlines() == [
        "deb http://127.0.0.1:9/debian bookworm-updates main",
        "deb http://127.0.0.1:9/debian-security bookworm-security main",
    ]
    assert not [name for name in files if name.startswith(("./proc/", "./debootstrap/"))]
    assert "bookworm-updates, bookworm-security" in done.stderr
    assert "updates applied: 2 upgraded, 0 newly installed" in done.stderr


def test_a_suite_of_updates_that_cannot_be_fetched_fails_the_build(
    fake_bin: Path, tmp_path: Path
) -> None:
    # apt-get update only warns, and exits 0, when a suite cannot be fetched: the base
    # would quietly lack its security updates.
    unreachable = (
        "Err:2 http://127.0.0.1:9/debian-security bookworm-security InRelease\n"
        "  Could not connect to 127.0.0.1:9 (127.0.0.1). - connect (111: Connection refused)\n"
        "W: Some index files failed to download. They have been ignored, or old ones used instead."
    )
    tar = tmp_path / "rootfs.tar"
    done = run_script(fake_bin, tmp_path, str(tar), APT_UPDATE=unreachable)
    assert done.returncode == 1, done.stderr
    assert "bookworm-security InRelease" in done.stderr
    assert not tar.exists()
    assert not [line for line in (tmp_path / "called.chroot").read_text().splitlines()
                if line.endswith(" upgrade")], "nothing is upgraded from what apt has not read"  # fmt: skip


@pytest.mark.parametrize(
    ("variables", "sources"),
    [
        ({"STOCKADE_DEBIAN_SUITE": "sid"}, None),  # unstable has no updates or security suites
        (
            {"STOCKADE_DEBIAN_SECURITY_MIRROR": "none"},
            ["deb http://127.0.0.1:9/debian bookworm-updates main"],
        ),
    ],
)
def test_suites_without_updates_and_a_mirror_without_security(
    fake_bin: Path, tmp_path: Path, variables: dict[str, str], sources: list[str] | None
) -> None:
    tar = tmp_path / "rootfs.tar"
    done = run_script(fake_bin, tmp_path, str(tar), **variables)
    assert done.returncode == 0, done.stderr
    written = members(tar).get("./etc/apt/sources.list.d/stockade-updates.list")
    assert (written.decode().splitlines() if written else None) == sources


def test_a_security_mirror_that_is_no_url_is_refused(fake_bin: Path, tmp_path: Path) -> None:
    done = run_script(
        fake_bin, tmp_path, str(tmp_path / "rootfs.tar"),
        STOCKADE_DEBIAN_SECURITY_MIRROR="http://x/debian-security bookworm main\ndeb http://y",
    )  # fmt: skip
    assert done.returncode == 2 and "not a mirror URL" in done.stderr
    assert not (tmp_path / "called").exists(), "debootstrap is not run"


def test_cached_packages_the_mirror_no_longer_names_leave_the_cache(
    fake_bin: Path, tmp_path: Path
) -> None:
    # Each refresh of a base downloads the packages that changed; the versions they
    # replace would stay in the cache for ever (debootstrap only takes what the index names).
    cache = tmp_path / "debs"
    cache.mkdir()
    names = [
        "libssl3_3.0.15-1~deb12u1_amd64.deb",  # superseded
        "libssl3_3.0.17-1~deb12u2_amd64.deb",  # what the index names now
        "libssl3-dev_3.0.11-1_amd64.deb",  # another package, not used by this build: kept
        "foo_1%3a1.0-1_all.deb",  # superseded, an epoch's colon escaped as debootstrap does
        "foo_1%3a2.0-1_all.deb",
    ]
    for name in names:
        (cache / name).write_bytes(b"deb")
    used = (
        "libssl3 3.0.17-1~deb12u2 http://127.0.0.1:9/debian/pool/main/o/openssl/x.deb\n"
        "foo 1:2.0-1 http://127.0.0.1:9/debian/pool/main/f/foo/foo.deb\n"
    )
    done = run_script(
        fake_bin, tmp_path, "--cache-dir", str(cache), str(tmp_path / "rootfs.tar"), DEBURIS=used
    )
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in cache.iterdir()) == [
        "foo_1%3a2.0-1_all.deb",
        "libssl3-dev_3.0.11-1_amd64.deb",
        "libssl3_3.0.17-1~deb12u2_amd64.deb",
    ]
