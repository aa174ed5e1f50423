"""``/v1/runs/{run_id}/artifacts``: the files a run's tool calls left under ``outputs/``.

Authorised like the run: its owner or an admin (404 for a run nobody owns,
403 for another principal's). The bytes are hostile content a sandbox wrote,
so they are served to be saved, never rendered in this origin (the approval
page's): ``Content-Disposition: attachment``, ``X-Content-Type-Options:
nosniff`` (the browser keeps the declared type, decided from the bytes), and
a ``Content-Security-Policy`` of ``sandbox; default-src 'none'`` (an SVG or
HTML file opened anyway runs in an opaque origin, with no script and nothing
loaded).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path
from fastapi.responses import Response

from orchestrator.artifacts import ARTIFACT_ID_PATTERN, Artifact
from orchestrator.runid import RUN_ID_PATTERN
from orchestrator.server._auth import require
from orchestrator.server._problems import ProblemCode, ProblemError, problem_responses
from orchestrator.server._roles import Identity, Permission
from orchestrator.server._runs_api import _owned
from orchestrator.server._state import ServerState, State

__all__ = ["ARTIFACT_HEADERS", "content_disposition", "router"]

router = APIRouter(prefix="/v1", tags=["artifacts"])
"""The artifacts endpoints."""

ARTIFACT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cache-Control": "private, no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}
"""Headers every artifact is served with, besides its type and disposition."""

RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN)]
ArtifactId = Annotated[str, Path(pattern=ARTIFACT_ID_PATTERN)]


def content_disposition(name: str) -> str:
    """``attachment`` with the name's last part, ASCII-safe and as UTF-8 (RFC 6266)."""
    base = name.rpartition("/")[2] or "artifact"
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_"
                         for c in base)  # fmt: skip
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(base, safe='')}"


def _declared_type(media_type: str) -> str:
    text = media_type.startswith("text/") or media_type in ("application/json", "image/svg+xml")
    return f"{media_type}; charset=utf-8" if text else media_type


async def _find(state: ServerState, run_id: str, artifact_id: str) -> Artifact:
    store = state.platform.artifacts
    artifact = await asyncio.to_thread(store.get, run_id, artifact_id)
    if artifact is None:
        raise ProblemError(404, ProblemCode.NOT_FOUND, f"no artifact {artifact_id} in run {run_id}")
    return artifact


@router.get(
    "/runs/{run_id}/artifacts",
    response_model=list[Artifact],
    responses=problem_responses(401, 403, 404, 422),
)
async def list_artifacts(
    run_id: RunId,
    state: State,
    identity: Annotated[Identity, Depends(require(Permission.READ_RUNS))],
) -> list[Artifact]:
    """The run's artifacts (metadata: id, name, media type, size, SHA-256), by name."""
    await _owned(state, run_id, identity)
    return await asyncio.to_thread(state.platform.artifacts.list, run_id)


_BYTES_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The artifact's bytes, as an attachment, under the media type decided "
        "from them (`application/octet-stream` when unknown), with `X-Content-Type-Options: "
        "nosniff` and `Content-Security-Policy: sandbox; default-src 'none'`.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    **problem_responses(401, 403, 404, 422),
}


@router.get(
    "/runs/{run_id}/artifacts/{artifact_id}",
    response_class=Response,
    responses=_BYTES_RESPONSES,
)
async def get_artifact(
    run_id: RunId,
    artifact_id: ArtifactId,
    state: State,
    identity: Annotated[Identity, Depends(require(Permission.READ_RUNS))],
) -> Response:
    """One artifact's bytes, to be saved: never rendered in this origin."""
    await _owned(state, run_id, identity)
    artifact = await _find(state, run_id, artifact_id)
    try:
        data = await asyncio.to_thread(state.platform.artifacts.read, run_id, artifact)
    except FileNotFoundError:  # the run was deleted meanwhile
        raise ProblemError(
            404, ProblemCode.NOT_FOUND, f"no artifact {artifact_id} in run {run_id}"
        ) from None
    return Response(
        content=data,
        media_type=_declared_type(artifact.media_type),
        headers={
            **ARTIFACT_HEADERS,
            "Content-Disposition": content_disposition(artifact.name),
            "ETag": f'"{artifact.sha256}"',
        },
    )
