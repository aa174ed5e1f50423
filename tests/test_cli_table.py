"""The CLI's tables, as a program reading them with ``awk`` or ``diff`` gets them."""

from __future__ import annotations

import pytest

from orchestrator.cli._common import table


def test_columns_align_and_no_line_ends_in_spaces(capsys: pytest.CaptureFixture[str]) -> None:
    table(["NAME", "VALUE"], [["a", "a long value"], ["bb", None]])
    assert capsys.readouterr().out.splitlines() == [
        "NAME  VALUE",
        "a     a long value",
        "bb",
    ]


def test_piped_lines_are_not_cut_to_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    table(["K", "V"], [["k", "x" * 300]])
    assert capsys.readouterr().out.splitlines()[1] == "k  " + "x" * 300
