"""``/v1/runs``: agent runs started, watched and cancelled over HTTP.

A run acts for its token's principal (never one the body names) and its run
id is claimed for that principal, like a tool call's: only the owner (or an
admin) sees, streams or cancels it. Its events stream as server-sent events
(one per event: ``event:`` its type, ``data:`` its JSON, ``id:`` its place in
the run), from the first, and the stream ends when the run does. Cancelling
waits for the run to end, so the answer is its cancelled state and its
sandbox is gone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from pydantic import Field

from orchestrator.agent import AgentEvent, RunResult, RunStatus
from orchestrator.errors import NotFoundError
from orchestrator.runid import RUN_ID_PATTERN
from orchestrator.server._auth import require, still_valid
from orchestrator.server._problems import ProblemCode, ProblemError, problem_responses
from orchestrator.server._roles import Identity, Permission, Role
from orchestrator.server._state import ServerState, State
from orchestrator.strict import StrictModel

__all__ = ["CancelRequest", "RunRequest", "RunView", "claim_run", "router"]

router = APIRouter(prefix="/v1", tags=["runs"])
"""The runs endpoints."""


class RunRequest(StrictModel):
    """A run to start."""

    goal: str = Field(min_length=1, max_length=20_000)
    """What the run is asked to achieve."""
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)
    """The run's id (its workspace, budget and files); default: a fresh one. The first
    principal to use a run id owns it; other principals are refused (403)."""
    principal: str | None = None
    """Ignored: a run acts for its token's principal, whatever the body says."""


class CancelRequest(StrictModel):
    """Why a run is cancelled."""

    reason: str = Field(default="cancelled through the API", max_length=2_000)
    """Recorded as the run's reason."""


class RunView(StrictModel):
    """A run: where it is, and how it ended once it has."""

    run_id: str
    """The run."""
    goal: str
    """What it is asked to achieve."""
    principal: str
    """Who it acts for."""
    status: RunStatus
    """``idle``, ``planning``, ``executing``, ``reflecting``; then ``complete``, ``failed`` or
    ``cancelled``."""
    iteration: int
    """Model turns so far."""
    answer: str | None
    """The final answer, once there is one."""
    reason: str | None
    """Why it ended as it did."""
    result: RunResult | None
    """The result (without its log: stream the events for that), once the run has ended."""


_ID_RESPONSES = problem_responses(401, 403, 404)


async def claim_run(state: ServerState, run_id: str, identity: Identity) -> bool:
    """Whether ``identity`` may use ``run_id``: claimed for its principal (see
    :meth:`~orchestrator.runowners.RunOwners.claim`), unless the run's files
    record another principal."""
    return await state.run_owners.claim(
        run_id, identity.principal, recorded=lambda: state.runs.principal(run_id)
    )


async def _owned(state: ServerState, run_id: str, identity: Identity) -> None:
    """Refuse unless ``identity`` owns ``run_id`` (or is an admin); 404 for a run nobody owns.

    The owner must also be the principal the run's files record: an id claimed here
    before a ``stockade run`` on the same state directory used it is not a way in.
    """
    owner = await asyncio.to_thread(state.run_owners.owner, run_id)
    if owner is None:
        raise ProblemError(404, ProblemCode.NOT_FOUND, f"no run {run_id!r}")
    if Role.ADMIN in identity.roles:
        return
    if owner != identity.principal or await state.runs.principal(run_id) not in (
        None,
        identity.principal,
    ):
        raise ProblemError(
            403, ProblemCode.RUN_OWNED_BY_ANOTHER, f"run {run_id} belongs to another principal"
        )


async def _view(state: ServerState, run_id: str) -> RunView:
    try:
        run = await state.runs.state(run_id)
        result = await state.runs.result(run_id)
    except NotFoundError:
        raise ProblemError(404, ProblemCode.NOT_FOUND, f"no run {run_id!r}") from None
    if result is not None:
        return RunView(
            run_id=run_id,
            goal=result.goal,
            principal=result.principal,
            status=result.status,
            iteration=result.iterations,
            answer=result.answer,
            reason=result.reason,
            result=result,
        )
    return RunView(
        run_id=run_id,
        goal=run.goal,
        principal=run.principal,
        status=run.status,
        iteration=run.iteration,
        answer=run.answer,
        reason=run.reason,
        result=None,
    )


@router.post(
    "/runs",
    response_model=RunView,
    status_code=201,
    responses=problem_responses(401, 403, 409, 413, 422, 429, 503),
)
async def start_run(
    body: RunRequest,
    state: State,
    identity: Annotated[Identity, Depends(require(Permission.START_RUNS))],
) -> RunView:
    """Start an agent run of ``goal`` as the token's principal; answer its state at once."""
    if not state.runs.available:
        raise ProblemError(
            503, ProblemCode.UNAVAILABLE, "no model is configured (model.base_url): no runs"
        )
    run_id = body.run_id or f"run-{uuid.uuid4().hex[:12]}"
    if not await claim_run(state, run_id, identity):
        raise ProblemError(
            403,
            ProblemCode.RUN_OWNED_BY_ANOTHER,
            f"run {run_id} belongs to another principal; use a run id of your own",
        )
    # The live check last, with no await between it and the start: a second request for
    # the same new id, let through while this one looked at the files, must see this run.
    if await _has_files(state, run_id) or state.runs.handle(run_id) is not None:
        raise ProblemError(409, ProblemCode.RUN_ID_IN_USE, f"run id {run_id!r} is already used")
    cap = state.settings.max_runs_per_principal
    if state.runs.under_way(identity.principal) >= cap:
        raise ProblemError(
            429,
            ProblemCode.TOO_MANY_RUNS,
            f"{identity.principal} has {cap} runs under way, the server's limit "
            "(server.max_runs_per_principal): start this one once one of them has ended",
        )
    state.runs.start(body.goal, principal=identity.principal, run_id=run_id)
    return await _view(state, run_id)


async def _has_files(state: ServerState, run_id: str) -> bool:
    try:
        await state.runs.state(run_id)
    except NotFoundError:
        return False
    return True


@router.get("/runs/{run_id}", response_model=RunView, responses=_ID_RESPONSES)
async def get_run(
    run_id: str,
    state: State,
    identity: Annotated[Identity, Depends(require(Permission.READ_RUNS))],
) -> RunView:
    """A run's state, and its result once it has ended."""
    await _owned(state, run_id, identity)
    return await _view(state, run_id)


_EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events, one per event of the run from its first (`event:` "
        "the event's `type`, `data:` the event as JSON, `id:` its place in the run): state "
        "changes, model turns, tool calls with their decisions, approvals waiting, a running "
        "call's output as it comes (`tool_output`: coalesced, capped, untrusted text; live "
        "only, not in the run's log), the final answer (`run_finished`). The stream ends when "
        "the run does.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **_ID_RESPONSES,
}


def _sse(place: int, event: AgentEvent) -> bytes:
    return f"id: {place}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n".encode()


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses=_EVENTS_RESPONSES,
)
async def stream_run_events(
    run_id: str,
    state: State,
    identity: Annotated[Identity, Depends(require(Permission.READ_RUNS))],
) -> StreamingResponse:
    """A run's events as server-sent events, as they happen; the stream ends with the run.

    It also ends, before the next event, once the token is revoked.
    """
    await _owned(state, run_id, identity)
    events = state.runs.events(run_id)
    try:
        first = await anext(events, None)
    except NotFoundError:
        raise ProblemError(404, ProblemCode.NOT_FOUND, f"no run {run_id!r}") from None

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is None:
                return
            yield _sse(0, first)
            place = 1
            async for event in events:
                # Checked again for each event: a stream may stay open for hours, and
                # a token revoked meanwhile must stop reading the run.
                if not still_valid(state, identity):
                    yield b": the token was revoked; the stream ends here\n\n"
                    return
                yield _sse(place, event)
                place += 1
        finally:
            await events.aclose()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post("/runs/{run_id}/cancel", response_model=RunView, responses=_ID_RESPONSES)
async def cancel_run(
    run_id: str,
    state: State,
    identity: Annotated[Identity, Depends(require(Permission.START_RUNS))],
    body: CancelRequest | None = None,
) -> RunView:
    """Cancel a run and wait for its end (its calls stopped, its sandbox removed).

    A run that has already ended is left as it is; either way the answer is its state.
    """
    await _owned(state, run_id, identity)
    handle = state.runs.handle(run_id)
    if handle is not None:
        handle.cancel((body or CancelRequest()).reason)
        # The client may go away; the run still ends and is recorded.
        await asyncio.shield(handle.wait())
    return await _view(state, run_id)
