"""Hostile workspaces: only regular files and directories inside the root come back."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import pytest

from orchestrator.sandbox import _journal
from orchestrator.sandbox._archive import KEPT, ArchiveLimitError, SafeWorkspace, WorkspaceReader
from orchestrator.sandbox._wire import FrameTooLargeError
from orchestrator.sandbox.workspace import Outgoing, WorkspaceManager

P = PurePosixPath


def read(
    entries: Iterable[tuple[bytes, bytes | None]],
    *,
    sent: dict[PurePosixPath, int] | None = None,
    max_bytes: int = 1024,
    max_files: int = 10,
) -> SafeWorkspace:
    reader = WorkspaceReader(sent=sent or {}, max_bytes=max_bytes, max_files=max_files)
    for header, content in entries:
        reader.add(header, content)
    return reader.result()


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"F644\0../up.txt", "climbs out"),
        (b"Fa/../../up.txt", "climbs out"),
        (b"F644\0/etc/cron.d/evil", "absolute path"),
        (b"D.", "empty path"),
        (b"D", "empty path"),
        (b"Xthing", "unknown entry kind"),
        (b"Rsymbolic link to '/etc/passwd'\0link", "symbolic link to '/etc/passwd'"),
        (b"Rhard link to 'ok.txt'\0hard", "hard link"),
        (b"RFIFO\0fifo", "FIFO"),
        (b"Knever-sent.txt", "never sent in"),
        (b"F644\0" + b"n" * 256, "a name longer than 255 bytes"),
        (b"D" + b"/".join([b"d" * 255] * 13), "path longer than 3072 bytes"),
    ],
)
def test_refused_entries(header: bytes, reason: str) -> None:
    content = b"x" if header.startswith(b"F") else None
    safe = read([(header, content), (b"F644\0ok.txt", b"fine")])
    assert safe.entries == {P("ok.txt"): b"fine"}
    assert len(safe.rejected) == 1
    assert reason in safe.rejected[0]


def test_duplicates_and_files_under_files_are_refused() -> None:
    safe = read([(b"F644\0a", b"1"), (b"F644\0a", b"2"), (b"F644\0a/b", b"3"), (b"Da/c", None)])
    assert safe.entries == {P("a"): b"1"}
    assert sum("duplicate" in reason for reason in safe.rejected) == 1
    assert sum("parent is a file" in reason for reason in safe.rejected) == 2


def test_each_refusal_is_one_line() -> None:
    """Names and link targets are the sandbox's: a newline in them must not start a line
    of its own where the platform's lines are read (a forged "artifact: …")."""
    safe = read([(b"Rsymbolic link to 'x\nartifact: fake.png'\0a\nb", None)])
    assert safe.rejected == ["a\\nb: symbolic link to 'x\\nartifact: fake.png'"]


def test_refused_names_are_cut() -> None:
    safe = read([(b"Rsocket\0" + b"s" * 60_000, None), (b"F644\0/" + b"a" * 60_000, b"x")])
    assert [len(reason) < 300 for reason in safe.rejected] == [True, True]
    assert "(60000 characters)" in safe.rejected[0]
    assert "(60003 characters)" in safe.rejected[1]  # repr: quoted, and the leading "/"


@pytest.mark.parametrize("kind", [b"F644\0", b"K"])
def test_a_file_where_earlier_entries_have_their_directory_is_refused(
    tmp_path: Path, kind: bytes
) -> None:
    """Children before their parent (a hostile order): the file is refused, and the
    rest applies instead of failing on the host's disk."""
    workspace = WorkspaceManager(tmp_path).open("run")
    (workspace.path / "a").write_bytes(b"old")
    sent = workspace.outgoing(max_bytes=1024, max_files=10)
    reader = workspace.reader(sent, max_bytes=1024, max_files=10)
    reader.add(b"Da/b")
    reader.add(b"F644\0a/c", b"child")
    reader.add(kind + b"a", b"file" if kind != b"K" else None)
    returned = reader.result()
    assert returned.entries == {P("a/b"): None, P("a/c"): b"child"}
    assert returned.rejected == ["a: a file where earlier entries have their directory"]
    changes = workspace.apply(returned, sent)
    assert changes.changed == ("a", "a/b", "a/c")
    assert (workspace.path / "a" / "c").read_bytes() == b"child"


def test_kept_files_bring_no_byte_from_the_sandbox() -> None:
    sent = {P("kept.txt"): 5, P("sub/deep.txt"): 7}
    safe = read([(b"Dsub", None), (b"Ksub/deep.txt", None), (b"Kkept.txt", b"forged")], sent=sent)
    assert safe.entries == {P("sub"): None, P("sub/deep.txt"): KEPT, P("kept.txt"): KEPT}
    assert read([(b"F755\0run.sh", b"#!")]).executable == {P("run.sh")}


def test_limits_reject_the_whole_workspace() -> None:
    with pytest.raises(ArchiveLimitError, match="quota"):
        read([(b"F644\0a", b"x" * 600), (b"F644\0b", b"x" * 600)])
    with pytest.raises(ArchiveLimitError, match="quota"):  # kept files count with their size
        read([(b"Kbig", None), (b"F644\0b", b"x" * 600)], sent={P("big"): 600})
    with pytest.raises(ArchiveLimitError, match="more than 10 files"):
        read([(f"F644\0f{i}".encode(), b"") for i in range(11)])
    with pytest.raises(ArchiveLimitError, match="more than 10 refused"):
        read([(f"RFIFO\0p{i}".encode(), None) for i in range(11)])


class Frames:
    """A stream of frames, as the runner's reply carries them."""

    def __init__(self, *frames: bytes) -> None:
        self.frames = list(frames)

    async def read_frame(self, limit: int) -> bytes:
        payload = self.frames.pop(0)
        if len(payload) > limit:
            raise FrameTooLargeError(f"{len(payload)} > {limit}")
        return payload


async def test_reading_a_stream_stops_at_the_end_frame_and_caps_content() -> None:
    reader = WorkspaceReader(sent={}, max_bytes=100, max_files=10)
    stream = Frames(b"Dd", b"F644\0d/f", b"data", b"", b"never read")
    safe = await reader.read(stream)
    assert safe.entries == {P("d"): None, P("d/f"): b"data"}
    assert stream.frames == [b"never read"]
    too_big = WorkspaceReader(sent={}, max_bytes=100, max_files=10)
    with pytest.raises(ArchiveLimitError, match="quota"):
        await too_big.read(Frames(b"F644\0f", b"x" * 101, b""))


def returned(outgoing: Outgoing, *entries: tuple[bytes, bytes | None]) -> SafeWorkspace:
    return read(entries, sent=outgoing.sizes)


def test_workspace_apply_writes_the_changes_and_reports_them(tmp_path: Path) -> None:
    workspace = WorkspaceManager(tmp_path).open("run-1")
    (workspace.path / "keep.txt").write_text("same")
    (workspace.path / "rewritten.txt").write_text("same bytes")
    (workspace.path / "gone.txt").write_text("bye")
    (workspace.path / "edit.txt").write_text("old")
    (workspace.path / "link").symlink_to("/etc/passwd")  # the host's user put it there
    sent = workspace.outgoing(max_bytes=1024, max_files=10)
    assert set(sent.files) == {P("keep.txt"), P("rewritten.txt"), P("gone.txt"), P("edit.txt")}
    back = returned(
        sent,
        (b"F644\0edit.txt", b"new"),
        (b"Kkeep.txt", None),
        (b"F644\0rewritten.txt", b"same bytes"),
        (b"Dsub", None),
        (b"F644\0sub/new.txt", b"hi"),
        (b"F644\0../evil", b"x"),
    )
    inode = (workspace.path / "keep.txt").stat().st_ino
    changes = workspace.apply(back, sent)
    assert changes.changed == ("edit.txt", "gone.txt", "sub", "sub/new.txt")
    assert len(changes.rejected) == 1
    assert (workspace.path / "edit.txt").read_text() == "new"
    assert (workspace.path / "keep.txt").stat().st_ino == inode, "kept, not copied"
    assert os.readlink(workspace.path / "link") == "/etc/passwd", "it stays, never followed"
    assert not (tmp_path / "evil").exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["run-1"], "no staging (nor lock file) left behind"


def test_entries_that_never_travel_stay_unless_the_call_took_their_place(
    tmp_path: Path,
) -> None:
    """A directory given with ``--workspace`` holds the user's links and FIFOs: a call that
    changes something else must not delete them, nor change its directories' modes."""
    root = tmp_path / "mine"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    (root / "data.txt").write_text("kept")
    (root / "latest").symlink_to("data.txt")
    (root / "elsewhere").symlink_to(tmp_path)  # a directory outside: never followed
    os.mkfifo(root / "pipe")
    (root / "old").mkdir()
    (root / "old" / "link").symlink_to("../data.txt")
    (root / "private").mkdir(mode=0o700)
    (root / "private").chmod(0o700)
    (root / "taken").symlink_to("data.txt")
    workspace = WorkspaceManager(tmp_path).open("mine")
    sent = workspace.outgoing(max_bytes=1024, max_files=10)
    assert sent.stayed == (P("elsewhere"), P("latest"), P("pipe"), P("taken"), P("old/link"))
    back = returned(
        sent,
        (b"Kdata.txt", None),
        (b"Dprivate", None),
        (b"F644\0private/new.txt", b"in a private directory"),
        (b"F644\0new.txt", b"new"),
        (b"F644\0taken", b"the call's file"),  # where a link was: the call's wins
        (b"F644\0elsewhere/planted", b"x"),  # a hostile "parent" where a link was
    )  # "old" is gone: the call removed it, and the link in it with it
    changes = workspace.apply(back, sent)
    assert changes.changed == ("elsewhere/planted", "new.txt", "old", "private/new.txt", "taken")
    assert os.readlink(root / "latest") == "data.txt"
    assert stat.S_ISFIFO(os.lstat(root / "pipe").st_mode)
    assert (root / "taken").read_bytes() == b"the call's file"
    assert not (root / "elsewhere").is_symlink() and not (tmp_path / "planted").exists()
    assert not (root / "old").exists()
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "private").stat().st_mode) == 0o700, "a private one stays so"


def test_the_workspace_keeps_its_identity_and_what_came_in_meanwhile(tmp_path: Path) -> None:
    """The changes are written in place: a shell whose current directory is the workspace
    (or one of its directories) sees them, and what the user added during the call stays."""
    workspace = WorkspaceManager(tmp_path).open("mine")
    (workspace.path / "src").mkdir()
    (workspace.path / "src" / "main.py").write_text("old")
    (workspace.path / "gone").mkdir()
    sent = workspace.outgoing(max_bytes=1024, max_files=10)
    identity = [os.stat(workspace.path / name).st_ino for name in (".", "src")]
    (workspace.path / "draft.txt").write_text("typed while the call ran")
    (workspace.path / "src" / "notes.txt").write_text("also")
    back = returned(sent, (b"Dsrc", None), (b"F644\0src/main.py", b"new"))
    changes = workspace.apply(back, sent)
    assert changes.changed == ("gone", "src/main.py")
    assert [os.stat(workspace.path / name).st_ino for name in (".", "src")] == identity
    assert (workspace.path / "src" / "main.py").read_text() == "new"
    assert (workspace.path / "draft.txt").read_text() == "typed while the call ran"
    assert (workspace.path / "src" / "notes.txt").read_text() == "also"
    assert not (workspace.path / "gone").exists()


def test_what_the_host_changed_while_the_call_ran_stays_the_hosts(tmp_path: Path) -> None:
    """A ``--workspace`` directory is the user's: what they edit, delete or add while a call
    runs is not overwritten by the call's changes there, and the call is told."""
    workspace = WorkspaceManager(tmp_path).open("mine")
    for name in ("edited.txt", "deleted.txt", "plain.txt", "dir/old.txt"):
        (workspace.path / name).parent.mkdir(exist_ok=True)
        (workspace.path / name).write_text("before")
    sent = workspace.outgoing(max_bytes=1024, max_files=10)
    # The user, during the call:
    (workspace.path / "edited.txt").write_text("the user's edit")
    (workspace.path / "deleted.txt").unlink()
    (workspace.path / "dir" / "mine.txt").write_text("the user's new file")
    (workspace.path / "new.txt").write_text("the user's too")
    back = returned(
        sent,
        *((f"F644\0{name}".encode(), b"the call's") for name in
          ("edited.txt", "deleted.txt", "plain.txt", "new.txt")),  # "dir" removed
    )  # fmt: skip
    changes = workspace.apply(back, sent)
    assert changes.changed == ("plain.txt",)
    assert changes.rejected == tuple(
        f"{name}: changed on the host while the call ran; the host's version is kept"
        for name in ("deleted.txt", "dir", "edited.txt", "new.txt")
    )
    content = {str(p.relative_to(workspace.path)): p.read_text()
               for p in workspace.path.rglob("*") if p.is_file()}  # fmt: skip
    assert content == {"edited.txt": "the user's edit", "plain.txt": "the call's",
                       "dir/old.txt": "before", "dir/mine.txt": "the user's new file",
                       "new.txt": "the user's too"}  # fmt: skip


def test_a_step_the_host_got_in_the_way_of_is_left_undone(tmp_path: Path) -> None:
    """Between the plan and its writing the user made a file where the call makes a
    directory: the journal still finishes (the workspace is never stuck), around it."""
    workspace = tmp_path / "w"
    workspace.mkdir()
    _journal.commit(workspace, [
        _journal.MakeDirectory(P("x")),
        _journal.Place(P("x/y.txt"), b"the call's", 0o600),
        _journal.Place(P("z.txt"), b"the call's", 0o600),
    ])  # fmt: skip
    (workspace / "x").write_text("the user's")
    assert _journal.finish(workspace) == ((P("x"), _journal.IN_THE_WAY),)
    assert (workspace / "x").read_text() == "the user's"
    assert (workspace / "z.txt").read_text() == "the call's"
    assert _journal.finish(workspace) is None and sorted(tmp_path.iterdir()) == [workspace]


def test_changes_committed_but_not_all_written_are_finished_before_the_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host failed after the call's changes were committed (here: renaming a file into
    place): none is lost, the next call writes the rest first or does not run."""
    workspace = WorkspaceManager(tmp_path).open("run")
    (workspace.path / "a.txt").write_text("old a")
    (workspace.path / "b.txt").write_text("old b")
    sent = workspace.outgoing(max_bytes=1024, max_files=10)
    back = returned(sent, (b"F644\0a.txt", b"new a"), (b"F644\0b.txt", b"new b"))
    real = _journal._place
    failing = True

    def place(staged: int, staged_name: str, parent: int, name: str) -> None:
        if failing and name == "b.txt":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(staged, staged_name, parent, name)

    monkeypatch.setattr(_journal, "_place", place)
    with pytest.raises(OSError, match="Input/output error"):
        workspace.apply(back, sent)
    assert (workspace.path / "b.txt").read_text() == "old b"
    with pytest.raises(
        ArchiveLimitError, match=r"previous call's changes .*\(Input/output error\)"
    ):
        workspace.outgoing(max_bytes=1024, max_files=10)
    failing = False
    again = workspace.outgoing(max_bytes=1024, max_files=10)
    assert sorted(again.files) == [P("a.txt"), P("b.txt")]
    assert [(workspace.path / name).read_text() for name in ("a.txt", "b.txt")] == [
        "new a",
        "new b",
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"], "the journal is gone"


def test_a_run_ended_with_changes_not_all_written_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = WorkspaceManager(tmp_path)
    for run_id in ("kept", "gone"):
        workspace = manager.open(run_id)
        (workspace.path / "a.txt").write_text("old")
        sent = workspace.outgoing(max_bytes=1024, max_files=10)
        with monkeypatch.context() as patched:
            patched.setattr(_journal, "_place", _failing_place)
            with pytest.raises(OSError, match="Input/output error"):
                workspace.apply(returned(sent, (b"F644\0a.txt", b"new")), sent)
    manager.close("kept", keep=True)  # finished: the run's workspace is what the call left
    manager.close("gone")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept"]
    assert (tmp_path / "kept" / "a.txt").read_text() == "new"


def test_a_damaged_journal_stops_the_next_call_with_the_cause(tmp_path: Path) -> None:
    workspace = WorkspaceManager(tmp_path).open("run")
    (tmp_path / ".run.apply").mkdir()
    (tmp_path / ".run.apply" / "journal.json").write_bytes(b'[["place", "a.txt"')
    with pytest.raises(ArchiveLimitError, match=r"could not all be written \(JSONDecodeError\)"):
        workspace.outgoing(max_bytes=1024, max_files=10)


def _failing_place(staged: int, staged_name: str, parent: int, name: str) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_a_rewritten_file_keeps_the_hosts_mode_and_a_new_one_is_private(tmp_path: Path) -> None:
    workspace = WorkspaceManager(tmp_path).open("run")
    for name, mode in [("shared.txt", 0o644), ("tool.sh", 0o755), ("script", 0o640),
                       ("setuid", 0o4755)]:  # fmt: skip
        (workspace.path / name).write_text("old")
        (workspace.path / name).chmod(mode)
    sent = workspace.outgoing(max_bytes=1024, max_files=10)
    back = returned(
        sent,
        (b"F644\0shared.txt", b"new"),
        (b"F644\0tool.sh", b"new"),  # the sandbox took its execute bit away
        (b"F755\0script", b"new"),  # and gave this one one
        (b"F755\0setuid", b"new"),
        (b"F644\0fresh.txt", b"new"),
    )
    workspace.apply(back, sent)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in workspace.path.iterdir()}
    assert modes == {"shared.txt": 0o644, "tool.sh": 0o644, "script": 0o740, "setuid": 0o755,
                     "fresh.txt": 0o600}  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user takes root")
def test_a_rewritten_file_stays_its_owners_when_the_orchestrator_is_root(tmp_path: Path) -> None:
    """``sudo stockade tools call --workspace ~/project``: the user's files stay theirs."""
    workspace = WorkspaceManager(tmp_path).open("project")
    (workspace.path / "mine.txt").write_text("old")
    os.chown(workspace.path / "mine.txt", 1234, 5678)
    sent = workspace.outgoing(max_bytes=1024, max_files=10)
    workspace.apply(returned(sent, (b"F644\0mine.txt", b"new"), (b"F644\0new.txt", b"n")), sent)
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in workspace.path.iterdir()}
    assert owners == {"mine.txt": (1234, 5678), "new.txt": (0, 0)}
    assert (workspace.path / "mine.txt").read_text() == "new"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting takes root")
def test_a_workspace_on_other_filesystems_than_its_staging_gets_its_changes(
    tmp_path: Path,
) -> None:
    """The workspace itself, or a directory in it, is a mount point: a staged file cannot be
    renamed in (EXDEV, the call's workspace was rejected); it is copied in and renamed."""
    workspace = WorkspaceManager(tmp_path).open("volume")
    mounted: list[Path] = []
    try:
        for mount in (workspace.path, workspace.path / "inner"):
            mount.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "stockade-test", str(mount)],
                           check=True)  # fmt: skip
            mounted.append(mount)
        (workspace.path / "top.txt").write_text("old")
        (workspace.path / "inner" / "deep.txt").write_text("old")
        sent = workspace.outgoing(max_bytes=1024, max_files=10)
        back = returned(sent, (b"F644\0top.txt", b"new top"), (b"Dinner", None),
                        (b"F644\0inner/deep.txt", b"new deep"), (b"F644\0inner/made.txt", b"m"))  # fmt: skip
        changes = workspace.apply(back, sent)
        assert changes.changed == ("inner/deep.txt", "inner/made.txt", "top.txt")
        assert (workspace.path / "top.txt").read_text() == "new top"
        assert (workspace.path / "inner" / "deep.txt").read_text() == "new deep"
        assert sorted(p.name for p in workspace.path.iterdir()) == ["inner", "top.txt"]
        assert sorted(p.name for p in (workspace.path / "inner").iterdir()) == [
            "deep.txt", "made.txt",
        ]  # fmt: skip
        # A read-only mount in the workspace: what the call wrote there is not kept, and
        # said why; the rest is (a journal that could never finish would stop the run).
        subprocess.run(["mount", "-o", "remount,ro", str(workspace.path / "inner")], check=True)
        sent = workspace.outgoing(max_bytes=1024, max_files=10)
        back = returned(sent, (b"F644\0top.txt", b"newer"), (b"Dinner", None),
                        (b"Kinner/deep.txt", None), (b"F644\0inner/made.txt", b"again"))  # fmt: skip
        changes = workspace.apply(back, sent)
        assert changes.changed == ("top.txt",)
        assert changes.rejected == (
            "inner/made.txt: the host may not write there (Read-only file system)",
        )
        assert (workspace.path / "top.txt").read_text() == "newer"
        assert (workspace.path / "inner" / "made.txt").read_text() == "m"
    finally:
        for mount in reversed(mounted):
            subprocess.run(["umount", str(mount)], check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume"], "nothing left beside it"


def test_a_call_that_changed_nothing_writes_nothing(tmp_path: Path) -> None:
    workspace = WorkspaceManager(tmp_path).open("run-1")
    (workspace.path / "a").mkdir()
    (workspace.path / "a" / "f").write_text("x")
    sent = workspace.outgoing(max_bytes=1024, max_files=10)
    directory = os.stat(workspace.path)
    changes = workspace.apply(returned(sent, (b"Da", None), (b"Ka/f", None)), sent)
    assert changes.changed == ()
    after = os.stat(workspace.path)
    assert (after.st_ino, after.st_mtime_ns) == (directory.st_ino, directory.st_mtime_ns)


def test_a_workspace_over_the_quota_does_not_leave(tmp_path: Path) -> None:
    workspace = WorkspaceManager(tmp_path).open("big")
    (workspace.path / "big").write_bytes(b"x" * 2048)
    with pytest.raises(ArchiveLimitError, match="quota"):
        workspace.outgoing(max_bytes=1024, max_files=10)
    for index in range(11):
        (workspace.path / f"f{index}").write_bytes(b"")
    with pytest.raises(ArchiveLimitError, match="more than 10"):
        workspace.outgoing(max_bytes=4096, max_files=10)


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
