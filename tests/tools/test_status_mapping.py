"""The sandbox → tool status mapping is total, and each sandbox status ends as documented."""

from __future__ import annotations

import json

import pytest

from orchestrator.sandbox.execution import ExecResult, ExecStatus
from orchestrator.tools import SANDBOX_STATUS, ToolCall, ToolStatus, tool_result
from stockade_sdk import ToolError
from stockade_sdk.run import RESULT_SEPARATOR, serve

CALL = ToolCall(id="c", name="python.run", arguments={})


def sandbox_result(status: ExecStatus, stdout: str = "", *, truncated: bool = False) -> ExecResult:
    return ExecResult(
        status=status, exit_code=0, stdout=stdout, stderr="", truncated=truncated,
        stdout_bytes=len(stdout), stderr_bytes=0, duration_s=0.01, message="the message",
        image_digest="sha256:0", profile="default", runtime="runc", container_id="c0",
        from_pool=True,
    )  # fmt: skip


def test_every_sandbox_status_is_mapped() -> None:
    assert set(SANDBOX_STATUS) == set(ExecStatus)


def outcome(ok: bool) -> str:
    body = {"ok": True, "value": 42} if ok else {"ok": False, "error": "ValueError: no"}
    return f"printed\n{RESULT_SEPARATOR}{json.dumps(body)}"


@pytest.mark.parametrize("status", list(ExecStatus))
def test_each_status_ends_as_documented(status: ExecStatus) -> None:
    forced = SANDBOX_STATUS[status]
    succeeded = tool_result(CALL, sandbox_result(status, outcome(ok=True)))
    failed = tool_result(CALL, sandbox_result(status, outcome(ok=False)))
    silent = tool_result(CALL, sandbox_result(status, "no outcome line", truncated=True))
    if forced is not None:
        # The sandbox ended the call: whatever the tool printed, the status is forced.
        assert succeeded.status is failed.status is silent.status is forced
        assert succeeded.error == "the message"
    else:
        assert succeeded.status is ToolStatus.OK and succeeded.output == "printed\n42"
        assert failed.status is ToolStatus.ERROR and "ValueError: no" in (failed.error or "")
        assert silent.status is ToolStatus.OUTPUT_TRUNCATED


def refuse(path: str) -> None:
    raise ToolError(f"{path}: No such file or directory")


def crash(path: str) -> None:
    raise KeyError(path)


@pytest.mark.parametrize(
    ("function", "error", "traceback"),
    [
        ("refuse", "notes.txt: No such file or directory", False),
        ("crash", "KeyError: 'notes.txt'", True),
    ],
)
def test_a_tool_error_reaches_the_model_as_its_message_alone(
    capsys: pytest.CaptureFixture[str], function: str, error: str, traceback: bool
) -> None:
    """ToolError: the call went wrong, and the model reads why in one line; any other
    exception is the tool's fault and keeps its traceback for the toolkit's author."""
    exit_code = serve(f"{__name__}:{function}", b'{"path": "notes.txt"}')
    result = tool_result(CALL, sandbox_result(ExecStatus.OK, capsys.readouterr().out))
    assert (exit_code, result.status) == (1, ToolStatus.ERROR)
    first, _, rest = (result.error or "").partition("\n")
    assert first == error
    assert rest.startswith("Traceback (most recent call last):") is traceback, result.error
    if not traceback:
        assert rest == ""


@pytest.mark.parametrize("forged", ["[1]", '"ok"', "null", "[" * 100_000])
def test_an_outcome_line_that_is_not_an_object_is_malformed(forged: str) -> None:
    """A tool can print the separator itself, then die (os._exit, a crash) before the runner
    writes its line: the last separator is the tool's."""
    result = tool_result(
        CALL, sandbox_result(ExecStatus.OK, f"printed\n{RESULT_SEPARATOR}{forged}")
    )
    assert result.status is ToolStatus.ERROR
    assert result.error == "the tool's result was malformed"
