"""A toolkit used by the registry tests."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from stockade_sdk import tool


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: int
    y: int


@tool
def everything(
    text: str,
    count: int,
    ratio: float,
    flag: bool,
    mode: Literal["fast", "slow"],
    color: Color,
    tags: list[str],
    extra: dict[str, int],
    point: Point,
    maybe: str | None,
) -> str:
    """Take one of every type.

    Args:
        text: Some text.
        count: How many.
            Continued on a second line.
        ratio: A ratio.
        flag: A flag.
        mode: How fast.
        color: Which color.
        tags: Labels.
        extra: Named numbers.
        point: A point.
        maybe: Perhaps text.
    """
    return text


@tool(name="greet", profile="tiny")
def say_hello(name: str = "world", times: int = 1) -> str:
    """Greet someone.

    Args:
        name: Who to greet.
        times: How often.
    """
    return f"hello {name}" * times


def not_a_tool(x: int) -> int:
    """Not marked, so never registered."""
    return x
