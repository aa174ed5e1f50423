"""The files toolkit at its limits and edges, run in this process: what a model reads.

The sandbox's runner sends back at most its output cap (1 MiB by default) of the
outcome line, which holds the result JSON-escaped; a result past it reaches the
model as malformed. Run for real (in a sandbox) in ``test_builtin_toolkits``.
"""

from __future__ import annotations

import base64
import json
import tracemalloc
from pathlib import Path

import pytest

from stockade_sdk import ToolError
from toolkits import files
from toolkits.files import _lines as files_lines

_OUTPUT_CAP = 1 << 20


@pytest.fixture(autouse=True)
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def read_all(path: str) -> str:
    """The whole file, read as a model would: from each read's ``next_offset`` on."""
    parts, offset = [], 0
    while True:
        result = files.read(path, offset=offset)
        assert len(json.dumps(result)) < _OUTPUT_CAP
        assert result["encoding"] == "text", str(result["content"])[:80]
        parts.append(str(result["content"]))
        if not result["truncated"]:
            return "".join(parts)
        next_offset = result["next_offset"]
        assert isinstance(next_offset, int) and next_offset > offset
        offset = next_offset


@pytest.mark.parametrize(
    "text",
    [
        "汉" * 200_000,  # a cut at 256 KiB falls inside a 3-byte character
        "😀" * 100_000 + "a",  # 4-byte characters, one byte off the cap
        "\x01" * (300 * 1024),  # each escapes to 6 characters: 1.5 MiB at 256 KiB
        "\x1b[31mred\x1b[0m\n" * 40_000,  # a coloured log
    ],
)
def test_a_large_text_file_reads_as_text_within_the_output_cap(workspace: Path, text: str) -> None:
    (workspace / "big.txt").write_text(text, encoding="utf-8")
    assert read_all("big.txt") == text


def test_a_binary_file_continues_at_next_offset(workspace: Path) -> None:
    data = bytes(range(256)) * 2048
    (workspace / "b.bin").write_bytes(data)
    first = files.read("b.bin")
    assert first["encoding"] == "base64" and first["truncated"] is True
    assert first["next_offset"] == files.MAX_READ_BYTES
    rest = files.read("b.bin", encoding="base64", offset=files.MAX_READ_BYTES)
    assert rest["truncated"] is False and "next_offset" not in rest
    got = base64.b64decode(str(first["content"])) + base64.b64decode(str(rest["content"]))
    assert got == data


@pytest.mark.parametrize("offset", [5, 10**6, 2**63 - 1, 2**63, 10**30])
def test_an_offset_past_the_end_reads_nothing(workspace: Path, offset: int) -> None:
    (workspace / "a.txt").write_text("hello")
    assert files.read("a.txt", offset=offset) == {
        "content": "",
        "encoding": "text",
        "size": 5,
        "truncated": False,
    }


def test_a_file_that_is_not_utf8_is_still_base64(workspace: Path) -> None:
    (workspace / "x").write_bytes(b"ok \xff here")
    assert files.read("x")["encoding"] == "base64"
    with pytest.raises(ToolError, match="nope: No such file"):
        files.read("nope")


def test_an_absolute_glob_is_the_models_mistake(workspace: Path) -> None:
    """pathlib raised NotImplementedError for it: a traceback through the toolkit."""
    (workspace / "a.txt").write_text("hi\n")
    with pytest.raises(ToolError) as raised:
        files.search("hi", glob="/etc/*")
    assert str(raised.value) == (
        "glob '/etc/*' is not a file name pattern: Non-relative patterns are unsupported"
    )
    assert files.search("hi", glob="*.txt")["matches"] == [
        {"path": "a.txt", "line": 1, "text": "hi"}
    ]


SEGMENT = files_lines.SEGMENT_BYTES


def search_matches(pattern: str) -> list[dict[str, object]]:
    """``files.search``'s matches, each ``{"path", "line", "text"}``."""
    matches = files.search(pattern)["matches"]
    assert isinstance(matches, list)
    for match in matches:
        assert isinstance(match, dict) and isinstance(match["text"], str)
    return matches


def test_search_reads_a_huge_line_in_bounded_memory(workspace: Path) -> None:
    """Read whole, one 32 MB line took four times that: the sandbox killed the tool (OOM)."""
    size = 32 << 20
    with (workspace / "dump.json").open("wb") as handle:
        for _ in range(size // SEGMENT):
            handle.write(b"x" * SEGMENT)
        handle.write(b"needle\n")
    tracemalloc.start()
    try:
        found = search_matches("needle")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, f"{peak / 2**20:.1f} MiB at the peak"
    (match,) = found
    assert match["line"] == 1 and match["text"] == "…" + "x" * 100 + "needle"


def test_a_match_in_a_long_line_is_shown_around_it_and_marked(workspace: Path) -> None:
    line = "a" * 100_000 + "NEEDLE" + "b" * 100_000
    (workspace / "long.txt").write_text(f"{line}\nshort NEEDLE\n{'c' * 600} NEEDLE\n")
    first, second, third = search_matches("NEEDLE")
    assert first["line"] == 1 and len(str(first["text"])) == files_lines.MAX_TEXT + 2
    assert first["text"] == "…" + "a" * 100 + "NEEDLE" + "b" * 394 + "…"
    assert second == {"path": "long.txt", "line": 2, "text": "short NEEDLE"}
    # One piece, but past the characters shown: cut too (it was cut before the match).
    assert third["line"] == 3 and third["text"] == "…" + "c" * 99 + " NEEDLE"


@pytest.mark.parametrize(
    ("content", "pattern", "lines"),
    [
        # A match across the boundary between two pieces of a line is found.
        ("a" * (SEGMENT - 3) + "NEEDLE" + "a" * 10, "NEEDLE", [1]),
        # A piece's edges are not the line's: no ^, $ or \b there.
        ("a" * SEGMENT + "b" * 10, "^b", []),
        ("a" * SEGMENT + "b" * 10, r"\bb", []),
        ("a" * SEGMENT + "b", "a$", []),
        ("a" * SEGMENT + "b", "ab$", [1]),
        ("a" * 3 * SEGMENT + "b", "^a", [1]),
        # A character cut by a piece's edge is whole again.
        ("é" * SEGMENT + "N", "éN", [1]),
        # Line numbers go on after a long line, and after one that ends at a piece's edge.
        ("a" * 200_000 + "\nX\n", "X", [2]),
        ("a" * SEGMENT + "\nX\nX", "X", [2, 3]),
        ("a" * (SEGMENT - 1) + "\nX\n", "X", [2]),
    ],
)
def test_a_long_line_is_searched_as_one_line(
    workspace: Path, content: str, pattern: str, lines: list[int]
) -> None:
    (workspace / "f.txt").write_text(content, encoding="utf-8")
    found = search_matches(pattern)
    assert [match["line"] for match in found] == lines
    for match in found:
        assert len(str(match["text"])) <= files_lines.MAX_TEXT + 2
