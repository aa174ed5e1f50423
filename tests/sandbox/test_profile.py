"""Profiles: hardened defaults, loosening only by name, clear errors from files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.sandbox._container import container_options
from orchestrator.sandbox.profile import SandboxProfile


def test_defaults_are_hardened() -> None:
    options = container_options(SandboxProfile(), "img")
    assert options["network_mode"] == "none"
    assert options["read_only"] is True
    assert options["cap_drop"] == ["ALL"]
    assert options["security_opt"] == ["no-new-privileges:true"]
    assert options["user"] == "10001:10001"
    assert options["init"] is False, "the runner is pid 1"
    assert options["ipc_mode"] == "private"
    # Nothing of the host's: only how many threads numeric libraries start (the CPU quota).
    assert options["environment"] == {"OMP_NUM_THREADS": "1"}
    assert options["memswap_limit"] == options["mem_limit"] == 512 * 2**20
    assert options["pids_limit"] == 128
    assert "privileged" not in options and "volumes" not in options
    assert options["mounts"] == [], "no mounts at all without egress"
    assert options["log_config"]["type"] == "none"


def test_gvisor_keeps_the_guest_limit_inside() -> None:
    options = container_options(SandboxProfile(runtime="runsc"), "img")
    assert options["runtime"] == "runsc"
    nproc = [u for u in options["ulimits"] if u["Name"] == "nproc"]
    assert nproc and nproc[0]["Hard"] == 128
    assert options["pids_limit"] > 128


def test_egress_profile_gets_only_its_socket_directory(tmp_path: Path) -> None:
    from orchestrator.sandbox.egress import EgressPolicy

    profile = SandboxProfile(
        runtime="runsc", egress=EgressPolicy(allow=("x.test",)), loosen=frozenset({"egress"})
    )
    options = container_options(profile, "img", egress_dir=tmp_path)
    (mount,) = options["mounts"]
    assert mount["Target"] == "/run/stockade" and mount["Source"] == str(tmp_path)
    assert mount["ReadOnly"] is True and mount["Type"] == "bind"
    assert options["runtime"] == "runsc-egress"
    assert options["network_mode"] == "none", "egress never means a network interface"


def test_tightening_is_free() -> None:
    profile = SandboxProfile(memory_mb=64, cpus=0.5, pids=16, timeout_s=5, output_limit_bytes=4096)
    assert profile.memory_bytes == 64 * 2**20


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("memory_mb", 4096, "memory"),
        ("cpus", 2.0, "cpus"),
        ("pids", 1000, "pids"),
        ("timeout_s", 600.0, "timeout"),
        ("tmp_mb", 1024, "tmpfs"),
        ("workspace_mb", 1024, "workspace"),
        ("output_limit_bytes", 2**30, "output"),
        ("user", "0:0", "root_user"),
    ],
)
def test_loosening_must_be_named(field: str, value: object, name: str) -> None:
    with pytest.raises(ValidationError, match=f"'{name}'"):
        SandboxProfile.model_validate({field: value})
    loosened = SandboxProfile.model_validate({field: value, "loosen": [name]})
    assert getattr(loosened, field) == value


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        SandboxProfile.model_validate({"memroy_mb": 10})
