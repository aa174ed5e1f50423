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
    as_json = stockade("images", "build", "--json", home=tmp_path)
    built = [image["built"] for image in json.loads(as_json.stdout)]
    # Two bases (Python; Python and Node.js), a sandbox image on each, the tools image.
    assert built == [False] * 5
    assert done.stdout.count("up to date") == len(built)


def test_demo_main_job(tmp_path: Path, images: object) -> None:
    """No model configured: the recorded session runs twice through the real platform."""
    started = time.monotonic()
    done = stockade("demo", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 90
    out = done.stdout
    assert "RECORDED, SCRIPTED SESSION" in out
    first, second = out.split("=== run 1 ===")[1].split("=== run 2 ===")
    # Parallel calls, under the shipped default policy, in real containers.
    assert "[1] model: 2 tool calls" in first
    assert '[1]   files.write {"path": "notes.md", ' in first and "→ allow · ok · " in first
    assert "[3] model: 24 tool calls" in first
    # The per-run rate limit cuts the burst short; the model waits as told and batches.
    assert "→ rate_limited · " in first and "rate limit 'tools-per-run' reached" in first
    assert "writes were rate limited; waiting" in first
    # Reflection finds the first answer incomplete; a lesson is stored.
    assert "[5] reflection: not complete — scratch/numbers.txt is still in the workspace" in first
    assert "memory: lesson remembered: Remove scratch data" in first
    # An approver's rule denies the recursive delete; the model recovers with one it approves.
    assert 'shell.run {"command": "rm -rf scratch"}  → require_approval · approval_denied' in first
    assert "auto:demo-no-recursive-delete denied the call" in first
    assert "→ require_approval · approved by auto:demo-scratch-files · ok" in first
    assert "workspace: notes.md  report.txt  scratch/ (0 files)  squares/ (24 files)" in first
    # The second run recalls the first and its lesson, and does the work in one call.
    assert "memory: 2 recalled into the prompt" in second and "lesson (" in second
    assert "My memory has a lesson from an earlier run" in second
    assert "tool calls     1 (ok 1)" in second
    assert "workspace: report.txt  squares/ (30 files)" in second
    assert out.count("run complete after") == 2
    assert "chain intact" in out
    assert not any(tmp_path.iterdir()), "the demo keeps its state in a directory of its own"


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
        again = stockade("approvals", "deny", request_id, home=tmp_path)
        assert (
            again.returncode == 1
            and again.stderr == f"{request_id}: not decided (it is approved)\n"
        )
        unknown = stockade("approvals", "approve", "no-such-id", home=tmp_path)
        assert (
            unknown.returncode == 2
            and unknown.stderr == "Error: no approval request 'no-such-id'\n"
        )
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
    assert [r["event"] for r in records][:5] == [
        "policy_loaded", "approval_requested", "approval_decided", "intent", "call",
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


@pytest.mark.parametrize("source", ["stdin", "argument"])
def test_arguments_that_are_not_utf8_are_said_to_be_so(tmp_path: Path, source: str) -> None:
    """They were called "half a UTF-16 surrogate pair": Python's name for the bytes."""
    raw = b'{"path": "\xff"}'
    command = [sys.executable, "-m", "orchestrator", "tools", "call", "files.read", "--args"]
    done = subprocess.run(
        [*command, "-"] if source == "stdin" else [*command, os.fsdecode(raw)],
        input=raw if source == "stdin" else None,
        capture_output=True, env={**os.environ, "STOCKADE_HOME": str(tmp_path)},
        timeout=60, check=False,
    )  # fmt: skip
    said = done.stderr.decode()
    assert done.returncode == 2, said
    expected = "cannot read standard input: 'utf-8' codec" if source == "stdin" else "is not UTF-8"
    assert f"Invalid value for --args: {expected}" in said


def test_a_sandbox_timeout_that_is_not_positive_names_the_option(tmp_path: Path) -> None:
    """It was "configuration error: timeout_s: must be positive": a field of the request."""
    done = stockade("sandbox", "run", "--timeout", "-5", "--", "true", home=tmp_path)
    assert done.returncode == 2
    assert "Invalid value for '--timeout': -5.0 is not in the range x>0." in done.stderr


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


def test_a_mistyped_name_is_said_before_the_engine_is_needed(tmp_path: Path) -> None:
    """With the engine down, an unknown tool or profile said "cannot reach the Docker
    engine": the platform was opened before the name was looked at."""
    env = {**os.environ, "STOCKADE_HOME": str(tmp_path),
           "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}  # fmt: skip
    commands = {
        "unknown tool 'python.rnu' (tools: files.append,": [
            "tools", "call", "python.rnu", "--args", '{"code": "1"}'
        ],
        "unknown profile 'nope'; configured: default, http": [
            "sandbox", "run", "--profile", "nope", "--", "true"
        ],
    }  # fmt: skip
    for said, command in commands.items():
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", *command],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2, (command, done.stderr)
        assert said in done.stderr and "engine" not in done.stderr, done.stderr


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


def test_every_command_loads_under_its_name_and_only_what_it_needs() -> None:
    """Commands are imported when they run: a light one does not pay for the agent loop's
    OpenAI client, the HTTP server or the MCP SDK (~2 s a process, measured)."""
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from orchestrator.cli import cli\n"
        "result = CliRunner().invoke(cli, ['approvals', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in ('openai', 'mcp', 'starlette', 'orchestrator.agent') "
        "if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout

    import click

    from orchestrator.cli import COMMANDS, cli

    context = click.Context(cli)
    assert cli.list_commands(context) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None and command.name == name, (name, command)
    assert cli.get_command(context, "no-such-command") is None


def test_a_workspace_or_run_id_that_cannot_name_a_run_is_a_usage_error(tmp_path: Path) -> None:
    bad_dir = tmp_path / "my files!"
    bad_dir.mkdir()
    named = stockade("tools", "call", "shell.run", "--args", '{"command": "ls"}',
                     "--workspace", str(bad_dir), home=tmp_path)  # fmt: skip
    assert named.returncode == 2
    assert named.stderr.endswith(
        "Error: invalid --workspace directory's name (it names its run) 'my files!': use "
        "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit\n"
    )
    given = stockade("tools", "call", "shell.run", "--run-id", "../up", home=tmp_path)
    assert given.returncode == 2 and "Error: invalid --run-id '../up'" in given.stderr


def test_a_workspace_the_call_could_not_use_is_a_usage_error(tmp_path: Path) -> None:
    """Not a directory, or beside nothing Stockade may write (the lock and staged changes
    live there): said before anything runs, not as a traceback from the platform."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    shown = stockade("tools", "call", "files.list", "--workspace", str(a_file), home=tmp_path)
    assert shown.returncode == 2
    assert shown.stderr.endswith(f"Directory '{a_file}' is a file.\n")
    locked = tmp_path / "locked"
    (locked / "ws").mkdir(parents=True)
    subprocess.run(["chattr", "+i", str(locked)], check=True)  # not writable, even by root
    try:
        shown = stockade("tools", "call", "files.list", "--workspace", str(locked / "ws"),
                         home=tmp_path)  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert shown.returncode == 2
    assert f"its parent directory {locked} is not writable" in shown.stderr
    assert "Traceback" not in shown.stderr
