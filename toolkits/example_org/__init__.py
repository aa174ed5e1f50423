"""An example of an organisation's own toolkit, with a dependency of its own.

How to add a toolkit like this one:

1. Make a package under ``toolkits/`` (here ``example_org``) and mark its
   functions with ``@tool``: typed parameters and a Google-style docstring
   become the schema and the description the model sees.
2. List its third-party dependencies in ``requirements.txt`` next to it.
   ``stockade images build`` downloads them as wheels on the host and bakes
   them into the ``stockade-tools`` image (image builds have no network).
3. Import those dependencies inside the tool functions, not at the top of the
   module: the orchestrator imports the toolkit only to read its tools, and
   the dependency need not be installed on the host.
4. Name it where tools are configured (``--toolkit toolkits.example_org`` or
   ``STOCKADE_TOOLKITS``), and run ``stockade tools call`` to try it.
"""

from __future__ import annotations

from stockade_sdk import tool

__all__ = ["table"]


@tool
def table(rows: list[dict[str, str]], style: str = "github") -> str:
    """Render rows of data as a text table.

    Args:
        rows: The rows, each a mapping of column name to value.
        style: A tabulate table format, e.g. ``github``, ``grid`` or ``plain``.
    """
    from tabulate import tabulate  # noqa: PLC0415 - lives in the sandbox image only

    return str(tabulate(rows, headers="keys", tablefmt=style))
