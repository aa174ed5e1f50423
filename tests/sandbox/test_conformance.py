"""The conformance suite every sandbox backend must pass (here: Docker, runc and gVisor)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecStatus
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.workspace import WorkspaceManager

pytestmark = pytest.mark.docker


def req(*argv: str, **kwargs: object) -> ExecRequest:
    return ExecRequest(argv=argv, **kwargs)  # type: ignore[arg-type]


async def test_runs_a_command_with_exit_code_and_streams(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    result = await backend.execute(req("sh", "-c", "echo out; echo err >&2; exit 3"), profile)
    assert result.status is ExecStatus.ERROR
    assert result.exit_code == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert not result.truncated
    assert result.image_digest.startswith("sha256:")
    assert result.runtime == profile.runtime
    assert result.host is None, "the local engine is no named sandbox host"


async def test_ok_and_stdin(backend: DockerBackend, profile: SandboxProfile) -> None:
    result = await backend.execute(req("cat", stdin=b"hello sandbox"), profile)
    assert result.status is ExecStatus.OK
    assert result.exit_code == 0
    assert result.stdout == "hello sandbox"


async def test_warm_pool_serves_calls(backend: DockerBackend, profile: SandboxProfile) -> None:
    await backend.wait_warm(profile)
    first = await backend.execute(req("true"), profile)
    assert first.from_pool
    second = await backend.execute(req("true"), profile)
    assert second.container_id != first.container_id, "a container must never be reused"


async def test_fresh_container_when_pool_disabled(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    cold = profile.model_copy(update={"pool_size": 0})
    result = await backend.execute(req("echo", "cold"), cold)
    assert result.status is ExecStatus.OK
    assert not result.from_pool
    assert result.stdout == "cold\n"


async def test_deadline_kills_command_and_children(
    backend: DockerBackend, profile: SandboxProfile, own_containers: Callable[[], list[str]]
) -> None:
    script = "sleep 300 & sleep 300 & (sh -c 'sleep 300' &); sleep 300"
    result = await backend.execute(req("sh", "-c", script, timeout_s=1), profile)
    assert result.status is ExecStatus.TIMEOUT
    assert result.duration_s < 5
    await backend.close()
    assert own_containers() == []


async def test_output_cap_sets_truncated(backend: DockerBackend, profile: SandboxProfile) -> None:
    cap = profile.output_limit_bytes
    result = await backend.execute(
        req("python3", "-c", f"import sys; sys.stdout.write('x' * {cap * 3})"), profile
    )
    assert result.status is ExecStatus.OUTPUT_TRUNCATED
    assert result.truncated
    assert len(result.stdout) == cap
    assert result.stdout_bytes == cap * 3


async def test_missing_program_and_missing_file(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    missing_program = await backend.execute(req("/no/such/program"), profile)
    assert missing_program.status is ExecStatus.ERROR
    assert "could not be started" in missing_program.message
    missing_file = await backend.execute(req("cat", "/no/such/file"), profile)
    assert missing_file.status is ExecStatus.ERROR
    assert missing_file.exit_code == 1
    assert "No such file" in missing_file.stderr


async def test_runs_as_non_root_without_capabilities(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    result = await backend.execute(
        req("sh", "-c", "id -u; id -g; grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status"), profile
    )
    lines = result.stdout.split("\n")
    assert lines[0:2] == ["10001", "10001"]
    for line in lines[2:5]:
        assert line.split()[1] == "0000000000000000", line


async def test_root_filesystem_is_read_only(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    result = await backend.execute(
        req(
            "sh",
            "-c",
            "for p in /etc/x /usr/x /x /opt/stockade/x; do touch $p || echo denied; done;"
            " awk '$2 == \"/\" {print $4}' /proc/mounts",
        ),
        profile,
    )
    lines = result.stdout.splitlines()
    assert lines[:4] == ["denied"] * 4
    assert lines[4].split(",")[0] == "ro", f"root mount options: {lines[4]}"


async def test_tmp_is_writable_and_sized(backend: DockerBackend, profile: SandboxProfile) -> None:
    result = await backend.execute(
        req("sh", "-c", "echo ok > /tmp/f && cat /tmp/f && df -k /tmp | tail -1"), profile
    )
    assert result.stdout.startswith("ok\n")
    size_kb = int(result.stdout.split("\n")[1].split()[1])
    assert size_kb <= profile.tmp_mb * 1024


async def test_environment_is_only_what_the_profile_gives(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    with_env = profile.model_copy(update={"env": {"GREETING": "hi"}})
    result = await backend.execute(req("env", env={"EXTRA": "1"}), with_env)
    names = {line.split("=", 1)[0] for line in result.stdout.splitlines()}
    assert {"GREETING", "EXTRA", "PATH"} <= names
    # The base the runner gives every program; OMP_NUM_THREADS is the profile's CPU quota.
    base = {"PATH", "HOME", "LANG", "OMP_NUM_THREADS", "PWD", "SHLVL", "_"}
    assert names <= {"GREETING", "EXTRA", *base}
    assert f"OMP_NUM_THREADS={math.ceil(profile.cpus)}" in result.stdout.splitlines()


async def test_request_timeout_cannot_exceed_profile(
    backend: DockerBackend, profile: SandboxProfile
) -> None:
    short = profile.model_copy(update={"timeout_s": 1.0})
    result = await backend.execute(req("sleep", "30", timeout_s=600), short)
    assert result.status is ExecStatus.TIMEOUT
    assert result.duration_s < 5


async def test_only_what_a_call_changed_comes_back(
    backend: DockerBackend, profile: SandboxProfile, tmp_path: Path
) -> None:
    workspace = WorkspaceManager(tmp_path).open("delta")
    for name in ("same.txt", "touched.txt", "sneaky.txt", "gone.txt"):
        (workspace.path / name).write_text(f"{name}\n")
    kept = (workspace.path / "same.txt").stat().st_ino
    untouched = await backend.execute(req("cat", "same.txt", workspace=workspace), profile)
    assert untouched.status is ExecStatus.OK and untouched.files_changed == ()
    assert (workspace.path / "same.txt").stat().st_ino == kept, "nothing changed: nothing written"
    # Rewritten with its mtime put back: only ctime, which no one can set, tells.
    script = (
        "touch touched.txt; t=$(stat -c %y sneaky.txt); echo SNEAKY.txt > sneaky.txt;"
        ' touch -d "$t" sneaky.txt; rm gone.txt; mkdir new; echo n > new/n.txt'
    )
    changed = await backend.execute(req("sh", "-c", script, workspace=workspace), profile)
    assert changed.status is ExecStatus.OK, changed
    assert changed.files_changed == ("gone.txt", "new", "new/n.txt", "sneaky.txt")
    assert (workspace.path / "sneaky.txt").read_text() == "SNEAKY.txt\n"
    assert (workspace.path / "same.txt").read_text() == "same.txt\n"
    assert (workspace.path / "same.txt").stat().st_ino == kept, "kept files are linked, not copied"


async def test_a_workspace_over_the_quota_never_goes_in(
    backend: DockerBackend, profile: SandboxProfile, tmp_path: Path
) -> None:
    workspace = WorkspaceManager(tmp_path).open("too-big")
    (workspace.path / "big.bin").write_bytes(b"x" * (profile.workspace_bytes + 1))
    result = await backend.execute(req("true", workspace=workspace), profile)
    assert result.status is ExecStatus.WORKSPACE_REJECTED
    assert "the call did not run" in result.message
    assert (workspace.path / "big.bin").stat().st_size == profile.workspace_bytes + 1
