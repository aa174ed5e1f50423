"""A run's memory: scopes keep principals apart, lessons come back for similar goals,
finished runs are recalled in later runs (in other processes too), short-term notes stay
bounded and the oldest are summarised."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from orchestrator.agent.memory import (
    ExtractiveSummariser,
    LexicalEmbedder,
    Memory,
    MemoryKind,
    MemoryRecord,
    MiniLMEmbedder,
    extractive_summary,
    memory_scope,
)
from orchestrator.config import LexicalEmbedderSettings, MemorySettings

LEXICAL = MemorySettings(embedder=LexicalEmbedderSettings())


async def open_memory(
    tmp_path: Path, settings: MemorySettings = LEXICAL, **options: object
) -> Memory:
    return await Memory.open(settings, state_dir=tmp_path, **options)  # type: ignore[arg-type]


async def test_one_principal_never_recalls_another_principals_memories(tmp_path: Path) -> None:
    memory = await open_memory(tmp_path)
    goal = "deploy the billing service to staging"
    alice = memory.for_run(principal="alice", run_id="r1")
    await alice.remember_run(goal=goal, success=True, outcome="deployed", answer="v1.2 on staging")
    await alice.store_lesson(goal=goal, lesson="run the migrations before the deploy")
    await alice.remember_fact("staging's database password rotates on Mondays")
    await alice.note("the staging cluster is called blue")
    # Same goal, everything relevant (threshold -1): bob gets nothing of alice's.
    bob = memory.for_run(principal="bob", run_id="r2")
    assert await bob.recall(goal, threshold=-1.0, k=50) == []
    assert (await bob.prompt_context(goal)).text == ""
    assert await memory.recall(goal, scope=bob.scope, threshold=-1.0) == []
    # A principal named like a scope is still only itself.
    sneaky = memory.for_run(principal="namespace:team", run_id="r3")
    assert await sneaky.recall(goal, threshold=-1.0) == []
    # Alice's next run sees her memories, the long-term ones only (notes were r1's).
    again = memory.for_run(principal="alice", run_id="r4")
    kinds = {r.memory.kind for r in await again.recall(goal, threshold=-1.0, k=50)}
    assert kinds == {MemoryKind.RUN, MemoryKind.LESSON, MemoryKind.FACT}
    await memory.close()
    # Nor in another process reading the same file.
    other = await open_memory(tmp_path)
    assert await other.for_run(principal="bob", run_id="r5").recall(goal, threshold=-1.0) == []
    assert await other.for_run(principal="alice", run_id="r6").recall(goal, threshold=-1.0)
    await other.close()


async def test_a_configured_namespace_is_shared_and_separate(tmp_path: Path) -> None:
    team = LEXICAL.model_copy(update={"namespace": "team"})
    shared = await open_memory(tmp_path, team)
    await shared.for_run(principal="alice", run_id="r1").remember_fact("the VPN is down on Fridays")
    found = await shared.for_run(principal="bob", run_id="r2").recall("is the VPN down on Fridays")
    assert [r.memory.content for r in found] == ["the VPN is down on Fridays"]
    assert found[0].memory.scope == "namespace:team" == memory_scope("bob", namespace="team")
    await shared.close()
    per_principal = await open_memory(tmp_path)
    alone = per_principal.for_run(principal="alice", run_id="r3")
    assert await alone.recall("is the VPN down on Fridays", threshold=-1.0) == []
    with pytest.raises(ValueError, match="needs a principal"):
        per_principal.for_run(principal="", run_id="r4")
    await per_principal.close()


async def test_a_lesson_from_a_failed_run_is_recalled_for_a_similar_goal(
    tmp_path: Path, minilm: MiniLMEmbedder
) -> None:
    memory = await open_memory(tmp_path, MemorySettings(), embedder=minilm)
    failed = memory.for_run(principal="alice", run_id="r1")
    await failed.remember_run(
        goal="Summarise the sales figures in report.xlsx",
        success=False,
        outcome="openpyxl is not installed in the sandbox",
    )
    await failed.store_lesson(
        goal="Summarise the sales figures in report.xlsx",
        lesson="openpyxl is missing in the sandbox: convert the spreadsheet to CSV first.",
    )
    await failed.store_lesson(
        goal="Download the nightly build from the CI server",
        lesson="the CI server needs the egress allowlist entry ci.example.org",
    )
    later = memory.for_run(principal="alice", run_id="r2")
    context = await later.prompt_context(
        "Give me an overview of the revenue numbers in the Excel file"
    )
    assert "convert the spreadsheet to CSV first" in context.text
    assert "Lesson from an earlier run" in context.text
    assert "egress allowlist" not in context.text  # another goal's lesson
    assert set(context.ids) <= {r.memory.id for r in context.recalled}
    first = context.recalled[0].memory
    assert first.kind in {MemoryKind.LESSON, MemoryKind.RUN}
    lessons = await later.recall(
        "Give me an overview of the revenue numbers in the Excel file", kinds=[MemoryKind.LESSON]
    )
    assert [r.memory.metadata["goal"] for r in lessons] == [
        "Summarise the sales figures in report.xlsx"
    ]
    unrelated = await later.prompt_context("Write a haiku about autumn leaves")
    assert unrelated.text == "" and unrelated.recalled == ()
    await memory.close()


async def test_a_finished_run_is_recalled_by_a_run_in_another_process(
    tmp_path: Path, minilm: MiniLMEmbedder
) -> None:
    memory = await open_memory(tmp_path, MemorySettings(), embedder=minilm)
    run = memory.for_run(principal="alice", run_id="r1")
    assert await run.recall("count the lines in data.csv") == []
    code = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from orchestrator.agent.memory import Memory
        from orchestrator.config import MemorySettings

        async def main():
            memory = await Memory.open(MemorySettings(), state_dir=Path({str(tmp_path)!r}))
            run = memory.for_run(principal="alice", run_id="child")
            await run.remember_run(goal="Count the rows of data.csv", success=True,
                                   outcome="counted with wc -l", answer="1204 rows")
            await memory.close()

        asyncio.run(main())
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    later = memory.for_run(principal="alice", run_id="r2")
    (found,) = await later.recall("count the lines in data.csv")
    assert "1204 rows" in found.memory.content
    assert found.memory.metadata == {
        "run_id": "child",
        "success": True,
        "goal": "Count the rows of data.csv",
    }
    await memory.close()


def notes_in(memory: MemoryRecord) -> int:
    """How many notes a short-term memory stands for: a summary's ``notes``, else one."""
    if memory.kind is not MemoryKind.SUMMARY:
        return 1
    notes = memory.metadata["notes"]
    assert isinstance(notes, int), memory
    return notes


async def test_short_term_is_bounded_and_summarises_its_oldest_notes(tmp_path: Path) -> None:
    seen: list[list[str]] = []

    async def summarise(memories: Sequence[MemoryRecord]) -> str:
        seen.append([m.content for m in memories])
        return f"summary of {len(memories)} notes"

    memory = await open_memory(
        tmp_path, LEXICAL.model_copy(update={"short_term_size": 4}), summariser=summarise
    )
    run = memory.for_run(principal="alice", run_id="r1")
    for i in range(9):
        await run.note(f"note {i}", metadata={"i": i})
    held = run.short_term.memories
    assert len(held) <= 4
    assert seen[0] == ["note 0", "note 1"]
    assert held[0].kind is MemoryKind.SUMMARY
    # The summaries fold in earlier summaries: every note is accounted for.
    assert sum(notes_in(m) for m in held) == 9
    assert held[-1].content == "note 8"
    (found,) = await run.recall("note 8", kinds=[MemoryKind.NOTE], k=1)
    assert (found.source, found.memory.content) == ("short_term", "note 8")
    assert memory.long_term.count() == 0  # notes stay in the run
    await memory.close()


async def test_default_summary_is_extractive_and_bounded() -> None:
    texts = [
        "The build failed. The log says the linker ran out of memory.",
        "Retried with two jobs!  It passed.",
        "",
        "x" * 1000,
    ]
    summary = extractive_summary(texts, max_chars=120)
    assert len(summary) <= 120
    lines = summary.splitlines()
    assert lines[0] == "- The build failed."
    assert lines[1] == "- Retried with two jobs!"
    assert lines[2].startswith("- xxx") and lines[2].endswith("…")
    assert extractive_summary([]) == ""
    embedder = LexicalEmbedder()
    record = MemoryRecord(
        id=1,
        scope="s",
        kind=MemoryKind.NOTE,
        content="One sentence. Another.",
        key="k",
        created_at=0.0,
        metadata={},
        embedding=embedder.embed_sync(["k"])[0],
    )
    assert await ExtractiveSummariser()([record]) == "- One sentence."


async def test_the_prompt_section_stays_within_its_budget(tmp_path: Path) -> None:
    settings = LEXICAL.model_copy(update={"max_prompt_chars": 400, "top_k": 10})
    memory = await open_memory(tmp_path, settings)
    run = memory.for_run(principal="alice", run_id="r1")
    for i in range(6):
        await run.remember_fact(f"backup rotation rule {i}: keep weekly backup copies {i} months")
    context = await run.prompt_context("backup rotation rule")
    assert 0 < len(context.text) <= 400
    assert 1 <= len(context.recalled) == context.text.count("\n- ") < 6  # whole entries only
    assert len(await run.recall("backup rotation rule")) == 6
    await memory.close()
