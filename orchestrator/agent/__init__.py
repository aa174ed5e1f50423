"""The agent side of Stockade: the agent loop, its memory, and the model client.

- :class:`Agent` runs goals on an open platform: the model asks for tools,
  every call goes through the platform's gateway, the run ends
  ``complete``, ``failed`` or ``cancelled`` with a :class:`RunResult` and an
  execution log (``runs/<run_id>/`` in the state directory); checkpointed
  after every step (``runs.db``), so :meth:`Agent.resume` continues a run
  whose process stopped. Settings in
  :class:`AgentConfig`; progress as typed events (:data:`AgentEvent`).
- :func:`run_batch` runs many goals at once (``stockade run --batch``): items
  from a JSON-lines file (:func:`read_batch`), results as runs end
  (:class:`BatchResult`, kept by :class:`BatchResultsFile`).
- :class:`Memory` (:mod:`orchestrator.agent.memory`): memories recalled for a
  goal, finished runs and lessons remembered across runs.
- :class:`ModelClient` (:mod:`orchestrator.agent.model`): any
  OpenAI-compatible chat-completions server.
"""

from orchestrator.agent._agent import Agent, LeaseHeld, RunHandle
from orchestrator.agent._approvals import ApprovalWatch
from orchestrator.agent._batch import Batch, BatchProgress, run_batch
from orchestrator.agent._batch_file import (
    BatchItem,
    BatchResult,
    BatchResultsFile,
    read_batch,
    results_path_for,
)
from orchestrator.agent._config import DEFAULT_SYSTEM_PROMPT, AgentConfig, DetectionSettings
from orchestrator.agent._durable import RunRow
from orchestrator.agent._events import (
    AgentEvent,
    ApprovalPending,
    ContextSummarised,
    Intervened,
    MemoryRecalled,
    MemoryStored,
    ModelTurn,
    Notice,
    RecalledEntry,
    Reflected,
    RunFinished,
    RunStarted,
    StateChanged,
    ToolCallFinished,
    ToolCallStarted,
    ToolOutput,
    event_adapter,
)
from orchestrator.agent._result import RunResult
from orchestrator.agent._run_state import RunState
from orchestrator.agent._runlog import (
    RUNS_DIR,
    RunSummary,
    list_runs,
    read_events,
    read_result,
    read_state,
)
from orchestrator.agent._state import RunStatus
from orchestrator.agent.memory import Memory
from orchestrator.agent.model import (
    Embeddings,
    ModelClient,
    ModelError,
    ModelReply,
    ModelTimeoutError,
    ModelToolCall,
    TokenUsage,
    UsageMeter,
    tool_message,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "RUNS_DIR",
    "Agent",
    "AgentConfig",
    "AgentEvent",
    "ApprovalPending",
    "ApprovalWatch",
    "Batch",
    "BatchItem",
    "BatchProgress",
    "BatchResult",
    "BatchResultsFile",
    "ContextSummarised",
    "DetectionSettings",
    "Embeddings",
    "Intervened",
    "LeaseHeld",
    "Memory",
    "MemoryRecalled",
    "MemoryStored",
    "ModelClient",
    "ModelError",
    "ModelReply",
    "ModelTimeoutError",
    "ModelToolCall",
    "ModelTurn",
    "Notice",
    "RecalledEntry",
    "Reflected",
    "RunFinished",
    "RunHandle",
    "RunResult",
    "RunRow",
    "RunStarted",
    "RunState",
    "RunStatus",
    "RunSummary",
    "StateChanged",
    "TokenUsage",
    "ToolCallFinished",
    "ToolCallStarted",
    "ToolOutput",
    "UsageMeter",
    "event_adapter",
    "list_runs",
    "read_batch",
    "read_events",
    "read_result",
    "read_state",
    "results_path_for",
    "run_batch",
    "tool_message",
]
