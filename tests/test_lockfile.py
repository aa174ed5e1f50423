"""Lock files that exist only while held: taken in turns even as they are removed and made anew."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import lockfile
from orchestrator.lockfile import release_lock_file, try_lock_file


def test_a_lock_file_is_there_while_held_and_gone_after(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    held = try_lock_file(path)
    assert held is not None and path.exists()
    assert try_lock_file(path) is None, "a second taker waits"
    release_lock_file(held, path)
    assert not path.exists()


def test_a_lock_won_on_a_removed_file_is_tried_again_on_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taker B opened the file just before its holder released (and removed) it; taker C
    has made a new one meanwhile and holds it. B's lock on the old file excludes nobody:
    B must see that and wait for C."""
    path = tmp_path / "x.lock"
    first = try_lock_file(path)
    assert first is not None
    stale = lockfile.open_lock(path)  # B's open, just before the release
    release_lock_file(first, path)
    newer = try_lock_file(path)  # C
    assert newer is not None
    opened = [stale]
    real_open = lockfile.open_lock
    monkeypatch.setattr(lockfile, "open_lock", lambda p: opened.pop() if opened else real_open(p))
    assert try_lock_file(path) is None, "B took a lock while C held the workspace"
    release_lock_file(newer, path)
    taken = try_lock_file(path)
    assert taken is not None
    release_lock_file(taken, path)
