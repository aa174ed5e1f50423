"""What an artifact is, as results, the audit log and the API see it: metadata, never bytes."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from orchestrator.strict import StrictModel

__all__ = [
    "ARTIFACT_ID_PATTERN",
    "MAX_NAME_CHARS",
    "Artifact",
    "ArtifactLimits",
    "KeptArtifacts",
    "human_size",
]

ARTIFACT_ID_PATTERN = r"^[0-9a-f]{32}$"
"""An artifact id: 32 lower-case hex digits (random: ids are not guessable)."""

MAX_NAME_CHARS = 1024
"""Longest artifact name kept (a workspace path may be longer; such a file is dropped)."""


def human_size(size: int) -> str:
    """``12 KB``-style size for people and models (powers of 1024)."""
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024 or unit == "MB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class Artifact(StrictModel):
    """A file a tool call wrote under ``outputs/`` of its workspace, kept by the platform."""

    id: str = Field(pattern=ARTIFACT_ID_PATTERN)
    """The artifact's id within its run (``GET /v1/runs/{run_id}/artifacts/{id}``)."""
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    """Its path under ``outputs/``, e.g. ``chart.png`` or ``plots/a.png``."""
    media_type: str
    """Decided from the bytes, never from the name (``application/octet-stream`` if unknown)."""
    size: int = Field(ge=0)
    """Bytes."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 of the bytes, hex (the stored copy's address)."""

    def stand_in(self) -> str:
        """The one line a model reads in place of the bytes."""
        return f"artifact: {self.name}, {self.media_type}, {human_size(self.size)}, id {self.id}"


@dataclass(frozen=True, kw_only=True)
class ArtifactLimits:
    """Caps on what a call may leave as artifacts, and on what a run may keep."""

    max_per_call: int = 32
    """Artifacts one call may leave; later ones (by name) are dropped."""
    max_bytes: int = 16 << 20
    """Largest single artifact; larger ones are dropped."""
    run_quota_bytes: int = 256 << 20
    """Bytes a run's stored artifacts may take in all (identical content counted once)."""


@dataclass(frozen=True, kw_only=True)
class KeptArtifacts:
    """What became of a call's ``outputs/`` files."""

    artifacts: tuple[Artifact, ...] = ()
    """The files kept, by name."""
    dropped: tuple[str, ...] = ()
    """Each file not kept, with the cap it broke."""
