"""The approval step of the gateway: a durable request, approvers asked, a decision consumed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.approvals import ApprovalRequest, ApprovalStatus, ApprovalStore, Approver
from orchestrator.errors import NotFoundError
from orchestrator.tools import ToolCall

__all__ = ["ApprovalGate", "Authorisation"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class Authorisation:
    """How a call that needs approval was decided."""

    request: ApprovalRequest
    """The decision: a request this call consumed, or the run's standing grant it used."""
    standing_grant: bool
    """An earlier grant for the run covered the call: nobody was asked, nothing was consumed."""


class ApprovalGate:
    """Finds or asks for the decision on a call, waits for it, and consumes it for the call.

    A decision authorises one execution: the call that acts on it consumes
    it, and an identical later call asks again. Only a grant the approver
    explicitly gave for the rest of the run covers later calls.

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

    async def authorise(
        self,
        call: ToolCall,
        arguments: dict[str, Any],
        *,
        tool: str,
        rule: str | None,
        reason: str,
        timeout_s: float,
        on_request: Callable[[ApprovalRequest], None] | None = None,
    ) -> Authorisation:
        """The decision for this call, consumed by it (approved, denied or expired).

        In order: a standing grant of the run that covers the call (nobody is
        asked); an unconsumed request for this very call of the run (a replay
        after a restart: a decision taken meanwhile applies); else a new
        request, handed to ``on_request`` (to record it) and to the approvers.
        The decision is then consumed by ``call``. When another execution
        consumed it first (two processes replaying one call), this call asks
        again. ``tool`` is the tool's registered name (the call may use the
        model's spelling).
        """
        if call.run_id is not None:
            grant = await asyncio.to_thread(
                self._store.find_grant,
                run_id=call.run_id,
                tool=tool,
                rule=rule,
                principal=call.principal,
                arguments=arguments,
            )
            if grant is not None:
                return Authorisation(request=grant, standing_grant=True)
        while True:
            request, created = await self._request(
                call, arguments, tool=tool, rule=rule, reason=reason, timeout_s=timeout_s
            )
            if created and on_request is not None:
                on_request(request)
            final = await self._wait(request)
            consumed = await asyncio.to_thread(self._store.consume, final.id, call_id=call.id)
            if consumed is not None:
                return Authorisation(request=consumed, standing_grant=False)
            # Each lap needs another execution to have used a decision first,
            # so this never spins on its own.
            _log.info(
                "approval %s was used by another execution; call %s asks again", final.id, call.id
            )

    async def _request(
        self,
        call: ToolCall,
        arguments: dict[str, Any],
        *,
        tool: str,
        rule: str | None,
        reason: str,
        timeout_s: float,
    ) -> tuple[ApprovalRequest, bool]:
        """An unconsumed request for this call of the run, or a new one; and whether it is new."""
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

    async def _wait(self, request: ApprovalRequest) -> ApprovalRequest:
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
                        raise NotFoundError(f"approval request {request.id} is gone from the store")
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
