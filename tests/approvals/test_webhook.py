"""Webhook announcements: Slack-compatible JSON to a 127.0.0.1 origin, retries, failures."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.approvals import (
    ApprovalRequest,
    ApprovalStatus,
    AutoApprover,
    TerminalApprover,
    WebhookNotifier,
    load_approvers,
    webhook_payload,
)
from orchestrator.errors import ConfigError, UsageError
from orchestrator.testing import HttpRequest, serve_http

REQUEST = ApprovalRequest(
    id="req9", tool="http.fetch", arguments={"url": "https://api.example/x", "password": "pw"},
    rule="http-write", reason="writes elsewhere", principal="bob", run_id="run-2",
    status=ApprovalStatus.PENDING, created_at=0, expires_at=600,
)  # fmt: skip


class Origin:
    """Answers with the given statuses in turn (200 when they run out); keeps what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[HttpRequest] = []

    def __call__(self, request: HttpRequest) -> tuple[int, bytes]:
        self.received.append(request)
        return (self.statuses.pop(0) if self.statuses else 200), b"ok"


def origin(statuses: list[int]) -> Iterator[tuple[Origin, str]]:
    app = Origin(statuses)
    with serve_http(app) as port:
        yield app, f"http://127.0.0.1:{port}/hooks/approvals"


@pytest.fixture
def ok_origin() -> Iterator[tuple[Origin, str]]:
    yield from origin([])


@pytest.fixture
def flaky_origin() -> Iterator[tuple[Origin, str]]:
    yield from origin([503, 500])


@pytest.fixture
def refusing_origin() -> Iterator[tuple[Origin, str]]:
    yield from origin([403])


async def test_posts_slack_compatible_json_with_secrets_redacted(
    ok_origin: tuple[Origin, str],
) -> None:
    app, url = ok_origin
    notifier = WebhookNotifier(
        url, headers={"Authorization": "Bearer hook"}, redact_patterns=["(?i)^password$"]
    )
    assert await notifier(REQUEST) is None, "a notifier never decides"
    (post,) = app.received
    assert (post.method, post.path) == ("POST", "/hooks/approvals")
    assert post.headers["content-type"] == "application/json"
    assert post.headers["authorization"] == "Bearer hook"
    payload = json.loads(post.body)
    assert set(payload) == {"text", "request"}
    assert "http.fetch" in payload["text"] and "stockade approvals approve req9" in payload["text"]
    assert payload["request"]["id"] == "req9" and payload["request"]["principal"] == "bob"
    assert payload["request"]["arguments"] == {
        "url": "https://api.example/x",
        "password": "[REDACTED]",
    }
    assert b'"pw"' not in post.body


async def test_server_errors_are_retried(flaky_origin: tuple[Origin, str]) -> None:
    app, url = flaky_origin
    assert await WebhookNotifier(url, attempts=3)(REQUEST) is None
    assert len(app.received) == 3


async def test_a_refusal_is_not_retried_and_only_logged(
    refusing_origin: tuple[Origin, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, url = refusing_origin
    assert await WebhookNotifier(url)(REQUEST) is None
    assert len(app.received) == 1
    assert "req9 not announced" in caplog.text and "403" in caplog.text
    # The URL's path is the webhook's secret (Slack's /services/T…/B…/…): never logged.
    assert "/hooks/approvals" not in caplog.text
    assert "/hooks/approvals" not in repr(WebhookNotifier(url))


async def test_an_unreachable_receiver_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as placeholder:  # a free 127.0.0.1 port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    notifier = WebhookNotifier(f"http://127.0.0.1:{port}/", attempts=2)
    assert await notifier(REQUEST) is None
    assert "req9 not announced" in caplog.text


def test_only_http_urls() -> None:
    with pytest.raises(UsageError, match="must be http"):
        WebhookNotifier("file:///etc/passwd")


def test_the_approvers_file(tmp_path: Path) -> None:
    path = tmp_path / "approvers.yaml"
    path.write_text(
        "auto:\n"
        "  - {name: reads, tools: 'files.*', decision: approve}\n"
        "webhook:\n"
        "  url: http://127.0.0.1:9/hook\n"
    )
    chain = load_approvers(path).approvers(terminal=True)
    assert [type(a) for a in chain] == [AutoApprover, WebhookNotifier, TerminalApprover]
    path.write_text("auto:\n  - {name: reads, tools: 'files.*', decison: approve}\n")
    with pytest.raises(ConfigError, match=r"approvers.yaml:2: auto\[0\]"):
        load_approvers(path)
    path.write_text("webhook:\n  url: ftp://x\n")
    with pytest.raises(ConfigError, match=r"approvers.yaml:2: webhook.url"):
        load_approvers(path)


@pytest.mark.parametrize(("timeout_s", "shown"), [(1e12, "1e+12 s"), (float("inf"), "inf s")])
def test_a_deadline_past_any_date_is_described_too(timeout_s: float, shown: str) -> None:
    """A policy's approval_timeout_s of 1e12 or .inf: every approver describes the request
    (terminal, webhook, MCP elicitation), and failing here kept it from being announced."""
    request = REQUEST.model_copy(update={"created_at": 1000.0, "expires_at": 1000.0 + timeout_s})
    text = webhook_payload(request)["text"]
    assert f"decide before {shown} after the request was made" in text


def test_a_header_that_cannot_be_sent_is_refused_when_the_file_is_read(tmp_path: Path) -> None:
    """httpx refused it at every post, so no request was ever announced."""
    path = tmp_path / "approvers.yaml"
    path.write_text('webhook:\n  url: http://127.0.0.1:9/hook\n  headers: {X-A: "a\\r\\nB: c"}\n')
    with pytest.raises(ConfigError, match=r"approvers.yaml:3: webhook.headers") as caught:
        load_approvers(path)
    assert "cannot be sent (a line break" in str(caught.value)


@pytest.mark.parametrize(
    ("timeout_s", "shown"),
    [(600, "decide before 00:10:00 UTC,"), (172_800, "decide before 1970-01-03 00:00:00 UTC,")],
)
def test_a_deadline_on_another_day_is_given_its_date(timeout_s: float, shown: str) -> None:
    """With approval_timeout_s of two days, "decide before 00:00:00 UTC" named no day."""
    request = REQUEST.model_copy(update={"created_at": 0.0, "expires_at": float(timeout_s)})
    assert shown in webhook_payload(request)["text"]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:99999/hook", "port 99999 is out of range (1-65535)"),
        ("http://[::1/hook", "not a valid URL: Invalid port"),
    ],
)
def test_a_url_that_cannot_be_posted_to_is_refused_with_its_line(
    tmp_path: Path, url: str, problem: str
) -> None:
    """Both checked fine, then failed at every request with an error the notifier did not
    expect (an ExceptionGroup, httpx.InvalidURL), so nobody was told of any request."""
    path = tmp_path / "approvers.yaml"
    path.write_text(f"webhook:\n  url: '{url}'\n")
    with pytest.raises(ConfigError, match=re.escape(problem)) as caught:
        load_approvers(path)
    assert (caught.value.line, caught.value.field) == (2, "webhook.url")
    with pytest.raises(UsageError, match=re.escape(problem)):
        WebhookNotifier(url)
