"""The tracer: OpenTelemetry SDK, OTLP/HTTP exporter, batch processor, GenAI span shapes.

Imported only when tracing is on (the ``stockade[tracing]`` extra). Span and
attribute names follow the OpenTelemetry GenAI semantic conventions
(``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.usage.*``, ``gen_ai.tool.*``, ``gen_ai.agent.*``); the gateway's
steps are ``stockade.*`` spans under ``execute_tool``.

A run's trace id is derived from its run id, so a run resumed by another
process continues the same trace; so is the span id of its first part's
``invoke_agent`` span, which every resumed part's ``invoke_agent`` span
(``stockade.run.resumed``) links to: a process killed mid-run never ends its
root span, but the spans it did export still name that parent, and the link
ties the resumed part to it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from orchestrator.audit import REDACTED
from orchestrator.audit import redact as redact_value
from orchestrator.tracing._context import current_trace_id

if TYPE_CHECKING:
    from orchestrator.agent._model_reply import ModelReply
    from orchestrator.config import TracingSettings
    from orchestrator.tools import ToolCall, ToolResult

__all__ = [
    "RESUMES_LINK",
    "ChatSpan",
    "RunSpan",
    "RunTracer",
    "first_part_span_id",
    "run_trace_id",
]

PROVIDER = "openai"
"""``gen_ai.provider.name``: the model is reached through the OpenAI API (its server may be
any OpenAI-compatible one; ``server.address`` says which)."""
_CONTENT_CAP = 32 * 1024
"""Characters of one captured content attribute; the rest is cut (a conversation can be
megabytes, and collectors refuse big spans)."""
_STATUS_CAP = 1024
"""Characters of a span's status message (a tool's error may be its whole traceback, up to
the profile's output limit): the head says what failed, and it is there without content."""
_SCOPE = "stockade"
_SUCCEEDED = frozenset({"ok", "output_truncated"})
_TRACE_OF_RUN: ContextVar[str | None] = ContextVar("stockade_trace_of_run", default=None)
_FIRST_PART_OF_RUN: ContextVar[str | None] = ContextVar("stockade_first_part", default=None)
_HIDDEN: ContextVar[set[str] | None] = ContextVar("stockade_hidden_values", default=None)
"""Values a rule on a key hid from a run's (or call's) content so far: a tool's error may
quote them ("got \"...\""), and a later message may repeat them, where no key is in sight."""
_MIN_HIDDEN = 4
"""Hidden values shorter than this are not searched for in text (they would mangle it)."""
RESUMES_LINK = "resumes"
"""``stockade.link.type`` of a resumed part's link to the run's first ``invoke_agent`` span."""


def run_trace_id(run_id: str) -> int:
    """The trace id of run ``run_id`` (the same in every process that drives it)."""
    digest = hashlib.sha256(b"stockade-run:" + run_id.encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1


def first_part_span_id(run_id: str) -> int:
    """The span id of the ``invoke_agent`` span of run ``run_id``'s first part."""
    digest = hashlib.sha256(b"stockade-run-root:" + run_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


class _RunIds(RandomIdGenerator):
    """Trace ids from run ids (while a run's root span starts), and the span id of a run's
    first root span from its run id; random otherwise."""

    def generate_trace_id(self) -> int:
        run_id = _TRACE_OF_RUN.get()
        return super().generate_trace_id() if run_id is None else run_trace_id(run_id)

    def generate_span_id(self) -> int:
        # Resumed parts get random ids: a part killed before its resume count was
        # checkpointed would otherwise be numbered, and identified, twice.
        run_id = _FIRST_PART_OF_RUN.get()
        return super().generate_span_id() if run_id is None else first_part_span_id(run_id)


def _hex(span: Span) -> str:
    return format(span.get_span_context().trace_id, "032x")


class RunSpan:
    """The ``invoke_agent`` span of one run: records how it ended."""

    def __init__(self, span: Span, tracer: RunTracer) -> None:
        self.span = span
        self.trace_id = _hex(span)
        """The run's trace id (32 hex digits), for the run log, log lines and the run page."""
        self._tracer = tracer

    def ended(self, status: str, reason: str | None, answer: str | None, tokens: Any) -> None:
        """The run's status, reason, answer (content) and total token usage."""
        span = self.span
        span.set_attribute("stockade.run.status", status)
        span.set_attribute("gen_ai.usage.input_tokens", tokens.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", tokens.completion_tokens)
        if answer is not None:
            self._tracer.content(span, "gen_ai.output.messages", _assistant(answer))
        if status != "complete":
            span.set_attribute("error.type", status)
            span.set_status(Status(StatusCode.ERROR, self._tracer.status(reason or status)))


class ChatSpan:
    """One ``chat`` span: records the model's reply."""

    def __init__(self, span: Span, tracer: RunTracer) -> None:
        self.span = span
        self._tracer = tracer

    def reply(self, reply: ModelReply) -> None:
        """Usage, finish reason, response model and (content) the reply's message."""
        span = self.span
        usage = reply.usage
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if reply.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", (reply.finish_reason,))
        if reply.model:
            span.set_attribute("gen_ai.response.model", reply.model)
        span.set_attribute("stockade.model.attempts", reply.attempts)
        if self._tracer.capture_content:
            self._tracer.content(span, "gen_ai.output.messages", [reply.to_message()])


class RunTracer:
    """Makes a run's spans and exports them (batched) over OTLP/HTTP."""

    def __init__(
        self,
        settings: TracingSettings,
        *,
        headers: Mapping[str, str] | None = None,
        redact: Sequence[str] = (),
        exporter: SpanExporter | None = None,
    ) -> None:
        """A tracer per ``settings``; ``exporter`` replaces the OTLP one (benchmarks pass an
        in-memory exporter)."""
        self.capture_content = settings.capture_content
        """Whether messages, arguments and outputs are recorded."""
        self._redact = tuple(redact)
        self._ids = _RunIds()
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ParentBased(TraceIdRatioBased(settings.sampling_ratio)),
            id_generator=self._ids,
        )
        if exporter is None:
            exporter = OTLPSpanExporter(
                endpoint=settings.endpoint, headers=dict(headers or {}), timeout=settings.timeout_s
            )
        self._processor = BatchSpanProcessor(exporter)
        self._provider.add_span_processor(self._processor)
        self._scope = InstrumentationScope(_SCOPE)
        self._tracer = self._provider.get_tracer(_SCOPE)

    def content(self, span: Span, key: str, value: Any) -> None:
        """Set content attribute ``key`` (JSON, redacted, capped) if content is captured."""
        if not self.capture_content or not span.is_recording():
            return
        if not self._redact:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
        else:  # on the structure, so a rule on a key hides the entry's value
            value = _redacted(value, self._redact, self._hidden())
            text = self.text(value if isinstance(value, str) else json.dumps(value, default=str))
        span.set_attribute(key, text[:_CONTENT_CAP])

    def text(self, value: str) -> str:
        """``value`` (a reason, error or content, which may quote arguments) with the policy's
        patterns applied and the values hidden by key so far cut out: on spans whether or not
        content is captured."""
        if not self._redact:
            return value
        value = str(redact_value(value, self._redact))
        for hidden in self._hidden():
            if hidden in value:
                value = value.replace(hidden, REDACTED)
            escaped = json.dumps(hidden)[1:-1]  # as it shows inside JSON text
            if escaped != hidden and escaped in value:
                value = value.replace(escaped, REDACTED)
        return value

    def status(self, value: str) -> str:
        """``value`` as a span's status message: :meth:`text`, cut to its head (after the
        redaction, so no cut splits a secret out of a pattern's reach)."""
        value = self.text(value)
        if len(value) <= _STATUS_CAP:
            return value
        return f"{value[:_STATUS_CAP]}[... {len(value) - _STATUS_CAP} characters omitted]"

    def _hidden(self) -> set[str]:
        found = _HIDDEN.get()
        if found is None:  # outside a run and a call: nothing to remember for
            found = set()
        return found

    def learn(self, arguments: Any) -> None:
        """Remember the values of ``arguments`` a rule on a key hides (content or not: a
        failed call's error, on its span, may quote them)."""
        if self._redact:
            _redacted(arguments, self._redact, self._hidden())

    @contextmanager
    def run(
        self, *, run_id: str, agent: str, model: str, goal: str, principal: str, resumed: bool
    ) -> Iterator[RunSpan]:
        """The ``invoke_agent`` span of a run, the root of its trace (current while open).

        A ``resumed`` run's span is a second root in the same trace, linked to the first
        part's span (whose id is derived from the run id)."""
        links: list[Link] = []
        if resumed:
            first = SpanContext(
                run_trace_id(run_id),
                first_part_span_id(run_id),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            links.append(Link(first, {"stockade.link.type": RESUMES_LINK}))
        marked = _TRACE_OF_RUN.set(run_id)
        first_part = None if resumed else _FIRST_PART_OF_RUN.set(run_id)
        try:
            span = self._tracer.start_span(
                f"invoke_agent {agent}",
                context=otel_context.Context(),  # a new trace, whatever encloses the run
                kind=SpanKind.INTERNAL,
                links=links,
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.provider.name": PROVIDER,
                    "gen_ai.agent.name": agent,
                    "gen_ai.agent.id": run_id,
                    "gen_ai.conversation.id": run_id,
                    "gen_ai.request.model": model,
                    "stockade.run.principal": principal,
                    "stockade.run.resumed": resumed,
                },
            )
        finally:
            _TRACE_OF_RUN.reset(marked)
            if first_part is not None:
                _FIRST_PART_OF_RUN.reset(first_part)
        run_span = RunSpan(span, self)
        self.content(span, "gen_ai.input.messages", [{"role": "user", "content": goal}])
        known = current_trace_id.set(run_span.trace_id)
        hidden = _HIDDEN.set(set())
        try:
            with trace.use_span(span, end_on_exit=True):
                yield run_span
        finally:
            _HIDDEN.reset(hidden)
            current_trace_id.reset(known)

    @contextmanager
    def chat(
        self,
        *,
        model: str,
        server: str | None,
        messages: Sequence[Mapping[str, Any]],
        purpose: str,
    ) -> Iterator[ChatSpan]:
        """A ``chat`` span around one model call (an exception marks it failed)."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": model,
            "stockade.model.purpose": purpose,
        }
        if server:
            attributes["server.address"] = server
        with self._tracer.start_as_current_span(
            f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            self.content(span, "gen_ai.input.messages", list(messages))
            yield ChatSpan(span, self)

    @contextmanager
    def tool(self, call: ToolCall, registered: str | None) -> Iterator[Span]:
        """An ``execute_tool`` span around one gateway call, current while open (a root of
        its own outside a run, whose trace id then goes on the call's log line)."""
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.id": call.id,
            "gen_ai.tool.type": "function",
            "stockade.run.id": call.run_id or "",
            "stockade.principal": call.principal or "",
        }
        if registered is not None:  # the registered name (the model may spell it its way)
            attributes["stockade.tool"] = registered
        name = f"execute_tool {call.name}"
        parent = trace.get_current_span().get_span_context()
        span: Span
        if parent.trace_flags.sampled:  # in a sampled run: see _CallSpan
            span = _CallSpan(self, name, parent, attributes)
        else:  # a root of its own (sampled or not), or not sampled: the SDK's span
            span = self._tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
        known = None if current_trace_id.get() is not None else current_trace_id.set(_hex(span))
        hidden = _HIDDEN.set(set()) if _HIDDEN.get() is None else None  # a call of its own
        try:
            self.learn(call.arguments)
            self.content(span, "gen_ai.tool.call.arguments", call.arguments)
            with trace.use_span(span, end_on_exit=True):
                yield span
        finally:
            if hidden is not None:
                _HIDDEN.reset(hidden)
            if known is not None:
                current_trace_id.reset(known)

    def tool_result(self, span: Span, result: ToolResult) -> None:
        """The call's status (and, as content, its output or error) on its span."""
        attributes: dict[str, Any] = {"stockade.tool.status": result.status.value}
        if result.exit_code is not None:
            attributes["stockade.tool.exit_code"] = result.exit_code
        if result.status.value not in _SUCCEEDED:
            attributes["error.type"] = result.status.value
            span.set_status(
                Status(StatusCode.ERROR, self.status(result.error or result.status.value))
            )
        span.set_attributes(attributes)  # one pass under the span's lock
        self.content(span, "gen_ai.tool.call.result", result.output or result.error or "")

    def _finished(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext,
        attributes: Mapping[str, Any],
        *,
        started_ns: int,
        ended_ns: int,
        status: Status | None = None,
    ) -> None:
        """Hand a span that is over straight to the batch processor."""
        self._processor.on_end(
            ReadableSpan(
                name=name,
                context=context,
                parent=parent,
                resource=self._provider.resource,
                attributes=attributes,
                kind=SpanKind.INTERNAL,
                start_time=started_ns,
                end_time=ended_ns,
                status=status or Status(StatusCode.UNSET),
                instrumentation_scope=self._scope,
            )
        )

    def child_context(self, parent: SpanContext) -> SpanContext:
        """A new span's context under ``parent``, sharing its trace and sampling."""
        return SpanContext(
            parent.trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=parent.trace_flags,
            trace_state=parent.trace_state,
        )

    def step(
        self,
        name: str,
        started_ns: int,
        attributes: Mapping[str, Any],
        *,
        ended_ns: int | None = None,
    ) -> None:
        """Record one of the gateway's steps, begun at ``started_ns`` (``time.time_ns()``) and
        done at ``ended_ns`` (default: now), as a ``stockade.<name>`` child of the current span
        (the call's).

        A step is over before its span is made, has no children and its attributes are
        known, so the finished span goes straight to the batch processor: the SDK's live
        span (start, sampler, attribute checks under a lock, end) measured ~25 µs per span
        under load, four times a call; this ~6 µs. It inherits the parent's sampling
        decision (the sampler is parent-based anyway); the gateway's attributes are plain
        strings, numbers and booleans."""
        parent = trace.get_current_span().get_span_context()
        if not parent.trace_flags.sampled:  # also: no span is current (invalid context)
            return
        self._finished(
            f"stockade.{name}",
            self.child_context(parent),
            parent,
            attributes,
            started_ns=started_ns,
            ended_ns=time.time_ns() if ended_ns is None else ended_ns,
        )

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export what is queued now; False if it did not finish in time (blocks)."""
        return self._provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Flush what is queued and stop the exporter (blocks; call it off the event loop)."""
        self._provider.shutdown()


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _redacted(value: Any, patterns: Sequence[str], hidden: set[str]) -> Any:
    """``value`` redacted as the audit log is, and inside the JSON text it carries too (a
    model's tool call arguments are a JSON string, where a rule on a key must apply as well);
    the values hidden whole go into ``hidden``."""
    done = redact_value(value, patterns)
    _collect_hidden(value, done, hidden)
    return _inner_json(done, patterns, hidden)


def _inner_json(value: Any, patterns: Sequence[str], hidden: set[str]) -> Any:
    if isinstance(value, str):
        if value.startswith(("{", "[")):
            try:
                parsed = json.loads(value)
            except ValueError:
                return value
            if isinstance(parsed, dict | list):
                return json.dumps(_redacted(parsed, patterns, hidden))
        return value
    if isinstance(value, Mapping):
        return {key: _inner_json(item, patterns, hidden) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_inner_json(item, patterns, hidden) for item in value]
    return value


def _collect_hidden(original: Any, redacted: Any, hidden: set[str]) -> None:
    """Add to ``hidden`` the leaves of ``original`` that ``redacted`` replaced whole."""
    if isinstance(original, Mapping) and isinstance(redacted, Mapping):
        for key, item in original.items():
            _collect_hidden(item, redacted.get(key), hidden)
    elif isinstance(original, list | tuple) and isinstance(redacted, list | tuple):
        for item, done in zip(original, redacted, strict=False):
            _collect_hidden(item, done, hidden)
    elif redacted == REDACTED and original != REDACTED:
        hidden.update(_leaves(original))


def _leaves(value: Any) -> Iterator[str]:
    """The strings and numbers in ``value``, long enough to search for."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= _MIN_HIDDEN:
            yield text


class _CallSpan(NonRecordingSpan):
    """An ``execute_tool`` span inside a sampled trace, recorded in a dict and handed to the
    batch processor finished when it ends: the SDK's live span (sampler, attribute checks
    under a lock, processors on start and end) cost ~20 µs more per call on the benchmark,
    whose budget is 100 µs for the call's spans in all. Current while open (its context
    parents the step spans), like the SDK's; an exception sets its status (no event)."""

    def __init__(
        self, tracer: RunTracer, name: str, parent: SpanContext, attributes: dict[str, Any]
    ) -> None:
        super().__init__(tracer.child_context(parent))
        self._tracer = tracer
        self._name = name
        self._parent = parent
        self._attributes = attributes
        self._status: Status | None = None
        self._started = time.time_ns()
        self._ended = False

    def is_recording(self) -> bool:
        """Recording until it ends."""
        return not self._ended

    def set_attribute(self, key: str, value: Any) -> None:
        """Record attribute ``key``."""
        self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Record these attributes."""
        self._attributes.update(attributes)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Record the status (the last one set wins)."""
        self._status = status if isinstance(status, Status) else Status(status, description)

    def end(self, end_time: int | None = None) -> None:
        """Hand the finished span to the batch processor (once)."""
        if self._ended:
            return
        self._ended = True
        self._tracer._finished(
            self._name,
            self.get_span_context(),
            self._parent,
            self._attributes,
            started_ns=self._started,
            ended_ns=time.time_ns() if end_time is None else end_time,
            status=self._status,
        )
