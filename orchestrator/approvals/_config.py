"""Who decides approval requests: the approvers file (``--approvers approvers.yaml``).

.. code-block:: yaml

    auto:                      # first matching rule decides; none matches: ask people
      - name: build-dir
        tools: shell.run
        when: {arg: command, regex: '^rm -rf build(/|$)'}
        decision: approve
    webhook:                   # announce every request (Slack-compatible JSON)
      url: https://hooks.slack.com/services/T000/B000/XXXX
      headers: {}
    elicitation:               # ask MCP clients' users (off unless present)
      mode: form               # or url: send them to the approval page
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field, field_validator

from orchestrator.approvals._approver import Approver
from orchestrator.approvals._auto import AutoApprovalRule, AutoApprover
from orchestrator.approvals._elicit import ElicitationConfig
from orchestrator.approvals._terminal import TerminalApprover
from orchestrator.approvals._webhook import WebhookNotifier, url_problem
from orchestrator.strict import StrictModel
from orchestrator.yamlfile import load_yaml_model

__all__ = ["ApproversConfig", "WebhookConfig", "load_approvers"]


class WebhookConfig(StrictModel):
    """Where to announce requests."""

    url: str
    """``http://`` or ``https://`` URL taking a JSON POST (a Slack incoming webhook works)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Headers sent with every post, e.g. ``Authorization``."""
    timeout_s: float = Field(default=10.0, gt=0)
    """Per attempt."""

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(f"{problem}, got {url!r}")
        return url

    @field_validator("headers")
    @classmethod
    def _one_line(cls, headers: dict[str, str]) -> dict[str, str]:
        # httpx refuses such a header at every post, so no request would ever be announced.
        for name, value in headers.items():
            if not name or any(c in name for c in "\r\n\0: ") or any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {name!r}: {value!r} cannot be sent (a line break, NUL, "
                                 "or a name that is empty or holds a colon or space)")  # fmt: skip
        return headers


class ApproversConfig(StrictModel):
    """Who is asked, in order: the auto rules, then the webhook, then (if on) the terminal."""

    auto: list[AutoApprovalRule] = Field(default_factory=list)
    """Rules that approve or deny without a human; the first match decides."""
    webhook: WebhookConfig | None = None
    """Announce requests that no rule decided."""
    elicitation: ElicitationConfig | None = None
    """Ask the user of the MCP client whose call raised a request (``stockade mcp``, the
    server's MCP endpoint), after the rules and the webhook; absent: off. Only MCP entrances
    build this approver (it needs the client's session), so :meth:`approvers` leaves it out."""

    def approvers(
        self,
        *,
        terminal: bool = False,
        redact_patterns: Sequence[str | re.Pattern[str]] = (),
    ) -> list[Approver]:
        """The approver chain for the gateway's :class:`~orchestrator.gateway.ApprovalGate`."""
        chain: list[Approver] = []
        if self.auto:
            chain.append(AutoApprover(self.auto))
        if self.webhook is not None:
            chain.append(
                WebhookNotifier(
                    self.webhook.url,
                    headers=self.webhook.headers,
                    redact_patterns=redact_patterns,
                    timeout_s=self.webhook.timeout_s,
                )
            )
        if terminal:
            chain.append(TerminalApprover(redact_patterns=redact_patterns))
        return chain


def load_approvers(path: str | Path) -> ApproversConfig:
    """Read an approvers file; mistakes raise :class:`ConfigError` with file, line and field."""
    return load_yaml_model(path, ApproversConfig, what="approvers file")
