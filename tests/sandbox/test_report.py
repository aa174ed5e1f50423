"""How a call without the runner's report reads, the same for the Docker and the Ray backend.

The engine's part (real containers killed, OOM-killed, removed) is in
``test_adversarial.py`` and ``test_engine_trouble.py``; here, the reading of
the engine's state each backend hands over, and a reply whose workspace the
host cannot write.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.sandbox._report import RunnerReport, died, failed, replied_applying
from orchestrator.sandbox.execution import ExecStatus
from orchestrator.sandbox.live import LIVE_TAG, LiveDecoder
from orchestrator.sandbox.profile import Runtime, SandboxProfile
from orchestrator.sandbox.workspace import WorkspaceManager

FIELDS: dict[str, Any] = {
    "image_digest": "sha256:abc",
    "container_id": "c0ffee",
    "from_pool": True,
    "profile": "default",
    "runtime": "runsc",
}


def test_a_failed_call_has_no_exit_code_no_output_and_its_sandbox_named() -> None:
    started = time.monotonic() - 0.25
    result = failed(FIELDS, started, ExecStatus.ERROR, "why")
    assert (result.status, result.exit_code, result.stdout, result.stderr) == (
        ExecStatus.ERROR,
        None,
        "",
        "",
    )
    assert (result.message, result.container_id, result.from_pool) == ("why", "c0ffee", True)
    assert result.duration_s >= 0.25


@pytest.mark.parametrize(
    ("state", "runtime"),
    [
        ({}, "runc"),  # gone, or the engine did not answer
        ({}, "runsc"),
        ({"ExitCode": 137, "OOMKilled": False}, "runc"),  # killed, not by the OOM killer
    ],
)
def test_what_the_engine_did_is_a_retryable_infrastructure_error(
    state: dict[str, Any], runtime: Runtime
) -> None:
    profile = SandboxProfile(runtime=runtime)
    with pytest.raises(InfrastructureError) as caught:
        died(state, profile, FIELDS, time.monotonic(), None)
    assert caught.value.code is ErrorCode.CONTAINER_DIED
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("state", "runtime"),
    [
        ({"ExitCode": 137, "OOMKilled": True}, "runc"),  # the engine flags the OOM kill
        ({"ExitCode": 137, "OOMKilled": False}, "runsc"),  # gVisor kills the whole sandbox
    ],
)
def test_a_memory_kill_names_the_limit_and_keeps_what_streamed(
    state: dict[str, Any], runtime: Runtime
) -> None:
    live = LiveDecoder(None)
    live.take(LIVE_TAG + b"1" + b"before the bomb\n")  # one stdout frame
    profile = SandboxProfile(runtime=runtime, memory_mb=64)
    result = died(state, profile, FIELDS, time.monotonic(), live)
    assert result.status is ExecStatus.OOM_KILLED
    assert result.message == "the sandbox ran out of memory and was killed (limit 64 MiB)"
    assert result.stdout == "before the bomb\n"


def test_any_other_end_is_an_error_with_its_exit_code() -> None:
    result = died({"ExitCode": 3}, SandboxProfile(), FIELDS, time.monotonic(), None)
    assert result.status is ExecStatus.ERROR
    assert result.message == "the sandbox died before replying (exit code 3)"


async def test_a_workspace_the_host_cannot_write_is_rejected_with_what_the_tool_printed(
    tiny_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workspace = WorkspaceManager(tiny_disk).open("run")
    (workspace.path / "kept.txt").write_bytes(b"before")
    sent = workspace.outgoing(max_bytes=1 << 20, max_files=10)
    reader = workspace.reader(sent, max_bytes=1 << 20, max_files=10)
    reader.add(b"F644\0big.bin", b"x" * (100 << 10))  # more than the 48 KiB disk holds
    reader.add(b"Kkept.txt")
    report = RunnerReport(exit_code=0, stdout_total=6)
    result = await replied_applying(
        report, b"done.\n", b"", rejection=None, workspace=workspace, sent=sent,
        returned=reader.result(), duration_s=0.1, **FIELDS,
    )  # fmt: skip
    assert result.status is ExecStatus.WORKSPACE_REJECTED
    assert result.message == (
        "the host could not save the workspace the call left (No space left on device); "
        "workspace left unchanged"
    )
    assert str(tiny_disk) not in result.message  # the host's paths stay in its log
    assert (result.stdout, result.files_changed) == ("done.\n", ())
    assert [path.name for path in tiny_disk.iterdir()] == ["run"]
    assert [path.name for path in workspace.path.iterdir()] == ["kept.txt"]
    assert "could not save the workspace of run run" in caplog.text
