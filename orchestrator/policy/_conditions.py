"""Conditions over a call's arguments: leaf tests and all/any/not combinators.

A leaf names an argument by dotted path (``options.mode``, ``files.0``) and
applies exactly one operator. An argument that is missing makes a leaf false
(so ``not`` of it is true). Patterns are compiled once, when the policy loads.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    model_validator,
)

__all__ = ["AllOf", "AnyOf", "Condition", "Leaf", "NotOf", "lookup"]

_MISSING = object()
_OPERATORS = (
    "equals",
    "one_of",
    "regex",
    "glob",
    "gt",
    "ge",
    "lt",
    "le",
    "min_length",
    "max_length",
)


def lookup(arguments: Any, path: str) -> Any:
    """The value at a dotted path, or a sentinel when any step is missing."""
    value = arguments
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return _MISSING
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class Leaf(BaseModel):
    """One test on one argument; exactly one operator must be set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arg: str = Field(min_length=1)
    """Dotted path of the argument, e.g. ``code`` or ``headers.Authorization``."""
    equals: Any = None
    """The argument equals this value."""
    one_of: list[Any] | None = None
    """The argument is one of these values."""
    regex: str | None = None
    """The argument (a string) matches this regular expression anywhere (``re.search``)."""
    glob: str | None = None
    """The argument (a string) matches this shell-style pattern as a whole."""
    gt: float | None = None
    """The argument (a number) is greater than this."""
    ge: float | None = None
    """The argument (a number) is at least this."""
    lt: float | None = None
    """The argument (a number) is less than this."""
    le: float | None = None
    """The argument (a number) is at most this."""
    min_length: int | None = Field(default=None, ge=0)
    """The argument (string, list or object) has at least this many items or characters."""
    max_length: int | None = Field(default=None, ge=0)
    """The argument (string, list or object) has at most this many items or characters."""

    _pattern: re.Pattern[str] | None = PrivateAttr(default=None)
    _operator: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _one_operator(self) -> Leaf:
        chosen = [name for name in _OPERATORS if name in self.model_fields_set]
        if len(chosen) != 1:
            raise ValueError(
                f"a condition on {self.arg!r} needs exactly one of {', '.join(_OPERATORS)}; "
                f"got {', '.join(chosen) or 'none'}"
            )
        self._operator = chosen[0]
        if self.regex is not None:
            try:
                self._pattern = re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.regex!r}: {exc}") from exc
        if self.glob is not None:
            self._pattern = re.compile(fnmatch.translate(self.glob))
        return self

    def matches(self, arguments: dict[str, Any]) -> bool:
        """Whether the call's arguments pass this test."""
        value = lookup(arguments, self.arg)
        return value is not _MISSING and self._test(value)

    def _test(self, value: Any) -> bool:
        operator = self._operator
        if operator == "equals":
            return bool(value == self.equals)
        if operator == "one_of":
            return value in (self.one_of or [])
        if operator in ("regex", "glob"):
            return isinstance(value, str) and self._matches_pattern(value)
        if operator in ("min_length", "max_length"):
            return isinstance(value, str | list | dict) and self._within(float(len(value)))
        number = _number(value)
        return number is not None and self._within(number)

    def _matches_pattern(self, value: str) -> bool:
        assert self._pattern is not None
        if self._operator == "regex":
            return self._pattern.search(value) is not None
        return self._pattern.match(value) is not None

    def _within(self, number: float) -> bool:
        bound = float(getattr(self, self._operator))
        comparisons = {
            "gt": number > bound,
            "ge": number >= bound,
            "lt": number < bound,
            "le": number <= bound,
            "min_length": number >= bound,
            "max_length": number <= bound,
        }
        return comparisons[self._operator]


class AllOf(BaseModel):
    """True when every condition is true."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    all: list[Condition] = Field(min_length=1)
    """The conditions."""

    def matches(self, arguments: dict[str, Any]) -> bool:
        """Whether every condition holds."""
        return all(condition.matches(arguments) for condition in self.all)


class AnyOf(BaseModel):
    """True when at least one condition is true."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    any: list[Condition] = Field(min_length=1)
    """The conditions."""

    def matches(self, arguments: dict[str, Any]) -> bool:
        """Whether some condition holds."""
        return any(condition.matches(arguments) for condition in self.any)


class NotOf(BaseModel):
    """True when the condition is false."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    not_: Condition = Field(alias="not")
    """The condition to negate."""

    def matches(self, arguments: dict[str, Any]) -> bool:
        """Whether the condition does not hold."""
        return not self.not_.matches(arguments)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("all", "any", "not"):
            if key in value:
                return key
    return "leaf"


Condition = Annotated[
    Annotated[Leaf, Tag("leaf")]
    | Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")],
    Discriminator(_kind),
]
"""A leaf test or a combination of conditions."""

AllOf.model_rebuild()
AnyOf.model_rebuild()
NotOf.model_rebuild()
