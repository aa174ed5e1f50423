"""Per-run workspaces: files that persist between the calls of one agent run.

A workspace is a host directory owned by the orchestrator. Pooled containers
are started before anyone knows which run they will serve, so nothing is
bind-mounted: the workspace travels into the container over the runner's
stream, one frame per entry, into the container's own sized tmpfs; and comes
back the same way, where it is treated as hostile (see ``_archive``).

Why not a bind mount: a mount must exist when the container is created,
before its run is known; a writable host directory has no quota (the tmpfs
has: its size); and a workspace that travels can be served by any sandbox
host. What makes the stream cheap instead: no tar on either side (framed
entries, written by the runner straight to its tmpfs with raw reads and sent
back with ``sendfile``), and files the call did not touch do not come back
at all (the runner names them; the host keeps its own copy, untouched).

A call's changes are written in place, only at the paths it changed
(``_plan``: and not where the host changed something meanwhile), with a
redo journal (``_journal``): a rejected or failed call changes nothing, a
process killed while writing leaves the old content or a journal the next
user of the workspace finishes, and a call that changed nothing writes
nothing. Why in place rather than a new tree swapped in: the directory keeps
its identity (a ``--workspace`` directory is the user's, maybe a shell's
current directory), and what the user adds while a call runs stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from orchestrator.errors import ConfigError
from orchestrator.lockfile import release_lock_file, try_lock_file
from orchestrator.runid import run_id_problem
from orchestrator.sandbox._archive import KEPT, ArchiveLimitError, SafeWorkspace, WorkspaceReader
from orchestrator.sandbox._journal import commit, finish, staging_names
from orchestrator.sandbox._plan import MOVED, Stamp, plan, stamp, under
from orchestrator.sandbox._wire import ENTRY_DIRECTORY, ENTRY_FILE, frame

__all__ = [
    "OUTPUTS_DIR",
    "ArchiveLimitError",
    "Outgoing",
    "Workspace",
    "WorkspaceChanges",
    "WorkspaceLock",
    "WorkspaceManager",
]

_LOCK_RETRY_S = 0.02
"""How often a call tries again for a workspace another process holds."""
_WAIT_NOTICE_S = 1.0
"""How long a call waits for such a workspace before the log says why it waits."""
_log = logging.getLogger(__name__)
_END = frame(b"")

OUTPUTS_DIR = "outputs"
"""The workspace directory whose new and changed files a call returns as artifacts."""


@dataclass(frozen=True, kw_only=True)
class WorkspaceChanges:
    """What one call did to a workspace."""

    changed: tuple[str, ...]
    """Paths added, modified or deleted, sorted."""
    rejected: tuple[str, ...]
    """Entries refused on the way out, with reasons."""
    outputs: tuple[tuple[str, bytes], ...] = ()
    """Files under ``outputs/`` the call added or changed: path below ``outputs/``, bytes
    (accepted by the hostile reader; they stay in the workspace too)."""


_BATCH_BYTES = 4 << 20


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    """A workspace on its way into a container, and what the way back is checked against."""

    root: Path
    """The workspace directory."""
    entries: list[tuple[bytes, bytes | None]]
    """Each entry's frame payload, and for a file the path to read its content from."""
    files: Mapping[PurePosixPath, Stamp]
    """Each regular file sent, as it was (its size, what tells it changed, its owner and
    permission bits): a file the host changed meanwhile is not overwritten by the call's,
    and a rewritten one keeps its owner and mode."""
    directories: frozenset[PurePosixPath]
    """Each directory sent."""
    stayed: tuple[PurePosixPath, ...]
    """Entries that did not travel (links, FIFOs… the host's user put there): left as they
    are, unless the call put something at their path or removed their directory."""

    @property
    def sizes(self) -> dict[PurePosixPath, int]:
        """Each file's size: what an "untouched" claim on the way back may keep."""
        return {path: sent.size for path, sent in self.files.items()}

    def batches(self) -> Iterator[list[bytes]]:
        """The entries as runner-protocol frames, the end frame last, a few MiB at a time.

        Blocking (it reads the files): the caller sends one batch while the
        next is read, so reading 100 MiB costs little more than sending it.
        """
        batch: list[bytes] = []
        size = 0
        for header, source in self.entries:
            batch.append(frame(header))
            if source is not None:
                with open(source, "rb") as handle:
                    content = handle.read()
                batch.append(frame(content))
                size += len(content)
                if size >= _BATCH_BYTES:
                    yield batch
                    batch, size = [], 0
        batch.append(_END)
        yield batch


class WorkspaceLock:
    """Calls of one run take turns on its workspace: within a process (an asyncio lock) and
    between the processes sharing the workspaces' directory (an exclusive ``flock`` on
    ``.<run id>.lock`` beside the workspace, which exists only while a call holds it).

    The ``flock`` is tried without blocking, and tried again every
    :data:`_LOCK_RETRY_S` while another process holds it: the event loop never
    waits on it, and a caller cancelled while waiting holds nothing.
    """

    def __init__(self, workspace: Path) -> None:
        """``workspace``: the directory it guards (its lock file, beside it, is made by each
        taker and removed on release)."""
        self._workspace = workspace
        self._path = _lock_path(workspace)
        self._local = asyncio.Lock()
        self._descriptor: int | None = None

    async def __aenter__(self) -> None:
        await self._local.acquire()
        try:
            loop = asyncio.get_running_loop()
            started, told = loop.time(), False
            # Polled: another process holds it, and nothing here hears of its release.
            while (descriptor := try_lock_file(self._path)) is None:
                if not told and loop.time() - started >= _WAIT_NOTICE_S:
                    told = True  # once: why the call has not started
                    _log.warning(
                        "the workspace %s is in use by another process (another call of its "
                        "run); waiting for it", self._workspace
                    )  # fmt: skip
                await asyncio.sleep(_LOCK_RETRY_S)
        except BaseException:
            self._local.release()
            raise
        self._descriptor = descriptor

    async def __aexit__(self, *_exc: object) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            # The file goes with the lock: nothing is left beside a directory
            # given with --workspace.
            release_lock_file(descriptor, self._path)
        self._local.release()


def _lock_path(path: Path) -> Path:
    """The lock file of the workspace at ``path``."""
    return path.with_name(f".{path.name}.lock")


@dataclass(eq=False, kw_only=True)
class Workspace:
    """The workspace of one run. Calls of the same run take turns on it (:attr:`lock`)."""

    run_id: str
    path: Path
    lock: WorkspaceLock = field(init=False)

    def __post_init__(self) -> None:
        self.lock = WorkspaceLock(self.path)

    def outgoing(self, *, max_bytes: int, max_files: int) -> Outgoing:
        """The current content as entries for the runner, parents first (nothing read yet).

        Only regular files and directories travel; links and special files
        (which only the host's user could have put here) stay behind, and
        stay in the workspace when the call's changes are applied.
        Raises :class:`ArchiveLimitError` if the content breaks the quota of
        the container it is meant for: it could not come back; or if the
        previous call's changes, committed but not all written (the host's
        disk failed meanwhile), still cannot be.
        """
        try:
            finish(self.path)
        except (OSError, ValueError) as exc:  # ValueError: a journal the disk damaged
            cause = (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__
            raise ArchiveLimitError(
                f"the previous call's changes to the workspace could not all be written ({cause})"
            ) from exc
        entries: list[tuple[bytes, bytes | None]] = []
        files: dict[PurePosixPath, Stamp] = {}
        directories: set[PurePosixPath] = set()
        stayed: list[PurePosixPath] = []
        total = 0
        pending = [b""]
        root = os.fsencode(self.path)
        while pending:
            directory = pending.pop()
            with os.scandir(os.path.join(root, directory) if directory else root) as scan:
                found = sorted(scan, key=lambda entry: entry.name)
            subdirectories = []
            for entry in found:
                relative = os.path.join(directory, entry.name) if directory else entry.name
                path = PurePosixPath(os.fsdecode(relative))
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    entries.append((ENTRY_DIRECTORY + relative, None))
                    directories.add(path)
                    subdirectories.append(relative)
                elif stat.S_ISREG(info.st_mode):
                    total += info.st_size
                    files[path] = sent = stamp(info)
                    mode = f"{sent.mode:o}".encode()
                    entries.append((ENTRY_FILE + mode + b"\0" + relative, entry.path))
                else:
                    stayed.append(path)
            pending.extend(reversed(subdirectories))
        if total > max_bytes:
            raise ArchiveLimitError(
                f"the workspace holds {total} bytes, over the quota of {max_bytes}"
            )
        if len(files) + len(directories) > max_files:
            raise ArchiveLimitError(
                f"the workspace holds more than {max_files} files and directories"
            )
        return Outgoing(
            root=self.path,
            entries=entries,
            files=files,
            directories=frozenset(directories),
            stayed=tuple(stayed),
        )

    def reader(self, sent: Outgoing, *, max_bytes: int, max_files: int) -> WorkspaceReader:
        """A validator for what comes back from the container ``sent`` went into."""
        return WorkspaceReader(sent=sent.sizes, max_bytes=max_bytes, max_files=max_files)

    def _changes(self, returned: SafeWorkspace, sent: Outgoing) -> set[PurePosixPath]:
        changed: set[PurePosixPath] = set()
        for path, value in returned.entries.items():
            if value is None:
                if path not in sent.directories:
                    changed.add(path)
            elif value is not KEPT:
                assert isinstance(value, bytes)
                before = None
                if (was := sent.files.get(path)) is not None:
                    before = (was.size, bool(was.mode & stat.S_IXUSR))
                now = (len(value), path in returned.executable)
                # Rewritten with the same bytes is no change (one read, only
                # for files the sandbox sent back with the same size).
                if before != now or self.path.joinpath(*path.parts).read_bytes() != value:
                    changed.add(path)
        changed.update(path for path in sent.files if path not in returned.entries)
        changed.update(path for path in sent.directories if path not in returned.entries)
        return changed

    def apply(self, returned: SafeWorkspace, sent: Outgoing) -> WorkspaceChanges:
        """Make the content what a container returned, in place and crash-consistently
        (:mod:`orchestrator.sandbox._journal`).

        ``sent`` is what went in: only the paths the call changed are written,
        so the directory, the files the call left and what came in meanwhile
        keep their identity. A call that changed nothing writes nothing.
        """
        changed = self._changes(returned, sent)
        rejected = list(returned.rejected)
        if not changed:
            return WorkspaceChanges(changed=(), rejected=tuple(rejected))
        steps, moved = plan(returned, sent, changed)
        commit(self.path, steps)
        # What the host changed meanwhile is its own; the call's change there is dropped.
        left = [(path, MOVED) for path in moved] + list(finish(self.path) or ())
        places = [place for place, _why in left]
        changed = {path for path in changed if not under(path, places)}
        rejected += [f"{path}: {why}" for path, why in sorted(left)]
        names = sorted(str(path) for path in changed)
        return WorkspaceChanges(
            changed=tuple(names), rejected=tuple(rejected), outputs=_outputs(returned, names)
        )


def _outputs(returned: SafeWorkspace, changed: list[str]) -> tuple[tuple[str, bytes], ...]:
    """The changed regular files under ``outputs/``, with the bytes the sandbox sent."""
    found = []
    for name in changed:
        path = PurePosixPath(name)
        value = returned.entries.get(path)
        # Only bytes the reader accepted: a deleted file or a directory has none.
        if len(path.parts) > 1 and path.parts[0] == OUTPUTS_DIR and isinstance(value, bytes):
            found.append((str(path.relative_to(OUTPUTS_DIR)), value))
    return tuple(found)


def _recover(path: Path) -> None:
    """Finish or undo what a process killed inside :meth:`Workspace.apply` left beside
    ``path``: a committed journal is finished, a staging directory removed.

    Only while no process holds the workspace (its lock taken without waiting):
    what lies beside a workspace in use is that call's, not a dead one's. And
    only names this module makes for this run: run ids may hold dots, so
    ``.a.new-*`` would also match another run's (``a.new-b``) staging.
    """
    parent = path.parent
    if not parent.is_dir():
        return
    lock = _lock_path(path)
    descriptor = try_lock_file(lock)
    if descriptor is None:
        return
    try:
        prefix, _committed = staging_names(path)
        ours = re.compile(rf"{re.escape(prefix)}[a-z0-9_]{{8}}")
        for leftover in parent.iterdir():
            if ours.fullmatch(leftover.name) is not None:
                shutil.rmtree(leftover, ignore_errors=True)
        finish(path)
    finally:
        release_lock_file(descriptor, lock)


class WorkspaceManager:
    """Creates, finds and removes the workspaces of runs under one root directory."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._open: dict[str, Workspace] = {}

    @property
    def root(self) -> Path:
        """The directory holding one sub-directory per run."""
        return self._root

    def open(self, run_id: str) -> Workspace:
        """The workspace of ``run_id``, created empty on first use."""
        if problem := run_id_problem(run_id):
            raise ConfigError(problem, field="run_id")
        workspace = self._open.get(run_id)
        if workspace is None:
            path = self._root / run_id
            _recover(path)
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            workspace = Workspace(run_id=run_id, path=path)
            self._open[run_id] = workspace
        return workspace

    def close(self, run_id: str, *, keep: bool = False) -> None:
        """End a run: its workspace is deleted unless ``keep``, and with it any journal of
        changes its last call could not finish writing (kept: finished now if it can be)."""
        workspace = self._open.pop(run_id, None)
        path = workspace.path if workspace else self._root / run_id
        if keep:
            with contextlib.suppress(OSError):  # else finished when it is next opened
                finish(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(path.with_name(staging_names(path)[1]), ignore_errors=True)
