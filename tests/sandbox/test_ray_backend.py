"""The Ray backend's own decisions, without a cluster (issue 14); the cluster tests are in
``tests/cluster``."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from orchestrator.sandbox import ray_backend
from orchestrator.sandbox.ray_backend import RayBackend


@pytest.mark.parametrize(("on", "token"), [(False, False), (True, False)])
async def test_an_orchestrator_without_token_authentication_does_not_join(
    monkeypatch: pytest.MonkeyPatch, on: bool, token: bool
) -> None:
    """A cluster its driver joins without a token runs without token authentication: anyone
    who reaches it runs code next to its hosts' Docker sockets. Refused before joining."""
    monkeypatch.setattr(ray_backend, "token_authentication", lambda: (on, token), raising=False)

    def joined(address: str, namespace: str) -> None:
        raise AssertionError(f"joined {address}")

    monkeypatch.setattr(ray_backend, "connect", joined)
    backend = RayBackend(address="127.0.0.1:6390")
    with pytest.raises(ConfigError, match="RAY_AUTH_MODE=token") as raised:
        await backend.start()
    assert "RAY_AUTH_TOKEN" in str(raised.value) and "docs/scale-out.md" in str(raised.value)
    await backend.close()
