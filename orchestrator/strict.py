"""The one strict base for every model that crosses a boundary (files, wire, results).

Unknown keys fail (a typo is an error, not a silently ignored setting),
values never change after validation, and a field's docstring becomes its
description (in error messages, JSON Schemas and ``stockade config show``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["STRICT", "LocatedValueError", "StrictModel"]

STRICT = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
"""The configuration of :class:`StrictModel`, for models that must extend it."""


class StrictModel(BaseModel):
    """A frozen pydantic model that refuses unknown keys."""

    model_config = STRICT


class LocatedValueError(ValueError):
    """A validation failure inside the value being validated, at ``loc`` below it.

    Pydantic reports a validator's error at the validated object; the YAML
    loader appends ``loc`` so the message names the exact field and line (say
    the second of two rules with one name, not the whole ``rules`` list).
    """

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc
