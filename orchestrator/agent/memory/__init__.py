"""The agent's memory: short-term notes of a run, long-term memories kept across runs.

- :class:`Memory` is opened once per process (``await Memory.open(config.memory,
  state_dir=config.state_dir, model=config.model)``); :meth:`Memory.for_run`
  gives each run a :class:`RunMemory` bound to its scope — the principal, or
  the namespace the configuration names — so no principal recalls another's
  memories.
- A run recalls what is relevant to its goal into the system prompt
  (:meth:`RunMemory.prompt_context`), keeps notes (short-term, bounded, the
  oldest half summarised by a :class:`Summariser`), remembers itself when it
  ends (:meth:`RunMemory.remember_run`) and, when it failed or fell short,
  stores a lesson tied to its goal (:meth:`RunMemory.store_lesson`, Reflexion)
  that later runs with similar goals recall.
- Recall is one matrix-vector product over one float32 matrix of normalised
  embeddings, a threshold and ``argpartition`` (:class:`VectorIndex`).
  Long-term memories live in SQLite (``memory.db`` in the state directory)
  and every process's matrix follows the others' additions and deletions
  (:class:`LongTermMemory` explains how).
- Embedders are pluggable (:class:`Embedder`): :class:`MiniLMEmbedder`
  (offline default, installed with Stockade), :class:`OpenAIEmbedder` (any
  OpenAI-compatible ``/embeddings``) and :class:`LexicalEmbedder` (fallback,
  no model).
"""

from orchestrator.agent.memory._embedder import Embedder
from orchestrator.agent.memory._index import VectorIndex, normalise_rows
from orchestrator.agent.memory._lexical import LexicalEmbedder
from orchestrator.agent.memory._long_term import LongTermMemory
from orchestrator.agent.memory._memory import MEMORY_DATABASE, Memory, RunMemory
from orchestrator.agent.memory._minilm import (
    MINILM_MODEL_SHA256,
    MINILM_TOKENIZER_SHA256,
    MiniLMEmbedder,
    MiniLMUnavailableError,
)
from orchestrator.agent.memory._openai import OpenAIEmbedder
from orchestrator.agent.memory._prompt import MemoryContext, memory_context
from orchestrator.agent.memory._records import (
    MemoryKind,
    MemoryRecord,
    MetadataValue,
    NewMemory,
    RecalledMemory,
)
from orchestrator.agent.memory._scope import memory_scope
from orchestrator.agent.memory._select import open_embedder
from orchestrator.agent.memory._short_term import ShortTermMemory
from orchestrator.agent.memory._summary import ExtractiveSummariser, Summariser, extractive_summary

__all__ = [
    "MEMORY_DATABASE",
    "MINILM_MODEL_SHA256",
    "MINILM_TOKENIZER_SHA256",
    "Embedder",
    "ExtractiveSummariser",
    "LexicalEmbedder",
    "LongTermMemory",
    "Memory",
    "MemoryContext",
    "MemoryKind",
    "MemoryRecord",
    "MetadataValue",
    "MiniLMEmbedder",
    "MiniLMUnavailableError",
    "NewMemory",
    "OpenAIEmbedder",
    "RecalledMemory",
    "RunMemory",
    "ShortTermMemory",
    "Summariser",
    "VectorIndex",
    "extractive_summary",
    "memory_context",
    "memory_scope",
    "normalise_rows",
    "open_embedder",
]
