"""A run's draw on its model budget (the policy's ``model_limits``), kept off the event loop.

The budget is the gateway's (``gateway.model_budget(run_id)``), kept in the
platform's SQLite limit store: one short transaction per method, each worth
a thread hop off the loop — ~0.3 ms p50 each, several ms at p90 on the
loaded 2-core VM (``benchmarks/agent_bench.py``). So a model call's tokens
are recorded in the same hop as the next call's start, and that hop runs
while the turn's tool calls do. The next call is still counted before it is
made, and the token limit still stops it; other processes see a call's
tokens one call late, and a run that ends right after a reply has counted a
call it never made (its budget is forgotten at its end anyway). Awaited, the
two hops were most of the loop's own time per iteration (p50 2.5 → 1.8 ms at
load ~6, then 1.2 ms with the hop overlapping the tool calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from orchestrator.policy import ModelBudget, ModelBudgetAnswer

__all__ = ["RunBudget"]


class RunBudget:
    """Draws one run's model calls and tokens on its budget."""

    def __init__(self, budget: ModelBudget, *, release: Callable[[], None]) -> None:
        """``release`` forgets the run's budget at its end (``gateway.end_run``)."""
        self._budget = budget
        self._release = release
        self._tokens = 0
        self._next: asyncio.Task[ModelBudgetAnswer] | None = None

    def used(self, tokens: int) -> None:
        """A model call came back having used ``tokens``; start drawing the next call now."""
        self._tokens += tokens
        self._next = asyncio.create_task(asyncio.to_thread(self._draw, self._take()))

    async def next_call(self) -> ModelBudgetAnswer:
        """Whether the next model call may be made (it is counted if so)."""
        drawn, self._next = self._next, None
        if drawn is None:
            return await asyncio.to_thread(self._draw, self._take())
        return await drawn

    async def close(self) -> None:
        """Record the last tokens and forget the run's budget."""
        if self._next is not None:
            # Drawn for a call that will not be made; it only has to finish.
            await asyncio.shield(self._next)
        await asyncio.to_thread(self._settle, self._take())

    def _take(self) -> int:
        tokens, self._tokens = self._tokens, 0
        return tokens

    def _draw(self, tokens: int) -> ModelBudgetAnswer:
        if tokens:
            self._budget.add_tokens(tokens)
        return self._budget.start_call()

    def _settle(self, tokens: int) -> None:
        if tokens:
            self._budget.add_tokens(tokens)
        self._release()
