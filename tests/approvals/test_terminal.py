"""The terminal approver: what it shows, each answer, and end of input."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator

import pytest

from orchestrator.approvals import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalStatus,
    TerminalApprover,
)

REQUEST = ApprovalRequest(
    id="req1", tool="shell.run", arguments={"command": "rm -rf build", "token": "s3cr3t"},
    rule="shell-destructive", reason="deletes data", principal="alice", run_id="run-7",
    status=ApprovalStatus.PENDING, created_at=0, expires_at=3600,
)  # fmt: skip


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):  # closed by the test to signal end of input
            os.close(fd)


async def answer(
    pipe: tuple[int, int], typed: str, *, close: bool = False
) -> tuple[ApprovalDecision | None, str]:
    read_end, write_end = pipe
    os.write(write_end, typed.encode())
    if close:
        os.close(write_end)
    shown = io.StringIO()
    approver = TerminalApprover(
        input_fd=read_end, output=shown, user="ops", redact_patterns=["(?i)^token$"]
    )
    decision = await approver(REQUEST)
    return decision, shown.getvalue()


async def test_it_shows_the_request_with_secrets_redacted(pipe: tuple[int, int]) -> None:
    decision, shown = await answer(pipe, "a\n")
    assert decision == ApprovalDecision(approved=True, by="terminal:ops")
    for expected in ("shell.run", "req1", "deletes data", "shell-destructive", "principal alice",
                     "run run-7", "rm -rf build", "stockade approvals approve req1"):  # fmt: skip
        assert expected in shown
    assert "s3cr3t" not in shown and "[REDACTED]" in shown


async def test_what_could_hide_or_reorder_the_arguments_is_shown_escaped(
    pipe: tuple[int, int],
) -> None:
    """The model chose the arguments: a terminal must not act on them, nor show "invoice
    hs.jpg" for a file whose name is reversed by a right-to-left override."""
    read_end, write_end = pipe
    os.write(write_end, b"d\n\n")
    hostile = REQUEST.model_copy(
        update={"arguments": {"path": "invoice\u202egpj.sh", "note": "ok\x9b2J\x1b]52;c;eA==\x07"}}
    )
    shown = io.StringIO()
    await TerminalApprover(input_fd=read_end, output=shown, user="ops")(hostile)
    text = shown.getvalue()
    assert "invoice\\u202egpj.sh" in text and "\\u009b2J" in text and "\\u001b]52" in text
    assert not any(char in text for char in "\u202e\x9b\x1b\x07")


async def test_deny_with_a_note(pipe: tuple[int, int]) -> None:
    decision, _ = await answer(pipe, "deny\nbuild is shared\n")
    assert decision == ApprovalDecision(approved=False, by="terminal:ops", note="build is shared")


async def test_edit_then_approve(pipe: tuple[int, int]) -> None:
    decision, _ = await answer(pipe, 'e\n{"command": "rm -rf build/tmp"}\n')
    assert decision == ApprovalDecision(
        approved=True, by="terminal:ops", arguments={"command": "rm -rf build/tmp"}
    )


async def test_mistakes_are_explained_and_asked_again(pipe: tuple[int, int]) -> None:
    decision, shown = await answer(pipe, "maybe\ne\nnot json\ne\n[1]\nyes\n")
    assert decision == ApprovalDecision(approved=True, by="terminal:ops")
    assert "'maybe' is not a choice" in shown
    assert "not JSON" in shown and "must be a JSON object" in shown


@pytest.mark.parametrize("typed", ["", "s\n"])
async def test_end_of_input_or_skip_abstains(pipe: tuple[int, int], typed: str) -> None:
    decision, _ = await answer(pipe, typed, close=True)
    assert decision is None
