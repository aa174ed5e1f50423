"""The state of one run as one serialisable value, checkpointed after every step.

Everything a run needs to go on lives in :class:`RunState`: the conversation,
the iteration, the calls in flight (asked for by the model, not all answered
yet), the budget used, detection's memory, the memories recalled, the time
worked. The loop checkpoints it after every step (a model turn, the calls
asked for, their answers, a reflection, a summary) into ``runs.db`` in the
state directory (``_durable``: the small state row rewritten, new messages
appended), so a run can be resumed after a restart: calls in flight that
never reached a sandbox are replayed with their ids, which is how the
approval gate finds a decision taken meanwhile.

It is the one mutable value of a run: the loop owns it and changes it step
by step; a checkpoint is a copy of it as JSON.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.agent._detect import DetectionState
from orchestrator.agent._model_reply import ModelToolCall, TokenUsage
from orchestrator.agent._state import RunStatus

__all__ = ["STATE_VERSION", "RunState"]

STATE_VERSION = 1
"""Format of a checkpoint; bumped when a field changes meaning."""


class RunState(BaseModel):
    """One run, in full."""

    # Mutable on purpose (see the module's docstring); strict otherwise.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    version: int = STATE_VERSION
    """Format of this value."""
    run_id: str
    """The run (also its workspace's, its budget's and its calls' run)."""
    goal: str
    """What the run is asked to achieve."""
    principal: str
    """Who it acts for."""
    status: RunStatus = RunStatus.IDLE
    """Where it is."""
    iteration: int = 0
    """Model turns so far (reflections and summaries not counted)."""
    messages: list[dict[str, Any]] = Field(default_factory=list)
    """The conversation in the OpenAI format: system prompt, goal, turns."""
    message_tokens: list[int] = Field(default_factory=list)
    """Estimated tokens of each message (kept beside them so a check costs no re-count)."""
    in_flight: list[ModelToolCall] = Field(default_factory=list)
    """Calls of the latest turn not answered yet (replayed with the same ids on resume)."""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    """Tokens used by every model call of the run."""
    model_calls: int = 0
    """Model calls made (turns, reflections, summaries)."""
    reflections: int = 0
    """Reflections made."""
    interventions: int = 0
    """Intervention messages sent after a detection (the next detection fails the run)."""
    summaries: int = 0
    """Times older turns were summarised."""
    detection: DetectionState = Field(default_factory=DetectionState)
    """Loop and abuse detection's memory."""
    tool_calls: dict[str, int] = Field(default_factory=dict)
    """Tool calls by status (``skipped`` included)."""
    memory_ids: list[int] = Field(default_factory=list)
    """Long-term memories recalled into the prompt."""
    started_at: float = 0.0
    """Unix time the run started."""
    elapsed_s: float = 0.0
    """Time the run has been worked on (at the latest checkpoint), over all the processes
    that drove it; ``run_timeout_s`` bounds it (downtime is not counted)."""
    deadline_at: float | None = None
    """Unix time by which the run must end, downtime included (``deadline_s``); none: no
    deadline."""
    rewrites: int = 0
    """Times older messages were rewritten (summaries, images dropped): a checkpoint then
    writes the whole conversation again instead of appending the new messages."""
    resumes: int = 0
    """Times the run was resumed after its process stopped."""
    answer: str | None = None
    """The final answer, once there is one."""
    reason: str | None = None
    """Why the run ended as it did."""

    def append(self, message: dict[str, Any], tokens: int) -> None:
        """Add a message to the conversation, with its token estimate."""
        self.messages.append(message)
        self.message_tokens.append(tokens)

    def count_call(self, status: str) -> None:
        """Count one tool call under its status."""
        self.tool_calls[status] = self.tool_calls.get(status, 0) + 1
