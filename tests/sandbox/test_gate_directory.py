"""Egress gates' directories: removed with their owner, swept after a killed one."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.sandbox._egress_gate import SOCKET_NAME
from orchestrator.sandbox._gate_directory import LOCK_NAME, SOCKET_PATH_MAX, GateDirectory, sweep

# A process that makes its gates' directory, says where, and waits to be killed.
OWNER = """
import sys, time
from pathlib import Path
from orchestrator.sandbox._gate_directory import GateDirectory
path = GateDirectory(Path(sys.argv[1]), socket_name="egress.sock").path()
(path / "gate-x").mkdir()
print(path, flush=True)
time.sleep(600)
"""


def test_a_killed_owners_directory_is_swept_and_a_live_ones_is_not(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        left = Path(owner.stdout.readline().strip())
        assert (left / LOCK_NAME).is_file() and (left / "gate-x").is_dir()
        assert sweep(tmp_path) == [] and left.is_dir(), "its owner lives"
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
        if owner.stdout is not None:
            owner.stdout.close()
    # Not ours to judge: no lock file (an older version's, or one being made), a link.
    foreign = tmp_path / "stockade-egress-old"
    foreign.mkdir()
    (tmp_path / "stockade-egress-link").symlink_to(left)
    mine = GateDirectory(tmp_path, socket_name=SOCKET_NAME)
    path = mine.path()  # the first use sweeps the root
    assert not left.exists(), "the killed owner's directory was removed"
    assert foreign.is_dir() and (tmp_path / "stockade-egress-link").is_symlink()
    assert path.is_dir() and path.parent == tmp_path and sweep(tmp_path) == []
    mine.remove()
    assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "stockade-egress-link",
        "stockade-egress-old",
    ]


def test_the_directory_is_the_sandbox_users_to_traverse_and_made_once(tmp_path: Path) -> None:
    gates = GateDirectory(tmp_path, socket_name=SOCKET_NAME)
    first = gates.path()
    assert gates.path() == first
    assert first.stat().st_mode & 0o777 == 0o755
    assert first.stat().st_uid == os.getuid()
    gates.remove()
    gates.remove()  # twice: nothing more
    again = gates.path()
    assert again != first and again.is_dir()
    gates.remove()


def test_a_root_too_long_for_the_sockets_is_refused_with_what_to_do(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * (SOCKET_PATH_MAX - len(str(tmp_path)) - 20))
    deep.mkdir()
    with pytest.raises(OSError, match="a Unix socket allows") as raised:
        GateDirectory(deep, socket_name=SOCKET_NAME).path()  # 21 bytes below it
    assert raised.value.errno == errno.ENAMETOOLONG
    assert str(deep) in str(raised.value) and "TMPDIR" in str(raised.value)
    assert list(deep.iterdir()) == [], "nothing made"
