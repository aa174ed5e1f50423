"""Sandbox profiles: how a tool call's container is built and bounded.

Every default is the hardened one from DESIGN.md. A profile may tighten any
limit freely; to loosen one it must name it in ``loosen``, so a permissive
profile is visible in review and in the audit log.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_serializer, model_validator

from orchestrator.sandbox._image_spec import SPEC_NAME_PATTERN, spec_image_name
from orchestrator.sandbox.egress import EgressPolicy
from orchestrator.strict import StrictModel

__all__ = ["DEFAULT_IMAGE", "TOOLS_IMAGE", "Loosening", "Runtime", "SandboxProfile"]

DEFAULT_IMAGE = "stockade-sandbox"
"""Logical name of the image built from ``sandbox_images/sandbox``."""
TOOLS_IMAGE = "stockade-tools"
"""Logical name of the image with the toolkit SDK and the built-in toolkits."""

Runtime = Literal["runc", "runsc"]
"""OCI runtimes a profile may name: ``runc`` (kernel namespaces), ``runsc`` (gVisor)."""

Loosening = Literal[
    "memory", "cpus", "pids", "timeout", "tmpfs", "workspace", "output", "root_user", "egress"
]

_MiB = 1024 * 1024
PRELOAD_ENV = "STOCKADE_PRELOAD"
"""On the container: the modules the warm tool host imports before its call
(``stockade_sdk.host.PRELOAD_ENV``)."""
TOOLKITS_ENV = "STOCKADE_TOOLKITS"
"""On the container: the toolkit modules the warm tool host imports before its call
(``stockade_sdk.host.TOOLKITS_ENV``); absent: every toolkit of the image."""
LEAN_START_ENV = "STOCKADE_LEAN_START"
"""On a container a caller already waits for: its warm tool host imports only
what every call needs, not the optional preloads (``stockade_sdk.host.LEAN_START_ENV``;
see :mod:`orchestrator.sandbox.pool`)."""
THREADS_ENV = "OMP_NUM_THREADS"
"""On the container: how many threads numeric libraries (OpenBLAS, OpenMP) start, the
profile's CPU quota rounded up; the runner passes it to every program it starts."""
_MODULE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
PYTHON_STATE_ENV = "STOCKADE_PYTHON_STATE"
"""Set for a ``python.run`` call that keeps its namespace: the cap in bytes
(``stockade_sdk._state.STATE_ENV``; the host does not import the SDK's internals)."""


class SandboxProfile(StrictModel):
    """Resources and isolation for the single-use container of one tool call."""

    name: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    """Profile name, used in labels, metrics and policy rules."""

    image: str = DEFAULT_IMAGE
    """Image: a logical name built by ``stockade images build`` or a full reference."""

    image_spec: str | None = Field(default=None, pattern=SPEC_NAME_PATTERN)
    """An image spec of ``images.specs``: the tools image with the spec's packages, built by
    ``stockade images build``. The profile's image is then that image (leave ``image`` out)."""

    runtime: Runtime = "runc"
    """OCI runtime: ``runc`` (kernel namespaces) or ``runsc`` (gVisor, a user-space kernel)."""

    user: str = Field(default="10001:10001", pattern=r"^\d+:\d+$")
    """Numeric ``uid:gid`` the tool runs as; uid 0 needs ``loosen: [root_user]``."""

    memory_mb: int = Field(default=512, ge=16)
    """Memory limit; swap is set equal so nothing spills to swap."""

    cpus: float = Field(default=1.0, gt=0)
    """CPU quota in cores."""

    pids: int = Field(default=128, ge=8)
    """Maximum number of processes and threads (fork bombs stop here)."""

    timeout_s: float = Field(default=30.0, gt=0)
    """Wall-clock deadline of one call; at the deadline the container is destroyed."""

    tmp_mb: int = Field(default=64, ge=1)
    """Size of the ``/tmp`` tmpfs (the root filesystem is read-only)."""

    workspace_mb: int = Field(default=64, ge=1)
    """Workspace quota: the ``/workspace`` tmpfs size and the cap on what comes back."""

    workspace_max_files: int = Field(default=10_000, ge=1)
    """Maximum number of files and directories taken back from a workspace."""

    output_limit_bytes: int = Field(default=1 * _MiB, ge=1024)
    """Cap on each of stdout and stderr; the rest is counted and dropped."""

    pool_size: int = Field(default=2, ge=0, le=64)
    """Warm containers kept ready for this profile (0 disables the pool)."""

    env: dict[str, str] = Field(default_factory=dict)
    """Environment of the tool process. Nothing from the host is ever passed."""

    egress: EgressPolicy | None = None
    """HTTP(S) egress through the orchestrator's proxy; None (the default) means none at all."""

    loosen: frozenset[Loosening] = frozenset()
    """Limits this profile deliberately sets looser than the hardened defaults."""

    python_state: bool = True
    """``python.run`` keeps its namespace between the calls of a run (in the run's
    workspace), as a notebook does; false makes every call stateless."""

    python_state_mb: int = Field(default=32, ge=1)
    """Cap on a kept ``python.run`` namespace, serialised; a bigger one is not saved (the
    previous one stays). The workspace quota bounds it too."""

    python_preload: tuple[Annotated[str, Field(pattern=_MODULE_NAME)], ...] | None = Field(
        default=None, max_length=32
    )
    """Modules the tools image's warm host imports before a call arrives, so snippets (and
    restoring their kept namespace) find them loaded; ``None``: the image's default
    (``numpy``); ``[]``: none. Each costs every pooled container start-up time and memory,
    and each fork a little."""

    host_toolkits: tuple[Annotated[str, Field(pattern=_MODULE_NAME)], ...] | None = Field(
        default=None, max_length=256
    )
    """Toolkit modules the tools image's warm host imports before a call arrives; ``None``:
    every toolkit of the image. The platform sets it to the toolkits of the tools that run
    in this profile or that a policy rule routes here (``sandbox_profile``); any other call
    has its host import the tool's module when it arrives."""

    def container_env(self, *, lean: bool = False) -> dict[str, str]:
        """What the container's own environment holds: the thread count numeric libraries
        should use (:data:`THREADS_ENV`, the CPU quota rounded up), the preload and toolkit
        lists when set, and whether a caller waits for it (``lean``: the optional preloads
        are skipped)."""
        # OpenBLAS and OpenMP size their pools by the machine's cores, not the
        # container's quota: threads beyond the quota only contend for it, and
        # starting them costs every numpy import (~10 ms of CPU here, one
        # thread instead of two) and every exit. The runner gives the value
        # to every program it starts; a request's own value wins.
        env = {THREADS_ENV: str(max(1, math.ceil(self.cpus)))}
        if self.python_preload is not None:
            env[PRELOAD_ENV] = ",".join(self.python_preload)
        if self.host_toolkits is not None:
            env[TOOLKITS_ENV] = ",".join(self.host_toolkits)
        if lean:
            env[LEAN_START_ENV] = "1"
        return env

    def python_state_env(self) -> dict[str, str]:
        """The environment that makes a ``python.run`` call of a kept workspace stateful."""
        if not self.python_state:
            return {}
        cap = min(self.python_state_mb, self.workspace_mb) * _MiB
        return {PYTHON_STATE_ENV: str(cap)}

    @model_validator(mode="before")
    @classmethod
    def _spec_image(cls, data: Any) -> Any:
        # The spec's image replaces the tools image the profile would run.
        if not isinstance(data, dict) or not isinstance(data.get("image_spec"), str):
            return data
        image = spec_image_name(data["image_spec"])
        if data.get("image", image) not in (image, TOOLS_IMAGE):
            raise ValueError(
                f"image {data['image']!r} and image_spec {data['image_spec']!r} both name the "
                "profile's image; an image spec builds on the tools image: leave image out"
            )
        return {**data, "image": image}

    @field_serializer("loosen")
    def _sorted(self, loosen: frozenset[Loosening]) -> list[Loosening]:
        # A set's order changes from process to process; files and hashes must not.
        return sorted(loosen)

    @model_validator(mode="after")
    def _only_named_loosening(self) -> Self:
        default = _hardened()
        looser: dict[Loosening, bool] = {
            "memory": self.memory_mb > default.memory_mb,
            "cpus": self.cpus > default.cpus,
            "pids": self.pids > default.pids,
            "timeout": self.timeout_s > default.timeout_s,
            "tmpfs": self.tmp_mb > default.tmp_mb,
            "workspace": self.workspace_mb > default.workspace_mb
            or self.workspace_max_files > default.workspace_max_files,
            "output": self.output_limit_bytes > default.output_limit_bytes,
            "root_user": self.user.split(":")[0] == "0",
            "egress": self.egress is not None,
        }
        unnamed = sorted(
            key for key, is_looser in looser.items() if is_looser and key not in self.loosen
        )
        if unnamed:
            raise ValueError(
                f"profile {self.name!r} is looser than the hardened defaults in {unnamed}; "
                f"name them in 'loosen' to allow it"
            )
        return self

    @property
    def memory_bytes(self) -> int:
        """Memory limit in bytes."""
        return self.memory_mb * _MiB

    @property
    def workspace_bytes(self) -> int:
        """Workspace quota in bytes."""
        return self.workspace_mb * _MiB


_HARDENED: SandboxProfile | None = None


def _hardened() -> SandboxProfile:
    # Built lazily: validating the defaults must not recurse into itself.
    global _HARDENED  # noqa: PLW0603
    if _HARDENED is None:
        _HARDENED = SandboxProfile.model_construct()
    return _HARDENED
