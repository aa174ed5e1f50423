"""Long-term memory: SQLite persistence, the matrix following other processes, cleanup,
memories of another embedder."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from orchestrator.agent.memory import (
    LexicalEmbedder,
    LongTermMemory,
    Memory,
    MemoryKind,
    NewMemory,
)
from orchestrator.config import LexicalEmbedderSettings, MemorySettings
from orchestrator.errors import InfrastructureError

EMBEDDER = LexicalEmbedder(64)
DAY = 86_400.0


def new(content: str, *, scope: str = "principal:alice", at: float = 1000.0) -> NewMemory:
    return NewMemory(
        scope=scope,
        kind=MemoryKind.FACT,
        content=content,
        key=content,
        created_at=at,
        metadata={"n": len(content), "ok": True, "note": None},
    )


def store(path: Path, **options: object) -> LongTermMemory:
    return LongTermMemory(
        path,
        embedder_name=EMBEDDER.name,
        dimension=EMBEDDER.dimension,
        clock=lambda: 2000.0,
        **options,  # type: ignore[arg-type]
    )


def add(memories: LongTermMemory, *contents: str, scope: str = "principal:alice") -> list[int]:
    items = [new(text, scope=scope) for text in contents]
    return [r.id for r in memories.add_many(items, EMBEDDER.embed_sync(contents))]


def find(memories: LongTermMemory, text: str, scope: str = "principal:alice") -> list[str]:
    query = EMBEDDER.embed_sync([text])[0]
    return [r.memory.content for r in memories.search(query, scope=scope, k=10, threshold=0.99)]


def in_child(path: Path, body: str) -> None:
    """Run ``body`` in another Python process with ``memories`` open on ``path``."""
    code = (
        textwrap.dedent(
            f"""
        from orchestrator.agent.memory import LexicalEmbedder, LongTermMemory, MemoryKind, NewMemory
        embedder = LexicalEmbedder(64)
        memories = LongTermMemory({str(path)!r}, embedder_name=embedder.name, dimension=64,
                                  clock=lambda: 2000.0, max_per_scope=None, max_age_days=None)
        def add(*texts, scope="principal:alice"):
            items = [NewMemory(scope=scope, kind=MemoryKind.FACT, content=t, key=t,
                               created_at=1000.0) for t in texts]
            memories.add_many(items, embedder.embed_sync(texts))
        """
        )
        + textwrap.dedent(body)
        + "\nmemories.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_memories_persist_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    first = store(path)
    (memory_id,) = add(first, "the deploy key lives in the vault")
    first.close()
    again = store(path)
    assert find(again, "the deploy key lives in the vault") == ["the deploy key lives in the vault"]
    record = again.get(memory_id)
    assert record is not None
    assert record.metadata == {"n": 33, "ok": True, "note": None}
    assert (record.kind, record.scope, record.created_at) == (
        MemoryKind.FACT,
        "principal:alice",
        1000.0,
    )
    assert np.allclose(record.embedding, EMBEDDER.embed_sync([record.key])[0])
    assert np.frombuffer(path.read_bytes(), dtype=np.uint8).size > 0
    again.close()


def test_another_process_additions_and_deletions_reach_this_matrix(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    here = store(path, max_per_scope=None, max_age_days=None)
    add(here, "written here first")
    in_child(path, 'add("written there one", "written there two", "written there three")')
    # Seen at the next search, without reopening.
    assert find(here, "written there two") == ["written there two"]
    assert len(here) == 4
    # Our own write after theirs: nothing lost, nothing twice.
    add(here, "written here second")
    assert len(here) == 5
    assert len(set(here.index.ids.tolist())) == 5
    # Their cleanup deletes rows this process holds: they leave our matrix too.
    in_child(
        path,
        """
        import sqlite3
        memories._max_per_scope = 2
        print(memories.cleanup())
        """,
    )
    assert find(here, "written there two") == []
    assert len(here) == 2
    assert here.count() == 2
    here.close()


def test_concurrent_writers_in_several_processes(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    here = store(path, max_per_scope=None, max_age_days=None)
    body = 'for i in range(100):\n    add(f"{{tag}} memory {{i}}")\n'
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    f"""
                    from orchestrator.agent.memory import LexicalEmbedder, LongTermMemory, MemoryKind, NewMemory
                    embedder = LexicalEmbedder(64)
                    memories = LongTermMemory({str(path)!r}, embedder_name=embedder.name, dimension=64,
                                              max_per_scope=None, max_age_days=None, busy_timeout_s=30)
                    tag = {tag!r}
                    def add(text):
                        item = NewMemory(scope="principal:alice", kind=MemoryKind.FACT, content=text,
                                         key=text, created_at=1000.0)
                        memories.add(item, embedder.embed_sync([text])[0])
                    """
                )
                + body.format(),
            ]
        )
        for tag in ("left", "right")
    ]
    for i in range(50):
        add(here, f"middle memory {i}")
    for child in children:
        assert child.wait(timeout=120) == 0
    here.refresh()
    ids = here.index.ids.tolist()
    assert len(ids) == len(set(ids)) == 250 == here.count()
    here.close()


def test_cleanup_by_age_and_by_count_per_scope(tmp_path: Path) -> None:
    now = [10 * DAY]
    memories = LongTermMemory(
        tmp_path / "memory.db",
        embedder_name=EMBEDDER.name,
        dimension=EMBEDDER.dimension,
        max_per_scope=3,
        max_age_days=2,
        cleanup_every=10_000,
        clock=lambda: now[0],
    )
    old = [new(f"old {i}", at=DAY) for i in range(2)]
    alice = [new(f"alice {i}", at=9 * DAY + i) for i in range(5)]
    bob = [new(f"bob {i}", scope="principal:bob", at=9 * DAY + i) for i in range(2)]
    items = [*old, *alice, *bob]
    memories.add_many(items, EMBEDDER.embed_sync([m.content for m in items]))
    assert memories.cleanup() == 4  # 2 too old, alice's 2 oldest past the count
    assert memories.count("principal:alice") == 3
    assert memories.count("principal:bob") == 2
    assert find(memories, "alice 0") == []
    assert find(memories, "alice 4") == ["alice 4"]
    now[0] = 20 * DAY
    assert memories.cleanup() == 5
    assert len(memories) == 0
    memories.close()


async def test_memories_of_another_embedder_are_not_recalled_until_reembedded(
    tmp_path: Path,
) -> None:
    settings = MemorySettings(embedder=LexicalEmbedderSettings(dimension=64), threshold=0.9)
    first = await Memory.open(settings, state_dir=tmp_path)
    await first.remember("rotate the API keys monthly", scope="principal:a", kind=MemoryKind.FACT)
    await first.close()
    wider = MemorySettings(embedder=LexicalEmbedderSettings(dimension=128), threshold=0.9)
    second = await Memory.open(wider, state_dir=tmp_path)
    assert await second.recall("rotate the API keys monthly", scope="principal:a") == []
    assert second.long_term.stale_count() == 1
    assert await second.reembed() == 1
    (found,) = await second.recall("rotate the API keys monthly", scope="principal:a")
    assert found.memory.content == "rotate the API keys monthly"
    assert second.long_term.stale_count() == 0
    await second.close()


def test_an_unusable_file_is_our_error(tmp_path: Path) -> None:
    (tmp_path / "memory.db").write_bytes(b"not a database" * 100)
    with pytest.raises(InfrastructureError, match=r"memory\.open"):
        store(tmp_path / "memory.db")
