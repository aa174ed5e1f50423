"""``stockade run`` and ``stockade runs``, run as a user would, against the scripted model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from orchestrator.testing import json_reply, server_error, text, tool_call, tool_calls

from .conftest import Setup, containers_of

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]


def stockade(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "STOCKADE_HOME": str(setup.home), "STOCKADE_CONFIG": str(setup.config)},
    )


def test_run_prints_progress_answer_and_summary(setup: Setup) -> None:
    setup.server.extend(
        tool_calls(
            tool_call("files__write", {"path": "a.txt", "content": "hi"}),
            tool_call("files__read", {"path": "secret.txt"}),
        ),
        text("Wrote a.txt; the secret stays secret."),
        json_reply({"complete": True, "reason": "done"}),
    )
    done = stockade(setup, "run", "Write a.txt and read the secret", "--run-id", "r-1")
    assert done.returncode == 0, done.stderr
    progress = done.stderr
    assert "run r-1 · for " in progress and "goal: Write a.txt and read the secret" in progress
    assert '[1]   files.write {"path": "a.txt", "content": "hi"}  → allow · ok · ' in progress
    assert '[1]   files.read {"path": "secret.txt"}  → deny · denied · ' in progress
    assert "secrets are off limits" in progress
    assert "[2] reflection: complete — done" in progress
    assert "tokens (run " in progress
    out = done.stdout
    assert out.startswith("answer:\nWrote a.txt; the secret stays secret.\n")
    assert "tool calls   2 (denied 1, ok 1)" in out and "status       complete" in out

    listed = json.loads(stockade(setup, "runs", "list", "--json").stdout)
    assert [(r["run_id"], r["status"], r["tool_calls"]) for r in listed] == [("r-1", "complete", 2)]
    shown = stockade(setup, "runs", "show", "r-1", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["answer"].startswith("Wrote a.txt")
    human = stockade(setup, "runs", "show", "r-1").stdout
    assert "→ deny · denied" in human and "status       complete" in human
    assert stockade(setup, "runs", "show", "nope").returncode == 2


def test_a_failed_run_exits_1_with_its_reason(setup: Setup) -> None:
    setup.server.inject(server_error(), server_error(), server_error())
    done = stockade(setup, "run", "Answer", "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "failed" and result["reason"].startswith("no answer from the model")
    assert result["log"][-1]["type"] == "run_finished"


def test_no_model_is_a_usage_error(setup: Setup, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text(f"state_dir: {setup.home}\n")
    done = stockade(setup, "run", "Answer", "--config", str(empty))
    assert done.returncode == 2
    assert "no model configured" in done.stderr and "--base-url" in done.stderr


def _sleeping_run(
    setup: Setup, run_id: str, *, ignoring_ctrl_c: bool = False
) -> subprocess.Popen[str]:
    """``stockade run`` whose one tool call sleeps a minute, once that call has started;
    ``ignoring_ctrl_c``: started as a shell without job control starts ``… &``."""
    setup.server.extend(
        tool_calls(tool_call("python__run", {"code": "import time; time.sleep(60)"}))
    )
    command = [sys.executable, "-m", "orchestrator", "run", "Sleep a minute", "--json",
               "--run-id", run_id, "--no-prompt"]  # fmt: skip
    if ignoring_ctrl_c:  # as the shell does it: ignored, then the command exec-ed
        command = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "STOCKADE_HOME": str(setup.home), "STOCKADE_CONFIG": str(setup.config)},
    )
    deadline = time.monotonic() + 60
    while not setup.sandbox_wanted(run_id):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the call never started: {process.communicate()}")
        time.sleep(0.1)
    return process


def test_ctrl_c_cancels_the_run_and_leaves_no_container(
    setup: Setup, docker_client: docker.DockerClient
) -> None:
    process = _sleeping_run(setup, "r-int")
    try:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 130, err
    result = json.loads(out)
    assert result["status"] == "cancelled" and result["reason"] == "interrupted (Ctrl-C)"
    assert containers_of(docker_client, process.pid) == []
    shown = json.loads(stockade(setup, "runs", "show", "r-int", "--json").stdout)
    assert shown["status"] == "cancelled"
    audited = [r for r in setup.audit() if r["run_id"] == "r-int"]
    assert [r["status"] for r in audited] == ["cancelled"]


def test_a_run_started_ignoring_ctrl_c_keeps_ignoring_it(
    setup: Setup, docker_client: docker.DockerClient
) -> None:
    """``stockade run … &`` from a script: the Ctrl-C typed for what runs in the foreground
    reaches it too, and must not stop it; SIGTERM still does."""
    process = _sleeping_run(setup, "r-bg", ignoring_ctrl_c=True)
    try:
        process.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert process.poll() is None, "Ctrl-C stopped a command started ignoring it"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 130, err
    assert json.loads(out)["reason"] == "terminated"
    assert containers_of(docker_client, process.pid) == []
