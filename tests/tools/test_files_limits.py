"""The files toolkit at its limits and edges, run in this process: what a model reads.

The sandbox's runner sends back at most its output cap (1 MiB by default) of the
outcome line, which holds the result JSON-escaped; a result past it reaches the
model as malformed. Run for real (in a sandbox) in ``test_builtin_toolkits``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from stockade_sdk import ToolError
from toolkits import files

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
        assert result["encoding"] == "text", result["content"][:80]
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
