"""The host's encoder and the runner's decoder agree; bad requests never leave the host."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from functools import partial
from pathlib import Path, PurePosixPath
from types import ModuleType

import pytest

from orchestrator.errors import ConfigError
from orchestrator.sandbox import profile
from orchestrator.sandbox._archive import KEPT, WorkspaceReader
from orchestrator.sandbox._report import RunnerReport
from orchestrator.sandbox._wire import (
    MODE_EXEC,
    MODE_TOOL,
    PROTOCOL_VERSION,
    READY,
    TOOL_ENTRY_ARGV,
    encode_request,
)
from orchestrator.sandbox.execution import ExecRequest
from orchestrator.sandbox.workspace import WorkspaceManager
from stockade_sdk import host

RUNNER = Path(__file__).resolve().parents[2] / "sandbox_images" / "runner" / "stockade_runner.py"


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stockade_runner", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["stockade_runner"] = module
    spec.loader.exec_module(module)
    return module


def test_request_round_trip(runner: ModuleType) -> None:
    argv = ("sh", "-c", "echo 'a b'\n\"quoted\" ü =", "")
    header = encode_request(
        argv=argv,
        env={"A": "1", "B": "x=y"},
        cwd="/workspace",
        timeout_s=2.5,
        output_limit=1024,
        stdin_limit=3,
        workspace_limit=4096,
        return_workspace=True,
    )
    decoded = runner.Request(header)
    assert decoded.argv == list(argv)
    assert decoded.env["A"] == "1" and decoded.env["B"] == "x=y"
    assert decoded.env["PATH"].startswith("/usr/local/bin")
    assert (decoded.timeout_s, decoded.output_limit, decoded.stdin_limit) == (2.5, 1024, 3)
    assert decoded.workspace_limit == 4096 and decoded.return_workspace is True
    assert decoded.mode == MODE_EXEC
    assert runner.PROTOCOL_VERSION == PROTOCOL_VERSION and runner.READY == READY


def test_tool_requests_and_the_tool_host_agree(runner: ModuleType) -> None:
    argv = (*TOOL_ENTRY_ARGV, "toolkits.files:read")
    header = encode_request(
        argv=argv, env={}, cwd="/workspace", timeout_s=1, output_limit=1, stdin_limit=1,
        workspace_limit=1, return_workspace=False, mode=MODE_TOOL,
    )  # fmt: skip
    decoded = runner.Request(header)
    assert decoded.mode == runner.MODE_TOOL == MODE_TOOL
    # What the runner hands its warm host is what the host stands in for.
    assert tuple(decoded.argv[:-1]) == host.ENTRY_ARGV == TOOL_ENTRY_ARGV
    with pytest.raises(ValueError, match="mode"):
        runner.Request(header.replace(b"\0tool\0", b"\0shell\0"))


def test_the_container_variables_for_the_tool_host_agree(runner: ModuleType) -> None:
    # Spelled three times (the SDK and the runner import nothing of the
    # orchestrator): what the backend sets is what the runner passes on and
    # what the host reads.
    for name in ("PRELOAD_ENV", "TOOLKITS_ENV", "LEAN_START_ENV"):
        assert getattr(profile, name) == getattr(host, name) == getattr(runner, f"_{name}")


def test_the_thread_count_is_spelled_alike_and_reaches_every_program(
    runner: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert profile.THREADS_ENV == runner._THREADS_ENV
    env = profile.SandboxProfile(cpus=1.5, loosen=frozenset({"cpus"})).container_env()
    assert env[profile.THREADS_ENV] == "2"
    assert profile.SandboxProfile(cpus=0.25).container_env()[profile.THREADS_ENV] == "1"
    monkeypatch.setenv(profile.THREADS_ENV, env[profile.THREADS_ENV])
    encode = partial(
        encode_request,
        cwd="/workspace",
        timeout_s=1.0,
        output_limit=1,
        stdin_limit=0,
        workspace_limit=0,
        return_workspace=False,
    )
    plain = runner.Request(encode(argv=("true",), env={}))
    assert plain.env[profile.THREADS_ENV] == "2"
    own = runner.Request(encode(argv=("true",), env={profile.THREADS_ENV: "4"}))
    assert own.env[profile.THREADS_ENV] == "4"  # the request's own value wins


def test_runner_refuses_another_protocol_version(runner: ModuleType) -> None:
    with pytest.raises(ValueError, match="protocol version"):
        runner.Request(b"0\x001")


class Channel:
    """The runner's side of the stream, fed with frames the host encoded."""

    def __init__(self, framed: list[bytes]) -> None:
        data = b"".join(framed)
        self.payloads: list[bytes] = []
        while data:
            size = int.from_bytes(data[:4], "big")
            self.payloads.append(data[4 : 4 + size])
            data = data[4 + size :]

    def frame(self, limit: int) -> bytes:
        payload = self.payloads.pop(0)
        assert len(payload) <= limit
        return payload

    def frame_to(self, fd: int, limit: int) -> tuple[int, None]:
        payload = self.frame(limit)
        os.write(fd, payload)
        return len(payload), None


def test_the_workspace_round_trip_sends_back_only_what_changed(
    runner: ModuleType, tmp_path: Path
) -> None:
    workspace = WorkspaceManager(tmp_path / "host").open("r")
    for name in ("keep.txt", "touched.txt", "restored.txt", "deleted.txt"):
        (workspace.path / name).write_text(f"{name} content")
    (workspace.path / "sub").mkdir()
    (workspace.path / "sub" / "deep.txt").write_text("deep")
    sent = workspace.outgoing(max_bytes=4096, max_files=20)
    inside = tmp_path / "container"
    inside.mkdir()
    snapshot, error = runner._receive_workspace(
        Channel([part for batch in sent.batches() for part in batch]), str(inside), 4096
    )
    assert error is None
    assert (inside / "sub" / "deep.txt").read_text() == "deep"

    # What a call does: touch without change, rewrite and put the mtime back
    # (ctime still moves), delete, add, link.
    os.utime(inside / "touched.txt")
    before = os.stat(inside / "restored.txt")
    (inside / "restored.txt").write_text("RESTORED.txt content")
    os.utime(inside / "restored.txt", ns=(before.st_atime_ns, before.st_mtime_ns))
    (inside / "deleted.txt").unlink()
    (inside / "sub" / "new.txt").write_text("new")
    (inside / "link").symlink_to("/etc/passwd")
    os.link(inside / "sub" / "new.txt", inside / "sub" / "twin.txt")

    listing, error = runner._list_workspace(str(inside), snapshot, 4096)
    assert error is None
    kinds = {entry[0].rpartition(b"\0")[2].lstrip(b"DFKR"): entry[0][:1] for entry in listing}
    assert kinds[b"keep.txt"] == kinds[b"sub/deep.txt"] == b"K", "untouched files stay home"
    assert kinds[b"touched.txt"] == kinds[b"restored.txt"] == b"F"
    reader = WorkspaceReader(sent=sent.sizes, max_bytes=4096, max_files=20)
    for header, source, _size in listing:
        reader.add(header, Path(os.fsdecode(source)).read_bytes() if source else None)
    returned = reader.result()
    assert returned.entries[PurePosixPath("keep.txt")] is KEPT
    changes = workspace.apply(returned, sent)
    assert changes.changed == ("deleted.txt", "restored.txt", "sub/new.txt")
    assert sorted(changes.rejected) == [
        "link: symbolic link to '/etc/passwd'",
        "sub/twin.txt: hard link to 'sub/new.txt'",
    ]
    assert (workspace.path / "restored.txt").read_text() == "RESTORED.txt content"
    assert (workspace.path / "keep.txt").read_text() == "keep.txt content"


@pytest.mark.parametrize(
    "value",
    [
        0,
        -3,
        2.5,
        True,
        False,
        None,
        "plain",
        'quote " backslash \\ newline \n tab \t',
        "ü \x00 \x1f",
        "lone \udcff surrogate",
    ],
)
def test_runner_json_is_valid_and_parsed_back(runner: ModuleType, value: object) -> None:
    encoded = runner._json({"workspace_error": value}).encode("utf-8", "backslashreplace")
    parsed = json.loads(encoded)["workspace_error"]
    if isinstance(value, str) and "\udcff" in value:
        assert parsed == value.replace("\udcff", "\ufffd")
    else:
        assert parsed == value


def test_report_validation_refuses_forgeries() -> None:
    with pytest.raises(ValueError, match="extra"):
        RunnerReport.model_validate_json('{"exit_code": 0, "admin": true}')
    with pytest.raises(ValueError, match="greater than or equal"):
        RunnerReport.model_validate_json('{"stdout_total": -1}')


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"argv": ()}, "argv"),
        ({"argv": ("echo", "a\x00b")}, "argv"),
        ({"argv": ("true",), "env": {"A=B": "1"}}, "env"),
        ({"argv": ("true",), "env": {"A": "\x00"}}, "env"),
        ({"argv": ("true",), "timeout_s": 0}, "timeout_s"),
        ({"argv": ("true",), "timeout_s": float("nan")}, "timeout_s"),  # sandbox run --timeout
    ],
)
def test_bad_requests_are_refused_before_any_container(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        ExecRequest(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
