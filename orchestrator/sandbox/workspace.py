"""Per-run workspaces: files that persist between the calls of one agent run.

A workspace is a host directory owned by the orchestrator. Pooled containers
are started before anyone knows which run they will serve, so nothing is
bind-mounted: the workspace travels into the container as a tar archive and
comes back out as one, where it is treated as hostile (see ``_archive``).
The new content replaces the old in one rename, so a rejected or failed call
never leaves a half-written workspace behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from orchestrator.errors import ConfigError
from orchestrator.sandbox._archive import ArchiveLimitError, read_hostile_tar

__all__ = ["ArchiveLimitError", "Workspace", "WorkspaceChanges", "WorkspaceManager"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, kw_only=True)
class WorkspaceChanges:
    """What one call did to a workspace."""

    changed: tuple[str, ...]
    """Paths added, modified or deleted, sorted."""
    rejected: tuple[str, ...]
    """Entries refused on the way out, with reasons."""


@dataclass(eq=False, kw_only=True)
class Workspace:
    """The workspace of one run. Calls of the same run take turns on it."""

    run_id: str
    path: Path
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def pack(self) -> bytes:
        """The current content as an uncompressed tar archive."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:", format=tarfile.PAX_FORMAT) as archive:
            for entry in sorted(self.path.iterdir()):
                archive.add(entry, arcname=entry.name, recursive=True)
        return buffer.getvalue()

    def digest(self) -> dict[PurePosixPath, str]:
        """A content hash per file (``'dir'`` for directories), for change detection."""
        digests: dict[PurePosixPath, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.path):
            base = Path(dirpath)
            for name in dirnames:
                digests[PurePosixPath((base / name).relative_to(self.path).as_posix())] = "dir"
            for name in filenames:
                file = base / name
                rel = PurePosixPath(file.relative_to(self.path).as_posix())
                digests[rel] = hashlib.sha256(file.read_bytes()).hexdigest()
        return digests

    def replace(self, archive: bytes, *, max_bytes: int, max_files: int) -> WorkspaceChanges:
        """Replace the content with what a container returned, atomically.

        Raises :class:`ArchiveLimitError` (and keeps the old content) when the
        archive breaks the quota.
        """
        safe = read_hostile_tar(archive, max_bytes=max_bytes, max_files=max_files)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.run_id}.new-", dir=self.path.parent))
        try:
            for rel, content in sorted(safe.entries.items()):
                target = staging.joinpath(*rel.parts)
                if content is None:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
                target.chmod(0o700 if rel in safe.executable else 0o600)
            before = self.digest()
            retired = self.path.with_name(f".{self.run_id}.old-{os.getpid()}")
            self.path.rename(retired)
            staging.rename(self.path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(retired, ignore_errors=True)
        after = self.digest()
        changed = sorted(
            str(path)
            for path in before.keys() | after.keys()
            if before.get(path) != after.get(path)
        )
        return WorkspaceChanges(changed=tuple(changed), rejected=tuple(safe.rejected))


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
        if not _RUN_ID.match(run_id):
            raise ConfigError(
                f"invalid run id {run_id!r}: use letters, digits, '.', '_' or '-' (max 128)",
                field="run_id",
            )
        workspace = self._open.get(run_id)
        if workspace is None:
            path = self._root / run_id
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            workspace = Workspace(run_id=run_id, path=path)
            self._open[run_id] = workspace
        return workspace

    def close(self, run_id: str, *, keep: bool = False) -> None:
        """End a run: its workspace is deleted unless ``keep``."""
        workspace = self._open.pop(run_id, None)
        path = workspace.path if workspace else self._root / run_id
        if not keep:
            shutil.rmtree(path, ignore_errors=True)
