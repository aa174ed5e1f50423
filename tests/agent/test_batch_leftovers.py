"""What a batch leaves behind when an item never becomes a run, and which results file it
refuses: on the scripted sandbox backend (the subject is the batch's bookkeeping), the
scripted model server driven through the real ``openai`` SDK."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.agent import (
    Agent,
    AgentConfig,
    BatchItem,
    BatchResult,
    RunStatus,
    _batch,
    run_batch,
)
from orchestrator.cli import cli
from orchestrator.platform import Platform
from orchestrator.testing import ScriptedModelServer, text
from orchestrator.testing.backend import ScriptedBackend

from .conftest import allow_all_config

pytestmark = pytest.mark.timeout(60)

_WAIT_S = 30.0


@asynccontextmanager
async def _agent(home: Path) -> AsyncIterator[Agent]:
    async with ScriptedModelServer([text("done")] * 4) as server:
        config = allow_all_config(home, server.base_url)
        quiet = AgentConfig(reflection=False, memory=False)
        async with (
            Platform.open(config, backend=ScriptedBackend()) as platform,
            Agent.open(platform, quiet) as agent,
        ):
            yield agent


def _left_in(workspaces: Path) -> list[str]:
    """Everything under the workspaces' root (staging and lock files included)."""
    return sorted(str(p.relative_to(workspaces)) for p in workspaces.rglob("*"))


async def test_an_item_stopped_after_its_files_were_written_leaves_no_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "state"
    writing = threading.Event()
    stopped = threading.Event()
    seed = _batch._seed

    def seed_then_wait(root: Path, files: dict[str, str]) -> None:
        seed(root, files)
        writing.set()  # the files are written; the run has not started
        assert stopped.wait(_WAIT_S)

    # The one window that matters is between two statements of Batch._one: the test holds
    # the writing thread there (nothing else reaches into the batch).
    monkeypatch.setattr(_batch, "_seed", seed_then_wait)
    items = [BatchItem(id="a", goal="g", files={"in/data.txt": "x"})]
    async with _agent(home) as agent:
        batch = run_batch(agent, items)

        async def collect() -> list[BatchResult]:
            return [result async for result in batch]

        collecting = asyncio.create_task(collect())
        try:
            assert await asyncio.to_thread(writing.wait, _WAIT_S)
            assert _left_in(home / "workspaces"), "the files were not written"
            batch.stop("stopped by the test")
        finally:
            stopped.set()
        results = await asyncio.wait_for(collecting, _WAIT_S)
    assert [(r.status, r.error, r.log_path) for r in results] == [
        (RunStatus.CANCELLED, "stopped by the test", None)
    ]
    assert _left_in(home / "workspaces") == []


async def test_an_item_whose_run_cannot_start_leaves_no_workspace(tmp_path: Path) -> None:
    home = tmp_path / "state"
    # Agent.start refuses a goal no log could hold (a lone surrogate); BatchItem refuses it
    # first, so the item is built unchecked: it stands for any start refused.
    items = [BatchItem.model_construct(id="a", goal="bad \ud800 goal", files={"data.txt": "x"},
                                       principal=None)]  # fmt: skip
    async with _agent(home) as agent:
        results = [result async for result in run_batch(agent, items)]
    assert [r.status for r in results] == [RunStatus.FAILED]
    assert "is not valid text" in (results[0].error or "")
    assert _left_in(home / "workspaces") == []


@pytest.mark.parametrize("how", ["same", "relative", "link"])
def test_the_results_file_cannot_be_the_batch_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    batch = tmp_path / "tasks.jsonl"
    line = '{"id": "a", "goal": "g"}\n'
    batch.write_text(line)
    monkeypatch.chdir(tmp_path)
    results = {"same": str(batch), "relative": "./tasks.jsonl", "link": str(tmp_path / "r")}[how]
    if how == "link":
        (tmp_path / "r").symlink_to(batch)
    config = tmp_path / "stockade.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nmodel: {{base_url: 'http://127.0.0.1:9/v1', name: m}}\n"
    )
    done = CliRunner().invoke(
        cli,
        ["run", "--config", str(config), "--batch", str(batch), "--results", results],
        catch_exceptions=False,
    )
    assert done.exit_code == 2, done.output
    assert f"--results {Path(results)}" in done.output and str(batch) in done.output
    assert "is the batch file" in done.output
    assert batch.read_text() == line  # nothing appended
