"""Connecting to the Docker engine, with one message for every entrance when it is down."""

from __future__ import annotations

import docker
import docker.errors
import requests

from orchestrator.errors import ErrorCode, InfrastructureError

__all__ = ["ENGINE_DOWN_HINT", "connect_engine"]

ENGINE_DOWN_HINT = "start it with `bash scripts/setup.sh` (or check DOCKER_HOST)"
"""What to do when the engine does not answer."""


def connect_engine(*, timeout_s: float = 60.0) -> docker.DockerClient:
    """A client of the engine ``DOCKER_HOST`` names (default: the local socket), checked to answer.

    Raises :class:`~orchestrator.errors.InfrastructureError` (``engine_unavailable``,
    retryable) when the engine does not answer.
    """
    try:
        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise InfrastructureError(
            f"cannot reach the Docker engine ({exc}); {ENGINE_DOWN_HINT}",
            code=ErrorCode.ENGINE_UNAVAILABLE,
            op="engine.connect",
            retryable=True,
        ) from exc
    return client
