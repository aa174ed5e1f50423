"""How an agent runs: model, limits, reflection, memory, context budget, loop detection.

:class:`AgentConfig` is what a caller of the Python API (or ``stockade run``'s
flags) sets per agent; the model and memory settings default to the
platform's own (``stockade.yaml``'s ``model`` and ``memory`` sections).
"""

from __future__ import annotations

from pydantic import Field

from orchestrator.config import ModelSettings
from orchestrator.strict import StrictModel

__all__ = ["DEFAULT_SYSTEM_PROMPT", "AgentConfig", "DetectionSettings"]

DEFAULT_SYSTEM_PROMPT = (
    "You are an agent working towards the user's goal with the tools you are given. "
    "Every tool runs in a fresh sandbox that sees the run's workspace directory; files "
    "you write there stay for the rest of the run. Some calls are refused by the "
    "organisation's policy, rate limited, or wait for a person's approval: read the "
    "tool's answer and adapt (do not repeat a refused call unchanged). When the goal is "
    "reached, reply with the final answer and no tool call."
)
"""The system prompt's first part; recalled memories are added after it."""


class DetectionSettings(StrictModel):
    """When a run counts as stuck or abusive. Each threshold at 0 switches its pattern off.

    A first detection sends the model one intervention message; a second
    (of any pattern) ends the run as failed, naming the pattern.
    """

    repeated_call: int = Field(default=4, ge=0, le=1000)
    """The same tool with the same arguments, answered the same way, this many times in a
    row. A call whose answer changes (a model polling a job that progresses) starts the
    count again; raise it for tools polled while nothing changes."""
    repeated_error: int = Field(default=4, ge=0, le=1000)
    """The same failure (same tool, same error) this many times in a row, whatever the
    arguments."""
    alternating: int = Field(default=3, ge=0, le=1000)
    """Two calls taking turns (A, B, A, B…) with unchanged answers, this many rounds."""
    no_progress_turns: int = Field(default=6, ge=0, le=1000)
    """Model turns in a row in which no tool call succeeded with an answer not seen before
    in the run."""
    denials: int = Field(default=5, ge=0, le=1000)
    """Calls of the run refused by the policy or an approver (the model keeps trying what it
    may not do)."""


class AgentConfig(StrictModel):
    """One agent's settings (the Python API's and ``stockade run``'s)."""

    model: ModelSettings | None = None
    """The model; none: the platform configuration's ``model`` section."""
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, min_length=1)
    """What the model is told first, before any recalled memories."""
    max_iterations: int = Field(default=20, ge=1, le=10_000)
    """Model turns that may ask for tools; a run still going after them fails."""
    max_tool_calls_per_iteration: int = Field(default=8, ge=1, le=256)
    """Tool calls run from one model turn (concurrently); the rest are answered ``skipped``."""
    run_timeout_s: float | None = Field(default=900.0, gt=0)
    """Bound on the time a run is worked on (model and tool calls, approvals included; time
    its process was down before a resume is not counted); the run then fails and its calls
    are cancelled. None: no bound."""
    deadline_s: float | None = Field(default=None, gt=0)
    """Wall-clock bound from the run's start, downtime included (a run resumed past it fails
    at once). None: no deadline."""
    checkpoint: bool = True
    """Checkpoint the run's state after every step (``runs.db``), so it can be resumed after
    a restart. False: nothing is written but the log and the result (benchmarks)."""
    lease_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    """How long a run's lease lasts without a heartbeat (one every third of it): after a
    process stops without a trace (another host or container, a frozen process), another
    may resume the run this long after its last heartbeat. A process of this host and PID
    namespace that died frees its runs at once."""
    reflection: bool = True
    """Ask the model whether the goal is fully achieved before accepting a final answer."""
    max_reflections: int = Field(default=2, ge=0, le=20)
    """Reflections per run; later final answers are accepted as they are."""
    memory: bool | None = None
    """Recall memories for the goal and remember the run; none: the configuration's
    ``memory.enabled``."""
    context_budget_tokens: int = Field(default=24_000, ge=500)
    """Tokens the conversation (and the tool schemas) may take; past ``summarise_at`` of it,
    older turns are summarised by the model."""
    summarise_at: float = Field(default=0.8, gt=0.1, le=1.0)
    """Fraction of the budget at which older turns are summarised (the rest is room for
    the next turn)."""
    keep_recent_turns: int = Field(default=3, ge=1, le=100)
    """Latest model turns (with their tool results) never summarised."""
    max_tool_output_chars: int = Field(default=16_000, ge=200)
    """Longest tool answer put in the conversation; longer ones are cut, saying so."""
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    """Loop and abuse detection."""
    default_principal: str = Field(default="local", min_length=1, max_length=200)
    """Who a run acts for when the caller names nobody (policy, rate limits, memory)."""
    keep_workspace: bool = True
    """Keep the run's workspace directory when the run ends (else it is deleted)."""
