"""What `stockade` says when the operator gets something wrong: one line on standard error
naming what was wrong, the documented exit code, never a Python traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from orchestrator.cli import cli, main
from orchestrator.cli._common import EXIT_FAILED, EXIT_USAGE
from orchestrator.errors import NotFoundError, UsageError


def stockade(*args: str | bytes, home: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        env={**os.environ, "STOCKADE_HOME": str(home), **env},
        timeout=60,
        check=False,
    )


def one_error_line(done: subprocess.CompletedProcess[bytes]) -> str:
    stderr = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, stderr
    assert done.stdout == b""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "command"),
    [
        ("STOCKADE_APPROVALS_DB", ("approvals", "list")),
        ("STOCKADE_AUDIT_LOG", ("audit", "verify")),
        ("STOCKADE_AUDIT_LOG", ("audit", "tail")),
    ],
)
def test_a_state_file_that_is_a_directory_is_named(
    tmp_path: Path, variable: str, command: tuple[str, ...]
) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    done = stockade(*command, home=tmp_path, **{variable: str(directory)})
    line = one_error_line(done)
    assert done.returncode == EXIT_FAILED
    assert str(directory) in line and "directory" in line


def test_a_state_directory_that_is_a_file_is_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a directory\n")
    done = stockade("approvals", "list", home=home)
    line = one_error_line(done)
    assert done.returncode == EXIT_FAILED
    assert str(home) in line


@pytest.mark.parametrize(
    "command", [("approvals", "show"), ("approvals", "deny"), ("tokens", "revoke")]
)
def test_an_argument_that_is_not_utf8_is_a_usage_error(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    done = stockade(*command, b"\xffid", home=tmp_path)
    line = one_error_line(done)
    assert done.returncode == EXIT_USAGE
    assert "UTF-8" in line and r"\udcffid" in line


@pytest.mark.parametrize("command", [("policy", "check"), ("config", "check")])
def test_an_error_shows_no_control_sequence_from_the_file(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A key of a file from elsewhere (a pull request, a shared directory) is quoted in the
    error: its escape sequences must not set the window title or write the clipboard."""
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text('version: 1\n"\\e]52;c;cm0gLXJmIH4=\\a\\e[2J": 1\n')
    done = stockade(*command, str(hostile), home=tmp_path)
    line = one_error_line(done)
    assert done.returncode == EXIT_USAGE
    assert f"{hostile}:2:" in line and "unknown field" in line
    assert "\x1b" not in line and "\x07" not in line


def test_a_click_error_shows_no_control_sequence(tmp_path: Path) -> None:
    done = stockade("tokens", "revoke", "\x1b]0;pwned\x07id", home=tmp_path)
    line = one_error_line(done)
    assert done.returncode == EXIT_USAGE  # no such token
    assert "\x1b" not in line and "\x07" not in line


def test_a_usage_error_shows_no_control_sequence(tmp_path: Path) -> None:
    done = stockade("tools", "call", "files.read", "--args", "@\x1b]0;pwned\x07", home=tmp_path)
    stderr = done.stderr.decode()
    assert done.returncode == EXIT_USAGE
    assert "Invalid value for --args: cannot read" in stderr
    assert "\x1b" not in stderr and "\x07" not in stderr


@pytest.mark.parametrize(
    "command",
    [
        ("approvals", "show", "no-such-id"),
        ("approvals", "approve", "no-such-id"),
        ("approvals", "deny", "no-such-id"),
        ("tokens", "revoke", "no-such-id"),
        ("runs", "show", "no-such-id"),
        ("tools", "schema", "no.such_tool"),
        ("audit", "verify"),
        ("audit", "timeline"),
        ("policy", "replay", "policies/default.yaml"),
    ],
)
def test_a_name_that_names_nothing_exits_like_a_usage_error(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Every command answers an id, a name or a log that does not exist the same way: one
    line, exit 2 (a mistake in what was typed; nothing was attempted, so not 1)."""
    done = stockade(*command, home=tmp_path)
    line = one_error_line(done)
    assert done.returncode == EXIT_USAGE, line
    assert any(word in line for word in ("no ", "unknown")), line


def test_revoking_a_revoked_token_fails_but_is_no_usage_error(tmp_path: Path) -> None:
    """The token exists: like deciding a decided approval request, the change did not
    happen (exit 1); only an id that names no token is a mistake in the command (exit 2)."""
    created = stockade(
        "tokens", "create", "--principal", "ana", "--role", "caller", "--json", home=tmp_path
    )
    token_id = json.loads(created.stdout)["id"]
    assert stockade("tokens", "revoke", token_id, home=tmp_path).returncode == 0
    again = stockade("tokens", "revoke", token_id, home=tmp_path)
    assert again.returncode == EXIT_FAILED
    assert again.stderr.decode() == f"{token_id}: not revoked (it was revoked already)\n"


@pytest.mark.parametrize(
    "error", [UsageError("run id 'r1' is already used"), NotFoundError("no run 'r1'")]
)
def test_a_value_the_library_refuses_exits_like_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: Exception
) -> None:
    """`stockade run --run-id` of a used run, a blank goal: refused by the agent after the
    command passed them on, they exited 1 as if something had failed to run."""

    @click.command("refused")
    def refused() -> None:
        raise error

    monkeypatch.setitem(cli.commands, "refused", refused)
    monkeypatch.setattr(sys, "argv", ["stockade", "refused"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == EXIT_USAGE
    assert capsys.readouterr().err == f"error: {error}\n"


def test_a_stockade_yaml_in_the_current_directory_is_named_but_never_read(
    tmp_path: Path,
) -> None:
    """A directory one runs in (a checkout, an agent's workspace) must not configure the
    platform: its stockade.yaml is not read without --config or $STOCKADE_CONFIG, and the
    command says so on stderr instead of leaving the operator to wonder."""
    (tmp_path / "stockade.yaml").write_text("version: 1\nsandbox: {runtime: runsc}\n")
    environ = {k: v for k, v in os.environ.items() if k != "STOCKADE_CONFIG"}

    def show(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "config", "show", "--json", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**environ, "STOCKADE_HOME": str(tmp_path / "home")},
            timeout=60,
            check=False,
        )

    beside = show()
    assert beside.returncode == 0, beside.stderr
    runtime = json.loads(beside.stdout)["sandbox.runtime"]
    assert runtime == {"value": "runc", "source": "default"}, "the file was not read"
    assert "note: ./stockade.yaml is not read: pass --config stockade.yaml" in beside.stderr
    chosen = show("--config", "stockade.yaml")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["sandbox.runtime"]["value"] == "runsc"
    assert "note:" not in chosen.stderr
