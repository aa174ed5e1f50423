"""``/v1/approvals``: see pending requests, approve (maybe with edited arguments) or deny them.

Decisions go into the durable :class:`~orchestrator.approvals.ApprovalStore`
with the token's principal as ``decided_by``; the gateway waiting on the
request (in this process or any other) picks the decision up, and itself
validates and re-decides edited arguments under the policy before running
anything. Edited arguments are also checked against the tool's schema here,
so a mistake is refused while the request is still pending instead of
failing the call. Arguments are shown redacted by the policy's patterns,
as the audit log keeps them.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from orchestrator.approvals import ApprovalRequest, ApprovalScope, ApprovalStatus
from orchestrator.audit import REDACTED, redact, redacted_at
from orchestrator.server._auth import require
from orchestrator.server._problems import ProblemCode, ProblemError, problem_responses
from orchestrator.server._roles import Identity, Permission
from orchestrator.server._state import ServerState, State
from orchestrator.strict import StrictModel
from orchestrator.tools import ToolCall, ToolResult

__all__ = ["ApprovalList", "Approve", "Deny", "StatusFilter", "router"]

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])
"""The approvals endpoints."""

_NOTE_LENGTH = 2000


class StatusFilter(StrEnum):
    """Which requests to list."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    ALL = "all"


class ApprovalList(StrictModel):
    """Approval requests, oldest first."""

    approvals: tuple[ApprovalRequest, ...]
    """The requests, arguments redacted: the newest ``limit`` of those asked for."""
    more: bool = False
    """Whether older requests in the same status were left out (raise ``limit``)."""


class Approve(StrictModel):
    """An approval."""

    note: str | None = Field(default=None, max_length=_NOTE_LENGTH)
    """Why, for the record."""
    arguments: dict[str, Any] | None = None
    """Run the call with these arguments instead of the model's (checked against the tool's
    schema now, and decided by the policy again before the call runs)."""
    scope: ApprovalScope = ApprovalScope.ONCE
    """``once``: this one execution. ``run-identical`` and ``run``: a standing grant for later
    calls of the run (see ``stockade approvals approve --scope``); a grant cannot edit the
    arguments."""


class Deny(StrictModel):
    """A denial."""

    note: str | None = Field(default=None, max_length=_NOTE_LENGTH)
    """Why; the model reads it."""


def _redaction_left(arguments: dict[str, Any]) -> str | None:
    """Where edited arguments still hold the redaction marker, if anywhere.

    An approver only ever sees arguments redacted; editing them and sending the
    marker back would run the call with ``[REDACTED]`` in place of the secret.
    """
    keys = redacted_at(arguments)
    if keys is None:
        return None
    return "$" + "".join(f"[{key!r}]" if isinstance(key, int) else f".{key}" for key in keys)


def _shown(state: ServerState, request: ApprovalRequest) -> ApprovalRequest:
    """The request with its arguments redacted as the audit log keeps them."""
    patterns = state.platform.gateway.policy.redact
    if not patterns:
        return request
    edited = request.edited_arguments
    return request.model_copy(
        update={
            "arguments": redact(request.arguments, patterns),
            "edited_arguments": None if edited is None else redact(edited, patterns),
        }
    )


async def _pending(state: ServerState, request_id: str, identity: Identity) -> ApprovalRequest:
    """The request, if ``identity`` may decide it now; else the problem why not."""
    request = await asyncio.to_thread(state.platform.approvals.get, request_id)
    if request is None:
        raise ProblemError(404, ProblemCode.NOT_FOUND, f"no approval request {request_id}")
    if not state.settings.self_approval and request.principal == identity.principal:
        raise ProblemError(
            403,
            ProblemCode.SELF_APPROVAL_FORBIDDEN,
            f"request {request_id} was raised on {identity.principal}'s behalf; "
            "someone else must decide it",
        )
    if request.status is not ApprovalStatus.PENDING:
        raise ProblemError(
            409,
            ProblemCode.APPROVAL_NOT_PENDING,
            f"request {request_id} is {request.status.value}, no longer pending",
        )
    return request


async def _decided(state: ServerState, request_id: str, recorded: bool) -> ApprovalRequest:
    """The request after a decision; 409 when another decision or the deadline came first."""
    request = await asyncio.to_thread(state.platform.approvals.get, request_id)
    if request is None:
        raise ProblemError(404, ProblemCode.NOT_FOUND, f"no approval request {request_id}")
    if not recorded:
        raise ProblemError(
            409,
            ProblemCode.APPROVAL_NOT_PENDING,
            f"request {request_id} is {request.status.value}: someone decided first, or it expired",
        )
    return _shown(state, request)


_READ = Annotated[Identity, Depends(require(Permission.READ_APPROVALS))]
# Decided requests are never deleted and each may hold a megabyte of arguments: a list
# is bounded, or "all" would read and send every request ever made.
_LISTED = 100
_MAX_LISTED = 1000
_DECIDE = Annotated[Identity, Depends(require(Permission.DECIDE_APPROVALS))]


@router.get("", response_model=ApprovalList, responses=problem_responses(401, 403, 422))
async def list_approvals(
    state: State,
    _identity: _READ,
    status: Annotated[StatusFilter, Query(description="Which requests to list.")] = (
        StatusFilter.PENDING
    ),
    limit: Annotated[
        int, Query(ge=1, le=_MAX_LISTED, description="At most this many, the newest.")
    ] = _LISTED,
) -> ApprovalList:
    """Approval requests in ``status`` (default: pending), oldest first: the newest ``limit``."""
    wanted = None if status is StatusFilter.ALL else ApprovalStatus(status.value)
    found, more = await asyncio.to_thread(state.platform.approvals.newest, wanted, limit)
    return ApprovalList(approvals=tuple(_shown(state, request) for request in found), more=more)


@router.get(
    "/{request_id}", response_model=ApprovalRequest, responses=problem_responses(401, 403, 404)
)
async def get_approval(request_id: str, state: State, _identity: _READ) -> ApprovalRequest:
    """One approval request."""
    request = await asyncio.to_thread(state.platform.approvals.get, request_id)
    if request is None:
        raise ProblemError(404, ProblemCode.NOT_FOUND, f"no approval request {request_id}")
    return _shown(state, request)


@router.post(
    "/{request_id}/approve",
    response_model=ApprovalRequest,
    responses=problem_responses(401, 403, 404, 409, 413, 422),
)
async def approve(
    request_id: str, state: State, identity: _DECIDE, body: Approve | None = None
) -> ApprovalRequest:
    """Approve a pending request, as the token's principal; optionally with edited arguments."""
    body = body or Approve()
    request = await _pending(state, request_id, identity)
    if body.arguments is not None:
        left = _redaction_left(body.arguments)
        if left is not None:
            raise ProblemError(
                422,
                ProblemCode.INVALID_ARGUMENTS,
                f"the edited arguments still hold {REDACTED} at {left}: arguments are shown with "
                "secrets redacted, so type the whole value there, or approve without editing",
            )
        checked = state.platform.registry.validate(
            ToolCall(
                id=request.call_id or request.id,
                name=request.tool,
                arguments=body.arguments,
                run_id=request.run_id,
                principal=request.principal,
            )
        )
        if isinstance(checked, ToolResult):
            raise ProblemError(
                422,
                ProblemCode.INVALID_ARGUMENTS,
                checked.error or f"the arguments do not fit {request.tool}",
            )
    recorded = await asyncio.to_thread(
        state.platform.approvals.decide,
        request_id,
        approve=True,
        by=identity.principal,
        arguments=body.arguments,
        note=body.note,
        scope=body.scope,
    )
    return await _decided(state, request_id, recorded)


@router.post(
    "/{request_id}/deny",
    response_model=ApprovalRequest,
    responses=problem_responses(401, 403, 404, 409, 413, 422),
)
async def deny(
    request_id: str, state: State, identity: _DECIDE, body: Deny | None = None
) -> ApprovalRequest:
    """Deny a pending request, as the token's principal; the model reads the note."""
    body = body or Deny()
    await _pending(state, request_id, identity)
    recorded = await asyncio.to_thread(
        state.platform.approvals.decide,
        request_id,
        approve=False,
        by=identity.principal,
        note=body.note,
    )
    return await _decided(state, request_id, recorded)
