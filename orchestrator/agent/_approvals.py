"""Seeing which of a run's calls wait for approval, before anyone decides.

An :class:`ApprovalWatch` is an approver for the gateway's chain
(``Platform.open(config, approvers=[watch])``). It asks its own approvers in
order (the demo's rules, a terminal prompt, which shows the request itself);
when they all abstain (or there are none), it tells the agent that the call
waits for someone (an ``approval_pending`` event: the CLI prints the command
that decides it) and abstains, so the request waits for a decision taken
elsewhere (``stockade approvals approve|deny``). It remembers which calls
waited and who of its approvers approved them, for the run's events.
Requests the approvers file's rules decide are never asked of it, so the
agent does not see them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from orchestrator.approvals import ApprovalDecision, ApprovalRequest, Approver

__all__ = ["ApprovalWatch"]

_log = logging.getLogger(__name__)

Listener = Callable[[ApprovalRequest], None]


class ApprovalWatch:
    """An approver that reports each request to its run's listener, then asks its approvers."""

    def __init__(self, approvers: Sequence[Approver] = ()) -> None:
        """Ask ``approvers`` (in order) after reporting a request."""
        self._approvers = list(approvers)
        self._listeners: dict[str, Listener] = {}
        self._seen: dict[tuple[str, str], str] = {}
        self._approved_by: dict[tuple[str, str], str] = {}

    def add(self, approver: Approver) -> None:
        """Ask ``approver`` too, after those already there (one built once the platform is open,
        such as a terminal prompt that redacts with the policy's patterns)."""
        self._approvers.append(approver)

    def watch(self, run_id: str, listener: Listener) -> None:
        """Report requests of ``run_id`` to ``listener`` until :meth:`unwatch`."""
        self._listeners[run_id] = listener

    def unwatch(self, run_id: str) -> None:
        """Stop reporting ``run_id``'s requests, and forget its calls."""
        self._listeners.pop(run_id, None)
        for seen in (self._seen, self._approved_by):
            for key in [key for key in seen if key[0] == run_id]:
                del seen[key]

    def request_of(self, run_id: str, call_id: str) -> str | None:
        """The approval request a call of a watched run waited on, if it did."""
        return self._seen.get((run_id, call_id))

    def approved_by(self, run_id: str, call_id: str) -> str | None:
        """Who of this watch's approvers approved a call of a watched run, if one did."""
        return self._approved_by.get((run_id, call_id))

    async def __call__(self, request: ApprovalRequest, /) -> ApprovalDecision | None:
        """The first decision of the approvers; else report ``request`` and abstain."""
        key = (request.run_id or "", request.call_id or "")
        watched = request.run_id in self._listeners and bool(request.call_id)
        if watched:
            self._seen[key] = request.id
        decision = await self._ask(request)
        if decision is not None:
            if watched and decision.approved:
                self._approved_by[key] = decision.by
            return decision
        listener = self._listeners.get(request.run_id or "")
        if listener is not None:
            try:
                listener(request)
            except Exception:
                _log.exception("approval listener failed on request %s", request.id)
        return None

    async def _ask(self, request: ApprovalRequest) -> ApprovalDecision | None:
        for approver in self._approvers:
            try:
                decision = await approver(request)
            except asyncio.CancelledError:
                raise
            except Exception:
                # As in the gateway's chain: a broken approver decides nothing.
                _log.exception("approver %r failed on request %s", approver, request.id)
                continue
            if decision is not None:
                return decision
        return None
