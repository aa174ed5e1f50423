"""A sub-module: the registry walks the whole package."""

from stockade_sdk import tool


@tool
def nested(path: str) -> str:
    """Found in a sub-package.

    Args:
        path: A path.
    """
    return path
