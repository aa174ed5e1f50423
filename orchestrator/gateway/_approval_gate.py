"""The approval step of the gateway: a durable request, approvers asked, a decision awaited."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from orchestrator.approvals import ApprovalRequest, ApprovalStatus, ApprovalStore, Approver
from orchestrator.tools import ToolCall

__all__ = ["ApprovalGate"]

_log = logging.getLogger(__name__)


class ApprovalGate:
    """Creates (or finds again) the request for a call and waits until it is decided.

    The approvers are asked in order, while the gate also watches the store: a
    decision taken anywhere (``stockade approvals approve`` in another
    terminal, another orchestrator) ends the wait, and whatever approver is
    still busy (a terminal prompt) is cancelled. An approver that abstains
    passes the request to the next one; when all abstain, the request waits
    for a human until it expires.
    """

    def __init__(
        self, store: ApprovalStore, approvers: Sequence[Approver] = (), *, poll_s: float = 0.25
    ) -> None:
        self._store = store
        self._approvers = tuple(approvers)
        self._poll_s = poll_s

    @property
    def store(self) -> ApprovalStore:
        """Where requests are kept."""
        return self._store

    async def request(
        self,
        call: ToolCall,
        arguments: dict[str, Any],
        *,
        tool: str,
        rule: str | None,
        reason: str,
        timeout_s: float,
    ) -> tuple[ApprovalRequest, bool]:
        """The request for this call: an existing one for the same call of the run, or a new one.

        ``tool`` is the tool's registered name (the call may use the model's
        spelling). Returns the request and whether it was created now.
        """
        if call.run_id is not None:
            existing = await asyncio.to_thread(
                self._store.find_for_call,
                run_id=call.run_id,
                call_id=call.id,
                tool=tool,
                arguments=arguments,
            )
            if existing is not None and existing.status is not ApprovalStatus.EXPIRED:
                return existing, False
        created = await asyncio.to_thread(
            self._store.create,
            tool=tool,
            arguments=arguments,
            reason=reason,
            timeout_s=timeout_s,
            rule=rule,
            principal=call.principal,
            run_id=call.run_id,
            call_id=call.id,
        )
        return created, True

    async def wait(self, request: ApprovalRequest) -> ApprovalRequest:
        """Ask the approvers and wait; the request as it ended (approved, denied or expired)."""
        if request.status is not ApprovalStatus.PENDING:
            return request
        asking = asyncio.create_task(self._ask(request), name=f"approvers:{request.id}")
        watching = asyncio.create_task(
            self._store.wait_for_decision(request.id, poll_s=self._poll_s),
            name=f"approval-wait:{request.id}",
        )
        pending: set[asyncio.Task[Any]] = {asking, watching}
        try:
            while True:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if watching in done:
                    return watching.result()
                if asking in done and asking.result():
                    # An approver's decision is recorded: read it now, not at the next poll.
                    watching.cancel()
                    final = await asyncio.to_thread(self._store.get, request.id)
                    if final is None:
                        raise KeyError(request.id)
                    return final
        finally:
            for task in (asking, watching):
                task.cancel()
            await asyncio.gather(asking, watching, return_exceptions=True)

    async def _ask(self, request: ApprovalRequest) -> bool:
        """Ask each approver in turn until one decides; whether a decision was recorded."""
        for approver in self._approvers:
            try:
                decision = await approver(request)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A broken approver (webhook down, prompt closed) must not
                # decide anything; the request stays pending for the others.
                _log.exception("approver %r failed on request %s", approver, request.id)
                continue
            if decision is None:
                continue
            # False: someone else decided first, or it expired; the watcher
            # reports whichever it was.
            return await asyncio.to_thread(
                self._store.decide,
                request.id,
                approve=decision.approved,
                by=decision.by,
                arguments=decision.arguments,
                note=decision.note,
            )
        return False
