"""The registry: which tools exist, their schemas, and host-side argument validation."""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import math
import pkgutil
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pydantic

from orchestrator.display import is_well_formed
from orchestrator.errors import ConfigError
from orchestrator.runid import run_id_problem
from orchestrator.tools._docstring import parse_docstring
from orchestrator.tools._models import ToolCall, ToolResult, ToolStatus
from orchestrator.tools._schema import is_strict_compatible, parameters_model, parameters_schema
from stockade_sdk import TOOL_ATTRIBUTE, ToolMark

__all__ = ["MAX_ARGUMENT_BYTES", "ToolRegistry", "ToolSpec", "ValidatedCall", "openai_name"]

MAX_ARGUMENT_BYTES = 256 * 1024
"""Largest argument payload accepted from a model."""
_NAME_PART = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


def openai_name(name: str) -> str:
    """``toolkit.function`` as an OpenAI function name (``toolkit__function``).

    OpenAI allows ``[a-zA-Z0-9_-]`` only; tool name parts never contain a
    double underscore, so the mapping is reversible (see :meth:`ToolRegistry.get`).
    """
    return name.replace(".", "__")


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """A registered tool."""

    name: str
    """``toolkit.function``."""
    toolkit: str
    """The toolkit it belongs to."""
    description: str
    """What the model is told the tool does."""
    parameters: type[pydantic.BaseModel]
    """The model arguments are validated against."""
    schema: dict[str, Any]
    """JSON Schema of the parameters."""
    strict: bool
    """Whether the schema qualifies for OpenAI's strict mode."""
    profile: str
    """Sandbox profile the tool runs in."""
    entrypoint: str
    """``module:function``, imported inside the container to run the tool."""
    idempotent: bool = False
    """Running it twice does what running it once does (``@tool(idempotent=True)``): a call
    interrupted by an orchestrator restart is run again on resume, and one with egress whose
    sandbox dies mid-program (its container killed, its host lost) is retried."""

    def openai(self) -> dict[str, Any]:
        """The tool in OpenAI's function-calling format."""
        return {
            "type": "function",
            "function": {
                "name": openai_name(self.name),
                "description": self.description,
                "parameters": self.schema,
                "strict": self.strict,
            },
        }


@dataclass(frozen=True, kw_only=True)
class ValidatedCall:
    """A call whose tool exists and whose arguments passed validation."""

    call: ToolCall
    spec: ToolSpec
    arguments: dict[str, Any]
    """The validated arguments, defaults filled in, in JSON-compatible form."""


def _fail(call: ToolCall, status: ToolStatus, error: str) -> ToolResult:
    return ToolResult(call_id=call.id, name=call.name, status=status, error=error)


def _describe_errors(exc: pydantic.ValidationError, spec: ToolSpec) -> str:
    lines = [f"invalid arguments for {spec.name}:"]
    for error in exc.errors()[:10]:
        where = ".".join(str(part) for part in error["loc"]) or "(arguments)"
        got = "" if error["type"] == "missing" else f" (got {json.dumps(error['input'])[:80]})"
        lines.append(f"- {where}: {error['msg']}{got}")
    expected = ", ".join(
        f"{name}{'' if name in spec.schema['required'] else '?'}"
        for name in spec.schema["properties"]
    )
    lines.append(f"expected an object with: {expected or 'no parameters'}")
    return "\n".join(lines)


def _decode(call: ToolCall) -> dict[str, Any] | ToolResult:
    raw = call.arguments
    if isinstance(raw, str):
        if len(raw.encode("utf-8", "surrogatepass")) > MAX_ARGUMENT_BYTES:
            return _fail(
                call, ToolStatus.INVALID_ARGUMENTS, f"arguments exceed {MAX_ARGUMENT_BYTES} bytes"
            )
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, RecursionError) as exc:
            return _fail(
                call,
                ToolStatus.INVALID_ARGUMENTS,
                f"arguments are not valid JSON ({exc}); send a JSON object",
            )
    if not isinstance(raw, dict):
        return _fail(
            call,
            ToolStatus.INVALID_ARGUMENTS,
            f"arguments must be a JSON object, got {type(raw).__name__}",
        )
    if (found := _not_json(raw, ())) is not None:
        where, problem = found
        return _fail(
            call, ToolStatus.INVALID_ARGUMENTS, f"{'.'.join(where) or '(arguments)'}: {problem}"
        )
    return raw


# JSON's "\ud800" escape decodes to half a character, which no log, approval, page or
# sandbox can hold as text.
_HALF_PAIR = (
    "holds half a UTF-16 surrogate pair (a lone \\ud800-\\udfff escape), which is not text; "
    "send the characters themselves"
)
# 1e999 is valid JSON text that decodes to inf, and Python's reader also takes NaN and
# Infinity: the policy's comparisons never hold for NaN (a rule denying `gt: 60` let it
# by), the tool got the non-JSON literal on its stdin, and the audit log wrote null.
_NOT_FINITE = (
    "{value!r} is not a number JSON can carry (NaN, Infinity, or past 1.8e308); "
    "send a finite number"
)


def _not_json(value: Any, at: tuple[str, ...]) -> tuple[tuple[str, ...], str] | None:
    """Where decoded JSON holds what JSON text cannot (a lone surrogate, a number that is
    not finite), and what; None when nowhere. Refused before anything decides on or records
    the arguments."""
    if isinstance(value, str):
        return None if is_well_formed(value) else (at, _HALF_PAIR)
    if isinstance(value, float):
        return None if math.isfinite(value) else (at, _NOT_FINITE.format(value=value))
    if isinstance(value, dict):
        for key, item in value.items():
            if not is_well_formed(key):
                return (*at, repr(key)), _HALF_PAIR
            if (found := _not_json(item, (*at, key))) is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if (found := _not_json(item, (*at, str(index)))) is not None:
                return found
    return None


class ToolRegistry:
    """Tools by name, loaded from toolkits (packages of functions marked with ``@tool``)."""

    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}

    def register(
        self, func: Callable[..., Any], *, toolkit: str, profile: str = "default"
    ) -> ToolSpec:
        """Add one marked (or plain, typed and documented) function."""
        mark: ToolMark = getattr(func, TOOL_ATTRIBUTE, None) or ToolMark()
        function_name = mark.name or func.__name__
        for part in (toolkit, function_name):
            if not _NAME_PART.fullmatch(part):
                raise ConfigError(
                    f"tool name part {part!r} must be lower_snake_case without '__'",
                    field=f"{func.__module__}.{func.__qualname__}",
                )
        name = f"{toolkit}.{function_name}"
        if name in self._tools:
            raise ConfigError(
                f"tool {name} is defined twice: {self._tools[name].entrypoint} and "
                f"{func.__module__}:{func.__qualname__}"
            )
        summary, descriptions = parse_docstring(func.__doc__)
        description = mark.description or summary
        if not description:
            raise ConfigError(f"{func.__module__}.{func.__qualname__} needs a docstring")
        model = parameters_model(func, name=name, descriptions=descriptions)
        schema = parameters_schema(model)
        spec = ToolSpec(
            name=name,
            toolkit=toolkit,
            description=description,
            parameters=model,
            schema=schema,
            strict=is_strict_compatible(schema),
            profile=mark.profile or profile,
            entrypoint=f"{func.__module__}:{func.__qualname__}",
            idempotent=mark.idempotent,
        )
        self._tools[name] = spec
        return spec

    def load(
        self, package: str, *, toolkit: str | None = None, profile: str = "default"
    ) -> list[ToolSpec]:
        """Register every marked function in an importable module or package."""
        try:
            root = importlib.import_module(package)
        except ImportError as exc:
            raise ConfigError(f"toolkit {package!r} cannot be imported: {exc}") from exc
        name = toolkit or package.rsplit(".", 1)[-1]
        return [
            self.register(func, toolkit=name, profile=profile)
            for module in self._modules(root)
            for _, func in sorted(inspect.getmembers(module, inspect.isfunction))
            if hasattr(func, TOOL_ATTRIBUTE) and func.__module__ == module.__name__
        ]

    @staticmethod
    def _modules(root: ModuleType) -> Iterable[ModuleType]:
        yield root
        if hasattr(root, "__path__"):
            for info in pkgutil.walk_packages(root.__path__, prefix=f"{root.__name__}."):
                yield importlib.import_module(info.name)

    def get(self, name: str) -> ToolSpec | None:
        """A tool by ``toolkit.function`` or by its OpenAI name."""
        return self._tools.get(name) or self._tools.get(name.replace("__", "."))

    def tools(self) -> list[ToolSpec]:
        """All tools, sorted by name."""
        return [self._tools[name] for name in sorted(self._tools)]

    def openai_tools(self) -> list[dict[str, Any]]:
        """Every tool in OpenAI's function-calling format."""
        return [spec.openai() for spec in self.tools()]

    def validate(self, call: ToolCall) -> ValidatedCall | ToolResult:
        """Check a call host-side. Never raises: problems become a model-readable result."""
        spec = self.get(call.name)
        if spec is None:
            close = difflib.get_close_matches(call.name, list(self._tools), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            known = ", ".join(sorted(self._tools)) or "none"
            return _fail(
                call, ToolStatus.UNKNOWN_TOOL, f"unknown tool {call.name!r}{hint} (tools: {known})"
            )
        # The run's id names its workspace's directory: refused here, not deep in the sandbox.
        if call.run_id is not None and (problem := run_id_problem(call.run_id)):
            return _fail(call, ToolStatus.INVALID_ARGUMENTS, problem)
        raw = _decode(call)
        if isinstance(raw, ToolResult):
            return raw
        try:
            model = spec.parameters.model_validate(raw)
        except pydantic.ValidationError as exc:
            return _fail(call, ToolStatus.INVALID_ARGUMENTS, _describe_errors(exc, spec))
        except (RecursionError, ValueError, TypeError) as exc:
            return _fail(call, ToolStatus.INVALID_ARGUMENTS, f"arguments rejected: {exc}")
        return ValidatedCall(call=call, spec=spec, arguments=model.model_dump(mode="json"))
