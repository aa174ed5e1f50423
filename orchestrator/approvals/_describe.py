"""A request in words, for whoever is asked to decide it (a terminal, a chat channel)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from orchestrator.approvals._request import ApprovalRequest
from orchestrator.audit import redact
from orchestrator.display import for_display, json_for_people

__all__ = ["describe_request"]

# A human reads it; a program the size of a novel helps nobody decide.
_ARGUMENTS_CAP = 2000


def describe_request(
    request: ApprovalRequest, *, redact_patterns: Sequence[str | re.Pattern[str]] = ()
) -> str:
    """Plain text: tool, who, why, the arguments (secrets redacted), how to decide.

    The model chose the arguments: every character that could hide or reorder
    what the reader sees in them is shown as its escape (:func:`json_for_people`),
    and the rest of the text holds no control sequence.
    """
    try:
        deadline = datetime.fromtimestamp(request.expires_at, tz=UTC)
        made = datetime.fromtimestamp(request.created_at, tz=UTC)
        # The time alone when it is the same day; a two-day timeout needs its date.
        shape = "%H:%M:%S UTC" if deadline.date() == made.date() else "%Y-%m-%d %H:%M:%S UTC"
        expires = deadline.strftime(shape)
    except (OverflowError, ValueError, OSError):
        # A policy may wait a very long time (approval_timeout_s: 1e12, .inf): past any
        # date a datetime holds. Every approver describes the request, so it must not fail.
        expires = f"{request.expires_at - request.created_at:g} s after the request was made"
    arguments = json_for_people(redact(request.arguments, redact_patterns))
    if len(arguments) > _ARGUMENTS_CAP:
        arguments = f"{arguments[:_ARGUMENTS_CAP]}\n… ({len(arguments)} characters in all)"
    who = ", ".join(
        f"{label} {value}"
        for label, value in (("principal", request.principal), ("run", request.run_id))
        if value
    )
    lines = [
        f"Approval needed for {request.tool} (request {request.id})",
        f"why: {for_display(request.reason)}" + (f" [rule {request.rule}]" if request.rule else ""),
    ]
    if who:
        lines.append(f"for: {who}")
    lines += [
        f"decide before {expires}, or the policy's on_approval_timeout applies",
        "arguments:",
        arguments,
        f"decide with: stockade approvals approve {request.id}   |   "
        f"stockade approvals deny {request.id} --note '…'",
    ]
    return "\n".join(lines)
