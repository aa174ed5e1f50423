"""What a run ends with: :class:`RunResult` (answer, reason, counts, tokens, the execution log)."""

from __future__ import annotations

from pydantic import Field

from orchestrator.agent._events import AgentEvent
from orchestrator.agent._model_reply import TokenUsage
from orchestrator.agent._run_state import RunState
from orchestrator.agent._state import RunStatus
from orchestrator.strict import StrictModel

__all__ = ["RunResult"]


class RunResult(StrictModel):
    """How a run ended, and everything that happened on the way."""

    run_id: str
    """The run."""
    goal: str
    """What it was asked to achieve."""
    principal: str
    """Who it acted for."""
    status: RunStatus
    """``complete``, ``failed`` or ``cancelled``."""
    success: bool
    """True when the run completed with an answer."""
    answer: str | None
    """The final answer (none when the run failed before giving one)."""
    reason: str | None
    """Why it ended that way (always set when it did not complete)."""
    iterations: int
    """Model turns."""
    tool_calls: dict[str, int]
    """Tool calls by status (``ok``, ``denied``, ``rate_limited``…, ``skipped``)."""
    usage: TokenUsage
    """Tokens of every model call (turns, reflections, summaries)."""
    model_calls: int
    """Model calls made."""
    reflections: int
    """Reflections made."""
    summaries: int
    """Times older turns were summarised."""
    interventions: int
    """Intervention messages sent after loop or abuse detection."""
    memory_ids: tuple[int, ...]
    """Long-term memories recalled into the prompt."""
    started_at: float
    """Unix time the run started."""
    duration_s: float
    """Wall-clock time of the run."""
    workspace: str | None
    """The run's workspace directory, when it was kept."""
    log_path: str
    """The execution log (JSON lines, one event each)."""
    log: tuple[AgentEvent, ...] = Field(default=())
    """The execution log: every state change, model turn, tool call, decision, reflection."""

    @property
    def tool_call_count(self) -> int:
        """Tool calls of every status."""
        return sum(self.tool_calls.values())

    @classmethod
    def of(
        cls,
        state: RunState,
        *,
        duration_s: float,
        workspace: str | None,
        log_path: str,
        log: tuple[AgentEvent, ...],
    ) -> RunResult:
        """The result of a finished run's state."""
        return cls(
            run_id=state.run_id,
            goal=state.goal,
            principal=state.principal,
            status=state.status,
            success=state.status is RunStatus.COMPLETE,
            answer=state.answer,
            reason=state.reason,
            iterations=state.iteration,
            tool_calls=dict(state.tool_calls),
            usage=state.usage,
            model_calls=state.model_calls,
            reflections=state.reflections,
            summaries=state.summaries,
            interventions=state.interventions,
            memory_ids=tuple(state.memory_ids),
            started_at=state.started_at,
            duration_s=duration_s,
            workspace=workspace,
            log_path=log_path,
            log=log,
        )
