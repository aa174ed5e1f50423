"""What every policy-file model shares: strict config (from :mod:`orchestrator.strict`), globs."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import Annotated

from pydantic import BeforeValidator, Field, WithJsonSchema

from orchestrator.strict import STRICT, LocatedValueError

__all__ = ["STRICT", "Globs", "LocatedValueError", "compile_globs"]


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


_GLOB_SCHEMA = {"type": "string", "minLength": 1}
Globs = Annotated[
    list[Annotated[str, Field(min_length=1)]],
    BeforeValidator(_as_list),
    WithJsonSchema(
        {"anyOf": [_GLOB_SCHEMA, {"type": "array", "items": _GLOB_SCHEMA, "minItems": 1}]}
    ),
]
"""Shell-style globs: one string, or a list of them."""


def compile_globs(patterns: Sequence[str]) -> re.Pattern[str]:
    """One regex matching a whole name against any of the shell-style ``patterns``.

    Compiled once at load time so matching a call costs one ``re.match``.
    ``*`` matches any run of characters, dots included (``files.*``, ``*``).
    """
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in patterns))
