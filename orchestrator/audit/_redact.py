"""Secrets out of what goes into the audit log, in time linear in what the model sent.

The patterns run on RE2 (:mod:`orchestrator.policy._re2`): the strings they
scan are the model's to choose, and Python's backtracking ``re`` can take
quadratic or exponential time on a crafted string.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.policy._re2 import LinearRegex, RegexError

__all__ = ["MAX_REPLACEMENTS", "REDACTED", "redact", "redact_keyed", "redacted_at", "scrub"]

REDACTED = "[REDACTED]"
"""What a secret is replaced with."""

MAX_REPLACEMENTS = 100
"""Matches of one pattern replaced one by one in one string; from the next on, the rest
of the string is replaced whole. Each further match can cost a pass over the rest of the
string (see :meth:`LinearRegex.replace`); a cap of 100 keeps a 256 KiB argument to ~60 ms."""

# Strings up to this many characters found free of secrets are remembered, up to
# _CLEAN_ENTRIES of them per pattern list: a call's intent and its outcome
# record carry the same arguments, and keys ("code", "path") recur in every
# record. A remembered string costs a dict lookup (its hash is cached on the
# str) instead of an RE2 pass: redacting the gateway benchmark's arguments
# again measured 3.0 against 11.2 µs, a short output 0.24 against 2.0 µs.
# Only clean strings are kept, so no secret outlives the record that carried it.
# Bounded so the memory stays small: at most 1 024 strings of 1 024 characters
# (4 MiB even if every character took four bytes), cleared when full.
_CLEAN_CHARS = 1024
_CLEAN_ENTRIES = 1024

# Python flags a compiled ``re.Pattern`` may carry, as RE2's inline flags.
_INLINE_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"))


def redact(value: Any, patterns: Sequence[str | re.Pattern[str] | LinearRegex]) -> Any:
    """A copy of ``value`` with secrets replaced by ``[REDACTED]``.

    In every string (at any depth) each match of a pattern is replaced; in a
    mapping, an entry whose key matches a pattern has its whole value replaced,
    so ``(?i)^(password|api_key)$`` hides ``{"password": ...}``. Keys stay as
    they are; numbers and other scalars pass through. The input is not changed.
    Patterns are RE2 syntax; a compiled ``re.Pattern`` is recompiled for RE2
    (and raises :class:`~orchestrator.policy._re2.RegexError` if RE2 cannot).
    """
    if not patterns:
        return value
    return _redact(value, _compiled_as_given(tuple(patterns)))


@functools.lru_cache(maxsize=64)
def _compiled_as_given(patterns: tuple[str | re.Pattern[str] | LinearRegex, ...]) -> _Patterns:
    # Keyed on the patterns as the caller holds them (the audit log passes the
    # same tuple every time): translating each to its RE2 source on every
    # call cost 2 µs of the 7 of a small record's redaction.
    return _compiled(tuple(_source(pattern) for pattern in patterns))


def _source(pattern: str | re.Pattern[str] | LinearRegex) -> str:
    if isinstance(pattern, str):
        return pattern
    if isinstance(pattern, LinearRegex):
        return pattern.pattern
    if pattern.flags & re.VERBOSE:
        raise ValueError(f"RE2 has no verbose mode: {pattern.pattern!r}")
    flags = "".join(letter for flag, letter in _INLINE_FLAGS if pattern.flags & flag)
    return f"(?{flags}){pattern.pattern}" if flags else pattern.pattern


@dataclass(frozen=True, kw_only=True, slots=True)
class _Patterns:
    each: tuple[LinearRegex, ...]
    """The patterns, applied one after the other."""
    any: LinearRegex | None
    """All of them as one alternation: one pass tells whether a string holds a secret
    (most hold none), instead of one pass per pattern (~1 µs each, even on short strings).
    None if the alternation outgrows RE2's memory budget although each pattern fits."""
    clean: dict[str, bool]
    """Short strings known to hold no secret (see ``_CLEAN_CHARS``)."""


@functools.lru_cache(maxsize=64)
def _compiled(sources: tuple[str, ...]) -> _Patterns:
    # Callers pass the same few pattern lists for every record. A group scopes
    # the inline flags of each pattern, as (?i) in one must not reach the next.
    each = tuple(LinearRegex(source) for source in sources)
    try:
        combined: LinearRegex | None = LinearRegex("|".join(f"(?:{s})" for s in sources))
    except RegexError:
        combined = None
    return _Patterns(each=each, any=combined, clean={})


def _found(patterns: _Patterns, text: str) -> bool:
    short = len(text) <= _CLEAN_CHARS
    if short and text in patterns.clean:
        return False
    if patterns.any is not None:
        found = patterns.any.search(text)
    else:
        found = any(pattern.search(text) for pattern in patterns.each)
    if short and not found:
        clean = patterns.clean
        if len(clean) >= _CLEAN_ENTRIES:
            clean.clear()  # a dict's operations are atomic: threads may share it
        clean[text] = False
    return found


# A value hidden by a key rule is also taken out of the record's other strings
# (a validation error quotes it: 'got "hunter2"'); shorter ones are not, as
# they would blank out ordinary words and numbers everywhere.
_MIN_SCRUBBED_CHARS = 4


def redact_keyed(
    value: Any, patterns: Sequence[str | re.Pattern[str] | LinearRegex], hidden: set[str]
) -> Any:
    """:func:`redact`, also adding to ``hidden`` every string a key rule hid (the scalars
    under a matching key, as text), so :func:`scrub` can take them out of other fields."""
    if not patterns:
        return value
    return _redact(value, _compiled_as_given(tuple(patterns)), hidden)


def scrub(value: Any, hidden: set[str]) -> Any:
    """A copy of ``value`` with each of ``hidden`` replaced by ``[REDACTED]`` in every string."""
    if not hidden:
        return value
    if isinstance(value, str):
        for secret in hidden:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {key: scrub(item, hidden) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item, hidden) for item in value]
    return value


def _hide(value: Any, hidden: set[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _hide(item, hidden)
    elif isinstance(value, list | tuple):
        for item in value:
            _hide(item, hidden)
    elif value is not None and not isinstance(value, bool):
        text = value if isinstance(value, str) else str(value)
        if len(text) >= _MIN_SCRUBBED_CHARS:
            hidden.add(text)


def _redact(value: Any, patterns: _Patterns, hidden: set[str] | None = None) -> Any:
    if isinstance(value, str):
        if not _found(patterns, value):
            return value
        for pattern in patterns.each:
            value = pattern.replace(value, REDACTED, limit=MAX_REPLACEMENTS)
        return value
    if isinstance(value, dict):
        kept: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and _found(patterns, key):
                kept[key] = REDACTED
                if hidden is not None:
                    _hide(item, hidden)
            else:
                kept[key] = _redact(item, patterns, hidden)
        return kept
    if isinstance(value, list | tuple):
        return [_redact(item, patterns, hidden) for item in value]
    return value


def redacted_at(value: Any) -> tuple[str | int, ...] | None:
    """The keys leading to the first string in ``value`` (JSON-like) that holds
    :data:`REDACTED`, or None if none does."""
    if isinstance(value, str):
        return () if REDACTED in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = redacted_at(item)
        if found is not None:
            return (key, *found)
    return None
