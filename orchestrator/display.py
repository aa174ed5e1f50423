"""Untrusted text made safe to show: what a model wrote, a tool printed, a sandbox named.

A terminal acts on the control sequences in what it is given: it clears the
screen, moves the cursor, sets the window title, makes links, and in many
terminals writes the clipboard (OSC 52). Text from a run reaches terminals
(the CLI), pages and MCP clients; :func:`for_display` removes every such
sequence (CSI, OSC, DCS/PM/APC/SOS strings, their 8-bit forms, two-byte
escapes; an unfinished one at the end too, as a cut chunk may hold), any
other control character but tab and newline, and the bidirectional overrides
and isolates that make text read in another order than it is.

Where a person decides on a value (a call's arguments, before approving it),
nothing is removed: :func:`json_for_people` shows every such character as its
``\\u`` escape, so "invoice\\u202egpj.sh" cannot pass for "invoicehs.jpg".

Before any of that, text from outside must be text at all: :func:`well_formed`
replaces the lone surrogates JSON's ``\\ud800`` escape decodes to, which no
UTF-8 file, database or page can hold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["for_display", "is_well_formed", "json_for_people", "well_formed"]

_CONTROL = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b[P^_X]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]"
)

# Controls (C0 but tab and newline, DEL, C1) and the format characters that hide text or
# change its order: soft hyphen, Arabic letter mark, zero-width and direction marks, line
# and paragraph separators, embeddings and overrides, invisible operators, isolates, the
# byte order mark, interlinear annotations, and tag characters (invisible ASCII).
_HIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]"
)


_SURROGATE = re.compile("[\ud800-\udfff]")


def is_well_formed(text: str) -> bool:
    """Whether ``text`` holds no surrogate (what JSON's lone ``\\ud800`` escapes decode to)."""
    return _SURROGATE.search(text) is None


def well_formed(text: str) -> str:
    """``text`` with every surrogate paired or replaced by U+FFFD.

    JSON's ``\\ud800`` escape decodes to a lone surrogate, which UTF-8 cannot
    encode: text holding one could be written to no log, checkpoint or page.
    Two halves of a pair that sit side by side (a pair split across two
    streamed chunks, joined) become their character.
    """
    if is_well_formed(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def for_display(text: str) -> str:
    """``text`` with terminal control sequences and control characters removed
    (newlines and tabs stay): safe to put on a terminal or a page."""
    return _CONTROL.sub("", text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    high, low = divmod(code - 0x10000, 0x400)  # JSON writes it as a surrogate pair
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def json_for_people(
    value: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = True,
    default: Callable[[Any], Any] | None = None,
) -> str:
    """``value`` as JSON (by default indented, keys sorted) in which every control,
    invisible or reordering character is written as its ``\\u`` escape: the same value
    when read back (the characters only occur inside strings), and none of them can hide
    or reorder what a person reads, nor reach a terminal raw (``ensure_ascii=False``, and
    pydantic's JSON, leave C1 controls such as the 8-bit CSI as they are)."""
    text = json.dumps(
        value, indent=indent, ensure_ascii=False, sort_keys=sort_keys, default=default
    )
    return _HIDDEN.sub(_escape, text)
