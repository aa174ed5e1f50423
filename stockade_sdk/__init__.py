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

A failure the model caused and can put right (a wrong path, a value out of
range) is raised as :class:`ToolError`: the model reads its message alone.
Any other exception is a fault of the tool, reported with its traceback.
"""

from __future__ import annotations

__all__ = ["TOOL_ATTRIBUTE", "ToolError", "ToolMark", "tool"]

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


class ToolError(Exception):
    """A failure of the call, not of the tool: the model is told the message, nothing more.

    Raise it for what the model can correct from the message alone (``"notes.txt:
    no such file"``). A traceback through the toolkit's own code would cost the
    model tokens and tell it nothing it can act on; other exceptions keep theirs,
    for the toolkit's author.
    """


class ToolMark:
    """What the decorator records; the host derives everything else."""

    __slots__ = ("description", "idempotent", "name", "profile")

    def __init__(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        profile: str | None = None,
        idempotent: bool = False,
    ) -> None:
        self.name = name
        """Function part of the tool name; default: the function's own name."""
        self.description = description
        """Description for the model; default: the docstring's summary."""
        self.profile = profile
        """Sandbox profile to run in; default: the toolkit's."""
        self.idempotent = idempotent
        """Running it twice has the effect of running it once (a read): a call interrupted by
        an orchestrator restart is run again instead of being reported as of unknown effect."""

    def __repr__(self) -> str:
        fields = (
            f"name={self.name!r}, description={self.description!r}, profile={self.profile!r}, "
            f"idempotent={self.idempotent!r}"
        )
        return f"ToolMark({fields})"


if TYPE_CHECKING:

    @overload
    def tool(func: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def tool(
        *,
        name: str | None = None,
        description: str | None = None,
        profile: str | None = None,
        idempotent: bool = False,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def tool(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    profile: str | None = None,
    idempotent: bool = False,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a typed, documented function as a tool. The function is returned unchanged.

    ``idempotent=True`` declares that running the tool twice does what running it once
    does (it only reads): a call cut short by an orchestrator restart is then run again
    rather than reported to the model as of unknown effect, and so is one with egress whose
    container dies mid-program or whose sandbox host is lost.
    """

    def mark(function: Callable[P, R]) -> Callable[P, R]:
        setattr(
            function,
            TOOL_ATTRIBUTE,
            ToolMark(name=name, description=description, profile=profile, idempotent=idempotent),
        )
        return function

    return mark(func) if func is not None else mark
