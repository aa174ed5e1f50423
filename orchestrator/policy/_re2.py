"""Regular expressions in time linear in the text they search: RE2, for model-chosen text.

Every pattern an administrator writes that meets what a model sends (policy
``regex`` conditions, auto-approval conditions, the ``redact`` list) runs on
RE2 through ``google-re2``. Python's ``re`` backtracks: the shipped rule
``\\brm\\s+(-[a-zA-Z]*[rf][a-zA-Z]*\\s+)+`` spent 12 s of CPU on
``"rm -" + "r" * 40000`` (quadratic), and a nested quantifier such as
``(a+)+$`` is exponential. RE2 runs an automaton instead: the cost is at most
proportional to the text's length times the pattern's size (``x{500}`` counts
500 times), whatever the text.

The price is syntax: RE2 has no backreferences, lookahead or lookbehind,
atomic groups or possessive quantifiers, verbose mode ``(?x)``, or ``\\Z``
(write ``\\z``); ``$`` without ``(?m)`` matches only at the very end (not
before a final newline); ``\\b``, ``\\w``, ``\\d`` and ``\\s`` are ASCII (use
``\\pL``, ``\\pN`` or ``[[:space:]]`` for more); counted repetition stops at
``{1000}``, and ``{,n}`` is not a repetition (Python reads it as ``{0,n}``,
RE2 as the literal text, so it is refused). A pattern RE2 cannot compile is a
:class:`RegexError` whose message says why.
"""

from __future__ import annotations

import functools
import re
from typing import Any

# google-re2 ships no type information; this module is its typed face.
import re2  # type: ignore[import-untyped]

__all__ = ["LinearRegex", "RegexError"]

# What RE2's terse reasons mean for someone who wrote a Python pattern.
_HINTS = (
    ("(?=", "lookahead is not supported"),
    ("(?!", "lookahead is not supported"),
    ("(?<=", "lookbehind is not supported"),
    ("(?<!", "lookbehind is not supported"),
    ("(?>", "atomic groups are not supported, nor needed: RE2 never backtracks"),
    ("*+", "possessive quantifiers are not supported, nor needed: RE2 never backtracks"),
    ("++", "possessive quantifiers are not supported, nor needed: RE2 never backtracks"),
    ("?+", "possessive quantifiers are not supported, nor needed: RE2 never backtracks"),
    ("(?P", "backreferences are not supported"),
    ("(?x", "verbose mode is not supported"),
    ("(?#", "comments are not supported"),
    ("\\Z", "write \\z for the end of the text"),
    ("repetition size", "counted repetition stops at {1000}"),
    ("too large", "the pattern is too large for RE2's memory budget"),
)


def _options() -> Any:
    options = re2.Options()
    # Callers only ask whether and where a pattern matches, never for groups:
    # without captures RE2 answers from its DFA alone.
    options.never_capture = True
    # A pattern RE2 cannot compile is raised; do not also print it to stderr.
    options.log_errors = False
    return options


_OPTIONS = _options()
# search() asks the compiled RE2 object (google-re2's ``_Regexp._regexp``)
# directly: the wrapper's search builds a generator and a match object to say
# yes or no (0.94 against 0.72 µs on a 200-character argument, ten times in the
# gateway benchmark's 50-rule decision). Its answer is the span of the whole
# match, (-1, -1) for none.
_UNANCHORED = re2._Anchor.UNANCHORED

# `{,n}` after an unescaped character: a repetition to Python, literal text to RE2.
_OPEN_LOWER_BOUND = re.compile(r"(?:^|[^\\])(?:\\\\)*\{,\d*\}")


class RegexError(ValueError):
    """A pattern RE2 cannot compile; the message names the pattern and why."""


def _reason(error: Exception) -> str:
    detail = error.args[0] if error.args else ""
    reason = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    for needle, hint in _HINTS:
        if needle in reason:
            return f"{reason} ({hint})"
    if reason.startswith("invalid escape sequence: \\") and reason[-1:].isdigit():
        return f"{reason} (backreferences are not supported)"
    return reason


def _utf8(text: str) -> bytes:
    # google-re2 would encode a str strictly (a lone surrogate, which JSON
    # allows, raises) and map every match back to characters. RE2 reads the
    # bytes of an encoded surrogate as that code point, so nothing is lost.
    return text.encode("utf-8", "surrogatepass")


class LinearRegex:
    """One compiled RE2 pattern, applied to ``str``; ``pattern`` is the pattern as written."""

    __slots__ = ("_regexp", "pattern")

    def __init__(self, pattern: str) -> None:
        """Compile ``pattern``; raises :class:`RegexError` if RE2 cannot."""
        invalid = f"invalid regular expression {pattern!r} (RE2 syntax)"
        if _OPEN_LOWER_BOUND.search(pattern):
            raise RegexError(f"{invalid}: {{,n}} would match itself (write {{0,n}} to repeat)")
        try:
            self._regexp: Any = _compile(pattern)
        except re2.error as exc:
            raise RegexError(f"{invalid}: {_reason(exc)}") from None
        self.pattern = pattern

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in ``text`` (one pass over it)."""
        data = _utf8(text)
        start: int = self._regexp._regexp.Match(_UNANCHORED, data, 0, len(data))[0][0]
        return start >= 0

    def replace(self, text: str, replacement: str, *, limit: int) -> str:
        """``text`` with each match replaced, up to ``limit`` matches; past them, all the rest.

        Finding successive matches can cost a pass over the rest of the text
        each (``a(.*z)?`` on ``"aaaa…"``: each match is one ``a``, but only the
        end of the text shows that the longer alternative fails), so ``limit``
        bounds the work to ``limit + 1`` passes. Beyond it, everything from the
        next match on is replaced: a secret is never let through for lack of time.
        """
        data = _utf8(text)
        substitute = _utf8(replacement)
        pieces: list[bytes] = []
        end = 0
        for count, found in enumerate(self._regexp.finditer(data)):
            start, stop = found.span()
            pieces += (data[end:start], substitute)
            if count == limit:  # this match and everything after it, as one
                end = len(data)
                break
            end = stop
        if not pieces:
            return text
        pieces.append(data[end:])
        joined = b"".join(pieces)
        try:
            return joined.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:  # only \C (one byte) can split a character
            return joined.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"LinearRegex({self.pattern!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinearRegex) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> Any:
    """The RE2 object for ``pattern`` (a policy's patterns are compiled once each)."""
    return re2.compile(pattern, _OPTIONS)
