"""Untrusted text made safe to show: nothing a terminal acts on, nothing that hides text."""

from __future__ import annotations

import io
import json
import sys

import pytest

from orchestrator.cli._common import echo_json, echo_untrusted, progress, table
from orchestrator.display import for_display, json_for_people


def test_display_strips_every_kind_of_control_sequence() -> None:
    hostile = (
        "a\x1b[2J\x1b[1;31mb\x1b[0m\x1b]0;title\x07c\x1b]8;;http://x\x1b\\d"
        "\x1bPq#0\x1b\\e\x9b31mf\x07\x08\x00\r\x7fg\tend\n"
    )
    assert for_display(hostile) == "abcdefg\tend\n"


def test_display_drops_the_overrides_that_reorder_text() -> None:
    assert for_display("invoice\u202egpj.sh \u2066x\u2069 עברית") == "invoicegpj.sh x עברית"


def test_json_for_people_escapes_what_hides_text_and_reads_back_the_same() -> None:
    value = {
        "path": "invoice\u202egpj.sh",
        "note": "a\x9b2J\u200b\U000e0041\xad \u4e2d\u6587 \U0001f600 é",
        "key\u2066": ["\n\t", "\x7f"],
    }
    shown = json_for_people(value)
    assert json.loads(shown) == value
    for escape in ("\\u202e", "\\u009b", "\\u200b", "\\udb40\\udc41", "\\u00ad", "\\u2066",
                   "\\u007f"):  # fmt: skip
        assert escape in shown
    assert "\u4e2d\u6587 \U0001f600 é" in shown, "ordinary text stays readable"
    assert not any(0x7F <= ord(char) <= 0x9F or char in "\u202e\u200b" for char in shown)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_untrusted_text_reaches_a_terminal_inert_and_a_pipe_whole(
    monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    echo_untrusted("ok\x1b]52;c;cm0gLXJmIH4=\x07 done")
    expected = "ok done\n" if terminal else "ok\x1b]52;c;cm0gLXJmIH4=\x07 done\n"
    assert stream.getvalue() == expected


def test_table_cells_are_text_never_markup_nor_control(capsys: pytest.CaptureFixture[str]) -> None:
    """A goal reading "[data/x.csv]" lost the brackets' content (rich took it for a style),
    "[/b]" stopped the command with a MarkupError, and escapes reached the terminal."""
    table(["ID", "GOAL"], [("r1", "Parse [data/x.csv] and fix [/b] \x1b]0;title\x07[link=x]y")])
    shown = capsys.readouterr().out
    assert "Parse [data/x.csv] and fix [/b] [link=x]y" in shown
    assert "\x1b" not in shown and "\x07" not in shown


def test_json_for_programs_holds_nothing_a_terminal_acts_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--json`` output is often read on a terminal: a C1 control passed json.dumps
    (ensure_ascii=False) and pydantic's JSON raw. Escaped, it reads back the same."""
    document = {"output": "a\x9b2J\u202eb \u4e2d", "z": 1, "a": 2}
    echo_json(document)
    shown = capsys.readouterr().out
    assert "\\u009b2J\\u202eb \u4e2d" in shown and "\x9b" not in shown
    assert json.loads(shown) == document
    assert list(json.loads(shown)) == ["output", "z", "a"], "the document's own order"


def test_progress_lines_carry_no_control_sequences(capsys: pytest.CaptureFixture[str]) -> None:
    # An image build's progress quotes a toolkit's requirements and a registry's answers.
    progress("resolving numpy===1\x1b]0;owned\x07\x1b[2J, \x9b31mtabulate")
    assert capsys.readouterr().err == "  resolving numpy===1, tabulate\n"
