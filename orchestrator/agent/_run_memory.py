"""A run's use of memory: recall for the prompt, lessons, the run remembered at its end.

Memory helps a run; it never ends one. A recall or a write that fails is
logged and reported as a notice, and the run goes on without it.
"""

from __future__ import annotations

import logging

from orchestrator.agent._events import LOG_MEMORY, MemoryRecalled, MemoryStored, RecalledEntry, clip
from orchestrator.agent._parts import Reporter
from orchestrator.agent._run_state import RunState
from orchestrator.agent._state import RunStatus
from orchestrator.agent.memory import RunMemory

__all__ = ["MemoryUse"]

_log = logging.getLogger(__name__)


class MemoryUse:
    """One run's memory (none: memory off, every method does nothing)."""

    def __init__(self, memory: RunMemory | None, state: RunState, reporter: Reporter) -> None:
        self._memory = memory
        self._state = state
        self._reporter = reporter

    async def recall(self) -> str:
        """The memory section of the system prompt (empty without memory or memories)."""
        memory, state = self._memory, self._state
        if memory is None:
            return ""
        try:
            context = await memory.prompt_context(state.goal)
        except Exception as exc:
            _log.warning("run %s: memory recall failed", state.run_id, exc_info=True)
            self._reporter.notice(
                f"memory recall failed ({type(exc).__name__}: {exc}); going on without"
            )
            return ""
        state.memory_ids = list(context.ids)
        if context.recalled:
            entries = tuple(
                RecalledEntry(
                    id=r.memory.id,
                    kind=r.memory.kind.value,
                    score=round(r.score, 4),
                    content=clip(r.memory.content, LOG_MEMORY),
                )
                for r in context.recalled
            )
            self._reporter.emit(
                MemoryRecalled(run_id=state.run_id, at=self._reporter.now(), memories=entries)
            )
        return context.text

    async def lesson(self, lesson: str) -> None:
        """Keep ``lesson`` for later runs with a similar goal."""
        if self._memory is None:
            return
        try:
            record = await self._memory.store_lesson(goal=self._state.goal, lesson=lesson)
        except Exception as exc:
            _log.warning("run %s: storing a lesson failed", self._state.run_id, exc_info=True)
            self._reporter.notice(f"the lesson could not be stored ({type(exc).__name__}: {exc})")
            return
        self._stored("lesson", record.id, record.content)

    async def remember(self, *, lesson: bool = True) -> None:
        """Keep the ended run for later runs, and, when it failed and ``lesson``, a lesson
        from it (not from a failure of the platform or the model server: nothing a later
        run could do otherwise)."""
        memory, state = self._memory, self._state
        if memory is None:
            return
        success = state.status is RunStatus.COMPLETE
        if not success and lesson:
            await self.lesson(
                f"An earlier run on this goal failed: {state.reason}. Avoid what led there."
            )
        try:
            record = await memory.remember_run(
                goal=state.goal,
                success=success,
                outcome=state.reason or "the goal was reached",
                answer=state.answer,
                metadata={
                    "iterations": state.iteration,
                    "tool_calls": sum(state.tool_calls.values()),
                },
            )
        except Exception as exc:
            _log.warning("run %s: remembering the run failed", state.run_id, exc_info=True)
            self._reporter.notice(f"the run could not be remembered ({type(exc).__name__}: {exc})")
            return
        self._stored("run", record.id, record.content)

    def _stored(self, kind: str, memory_id: int, content: str) -> None:
        self._reporter.emit(
            MemoryStored(
                run_id=self._state.run_id,
                at=self._reporter.now(),
                kind=kind,
                memory_id=memory_id,
                content=clip(content, LOG_MEMORY),
            )
        )
