"""Memory test fixtures: the real MiniLM model, loaded once per session."""

from __future__ import annotations

import pytest

from orchestrator.agent.memory import MiniLMEmbedder


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    """The installed all-MiniLM-L6-v2 (a missing install fails the tests, never skips them)."""
    return MiniLMEmbedder(threads=1)
