"""An approver that asks the MCP client's user, through elicitation (off by default).

When a call made by an MCP client needs approval, the server can ask that
client's user to decide it: in **form** mode the client shows a small form
(approve or deny, and a note) and the answer is the decision of the MCP
session's principal; in **URL** mode the client is given the approval page's
address (``/ui/approvals#request-<id>`` on the server: the page of pending
requests, at this one's card), where an approver signs in and
decides, so the client itself decides nothing.

The durable :class:`~orchestrator.approvals.ApprovalStore` stays the
authority: an answer is recorded there like any other decision, a decision
taken elsewhere first wins (the question is then withdrawn), and nothing
the client says is trusted beyond being one principal's decision. An MCP
client may answer a form on its own, without showing it to anybody; that is
why this approver is off unless the approvers file turns it on, and why with
``server.self_approval: false`` it refuses to decide a request raised by the
same principal it would decide for (which, for a session's own calls, is
always).

This module knows nothing of MCP: the server hands it an
:class:`ElicitationChannel` for the session whose call raised a request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import quote

from pydantic import field_validator

from orchestrator.approvals._approver import ApprovalDecision
from orchestrator.approvals._describe import describe_request
from orchestrator.approvals._request import ApprovalRequest
from orchestrator.strict import StrictModel

__all__ = [
    "APPROVAL_FORM_SCHEMA",
    "ElicitationApprover",
    "ElicitationChannel",
    "ElicitationConfig",
    "ElicitationMode",
]

_log = logging.getLogger(__name__)

ElicitationMode = Literal["form", "url"]
"""``form``: the client's user answers approve/deny and a note; ``url``: the user is sent to
the approval page, where an approver decides."""

_NOTE_LENGTH = 2000  # as the HTTP API's approve/deny bodies

APPROVAL_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decision": {
            "type": "string",
            "title": "Decision",
            "description": "Run the call, or refuse it.",
            "enum": ["approve", "deny"],
        },
        "note": {
            "type": "string",
            "title": "Note",
            "description": "Why (on a denial, the model reads it).",
            "maxLength": _NOTE_LENGTH,
        },
    },
    "required": ["decision"],
}
"""The form (an elicitation's requested schema) a form-mode question asks the user to fill."""


class ElicitationConfig(StrictModel):
    """Ask the MCP client's user to decide the requests of that client's own calls."""

    mode: ElicitationMode = "form"
    """``form``: the client shows approve/deny and a note, and its answer is the session
    principal's decision (a client may answer on its own); ``url``: the client is sent to the
    approval page (``/ui/approvals#request-<id>``), where an approver signs in and decides."""
    page_url: str | None = None
    """The approval page as users reach it, for URL mode
    (``https://stockade.example.org/ui/approvals``); a request's address is this with
    ``#request-<id>`` (its card on the page). None: the page of the server's own address
    (``http://<server.host>:<server.port>/ui/approvals``)."""

    @field_validator("page_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", url):
            raise ValueError(
                f"expected an http:// or https:// URL without query or fragment, got {url!r}"
            )
        return url


class ElicitationChannel(Protocol):
    """The MCP session whose call raised a request: who it acts for, and how to ask its user."""

    @property
    def principal(self) -> str:
        """The principal the session acts for (its token's, or the configured one)."""
        ...

    def supports(self, mode: ElicitationMode) -> bool:
        """Whether the client declared this elicitation mode and can be asked now."""
        ...

    async def ask_form(
        self, message: str, schema: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        """Ask the form; the user's action (``accept``, ``decline``, ``cancel``) and content."""
        ...

    async def ask_url(self, message: str, url: str, elicitation_id: str) -> str:
        """Send the user to ``url``; the user's action (consent to open it, or not)."""
        ...


ChannelFinder = Callable[[ApprovalRequest], ElicitationChannel | None]
"""The channel of the session whose call raised a request; None when no session did."""


class ElicitationApprover:
    """Asks the MCP client whose call raised a request (see the module's description)."""

    def __init__(
        self,
        config: ElicitationConfig,
        *,
        channel_for: ChannelFinder,
        self_approval: bool,
        page_url: str,
        redact_patterns: Sequence[str | re.Pattern[str]] = (),
    ) -> None:
        """Ask through the channels ``channel_for`` finds.

        ``self_approval`` is the server's setting (false: never decide a request
        raised by the channel's own principal); ``page_url`` the approval page's
        address, used unless the config names one.
        """
        self._config = config
        self._channel_for = channel_for
        self._self_approval = self_approval
        self._page_url = (config.page_url or page_url).rstrip("/")
        self._redact = tuple(redact_patterns)

    @property
    def mode(self) -> ElicitationMode:
        """How the user is asked."""
        return self._config.mode

    def page_of(self, request_id: str) -> str:
        """The approval page at one request's card (the page lists every pending request)."""
        return f"{self._page_url}#request-{quote(request_id, safe='')}"

    async def __call__(self, request: ApprovalRequest, /) -> ApprovalDecision | None:
        """The user's decision in form mode; None (abstain) otherwise, or when not asked."""
        channel = self._channel_for(request)
        if channel is None:
            return None
        if not self._self_approval and request.principal == channel.principal:
            # The client would decide its own principal's call: the setting forbids it.
            _log.info(
                "not asking the MCP client about request %s: it was raised on %s's behalf and "
                "server.self_approval is false",
                request.id,
                channel.principal,
            )
            return None
        if not channel.supports(self._config.mode):
            _log.info(
                "not asking the MCP client about request %s: it does not take %s elicitations",
                request.id,
                self._config.mode,
            )
            return None
        text = describe_request(request, redact_patterns=self._redact)
        if self._config.mode == "url":
            url = self.page_of(request.id)
            action = await channel.ask_url(
                f"Approval needed for {request.tool} (request {request.id}): {request.reason}. "
                "Open the approval page to decide.",
                url,
                request.id,
            )
            # Whatever the answer, the page (an approver signed in there) decides.
            _log.info("MCP client answered %s to the approval page of %s", action, request.id)
            return None
        action, content = await channel.ask_form(text, APPROVAL_FORM_SCHEMA)
        return self._decision(request, channel.principal, action, content)

    @staticmethod
    def _decision(
        request: ApprovalRequest, principal: str, action: str, content: dict[str, Any] | None
    ) -> ApprovalDecision | None:
        """The decision an answer to the form stands for; None when it stands for none."""
        if action == "decline":
            return ApprovalDecision(approved=False, by=principal, note="declined in the MCP client")
        if action != "accept" or content is None:
            return None  # dismissed: the request waits for someone else
        decision, note = content.get("decision"), content.get("note")
        if decision not in ("approve", "deny") or not isinstance(note, str | None):
            # The client is not trusted to have checked its own form.
            _log.warning(
                "MCP client answered request %s with a form that does not fit: %r",
                request.id,
                content,
            )
            return None
        if note is not None:
            note = note[:_NOTE_LENGTH]
        return ApprovalDecision(
            approved=decision == "approve",
            by=principal,
            note=note or ("approved" if decision == "approve" else "denied") + " in the MCP client",
        )
