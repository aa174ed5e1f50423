"""The artifact store: a run's artifacts, content-addressed under its directory in the state dir.

Layout, in ``<state_dir>/runs/<run_id>/artifacts/`` (private to the user)::

    blobs/<sha256>     the bytes, once per distinct content
    index/<id>.json    one artifact's metadata (name, media type, size, sha256)

The bytes reach the store only after the workspace reader accepted them
(``orchestrator.sandbox._archive``); the store decides their media type from
their content and applies the caps: artifacts per call, bytes per artifact,
and the run's quota (distinct contents counted once). What breaks a cap is
dropped and named in the result, never fatal. The store is deleted with the
run (:meth:`ArtifactStore.delete`).

Every method blocks (disk): callers on the event loop run them in a thread.
The quota check and the writes are one step: under a thread lock within this
process, and an exclusive ``flock`` on the run's ``artifacts/.lock`` between
processes sharing the state directory (two ``stockade tools call --run-id``
at once must not each take the quota's last megabytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from orchestrator.artifacts._media import detect_media_type
from orchestrator.artifacts._models import (
    ARTIFACT_ID_PATTERN,
    MAX_NAME_CHARS,
    Artifact,
    ArtifactLimits,
    KeptArtifacts,
    human_size,
)
from orchestrator.errors import ConfigError
from orchestrator.lockfile import held
from orchestrator.metrics import Metrics
from orchestrator.runid import run_id_problem

__all__ = ["ARTIFACTS_DIR", "ArtifactStore"]

ARTIFACTS_DIR = "artifacts"
"""The artifacts' directory within a run's directory."""
_LOCK_FILE = ".lock"

_ID = re.compile(ARTIFACT_ID_PATTERN)
# A name goes into the model's text, logs and a download's file name: one plain line
# of valid Unicode (a path that was not UTF-8 keeps lone surrogates).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\u0080-\u009f\u2028\u2029\ud800-\udfff]")


class ArtifactStore:
    """The artifacts of every run under one runs directory (``<state_dir>/runs``)."""

    def __init__(
        self,
        runs_dir: Path,
        limits: ArtifactLimits | None = None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        """Keep artifacts in ``runs_dir/<run_id>/artifacts`` within ``limits``; count them in
        ``metrics`` (by media type)."""
        self._runs_dir = runs_dir
        self.limits = limits or ArtifactLimits()
        """The caps applied by :meth:`keep`."""
        self._metrics = metrics or Metrics(enabled=False)
        self._lock = threading.Lock()

    def directory(self, run_id: str) -> Path:
        """Where ``run_id``'s artifacts are (it may not exist)."""
        if problem := run_id_problem(run_id):
            raise ConfigError(problem, field="run_id")
        return self._runs_dir / run_id / ARTIFACTS_DIR

    def _blob(self, run_id: str, sha256: str) -> Path:
        return self.directory(run_id) / "blobs" / sha256

    def used_bytes(self, run_id: str) -> int:
        """Bytes the run's stored artifacts take (each distinct content once)."""
        blobs = self.directory(run_id) / "blobs"
        try:
            with os.scandir(blobs) as scan:
                return sum(e.stat(follow_symlinks=False).st_size for e in scan if e.is_file())
        except FileNotFoundError:
            return 0

    def keep(self, run_id: str, outputs: Sequence[tuple[str, bytes]]) -> KeptArtifacts:
        """Store a call's ``outputs/`` files (name under ``outputs/``, bytes) within the caps.

        Files are taken in name order; a file over the size cap, past the
        count cap or over the run's quota is dropped and named in
        :attr:`KeptArtifacts.dropped`.
        """
        self.directory(run_id)  # a bad run id fails before anything else
        limits = self.limits
        kept: list[Artifact] = []
        dropped: list[str] = []
        candidates: list[tuple[Artifact, bytes]] = []
        # Checked, hashed and typed before the lock: only the quota and the writes need it.
        for name, data in sorted(outputs):
            size = len(data)
            if len(name) > MAX_NAME_CHARS or _UNPRINTABLE.search(name):
                shown = name[:60].encode("unicode_escape", "backslashreplace").decode("ascii")
                more = "…" if len(name) > 60 else ""
                dropped.append(f"{shown}{more}: the name is too long or not one plain line")
            elif len(candidates) >= limits.max_per_call:
                dropped.append(f"{name}: past the cap of {limits.max_per_call} artifacts a call")
            elif size > limits.max_bytes:
                dropped.append(
                    f"{name}: {human_size(size)}, over the cap of "
                    f"{human_size(limits.max_bytes)} an artifact"
                )
            else:
                artifact = Artifact(
                    id=secrets.token_hex(16),
                    name=name,
                    media_type=detect_media_type(data),
                    size=size,
                    sha256=hashlib.sha256(data).hexdigest(),
                )
                candidates.append((artifact, data))
        if not candidates:
            return self._counted(KeptArtifacts(artifacts=(), dropped=tuple(dropped)))
        with self._lock, self._locked(run_id):
            used = self.used_bytes(run_id)
            for artifact, data in candidates:
                blob = self._blob(run_id, artifact.sha256)
                fresh = not blob.exists()
                if fresh and used + artifact.size > limits.run_quota_bytes:
                    dropped.append(
                        f"{artifact.name}: the run's artifacts would pass their quota of "
                        f"{human_size(limits.run_quota_bytes)}"
                    )
                    continue
                if fresh:
                    _write_new(blob, data)
                    used += artifact.size
                _write_new(
                    self.directory(run_id) / "index" / f"{artifact.id}.json",
                    artifact.model_dump_json().encode(),
                )
                kept.append(artifact)
        return self._counted(KeptArtifacts(artifacts=tuple(kept), dropped=tuple(dropped)))

    def _counted(self, result: KeptArtifacts) -> KeptArtifacts:
        for artifact in result.artifacts:
            self._metrics.artifacts.labels(artifact.media_type).inc()
            self._metrics.artifact_bytes.labels(artifact.media_type).inc(artifact.size)
        if result.dropped:
            self._metrics.artifacts_dropped.inc(len(result.dropped))
        return result

    def _locked(self, run_id: str) -> contextlib.AbstractContextManager[None]:
        """``run_id``'s artifacts, held against other processes until the block ends."""
        directory = self.directory(run_id)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return held(directory / _LOCK_FILE)

    def get(self, run_id: str, artifact_id: str) -> Artifact | None:
        """The artifact ``artifact_id`` of ``run_id``, or None (an id of the wrong shape too)."""
        if not _ID.fullmatch(artifact_id):
            return None
        path = self.directory(run_id) / "index" / f"{artifact_id}.json"
        try:
            return Artifact.model_validate_json(path.read_bytes())
        except (FileNotFoundError, ValidationError):
            return None

    def path(self, run_id: str, artifact: Artifact) -> Path:
        """The stored bytes of ``artifact`` (read, never written, by callers)."""
        return self._blob(run_id, artifact.sha256)

    def read(self, run_id: str, artifact: Artifact) -> bytes:
        """The stored bytes of ``artifact``."""
        return self.path(run_id, artifact).read_bytes()

    def list(self, run_id: str) -> list[Artifact]:
        """Every artifact of ``run_id``, by name then id."""
        index = self.directory(run_id) / "index"
        found = []
        try:
            names = os.listdir(index)
        except FileNotFoundError:
            return []
        for entry in names:
            artifact = self.get(run_id, entry.removesuffix(".json"))
            if artifact is not None:
                found.append(artifact)
        return sorted(found, key=lambda a: (a.name, a.id))

    def delete(self, run_id: str) -> None:
        """Delete every artifact of ``run_id`` (the run is gone)."""
        shutil.rmtree(self.directory(run_id), ignore_errors=True)


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all, private to the user."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
