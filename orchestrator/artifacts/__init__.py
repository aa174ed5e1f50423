"""Artifacts: files a tool call writes under ``outputs/`` of its workspace, kept as typed values.

A call's new or changed ``outputs/`` files come back through the hostile
workspace reader; the store gives each a media type decided from its bytes,
a SHA-256 and an id, keeps it content-addressed under the run's directory
within caps and a quota, and deletes it with the run. Results, the audit log
and the model see the metadata (:class:`Artifact`); the bytes are served by
the HTTP API and written out by ``stockade tools call``.
"""

from orchestrator.artifacts._media import IMAGE_TYPES, OCTET_STREAM, detect_media_type
from orchestrator.artifacts._models import (
    ARTIFACT_ID_PATTERN,
    Artifact,
    ArtifactLimits,
    KeptArtifacts,
    human_size,
)
from orchestrator.artifacts._store import ARTIFACTS_DIR, ArtifactStore

__all__ = [
    "ARTIFACTS_DIR",
    "ARTIFACT_ID_PATTERN",
    "IMAGE_TYPES",
    "OCTET_STREAM",
    "Artifact",
    "ArtifactLimits",
    "ArtifactStore",
    "KeptArtifacts",
    "detect_media_type",
    "human_size",
]
