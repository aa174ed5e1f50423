"""Structured logs: one JSON object per line, with the identifiers metrics must not carry.

Metrics say how many and how long; a log line says which: the run, the call,
the tool, the policy's decision and the call's status, and the OpenTelemetry
trace id of the run when tracing is on. The gateway logs one
line per call (``orchestrator.gateway``, INFO) with those fields as record
attributes (``extra=``); :class:`JsonLinesFormatter` writes them as keys, so
a log pipeline (Loki, Elasticsearch) can index them and a Grafana user can
go from a panel to the calls behind it. In text format the same line reads
as a sentence.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Final, Literal

from orchestrator.tracing import current_trace_id

__all__ = ["CONTEXT_FIELDS", "LOG_FORMATS", "JsonLinesFormatter", "LogFormat", "configure_logging"]

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final = ("text", "json")
"""The log formats: a human's line, or one JSON object per line."""

CONTEXT_FIELDS: Final = (
    "run_id",
    "call_id",
    "principal",
    "tool",
    "decision",
    "rule",
    "status",
    "duration_s",
    "retries",
    "profile",
    "request_id",
    "trace_id",
)
"""Record attributes a JSON line carries as keys when a log call sets them (``extra=``)."""

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLinesFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = value
        if "trace_id" not in line and (trace_id := current_trace_id.get()) is not None:
            # The OpenTelemetry trace of the run (or call) the line was written in.
            line["trace_id"] = trace_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class _Installed(logging.StreamHandler[IO[str]]):
    """The handler :func:`configure_logging` installs (and replaces when called again).

    Without a stream of its own it writes to whatever ``sys.stderr`` is when a
    record comes (a test runner may swap it).
    """

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(sys.stderr if stream is None else stream)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr
        super().emit(record)


def configure_logging(
    log_format: LogFormat = "text",
    level: str | None = None,
    *,
    stream: IO[str] | None = None,
) -> None:
    """Send the process's logs to ``stream`` (standard error) in ``log_format``.

    ``level`` defaults to INFO for JSON (the per-call lines are the point) and
    WARNING for text (a terminal shows only what needs attention). Calling it
    again replaces the previous setup.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Installed)]:
        root.removeHandler(handler)
    handler = _Installed(stream)
    formatter = JsonLinesFormatter() if log_format == "json" else logging.Formatter(_TEXT)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    chosen = level or ("INFO" if log_format == "json" else "WARNING")
    root.setLevel(chosen.upper())
