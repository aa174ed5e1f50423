"""The built-in toolkits, run for real: validated host-side, executed in a sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from orchestrator.gateway import Gateway
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing.platform import open_test_platform
from orchestrator.tools import ToolCall, ToolRegistry, ToolStatus

pytestmark = pytest.mark.docker


@pytest.fixture
async def gateway(images: ImageBuilder, no_leaks: None, tmp_path: Path) -> AsyncIterator[Gateway]:
    toolkits = ("toolkits.files", "toolkits.python", "toolkits.shell")
    async with open_test_platform(tmp_path, toolkits=toolkits) as platform:
        yield platform.gateway


def call(name: str, run_id: str | None = None, **arguments: object) -> ToolCall:
    return ToolCall(id="t", name=name, arguments=json.dumps(arguments), run_id=run_id)


async def test_python_run_output_and_numpy(gateway: Gateway) -> None:
    result = await gateway.call(
        call("python.run", code="import numpy as np\nprint(int(np.arange(10).sum()))")
    )
    assert result.status is ToolStatus.OK, result
    assert json.loads(result.output) == {"stdout": "45\n", "stderr": "", "exit_code": 0}
    assert result.image_digest and result.image_digest.startswith("sha256:")


async def test_entries_not_kept_in_the_workspace_are_named_to_the_model(
    gateway: Gateway,
) -> None:
    """A link or a FIFO the call leaves does not come back: the model reads which, and why."""
    made = await gateway.call(
        call(
            "shell.run",
            run_id="r1",
            command="echo hi > data.txt; ln -s data.txt latest; mkfifo pipe",
        )
    )
    assert made.status is ToolStatus.OK, made
    assert made.files_changed == ("data.txt",)
    assert made.files_rejected == ("latest: symbolic link to 'data.txt'", "pipe: FIFO")
    assert made.for_model().endswith(
        "\nnot kept in the workspace: latest: symbolic link to 'data.txt'"
        "\nnot kept in the workspace: pipe: FIFO"
    )
    listed = await gateway.call(call("shell.run", run_id="r1", command="ls"))
    assert json.loads(listed.output)["stdout"] == "data.txt\n"


async def test_python_run_exception_shows_traceback(gateway: Gateway) -> None:
    result = await gateway.call(call("python.run", code="def f():\n    1 / 0\nf()"))
    assert result.status is ToolStatus.OK, "the tool ran; the snippet failed"
    output = json.loads(result.output)
    assert output["exit_code"] == 1
    assert "ZeroDivisionError" in output["stderr"] and "line 2, in f" in output["stderr"]


async def test_workspace_persists_between_tool_calls(gateway: Gateway) -> None:
    first = await gateway.call(
        call("python.run", run_id="r1", code="open('data.txt', 'w').write('kept')")
    )
    assert first.files_changed == ("data.txt",)
    second = await gateway.call(call("shell.run", run_id="r1", command="cat data.txt; ls -a"))
    assert json.loads(second.output)["stdout"].startswith("kept")
    other = await gateway.call(call("shell.run", run_id="r2", command="ls"))
    assert json.loads(other.output)["stdout"] == "", "another run sees nothing"


async def test_shell_run_exit_code_and_timeout(gateway: Gateway) -> None:
    failed = await gateway.call(call("shell.run", command="echo oops >&2; exit 3"))
    assert json.loads(failed.output) == {"stdout": "", "stderr": "oops\n", "exit_code": 3}
    slow = await gateway.call(call("shell.run", command="sleep 10", timeout_s=0.5))
    assert json.loads(slow.output) == {
        "stdout": "",
        "stderr": "",
        "exit_code": None,
        "killed": "timed out after 0.5 s",
    }


async def test_invalid_calls_never_reach_a_sandbox(gateway: Gateway) -> None:
    missing = await gateway.call(call("python.run"))
    assert missing.status is ToolStatus.INVALID_ARGUMENTS
    assert "code: Field required" in (missing.error or "")
    unknown = await gateway.call(call("python.exec", code="1"))
    assert unknown.status is ToolStatus.UNKNOWN_TOOL
    assert "python.run" in (unknown.error or "")
    assert missing.duration_s == 0.0 and missing.image_digest is None


def test_cli_tools_call(images: ImageBuilder, tmp_path: Path) -> None:
    def stockade(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", "tools", "call", "--json", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "STOCKADE_TOOLKITS": ""},
        )

    workspace = tmp_path / "ws"
    done = stockade(
        "shell.run", "--args", '{"command": "echo hi > f; cat f"}', "--workspace", str(workspace)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(json.loads(done.stdout)["output"])["stdout"] == "hi\n"
    assert (workspace / "f").read_text() == "hi\n"
    bad = stockade("shell.run", "--args", '{"comand": "x"}')
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["status"] == "invalid_arguments"


async def test_files_toolkit_round_trip(gateway: Gateway) -> None:
    run = "files"
    wrote = await gateway.call(call("files.write", run, path="a/b.txt", content="one\ntwo\n"))
    assert wrote.status is ToolStatus.OK, wrote
    assert wrote.files_changed == ("a", "a/b.txt")
    await gateway.call(call("files.append", run, path="a/b.txt", content="three\n"))
    read = await gateway.call(call("files.read", run, path="a/b.txt"))
    assert json.loads(read.output)["content"] == "one\ntwo\nthree\n"
    binary = "AAEC/w=="  # bytes 00 01 02 ff
    await gateway.call(call("files.write", run, path="bin", content=binary, encoding="base64"))
    back = json.loads((await gateway.call(call("files.read", run, path="bin"))).output)
    assert back == {"content": binary, "encoding": "base64", "size": 4, "truncated": False}
    listed = json.loads((await gateway.call(call("files.list", run, recursive=True))).output)
    assert [entry["path"] for entry in listed["entries"]] == ["a", "a/b.txt", "bin"]
    found = json.loads((await gateway.call(call("files.search", run, pattern="^t"))).output)
    assert [(m["path"], m["line"]) for m in found["matches"]] == [("a/b.txt", 2), ("a/b.txt", 3)]
    deleted = await gateway.call(call("files.delete", run, path="bin"))
    assert deleted.status is ToolStatus.OK and deleted.files_changed == ("bin",)


@pytest.mark.parametrize("path", ["../escape.txt", "/etc/passwd", "a/../../x", "."])
async def test_files_outside_the_workspace_are_refused(gateway: Gateway, path: str) -> None:
    tool = "files.delete" if path == "." else "files.read"
    result = await gateway.call(call(tool, "files-out", path=path))
    assert result.status is ToolStatus.ERROR
    refusal = (
        "the workspace itself cannot be deleted" if path == "." else "is outside the workspace"
    )
    assert result.error == (refusal if path == "." else f"{path!r} {refusal}")


async def test_files_errors_are_one_line_naming_the_models_path(gateway: Gateway) -> None:
    """What the model got wrong comes back as the path it gave and what is wrong with it:
    no traceback through the toolkit (tokens the model can do nothing with)."""
    run = "files-err"
    made = await gateway.call(call("files.write", run, path="dir/a.txt", content="a\n"))
    assert made.status is ToolStatus.OK, made
    wrong = {
        ("files.read", "nope.txt"): "nope.txt: No such file or directory",
        ("files.read", "dir"): "dir: Is a directory",
        ("files.list", "dir/a.txt"): "dir/a.txt: Not a directory",
        ("files.delete", "dir"): "dir: Directory not empty",
        ("files.delete", "gone"): "gone: No such file or directory",
        ("files.write", "dir/a.txt/b"): "dir/a.txt: Not a directory",
        ("files.search", "elsewhere"): "elsewhere: No such file or directory",
    }
    for (tool, path), error in wrong.items():
        arguments: dict[str, object] = {"path": path}
        if tool == "files.write":
            arguments["content"] = "x"
        if tool == "files.search":
            arguments["pattern"] = "a"
        result = await gateway.call(call(tool, run, **arguments))
        assert (result.status, result.error) == (ToolStatus.ERROR, error), (tool, path)
    bad_base64 = await gateway.call(
        call("files.write", run, path="x", content="!!", encoding="base64")
    )
    assert bad_base64.error == "content is not valid base64 (Only base64 data is allowed)"
    bad_pattern = await gateway.call(call("files.search", run, pattern="("))
    assert bad_pattern.error == (
        "pattern '(' is not a regular expression: missing ), unterminated subpattern at position 0"
    )
    # A glob that climbs out finds nothing outside the workspace (the sandbox's /etc).
    climbed = await gateway.call(call("files.search", run, pattern="root", glob="../../etc/*"))
    assert json.loads(climbed.output) == {"matches": [], "truncated": False}


async def test_user_toolkit_with_its_own_dependency(
    images: ImageBuilder, no_leaks: None, tmp_path: Path
) -> None:
    registry = ToolRegistry()
    registry.load("toolkits.example_org")
    with pytest.raises(ImportError):
        __import__("tabulate")  # not on the host: only in the sandbox image
    async with open_test_platform(tmp_path, toolkits=("toolkits.example_org",)) as platform:
        result = await platform.gateway.call(
            ToolCall(id="u", name="example_org.table", arguments={"rows": [{"a": "1", "b": "2"}]})
        )
    assert result.status is ToolStatus.OK, result
    assert result.output.splitlines() == [
        "|   a |   b |",
        "|-----|-----|",
        "|   1 |   2 |",
    ]


def test_external_toolkit_is_baked_into_its_image(
    docker_client: docker.DockerClient, images: ImageBuilder, tmp_path: Path
) -> None:
    package = tmp_path / "acme_tools"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from stockade_sdk import tool\n\n\n"
        "@tool\n"
        "def shout(text: str) -> str:\n"
        '    """Shout.\n\n    Args:\n        text: What to shout.\n    """\n'
        "    return text.upper()\n"
    )
    policy = tmp_path / "acme.yaml"
    policy.write_text(
        "version: 1\nrules:\n  - {name: acme, tools: 'acme_tools.*', decision: allow}\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "STOCKADE_TOOLKITS": "acme_tools",
        "STOCKADE_POLICY": str(policy),
    }

    def stockade(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=env,
        )

    built = stockade("images", "build")
    assert built.returncode == 0, built.stderr
    tag = next(
        line.split()[0] for line in built.stdout.splitlines() if line.startswith("stockade-tools:")
    )
    try:
        assert tag != images.resolve("stockade-tools"), "the external toolkit is part of the inputs"
        done = stockade("tools", "call", "--json", "acme_tools.shout", "--args", '{"text": "hi"}')
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["output"] == "HI"
    finally:
        docker_client.images.remove(tag, force=True)


async def test_files_read_is_capped(gateway: Gateway) -> None:
    await gateway.call(
        call("python.run", "big", code="open('big.bin', 'wb').write(b'x' * (2 * 1024 * 1024))")
    )
    first = json.loads((await gateway.call(call("files.read", "big", path="big.bin"))).output)
    assert first["truncated"] is True and first["size"] == 2 * 1024 * 1024
    assert len(first["content"]) == 256 * 1024
    tail = call("files.read", "big", path="big.bin", offset=2 * 1024 * 1024 - 1000)
    rest = json.loads((await gateway.call(tail)).output)
    assert rest["truncated"] is False and rest["content"] == "x" * 1000


async def test_files_search_of_one_huge_line_stays_within_the_sandbox_memory(
    images: ImageBuilder, no_leaks: None, tmp_path: Path
) -> None:
    """Read whole, a 48 MB line (a minified bundle, a dump) took several times its size, and
    the sandbox's memory limit killed the tool: the model read oom_killed."""
    profile = {"memory_mb": 128, "pool_size": 0}
    async with open_test_platform(
        tmp_path, toolkits=("toolkits.files",), profiles={"default": profile}
    ) as platform:
        workspace = platform.workspaces.open("huge")
        with (workspace.path / "dump.json").open("wb") as handle:
            for _ in range(48):
                handle.write(b"x" * (1 << 20))
            handle.write(b"needle\nafter needle\n")
        result = await platform.gateway.call(call("files.search", "huge", pattern="needle"))
    assert result.status is ToolStatus.OK, result
    assert json.loads(result.output)["matches"] == [
        {"path": "dump.json", "line": 1, "text": "…" + "x" * 100 + "needle"},
        {"path": "dump.json", "line": 2, "text": "after needle"},
    ]
