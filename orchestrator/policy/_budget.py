"""The model side of one run: tokens and model calls against the policy's ``model_limits``."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from orchestrator.policy._model import ModelLimits

__all__ = ["ModelBudget", "ModelBudgetAnswer"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelBudgetAnswer:
    """Whether the run may make another model call."""

    allowed: bool
    """The call may go ahead (and has been counted)."""
    limit: str | None = None
    """The exhausted limit (``max_tokens_per_run`` or ``max_model_calls_per_run``)."""
    used: int = 0
    """How much of that limit the run has used."""
    maximum: int | None = None
    """The limit's value."""


class ModelBudget:
    """One run's model usage; create one per run. Thread-safe.

    Call :meth:`start_call` before each model call (it counts the call, so
    parallel calls cannot overshoot the call limit) and :meth:`add_tokens`
    with the usage the response reports. Tokens are known only afterwards, so
    the token limit stops the *next* call; :attr:`remaining_tokens` lets the
    caller cap ``max_tokens`` of the call it is about to make.
    """

    def __init__(self, limits: ModelLimits) -> None:
        self._limits = limits
        self._calls = 0
        self._tokens = 0
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        """Model calls started so far."""
        return self._calls

    @property
    def tokens(self) -> int:
        """Tokens used so far."""
        return self._tokens

    @property
    def remaining_tokens(self) -> int | None:
        """Tokens left; None when there is no token limit."""
        limit = self._limits.max_tokens_per_run
        return None if limit is None else max(0, limit - self._tokens)

    def start_call(self) -> ModelBudgetAnswer:
        """Count one more model call if both budgets have room; otherwise refuse it."""
        with self._lock:
            max_calls = self._limits.max_model_calls_per_run
            if max_calls is not None and self._calls >= max_calls:
                return ModelBudgetAnswer(
                    allowed=False,
                    limit="max_model_calls_per_run",
                    used=self._calls,
                    maximum=max_calls,
                )
            max_tokens = self._limits.max_tokens_per_run
            if max_tokens is not None and self._tokens >= max_tokens:
                return ModelBudgetAnswer(
                    allowed=False, limit="max_tokens_per_run", used=self._tokens, maximum=max_tokens
                )
            self._calls += 1
            return ModelBudgetAnswer(allowed=True)

    def add_tokens(self, tokens: int) -> None:
        """Record the tokens (prompt and completion) a model call used."""
        if tokens < 0:
            raise ValueError(f"token counts are never negative, got {tokens}")
        with self._lock:
            self._tokens += tokens
