"""The agent loop's metrics, under Stockade's names and the GenAI conventions' names.

The loop reports what happened as typed events; :meth:`AgentMetrics.observe`
turns each into metrics, so the loop calls one method per event and knows no
metric. Failures that no event carries (a model request that failed for good,
one retried) have their own methods. The events are read structurally (the
protocols below), so this module needs nothing from the agent package.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, cast

from prometheus_client import Counter

from orchestrator.errors import ErrorCode
from orchestrator.metrics import genai
from orchestrator.metrics._buckets import AGENT_ITERATIONS, AGENT_RUN_SECONDS
from orchestrator.metrics._factory import InstrumentFactory

__all__ = [
    "INTERVENTION_PATTERNS",
    "MODEL_ERROR_REASONS",
    "RUN_OUTCOMES",
    "UNKNOWN_TOOL_LABEL",
    "AgentEventLike",
    "AgentMetrics",
]

UNKNOWN_TOOL_LABEL = "unknown"
"""The tool label of calls naming a tool that does not exist (the name is the model's)."""

RUN_OUTCOMES = ("complete", "failed", "cancelled")
"""How a run ends."""
INTERVENTION_PATTERNS = ("repeated_call", "repeated_error", "alternating", "no_progress", "denials")
"""What loop and abuse detection finds."""
MODEL_ERROR_REASONS = tuple(
    code.value
    for code in (
        ErrorCode.MODEL_UNAVAILABLE,
        ErrorCode.MODEL_RATE_LIMITED,
        ErrorCode.TIMEOUT,
        ErrorCode.MODEL_ERROR,
        ErrorCode.MODEL_PROTOCOL,
    )
)
"""Why a model request fails: the model client's error codes."""


class AgentEventLike(Protocol):
    """Any event of a run: its kind and its run."""

    @property
    def type(self) -> str: ...
    @property
    def run_id(self) -> str: ...


class _RunStarted(AgentEventLike, Protocol):
    @property
    def model(self) -> str: ...


class _Usage(Protocol):
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...


class _ModelTurn(AgentEventLike, Protocol):
    @property
    def usage(self) -> _Usage: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def attempts(self) -> int: ...


class _ToolCallFinished(AgentEventLike, Protocol):
    @property
    def tool(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def duration_s(self) -> float: ...


class _Intervened(AgentEventLike, Protocol):
    @property
    def pattern(self) -> str: ...


class _RunFinished(AgentEventLike, Protocol):
    @property
    def status(self) -> str: ...
    @property
    def iterations(self) -> int: ...
    @property
    def duration_s(self) -> float: ...


class AgentMetrics:
    """Instruments of the agent loop (``metrics.agent``)."""

    def __init__(self, make: InstrumentFactory, *, retries: Counter, exhausted: Counter) -> None:
        """``retries`` and ``exhausted`` are the platform's retry counters (by operation)."""
        self._retries = retries
        self._exhausted = exhausted
        self.runs = make.counter(
            "stockade_agent_runs", "Agent runs that ended, by outcome.", ["outcome"]
        )
        self.run_duration = make.histogram(
            "stockade_agent_run_duration_seconds",
            "Wall-clock time of agent runs, by outcome.",
            ["outcome"],
            buckets=AGENT_RUN_SECONDS,
        )
        self.run_iterations = make.histogram(
            "stockade_agent_run_iterations",
            "Model turns per agent run.",
            buckets=AGENT_ITERATIONS,
        )
        self.runs_in_progress = make.gauge(
            "stockade_agent_runs_in_progress", "Agent runs started and not yet ended."
        )
        self.interventions = make.counter(
            "stockade_agent_interventions",
            "Loop or abuse patterns found in runs, by pattern.",
            ["pattern"],
        )
        self.model_errors = make.counter(
            "stockade_model_errors",
            "Model requests that failed for good (retries spent), by reason.",
            ["reason"],
        )
        attributes = [genai.ATTR_OPERATION_NAME, genai.ATTR_PROVIDER_NAME, genai.ATTR_REQUEST_MODEL]
        self.operation_duration = make.histogram(
            genai.OPERATION_DURATION,
            "GenAI: duration of model requests (chat, embeddings), retries included.",
            [*attributes, genai.ATTR_ERROR_TYPE],
            buckets=genai.DURATION_BUCKETS,
        )
        self.token_usage = make.histogram(
            genai.TOKEN_USAGE,
            "GenAI: tokens per model request, by token type (input, output).",
            [*attributes, genai.ATTR_TOKEN_TYPE],
            buckets=genai.TOKEN_USAGE_BUCKETS,
        )
        self.execute_tool_duration = make.histogram(
            genai.EXECUTE_TOOL_DURATION,
            "GenAI: duration of tool executions the model asked for.",
            [genai.ATTR_OPERATION_NAME, genai.ATTR_TOOL_NAME, genai.ATTR_ERROR_TYPE],
            buckets=genai.DURATION_BUCKETS,
        )
        self.invoke_agent_duration = make.histogram(
            genai.INVOKE_AGENT_DURATION,
            "GenAI: duration of agent runs.",
            [*attributes, genai.ATTR_ERROR_TYPE],
            buckets=genai.DURATION_BUCKETS,
        )
        self._providers: dict[str, str] = {}
        self._run_models: dict[str, str] = {}
        self._tools: set[str] = set()
        for outcome in RUN_OUTCOMES:
            self.runs.labels(outcome)
            self.run_duration.labels(outcome)
        for pattern in INTERVENTION_PATTERNS:
            self.interventions.labels(pattern)
        for reason in MODEL_ERROR_REASONS:
            self.model_errors.labels(reason)
            retries.labels("model_request", reason)

    def declare_model(self, model: str, *, provider: str = genai.PROVIDER_OPENAI) -> None:
        """A configured model: its series exist at zero from now on, labelled ``provider``."""
        self._providers[model] = provider
        for operation in (genai.OPERATION_CHAT, genai.OPERATION_EMBEDDINGS):
            self.operation_duration.labels(operation, provider, model, "")
            for token_type in (genai.TOKEN_TYPE_INPUT, genai.TOKEN_TYPE_OUTPUT):
                self.token_usage.labels(operation, provider, model, token_type)
        self.invoke_agent_duration.labels(genai.OPERATION_INVOKE_AGENT, provider, model, "")

    def declare_tools(self, tools: Iterable[str]) -> None:
        """The registered tools: only these become ``gen_ai_tool_name`` values."""
        self._tools.update(tools)
        for tool in self._tools:
            self.execute_tool_duration.labels(genai.OPERATION_EXECUTE_TOOL, tool, "")

    def model_call(
        self,
        *,
        model: str,
        duration_s: float,
        input_tokens: int,
        output_tokens: int,
        operation: str = genai.OPERATION_CHAT,
    ) -> None:
        """A model request that succeeded."""
        provider = self._providers.get(model, genai.PROVIDER_OPENAI)
        self.operation_duration.labels(operation, provider, model, "").observe(duration_s)
        usage = self.token_usage
        usage.labels(operation, provider, model, genai.TOKEN_TYPE_INPUT).observe(input_tokens)
        usage.labels(operation, provider, model, genai.TOKEN_TYPE_OUTPUT).observe(output_tokens)

    def model_failed(
        self,
        *,
        model: str,
        reason: str,
        duration_s: float,
        attempts: int = 1,
        operation: str = genai.OPERATION_CHAT,
    ) -> None:
        """A model request failed for good after ``attempts``; ``reason`` is its error code."""
        reason = reason if reason in MODEL_ERROR_REASONS else ErrorCode.MODEL_ERROR.value
        provider = self._providers.get(model, genai.PROVIDER_OPENAI)
        self.model_errors.labels(reason).inc()
        if attempts > 1:
            self._exhausted.labels("model_request").inc()
        self.operation_duration.labels(operation, provider, model, reason).observe(duration_s)

    def model_retried(self, reason: str) -> None:
        """A model request is tried again after failing with error code ``reason``
        (counted as ``stockade_retries_total{operation="model_request"}``)."""
        reason = reason if reason in MODEL_ERROR_REASONS else ErrorCode.MODEL_ERROR.value
        self._retries.labels("model_request", reason).inc()

    def observe(self, event: AgentEventLike) -> None:
        """Count what one event of a run says (events that carry no measure are ignored)."""
        kind = event.type
        if kind == "run_started":
            self._run_models[event.run_id] = cast(_RunStarted, event).model
            self.runs_in_progress.inc()
        elif kind == "model_turn":
            turn = cast(_ModelTurn, event)
            self.model_call(
                model=self._run_models.get(event.run_id, ""),
                duration_s=turn.duration_s,
                input_tokens=turn.usage.prompt_tokens,
                output_tokens=turn.usage.completion_tokens,
            )
        elif kind == "tool_call_finished":
            self._tool_finished(cast(_ToolCallFinished, event))
        elif kind == "intervention":
            pattern = cast(_Intervened, event).pattern
            if pattern in INTERVENTION_PATTERNS:
                self.interventions.labels(pattern).inc()
        elif kind == "run_finished":
            self._run_finished(cast(_RunFinished, event))

    def _tool_finished(self, event: _ToolCallFinished) -> None:
        if event.status == "skipped":  # never sent to the gateway: nothing was executed
            return
        tool = event.tool if event.tool in self._tools else UNKNOWN_TOOL_LABEL
        error = "" if event.status == "ok" else event.status
        self.execute_tool_duration.labels(genai.OPERATION_EXECUTE_TOOL, tool, error).observe(
            event.duration_s
        )

    def _run_finished(self, event: _RunFinished) -> None:
        outcome = str(event.status)
        outcome = outcome if outcome in RUN_OUTCOMES else "failed"
        model = self._run_models.pop(event.run_id, "")
        provider = self._providers.get(model, genai.PROVIDER_OPENAI)
        self.runs.labels(outcome).inc()
        self.run_duration.labels(outcome).observe(event.duration_s)
        self.run_iterations.observe(event.iterations)
        self.runs_in_progress.dec()
        error = "" if outcome == "complete" else outcome
        self.invoke_agent_duration.labels(
            genai.OPERATION_INVOKE_AGENT, provider, model, error
        ).observe(event.duration_s)
