"""The toolkit author's SDK: standard library only, so it also runs inside sandbox images.

Toolkits mark their functions with :func:`tool`. The host imports a toolkit
only to read the marked functions (name, docstring, type hints) and build
their schemas; the functions themselves execute only inside a container.

    from stockade_sdk import tool

    @tool
    def add(a: int, b: int = 1) -> int:
        \"\"\"Add two numbers.

        Args:
            a: The first number.
            b: The second number.
        \"\"\"
        return a + b
"""

from __future__ import annotations

__all__ = ["TOOL_ATTRIBUTE", "ToolMark", "tool"]

TOOL_ATTRIBUTE = "__stockade_tool__"
"""The attribute :func:`tool` sets on a function."""

# This package is imported at the start of every tool call inside a sandbox:
# it avoids ``typing`` and ``dataclasses`` at run time, which would cost more
# start-up time than the rest of the call. mypy reads the typed block below.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import ParamSpec, TypeVar, overload

    P = ParamSpec("P")
    R = TypeVar("R")


class ToolMark:
    """What the decorator records; the host derives everything else."""

    __slots__ = ("description", "name", "profile")

    def __init__(
        self, *, name: str | None = None, description: str | None = None, profile: str | None = None
    ) -> None:
        self.name = name
        """Function part of the tool name; default: the function's own name."""
        self.description = description
        """Description for the model; default: the docstring's summary."""
        self.profile = profile
        """Sandbox profile to run in; default: the toolkit's."""

    def __repr__(self) -> str:
        fields = f"name={self.name!r}, description={self.description!r}, profile={self.profile!r}"
        return f"ToolMark({fields})"


if TYPE_CHECKING:

    @overload
    def tool(func: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def tool(
        *, name: str | None = None, description: str | None = None, profile: str | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def tool(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    profile: str | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a typed, documented function as a tool. The function is returned unchanged."""

    def mark(function: Callable[P, R]) -> Callable[P, R]:
        setattr(
            function, TOOL_ATTRIBUTE, ToolMark(name=name, description=description, profile=profile)
        )
        return function

    return mark(func) if func is not None else mark
