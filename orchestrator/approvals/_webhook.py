"""Telling people about a request through an HTTP webhook (Slack-compatible)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from orchestrator.approvals._approver import ApprovalDecision
from orchestrator.approvals._describe import describe_request
from orchestrator.approvals._request import ApprovalRequest
from orchestrator.audit import redact
from orchestrator.errors import UsageError

__all__ = ["WebhookNotifier", "url_problem", "webhook_payload"]

_log = logging.getLogger(__name__)


class _ServerError(Exception):
    """The receiver failed (5xx); another try may work."""


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be posted to, or None.

    Checked when the approvers file is read: a URL httpx cannot parse (``http://[::1``)
    or a port past 65535 fails only when posting, with an error the notifier does not
    expect, at every request, while the file checked fine.
    """
    if not re.match(r"https?://[^/\s]+", url):
        return "expected an http:// or https:// URL"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"not a valid URL: {exc}"
    if not parsed.host:
        return "the URL names no valid host"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return f"port {parsed.port} is out of range (1-65535)"
    return None


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what a log may name.

    The path of a webhook URL is its secret (a Slack incoming webhook's
    ``/services/T…/B…/…`` lets anyone post to the channel), so it never reaches a log.
    """
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]  # no user:password
    return f"{scheme}://{host}"


def webhook_payload(
    request: ApprovalRequest, *, redact_patterns: Sequence[str | re.Pattern[str]] = ()
) -> dict[str, Any]:
    """The JSON posted for ``request``.

    ``text`` is what a Slack (or Mattermost, Teams-compatible) incoming webhook
    shows; ``request`` carries the fields for programs, arguments redacted.
    """
    data = request.model_dump(mode="json")
    data["arguments"] = redact(data["arguments"], redact_patterns)
    return {
        "text": describe_request(request, redact_patterns=redact_patterns),
        "request": data,
    }


class WebhookNotifier:
    """An :class:`~orchestrator.approvals.Approver` that posts each request, then abstains.

    It decides nothing: people read the message and decide with ``stockade
    approvals`` (or any other approver). Server errors and connection failures
    are tried ``attempts`` times with backoff; a notification that still fails
    is logged, and the request waits for its timeout as usual.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        redact_patterns: Sequence[str | re.Pattern[str]] = (),
        timeout_s: float = 10.0,
        attempts: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``headers`` (say an ``Authorization``) go with every post; ``transport`` is for tests."""
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"webhook URL must be http(s), got {url!r}")
        problem = url_problem(url)
        if problem is not None:
            raise UsageError(f"webhook URL {url!r}: {problem}")
        self._url = url
        self._headers = dict(headers or {})
        self._patterns = tuple(redact_patterns)
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._transport = transport

    def __repr__(self) -> str:
        return f"WebhookNotifier({_origin(self._url) + '/…'!r})"

    async def __call__(self, request: ApprovalRequest, /) -> ApprovalDecision | None:
        """Post the request; always abstain."""
        payload = webhook_payload(request, redact_patterns=self._patterns)
        try:
            await self.post(payload)
        except (httpx.HTTPError, _ServerError) as exc:
            # httpx names the whole URL in a status error: say only the status.
            if isinstance(exc, httpx.HTTPStatusError):
                detail = f"HTTP {exc.response.status_code}"
            else:
                detail = str(exc).replace(self._url, _origin(self._url) + "/…")
            _log.warning(
                "webhook %s: request %s not announced: %s",
                _origin(self._url),
                request.id,
                detail,
            )
        return None

    async def post(self, payload: dict[str, Any]) -> None:
        """POST ``payload`` as JSON, retrying connection failures and server errors."""
        async with httpx.AsyncClient(
            timeout=self._timeout_s, transport=self._transport, follow_redirects=False
        ) as client:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((httpx.TransportError, _ServerError)),
                stop=stop_after_attempt(self._attempts),
                wait=wait_exponential(multiplier=0.2, max=2.0),
                reraise=True,
            ):
                with attempt:
                    response = await client.post(self._url, json=payload, headers=self._headers)
                    if response.status_code >= 500:
                        raise _ServerError(f"HTTP {response.status_code}")
                    # A 4xx will not get better by asking again.
                    response.raise_for_status()
