"""What a run may be started with: a goal and a principal a run can record."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.agent import Agent
from orchestrator.config import load_config
from orchestrator.errors import UsageError
from orchestrator.platform import Platform
from orchestrator.testing import ScriptedModelServer
from orchestrator.testing.backend import ScriptedBackend

from .conftest import write_config

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("goal", "principal", "refused"),
    [
        # What Python makes of a command-line argument that is not UTF-8 (b"caf\xe9").
        ("caf\udce9 menu", "ana", "the goal is not valid text"),
        ("a goal", "\udcffana", "the principal is not valid text"),
    ],
)
async def test_text_no_file_can_hold_is_refused_before_the_run_starts(
    tmp_path: Path, goal: str, principal: str, refused: str
) -> None:
    async with ScriptedModelServer() as server:
        config = load_config(write_config(tmp_path, server.base_url), environ={})
        async with (
            Platform.open(config, backend=ScriptedBackend()) as platform,
            Agent.open(platform) as agent,
        ):
            with pytest.raises(UsageError, match=refused) as caught:
                agent.start(goal, principal=principal)
    assert "not UTF-8" in str(caught.value)
    assert server.chat_requests == []
