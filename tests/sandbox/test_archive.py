"""Hostile archives: only regular files and directories inside the root come back."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from orchestrator.sandbox._archive import ArchiveLimitError, read_hostile_tar
from orchestrator.sandbox.workspace import WorkspaceManager


def make_tar(*entries: tuple[str, bytes | None, bytes]) -> bytes:
    """entries: (name, data or None for a directory, tar type)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:") as archive:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                assert data is not None
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                info.linkname = "/etc/passwd"
                archive.addfile(info)
    return buffer.getvalue()


REG, DIR = tarfile.REGTYPE, tarfile.DIRTYPE


@pytest.mark.parametrize(
    ("name", "kind", "reason"),
    [
        ("../up.txt", REG, "climbs out"),
        ("a/../../up.txt", REG, "climbs out"),
        ("/etc/cron.d/evil", REG, "absolute path"),
        ("link", tarfile.SYMTYPE, "symbolic link"),
        ("hard", tarfile.LNKTYPE, "hard link"),
        ("dev", tarfile.CHRTYPE, "device file"),
        ("blk", tarfile.BLKTYPE, "device file"),
        ("fifo", tarfile.FIFOTYPE, "FIFO"),
        (".", DIR, "empty path"),
    ],
)
def test_refused_entries(name: str, kind: bytes, reason: str) -> None:
    data = make_tar((name, b"x" if kind == REG else None, kind), ("ok.txt", b"fine", REG))
    safe = read_hostile_tar(data, max_bytes=1024, max_files=10)
    assert safe.entries == {PurePosixPath("ok.txt"): b"fine"}
    assert len(safe.rejected) == 1
    assert reason in safe.rejected[0]


def test_duplicates_and_files_under_files_are_refused() -> None:
    data = make_tar(("a", b"1", REG), ("a", b"2", REG), ("a/b", b"3", REG))
    safe = read_hostile_tar(data, max_bytes=1024, max_files=10)
    assert safe.entries == {PurePosixPath("a"): b"1"}
    assert any("duplicate" in reason for reason in safe.rejected)
    assert any("parent is a file" in reason for reason in safe.rejected)


def test_limits_reject_the_whole_archive() -> None:
    with pytest.raises(ArchiveLimitError, match="quota"):
        read_hostile_tar(make_tar(("big", b"x" * 5000, REG)), max_bytes=4096, max_files=10)
    many = make_tar(*[(f"f{i}", b"", REG) for i in range(11)])
    with pytest.raises(ArchiveLimitError, match="more than 10"):
        read_hostile_tar(many, max_bytes=4096, max_files=10)
    with pytest.raises(ArchiveLimitError, match="not a valid tar"):
        read_hostile_tar(b"\x00garbage" * 100, max_bytes=4096, max_files=10)


def test_workspace_replace_is_atomic_and_reports_changes(tmp_path: Path) -> None:
    workspace = WorkspaceManager(tmp_path).open("run-1")
    (workspace.path / "keep.txt").write_text("same")
    (workspace.path / "gone.txt").write_text("bye")
    (workspace.path / "edit.txt").write_text("old")
    archive = make_tar(
        ("keep.txt", b"same", REG),
        ("edit.txt", b"new", REG),
        ("sub", None, DIR),
        ("sub/new.txt", b"hi", REG),
        ("../evil", b"x", REG),
    )
    changes = workspace.replace(archive, max_bytes=1024, max_files=10)
    assert changes.changed == ("edit.txt", "gone.txt", "sub", "sub/new.txt")
    assert len(changes.rejected) == 1
    assert (workspace.path / "edit.txt").read_text() == "new"
    assert not (tmp_path / "evil").exists()
    with pytest.raises(ArchiveLimitError):
        workspace.replace(make_tar(("huge", b"x" * 2048, REG)), max_bytes=1024, max_files=10)
    assert (workspace.path / "edit.txt").read_text() == "new", "a rejected archive changes nothing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-1"], "no staging left behind"


def test_workspaces_are_separate_and_removed(tmp_path: Path) -> None:
    manager = WorkspaceManager(tmp_path)
    first, second = manager.open("a"), manager.open("b")
    (first.path / "f").write_text("a's")
    assert list(second.path.iterdir()) == []
    assert manager.open("a") is first
    manager.close("a")
    assert not first.path.exists()
    manager.close("b", keep=True)
    assert second.path.exists()


@pytest.mark.parametrize("run_id", ["../x", "", "a/b", ".hidden", "x" * 200])
def test_bad_run_ids_are_refused(tmp_path: Path, run_id: str) -> None:
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="run id"):
        WorkspaceManager(tmp_path).open(run_id)
