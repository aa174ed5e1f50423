"""A batch's files: the input (one run a line, checked whole before anything runs) and the
results (one line per finished run, appended as it finishes; read back to resume).

Input, JSON lines::

    {"id": "primes", "goal": "Write primes.txt with the primes below 100"}
    {"id": "sum", "goal": "Add the numbers in data.csv", "files": {"data.csv": "1\\n2\\n"}}

Every line is a :class:`BatchItem`; :func:`read_batch` refuses the whole file
at its first mistake, naming file, line and field. The results file holds
:class:`BatchResult` lines; :class:`BatchResultsFile` appends them (flushed
and synced one by one, so a killed batch loses no finished run) and tells a
rerun which ids already ended.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path, PurePosixPath
from typing import Any

import pydantic
from pydantic import Field, field_validator

from orchestrator.agent._result import RunResult
from orchestrator.agent._state import RunStatus
from orchestrator.errors import ConfigError
from orchestrator.strict import LocatedValueError, StrictModel

__all__ = ["BatchItem", "BatchResult", "BatchResultsFile", "read_batch", "results_path_for"]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
# The platform keeps its own state there (python.run's kept namespace).
_RESERVED = ".stockade"


class BatchItem(StrictModel):
    """One run of a batch: one line of the input file."""

    id: str = Field(pattern=_ID)
    """The run's name in the batch, unique in the file: letters, digits, '.', '_' or '-'
    (at most 100). Its run id is this id and a random suffix."""
    goal: str = Field(min_length=1)
    """What the run is asked to achieve."""
    files: dict[str, str] = Field(default_factory=dict)
    """Files put in the run's workspace before it starts: relative path → text (UTF-8)."""
    principal: str | None = Field(default=None, min_length=1, max_length=200)
    """Who the run acts for (policy rules, rate limits, memory); none: the batch's."""

    @field_validator("goal")
    @classmethod
    def _goal_has_text(cls, goal: str) -> str:
        if not goal.strip():
            raise ValueError("the goal is blank")
        return goal

    @field_validator("files")
    @classmethod
    def _paths_stay_inside(cls, files: dict[str, str]) -> dict[str, str]:
        normal: dict[str, str] = {}
        for raw, content in files.items():
            path = PurePosixPath(raw)
            problem = None
            if not raw or "\0" in raw or path == PurePosixPath("."):
                problem = "is not a file path"
            elif path.is_absolute() or ".." in path.parts:
                problem = "escapes the workspace (use a relative path without '..')"
            elif path.parts[0] == _RESERVED:
                problem = f"is inside {_RESERVED}/, the platform's own directory"
            elif str(path) in normal:
                problem = f"names the same file as another path ({path})"
            if problem is not None:
                raise LocatedValueError(f"the path {raw!r} {problem}", (raw,))
            normal[str(path)] = content
        # A path used as a file cannot also be the directory of another.
        for name in normal:
            for parent in PurePosixPath(name).parents:
                if str(parent) in normal:
                    raise LocatedValueError(
                        f"{parent!s} is a file and the directory of {name}", (name,)
                    )
        return normal


class BatchResult(StrictModel):
    """How one run of a batch ended: one line of the results file."""

    id: str
    """The item's id."""
    run_id: str
    """The run (its workspace, log and audit records)."""
    status: RunStatus
    """``complete``, ``failed`` or ``cancelled``."""
    answer: str | None
    """The final answer (none unless the run completed)."""
    error: str | None
    """Why the run did not complete (none when it did)."""
    iterations: int
    """Model turns."""
    tool_calls: int
    """Tool calls of every status."""
    tool_calls_by_status: dict[str, int]
    """Tool calls by status (``ok``, ``denied``, ``error``…)."""
    tokens: int
    """Tokens of every model call."""
    duration_s: float
    """Wall-clock time of the run."""
    log_path: str | None
    """The run's execution log (none when it never started)."""

    @classmethod
    def of(cls, item_id: str, result: RunResult) -> BatchResult:
        """The line of a run that ran."""
        return cls(
            id=item_id,
            run_id=result.run_id,
            status=result.status,
            answer=result.answer,
            error=None if result.success else result.reason,
            iterations=result.iterations,
            tool_calls=result.tool_call_count,
            tool_calls_by_status=dict(result.tool_calls),
            tokens=result.usage.total_tokens,
            duration_s=round(result.duration_s, 3),
            log_path=result.log_path,
        )

    @classmethod
    def not_started(cls, item_id: str, run_id: str, status: RunStatus, error: str) -> BatchResult:
        """The line of a run that never started (its files could not be written, a stop)."""
        return cls(
            id=item_id, run_id=run_id, status=status, answer=None, error=error, iterations=0,
            tool_calls=0, tool_calls_by_status={}, tokens=0, duration_s=0.0, log_path=None,
        )  # fmt: skip


_SHOWN_CHARS = 80
"""How much of a refused value an error shows (a goal may be pages long)."""


def _first_error(exc: pydantic.ValidationError) -> tuple[str, str]:
    """The field path and message of a validation error's first problem, naming the value."""
    first = exc.errors()[0]
    loc: list[Any] = list(first["loc"])
    error = (first.get("ctx") or {}).get("error")
    if isinstance(error, LocatedValueError):  # its message names the value
        loc.extend(error.loc)
        return ".".join(map(str, loc)), str(error)
    message = str(error) if error is not None else first["msg"]
    if first["type"] != "missing":
        # repr: control characters and direction overrides show as escapes, not acted on.
        value = first["input"]
        if isinstance(value, str) and len(value) > _SHOWN_CHARS:
            shown = f"{value[:_SHOWN_CHARS]!r}… ({len(value)} characters)"
        else:
            shown = _clipped(repr(value))
        message = f"{message} (got {shown})"
    return ".".join(map(str, loc)) or "(line)", message


def _clipped(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def read_batch(path: Path) -> list[BatchItem]:
    """The runs ``path`` asks for, in order; blank lines are skipped.

    Raises :class:`~orchestrator.errors.ConfigError` naming the file, the
    line and the field at the first line that is not JSON, is not an object,
    misses a field, has an unknown one, repeats an id or names a workspace
    file outside the workspace — before anything runs.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the batch file: {exc}", file=str(path)) from None
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"not JSON: {exc.msg} (column {exc.colno})", file=str(path), line=number
            ) from None
        if not isinstance(document, dict):
            raise ConfigError(
                f"a line must be a JSON object, not {type(document).__name__}",
                file=str(path),
                line=number,
            )
        try:
            item = BatchItem.model_validate(document)
        except pydantic.ValidationError as exc:
            field, message = _first_error(exc)
            raise ConfigError(message, file=str(path), line=number, field=field) from None
        if item.id in seen:
            raise ConfigError(
                f"the id {item.id!r} is already used on line {seen[item.id]}",
                file=str(path),
                line=number,
                field="id",
            )
        seen[item.id] = number
        items.append(item)
    if not items:
        raise ConfigError("the batch file holds no runs", file=str(path))
    return items


def _lines(text: str) -> list[str]:
    """The lines of a JSON-lines file, split at "\\n" only.

    ``str.splitlines`` also breaks at U+2028, U+2029 and NEL, which JSON leaves
    unescaped inside strings: a goal (or a recorded answer) holding one would be
    cut in two.
    """
    return text.split("\n")


def results_path_for(batch: Path) -> Path:
    """The default results file: beside the input, ``NAME.results.jsonl``."""
    stem = batch.name.removesuffix(".jsonl")
    return batch.with_name(f"{stem}.results.jsonl")


class BatchResultsFile:
    """A batch's results: one :class:`BatchResult` a line, appended as runs finish.

    Lines are appended, never rewritten: a rerun adds its lines after the
    earlier ones, and the latest line of an id is its result.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        """The file."""
        self._lock = threading.Lock()
        self._file: Any = None

    def read(self) -> dict[str, BatchResult]:
        """The latest result of every id in the file (empty when there is no file).

        A line that is not JSON is a write cut short (the process was killed
        while writing it; a later batch appends after it) and is skipped; a
        JSON line that is not a result raises
        :class:`~orchestrator.errors.ConfigError` naming it.
        """
        try:
            lines = _lines(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the results: {exc}", file=str(self.path)) from None
        latest: dict[str, BatchResult] = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                document = json.loads(line)
            except json.JSONDecodeError:
                continue  # cut short: that run had not been recorded, it runs again
            try:
                result = BatchResult.model_validate(document)
            except pydantic.ValidationError as exc:
                field, message = _first_error(exc)
                raise ConfigError(
                    f"not a batch result ({message})",
                    file=str(self.path),
                    line=number,
                    field=field,
                ) from None
            latest[result.id] = result
        return latest

    def append(self, result: BatchResult) -> None:
        """Add ``result`` as one line, on disk when this returns (blocking: call it off the
        event loop)."""
        line = result.model_dump_json() + "\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("a", encoding="utf-8")
                # After a cut-short last line, start on a fresh line.
                if self._file.tell() and not _ends_with_newline(self.path):
                    self._file.write("\n")
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file (appending opens it again)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"
