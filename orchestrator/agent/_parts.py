"""What a run works with: the platform's pieces its agent lends it, and how it reports.

:class:`RunParts` is shared by an agent's runs (the gateway, the registry,
the workspaces, the model, the tool schemas); a :class:`Reporter` is one
run's way to say what happens: each event goes to the execution log, the
metrics and the caller's ``on_event``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.agent._approvals import ApprovalWatch
from orchestrator.agent._config import AgentConfig
from orchestrator.agent._context import message_tokens
from orchestrator.agent._events import AgentEvent, Notice
from orchestrator.agent._runlog import RunRecorder
from orchestrator.agent.model import ModelClient
from orchestrator.artifacts import ArtifactStore
from orchestrator.gateway import Gateway
from orchestrator.metrics import AgentMetrics
from orchestrator.sandbox.workspace import WorkspaceManager
from orchestrator.tools import ToolRegistry

__all__ = ["Reporter", "RunParts"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RunParts:
    """What every run of an agent uses (see :meth:`build`)."""

    config: AgentConfig
    gateway: Gateway
    registry: ToolRegistry
    workspaces: WorkspaceManager
    model: ModelClient
    tools: tuple[Mapping[str, Any], ...]
    """The tools' OpenAI schemas, sent with every turn."""
    tool_names: tuple[str, ...]
    """The tools' registered names."""
    tool_tokens: int
    """Estimated tokens of the schemas (every request carries them)."""
    approvals: ApprovalWatch | None
    metrics: AgentMetrics
    clock: Callable[[], float]
    """Unix time, for the events."""
    artifacts: ArtifactStore | None = None
    """The runs' artifacts (image ones are shown to a model that reads images)."""
    accepts_images: bool = False
    """The model reads images (``model.accepts_images``)."""
    audit_path: Path | None = None
    """The audit log, which tells a resumed run how far its calls in flight got."""

    @classmethod
    def build(
        cls,
        *,
        config: AgentConfig,
        gateway: Gateway,
        registry: ToolRegistry,
        workspaces: WorkspaceManager,
        model: ModelClient,
        tools: Sequence[Mapping[str, Any]],
        approvals: ApprovalWatch | None,
        metrics: AgentMetrics,
        clock: Callable[[], float],
        artifacts: ArtifactStore | None = None,
        accepts_images: bool = False,
        audit_path: Path | None = None,
    ) -> RunParts:
        """The parts, with the schemas' names and size worked out once."""
        names = tuple(
            spec.name if (spec := registry.get(str(t["function"]["name"]))) else "" for t in tools
        )
        return cls(
            config=config,
            gateway=gateway,
            registry=registry,
            workspaces=workspaces,
            model=model,
            tools=tuple(tools),
            tool_names=names,
            tool_tokens=sum(message_tokens({"content": json.dumps(t)}) for t in tools),
            approvals=approvals,
            metrics=metrics,
            clock=clock,
            artifacts=artifacts,
            accepts_images=accepts_images,
            audit_path=audit_path,
        )

    def tool_name(self, name: str) -> str:
        """The registered name of the tool the model named (its spelling when none)."""
        spec = self.registry.get(name) if name else None
        return spec.name if spec is not None else name


class Reporter:
    """One run's events: to its execution log, the metrics, and the caller."""

    def __init__(
        self,
        run_id: str,
        recorder: RunRecorder,
        parts: RunParts,
        on_event: Callable[[AgentEvent], None] | None,
    ) -> None:
        self.run_id = run_id
        self.recorder = recorder
        self._metrics = parts.metrics
        self._clock = parts.clock
        self._on_event = on_event

    def now(self) -> float:
        """Unix time, for an event."""
        return self._clock()

    def emit_live(self, event: AgentEvent) -> None:
        """Report ``event`` to the caller only: live output is neither logged nor checkpointed."""
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                _log.exception("on_event failed on %s", event.type)

    def emit(self, event: AgentEvent) -> None:
        """Report ``event``."""
        self.recorder.event(event)
        self._metrics.observe(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                # The watcher's bug must not end the run.
                _log.exception("on_event failed on %s", event.type)

    def notice(self, message: str) -> None:
        """Report something worth knowing that changes nothing."""
        self.emit(Notice(run_id=self.run_id, at=self.now(), message=message))
