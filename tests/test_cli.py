"""The `stockade` command line, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker


def stockade(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STOCKADE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_sandbox_run_prints_the_result(tmp_path: Path, images: object) -> None:
    done = stockade("sandbox", "run", "--", "sh", "-c", "echo hi", home=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ok"
    assert result["stdout"] == "hi\n"
    failed = stockade("sandbox", "run", "--", "sh", "-c", "exit 4", home=tmp_path)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["exit_code"] == 4


def test_workspace_persists_between_cli_calls(tmp_path: Path, images: object) -> None:
    write = stockade(
        "sandbox", "run", "--run-id", "r1", "--", "sh", "-c", "echo kept > f", home=tmp_path
    )
    assert json.loads(write.stdout)["files_changed"] == ["f"]
    read = stockade("sandbox", "run", "--run-id", "r1", "--", "cat", "f", home=tmp_path)
    assert json.loads(read.stdout)["stdout"] == "kept\n"
    other = stockade("sandbox", "run", "--run-id", "r2", "--", "ls", home=tmp_path)
    assert json.loads(other.stdout)["stdout"] == "", "another run sees nothing"


def test_bad_profile_names_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text("sandbox:\n  profiles:\n    big:\n      memory_mb: 99999\n")
    done = stockade("sandbox", "run", "--config", str(config), "--", "true", home=tmp_path)
    assert done.returncode == 2
    assert f"{config}:3: sandbox.profiles.big" in done.stderr
    assert "memory" in done.stderr and "loosen" in done.stderr


def test_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    done = stockade("sandbox", "run", "--profile", "nope", "--", "true", home=tmp_path)
    assert done.returncode == 2
    assert "unknown profile 'nope'; configured: default, http" in done.stderr


def test_images_build_is_idempotent(tmp_path: Path, images: object) -> None:
    done = stockade("images", "build", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("up to date") == 3
    as_json = stockade("images", "build", "--json", home=tmp_path)
    assert [image["built"] for image in json.loads(as_json.stdout)] == [False, False, False]


def test_demo_main_job(tmp_path: Path, images: object) -> None:
    done = stockade("demo", "--calls", "3", home=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "fork bomb (3 s deadline):  [timeout" in out
    assert "memory bomb:               [oom_killed" in out
    assert "read it back in a new container:   [ok" in out and "kept between calls" in out
    assert '6. tool call python.run (numpy): [ok] {"stdout": "5.0\\n"' in out
    assert "7. files.read outside the workspace: [error] PermissionError" in out
    assert "8. shell.run 'rm -rf ./*' needs approval: [approval_denied] auto:demo-no-wiping" in out
    assert "9. a tool that does not exist: [unknown_tool]" in out
    assert "10. audit log: 7 hash-chained records, chain intact" in out
    assert not (tmp_path / "workspaces").exists() or not any((tmp_path / "workspaces").iterdir())


def test_tools_call_goes_through_the_gateway(tmp_path: Path, images: object) -> None:
    """Two terminals: a call waits for approval; `stockade approvals` edits and approves it."""
    env = {**os.environ, "STOCKADE_HOME": str(tmp_path)}
    waiting = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "tools", "call", "shell.run", "--no-prompt", "--json",
         "--args", '{"command": "rm -rf /tmp/x && echo gone"}'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (
            listed := json.loads(stockade("approvals", "list", "--json", home=tmp_path).stdout)
        ):
            assert time.monotonic() < deadline, "no approval request appeared"
            time.sleep(0.2)
        request_id = listed[0]["id"]
        table = stockade("approvals", "list", home=tmp_path).stdout
        assert table.split()[:6] == ["ID", "STATUS", "TOOL", "RUN", "REASON", "USE"]
        assert f"{request_id}  pending" in table
        edit = '{"command": "echo edited"}'
        approved = stockade("approvals", "approve", request_id, "--args", edit, home=tmp_path)
        assert approved.returncode == 0, approved.stderr
        out, _ = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
        waiting.communicate()
    assert waiting.returncode == 0, out[:3000]
    result = json.loads(out)
    assert result["status"] == "ok" and json.loads(result["output"])["stdout"] == "edited\n"

    policy = tmp_path / "no-shell.yaml"
    policy.write_text(
        "version: 1\nrules:\n  - {name: no-shell, tools: shell.run, decision: deny}\n"
    )
    denied = stockade(
        "tools", "call", "shell.run", "--json", "--policy", str(policy),
        "--args", '{"command": "ls"}', home=tmp_path,
    )  # fmt: skip
    assert denied.returncode == 1
    assert json.loads(denied.stdout)["status"] == "denied"

    verified = stockade("audit", "verify", str(tmp_path / "audit.jsonl"), home=tmp_path)
    assert verified.returncode == 0 and "chain intact" in verified.stdout
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records][:4] == [
        "policy_loaded", "approval_requested", "approval_decided", "call",
    ]  # fmt: skip


def test_large_arguments_from_a_file_and_stdin_and_unique_call_ids(
    tmp_path: Path, images: object
) -> None:
    # 150 KB of content: past the ~128 KB the operating system allows one argument.
    arguments = tmp_path / "args.json"
    arguments.write_text(json.dumps({"path": "big.txt", "content": "a" * 150_000}))
    workspace = tmp_path / "ws"
    from_file = stockade("tools", "call", "files.write", "--json", "--args", f"@{arguments}",
                         "--workspace", str(workspace), home=tmp_path)  # fmt: skip
    assert from_file.returncode == 0, from_file.stdout
    assert (workspace / "big.txt").read_text() == "a" * 150_000
    # A program that long runs too (it travels to the interpreter in a file, not as -c).
    program = tmp_path / "program.json"
    program.write_text(json.dumps({"code": "x = '" + "a" * 150_000 + "'\nprint(len(x))"}))
    ran = stockade("tools", "call", "python.run", "--json", "--args", f"@{program}",
                   home=tmp_path)  # fmt: skip
    assert json.loads(json.loads(ran.stdout)["output"])["stdout"] == "150000\n", ran.stdout
    from_stdin = subprocess.run(
        [sys.executable, "-m", "orchestrator", "tools", "call", "python.run", "--json",
         "--args", "-"],
        input=json.dumps({"code": "print('piped')"}), capture_output=True, text=True,
        env={**os.environ, "STOCKADE_HOME": str(tmp_path)}, timeout=120, check=False,
    )  # fmt: skip
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert json.loads(json.loads(from_stdin.stdout)["output"])["stdout"] == "piped\n"
    ids = [json.loads(out.stdout)["call_id"] for out in (from_file, from_stdin)]
    assert len(set(ids)) == 2 and all(i.startswith("cli-") for i in ids)
    missing = stockade("tools", "call", "python.run", "--args", f"@{tmp_path}/nope.json",
                       home=tmp_path)  # fmt: skip
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_every_engine_command_says_the_same_when_the_engine_is_down(tmp_path: Path) -> None:
    env = {**os.environ, "STOCKADE_HOME": str(tmp_path),
           "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}  # fmt: skip
    commands = [
        ["tools", "call", "python.run", "--args", '{"code": "1"}'],
        ["sandbox", "run", "--", "true"],
        ["images", "build"],
        ["cleanup"],
    ]
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", *command],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 1, (command, done.stderr)
        assert "cannot reach the Docker engine" in done.stderr, command
        assert "scripts/setup.sh" in done.stderr, command
        assert "Traceback" not in done.stderr, command


def test_tools_list_as_a_table_and_as_json(tmp_path: Path) -> None:
    listed = stockade("tools", "list", home=tmp_path)
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["TOOL", "PROFILE", "DESCRIPTION"]
    assert any(row.split()[:2] == ["http.fetch", "http"] for row in rows)
    as_json = json.loads(stockade("tools", "list", "--json", home=tmp_path).stdout)
    assert {"name": "python.run", "profile": "default"}.items() <= as_json[
        [t["name"] for t in as_json].index("python.run")
    ].items()


def test_two_cli_processes_share_one_rate_limit(tmp_path: Path, images: object) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nrules:\n  - {name: python, tools: python.run, decision: allow}\n"
        "rate_limits:\n  - {name: one, tools: python.run, scope: global, rate: 1, per_s: 3600}\n"
    )
    code = json.dumps({"code": "print(1)"})
    first = stockade("tools", "call", "python.run", "--json", "--policy", str(policy),
                     "--args", code, home=tmp_path)  # fmt: skip
    second = stockade("tools", "call", "python.run", "--json", "--policy", str(policy),
                      "--args", code, home=tmp_path)  # fmt: skip
    assert json.loads(first.stdout)["status"] == "ok", first.stdout
    refused = json.loads(second.stdout)
    assert refused["status"] == "rate_limited" and refused["retry_after_s"] > 3000
