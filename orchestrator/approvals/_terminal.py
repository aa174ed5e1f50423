"""Asking the person at the orchestrator's terminal."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import select
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from orchestrator.approvals._approver import ApprovalDecision
from orchestrator.approvals._describe import describe_request
from orchestrator.approvals._request import ApprovalRequest

__all__ = ["TerminalApprover"]

_PROMPT = "[a]pprove, [d]eny, [e]dit arguments and approve, [s]kip (leave it to others)? "
# How often a blocked read checks whether the prompt was answered elsewhere.
_POLL_S = 0.1


class TerminalApprover:
    """An :class:`~orchestrator.approvals.Approver` that prompts on a terminal.

    Reads answers from the file descriptor ``input_fd`` (stdin by default) and
    writes to ``output``. One request is asked at a time. When the request is
    decided elsewhere first, the gateway cancels the prompt; the read stops
    within a tenth of a second, without changing the terminal's modes. End of
    input or ``s`` abstains, leaving the request to other approvers.
    """

    def __init__(
        self,
        *,
        input_fd: int = 0,
        output: TextIO | None = None,
        user: str | None = None,
        redact_patterns: Sequence[str | re.Pattern[str]] = (),
    ) -> None:
        self._fd = input_fd
        self._output = output
        self._user = user or getpass.getuser()
        self._patterns = tuple(redact_patterns)
        self._buffer = b""
        self._eof = False
        self._buffer_lock = threading.Lock()
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"TerminalApprover(user={self._user!r}, fd={self._fd})"

    async def __call__(self, request: ApprovalRequest, /) -> ApprovalDecision | None:
        """Show the request and ask until the answer is one of the choices."""
        async with self._lock:
            self._say(describe_request(request, redact_patterns=self._patterns))
            while True:
                answer = await self._ask(_PROMPT)
                if answer is None:
                    return None
                choice = answer.strip().lower()
                if choice in {"a", "approve", "y", "yes"}:
                    return ApprovalDecision(approved=True, by=self._by)
                if choice in {"d", "deny", "n", "no"}:
                    note = await self._ask("why (the model reads this; empty for none)? ")
                    return ApprovalDecision(
                        approved=False, by=self._by, note=(note or "").strip() or None
                    )
                if choice in {"e", "edit"}:
                    edited = await self._edited_arguments()
                    if edited is not None:
                        return ApprovalDecision(approved=True, by=self._by, arguments=edited)
                elif choice in {"s", "skip"}:
                    return None
                else:
                    self._say(f"{answer.strip()!r} is not a choice")

    @property
    def _by(self) -> str:
        return f"terminal:{self._user}"

    async def _edited_arguments(self) -> dict[str, object] | None:
        line = await self._ask("arguments as one line of JSON: ")
        if line is None:
            return None
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            self._say(f"not JSON ({exc}); nothing changed")
            return None
        if not isinstance(value, dict):
            self._say("arguments must be a JSON object; nothing changed")
            return None
        return value

    def _say(self, text: str, end: str = "\n") -> None:
        out = self._output or sys.stderr
        out.write(text + end)
        out.flush()

    async def _ask(self, prompt: str) -> str | None:
        self._say(prompt, end="")
        stop = threading.Event()
        try:
            return await asyncio.to_thread(self._readline, stop)
        finally:
            # Cancelled (decided elsewhere): the reading thread notices and ends.
            stop.set()

    def _readline(self, stop: threading.Event) -> str | None:
        """One line from the descriptor, or None at end of input or when stopped.

        A dismissed prompt's reader may still be inside ``select`` when the
        next prompt starts; whatever it reads goes to the shared buffer under
        the lock, and it takes no line once stopped, so no answer is lost.
        """
        while True:
            with self._buffer_lock:
                if stop.is_set():
                    return None
                if b"\n" in self._buffer:
                    line, _, self._buffer = self._buffer.partition(b"\n")
                    return line.decode("utf-8", "replace")
                if self._eof:
                    if not self._buffer:
                        return None
                    line, self._buffer = self._buffer, b""
                    return line.decode("utf-8", "replace")
            ready, _, _ = select.select([self._fd], [], [], _POLL_S)
            if ready:
                chunk = os.read(self._fd, 4096)
                with self._buffer_lock:
                    self._buffer += chunk
                    self._eof = self._eof or not chunk
