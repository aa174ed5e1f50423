"""The model side of one run: tokens and model calls against the policy's ``model_limits``.

The counts live in a :class:`~orchestrator.policy.LimitStore`, so every
process that shares the store (and asks for the same run) shares the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import UsageError
from orchestrator.policy._limitstore import LimitStore
from orchestrator.policy._memory_limits import InMemoryLimitStore
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
    remaining_tokens: int | None = None
    """Tokens left for the call (cap its ``max_tokens`` with it); None: no token limit."""


class ModelBudget:
    """One run's model usage. Thread-safe; every process asking for the run shares it.

    Call :meth:`start_call` before each model call (it counts the call, so
    parallel calls cannot overshoot the call limit) and :meth:`add_tokens`
    with the usage the response reports. Tokens are known only afterwards, so
    the token limit stops the *next* call; the answer's ``remaining_tokens``
    lets the caller cap ``max_tokens`` of the call it is about to make.

    On a store whose ``may_wait`` is true (SQLite), every method is one short
    transaction that may wait for another process: call it in a thread
    (``asyncio.to_thread``) from an event loop.
    """

    def __init__(
        self, limits: ModelLimits, *, store: LimitStore | None = None, run_id: str = ""
    ) -> None:
        """Count run ``run_id``'s usage in ``store`` (default: a private in-memory one)."""
        self._limits = limits
        self._store = store if store is not None else InMemoryLimitStore()
        self._key = run_id

    @property
    def calls(self) -> int:
        """Model calls started so far (read from the store)."""
        return self._store.usage(self._key).calls

    @property
    def tokens(self) -> int:
        """Tokens used so far (read from the store)."""
        return self._store.usage(self._key).tokens

    @property
    def remaining_tokens(self) -> int | None:
        """Tokens left (read from the store); None when there is no token limit."""
        return self._remaining(self.tokens)

    def _remaining(self, tokens: int) -> int | None:
        limit = self._limits.max_tokens_per_run
        return None if limit is None else max(0, limit - tokens)

    def start_call(self) -> ModelBudgetAnswer:
        """Count one more model call if both budgets have room; otherwise refuse it."""
        max_calls = self._limits.max_model_calls_per_run
        max_tokens = self._limits.max_tokens_per_run
        counted, usage = self._store.count_call(
            self._key, max_calls=max_calls, max_tokens=max_tokens
        )
        remaining = self._remaining(usage.tokens)
        if counted:
            return ModelBudgetAnswer(allowed=True, remaining_tokens=remaining)
        if max_calls is not None and usage.calls >= max_calls:
            return ModelBudgetAnswer(
                allowed=False,
                limit="max_model_calls_per_run",
                used=usage.calls,
                maximum=max_calls,
                remaining_tokens=remaining,
            )
        return ModelBudgetAnswer(
            allowed=False,
            limit="max_tokens_per_run",
            used=usage.tokens,
            maximum=max_tokens,
            remaining_tokens=remaining,
        )

    def add_tokens(self, tokens: int) -> None:
        """Record the tokens (prompt and completion) a model call used."""
        if tokens < 0:
            raise UsageError(f"token counts are never negative, got {tokens}")
        self._store.add_tokens(self._key, tokens)
