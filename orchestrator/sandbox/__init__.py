"""Single-use, hardened Docker sandboxes with a warm pool.

One request runs in one container, which is destroyed afterwards; a warm pool
per profile hides the start-up latency. See ``README.md`` for the model.
"""

from orchestrator.sandbox.backend import SandboxBackend
from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.execution import ExecRequest, ExecResult, ExecStatus
from orchestrator.sandbox.images import BuiltImage, ImageBuilder
from orchestrator.sandbox.pool import WarmPool
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.sandbox.reaper import ReapedContainer, reap
from orchestrator.sandbox.workspace import Workspace, WorkspaceChanges, WorkspaceManager

__all__ = [
    "BuiltImage",
    "DockerBackend",
    "ExecRequest",
    "ExecResult",
    "ExecStatus",
    "ImageBuilder",
    "ReapedContainer",
    "SandboxBackend",
    "SandboxProfile",
    "WarmPool",
    "Workspace",
    "WorkspaceChanges",
    "WorkspaceManager",
    "reap",
]
