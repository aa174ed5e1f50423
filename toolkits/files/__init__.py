"""The ``files`` toolkit: read, write, list, search and delete files in the run's workspace.

Every path is relative to the workspace; anything that resolves outside it
(absolute paths, ``..``, symbolic links pointing out) is refused. Binary
content travels base64-encoded; sizes are capped. What the model got wrong (a
missing file, a directory where a file was meant, a bad pattern) comes back as
one line naming the path it gave, not a traceback through this module.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from stockade_sdk import ToolError, tool
from toolkits.files._lines import matching_lines

__all__ = ["append", "delete", "list_files", "read", "search", "write"]

MAX_READ_BYTES = 256 * 1024
MAX_READ_ESCAPED = 3 * MAX_READ_BYTES
"""Characters a read's text may take JSON-escaped, well inside the sandbox's default output
cap of 1 MiB: text of emoji escapes to 3 times its bytes, control characters to 6 times
(``\\u0001``), and a result past the cap would reach the model as malformed."""
MAX_WRITE_BYTES = 8 * 1024 * 1024
MAX_LIST_ENTRIES = 1000
MAX_MATCHES = 200

Encoding = Literal["text", "base64"]


def _root() -> Path:
    return Path.cwd().resolve()


def _inside(path: str) -> Path:
    """The workspace path for ``path``, refusing anything that leaves the workspace."""
    if "\x00" in path:
        raise ToolError(f"{path!r}: a path cannot contain a NUL character")
    root = _root()
    target = (root / path).resolve()
    if target != root and root not in target.parents:
        raise ToolError(f"{path!r} is outside the workspace")
    return target


@contextmanager
def _reported(path: str) -> Iterator[None]:
    """Turn an operating-system error on ``path`` into one line for the model.

    Names the path as the workspace knows it (``notes/a.txt: Is a directory``):
    the model's own path, or the part of it the error is about.
    """
    try:
        yield
    except OSError as error:
        failed, root = path, _root()
        if isinstance(error.filename, str):
            where = Path(error.filename)
            if where == root or root in where.parents:
                failed = str(where.relative_to(root))
        raise ToolError(f"{failed}: {error.strerror or error}") from None


def _make_parents(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:  # a file stands where a directory is needed
        reason = os.strerror(errno.ENOTDIR)
        raise NotADirectoryError(errno.ENOTDIR, reason, error.filename) from None


def _decode(content: str, encoding: Encoding) -> bytes:
    if encoding == "base64":
        try:
            data = base64.b64decode(content, validate=True)
        except binascii.Error as error:
            raise ToolError(f"content is not valid base64 ({error})") from None
    else:
        try:
            data = content.encode()
        except UnicodeEncodeError as error:
            raise ToolError(
                f"content is not valid text ({error.reason}): send it as base64"
            ) from None
    if len(data) > MAX_WRITE_BYTES:
        raise ToolError(f"content of {len(data)} bytes exceeds the limit of {MAX_WRITE_BYTES}")
    return data


@tool(idempotent=True)
def read(path: str, encoding: Encoding = "text", offset: int = 0) -> dict[str, object]:
    """Read a file from the workspace.

    Text that is not valid UTF-8 is returned base64-encoded (``encoding`` says which).
    A read of a large file is cut (``truncated``); ``next_offset`` is where the next
    read continues.

    Args:
        path: File path relative to the workspace.
        encoding: ``text`` (UTF-8) or ``base64`` for binary content.
        offset: Byte offset to start reading at (for files larger than the read cap).
    """
    target = _inside(path)
    with _reported(path), target.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        # Past the end there is nothing to read (an offset past 2**63 fails to seek).
        start = min(max(0, offset), size)
        handle.seek(start)
        data = handle.read(MAX_READ_BYTES + 1)
    truncated = len(data) > MAX_READ_BYTES
    data = data[:MAX_READ_BYTES]
    if encoding == "text":
        text = _as_text(data, truncated)
        if text is not None:
            content, truncated = _fitted(text, truncated)
            read = len(content.encode())
            return _read_result(content, "text", size, truncated, start + read)
        encoding = "base64"
    content = base64.b64encode(data).decode()
    return _read_result(content, encoding, size, truncated, start + len(data))


def _as_text(data: bytes, truncated: bool) -> str | None:
    """``data`` as UTF-8 text, or None; a read cut at the cap may end inside a character."""
    try:
        return data.decode()
    except UnicodeDecodeError as error:
        # Only the cut's own character (at most 3 bytes of it) is left for the next read.
        if not truncated or error.start < len(data) - 3 or error.reason != "unexpected end of data":
            return None
        return data[: error.start].decode()


def _fitted(text: str, truncated: bool) -> tuple[str, bool]:
    """``text`` cut to what fits in :data:`MAX_READ_ESCAPED` characters once JSON-escaped."""
    if len(json.dumps(text)) <= MAX_READ_ESCAPED:
        return text, truncated
    short, long = 0, len(text)  # the longest prefix that fits, by bisection
    while short < long:
        middle = (short + long + 1) // 2
        if len(json.dumps(text[:middle])) <= MAX_READ_ESCAPED:
            short = middle
        else:
            long = middle - 1
    return text[:short], True


def _read_result(
    content: str, encoding: str, size: int, truncated: bool, next_offset: int
) -> dict[str, object]:
    result: dict[str, object] = {
        "content": content,
        "encoding": encoding,
        "size": size,
        "truncated": truncated,
    }
    if truncated:  # a cut may fall short of the cap: where the next read starts
        result["next_offset"] = next_offset
    return result


@tool
def write(path: str, content: str, encoding: Encoding = "text") -> dict[str, object]:
    """Create or replace a file in the workspace (parent directories are created).

    Args:
        path: File path relative to the workspace.
        content: The new content.
        encoding: ``text`` (UTF-8) or ``base64`` for binary content.
    """
    target = _inside(path)
    data = _decode(content, encoding)
    with _reported(path):
        _make_parents(target)
        target.write_bytes(data)
    return {"path": path, "size": len(data)}


@tool
def append(path: str, content: str, encoding: Encoding = "text") -> dict[str, object]:
    """Append to a file in the workspace (created if missing).

    Args:
        path: File path relative to the workspace.
        content: What to append.
        encoding: ``text`` (UTF-8) or ``base64`` for binary content.
    """
    target = _inside(path)
    data = _decode(content, encoding)
    with _reported(path):
        _make_parents(target)
        with target.open("ab") as handle:
            handle.write(data)
            size = handle.tell()
    return {"path": path, "size": size}


@tool(name="list", idempotent=True)
def list_files(path: str = ".", recursive: bool = False) -> dict[str, object]:
    """List the files and directories under a workspace directory.

    Args:
        path: Directory relative to the workspace.
        recursive: Also list the contents of sub-directories.
    """
    root, base = _root(), _inside(path)
    entries: list[dict[str, object]] = []
    with _reported(path):
        walker = base.rglob("*") if recursive else base.iterdir()
        for entry in sorted(walker):
            if len(entries) == MAX_LIST_ENTRIES:
                return {"entries": entries, "truncated": True}
            kind = "dir" if entry.is_dir() else "file"
            size = entry.stat().st_size if kind == "file" else None
            entries.append({"path": str(entry.relative_to(root)), "type": kind, "size": size})
    return {"entries": entries, "truncated": False}


@tool(idempotent=True)
def search(pattern: str, path: str = ".", glob: str = "*") -> dict[str, object]:
    """Search workspace files for lines matching a regular expression (like grep -rn).

    A line longer than 500 characters is shown around its first match, each
    side cut marked with "…". Files are read in pieces, so any size works.

    Args:
        pattern: Python regular expression.
        path: Directory (or file) relative to the workspace to search in.
        glob: Only search files whose name matches this glob, e.g. ``*.py``.
    """
    root, base = _root(), _inside(path)
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise ToolError(f"pattern {pattern!r} is not a regular expression: {error}") from None
    with _reported(path):
        if not base.exists():  # an empty result would read as "no match"
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(base))
        found = [base] if base.is_file() else base.rglob(glob)
        # A glob may climb (``../../etc/*``): only what stays in the workspace is searched.
        try:
            resolved = {p.resolve() for p in found if p.is_file()}
        except (NotImplementedError, ValueError) as error:  # pathlib's word for "/etc/*"
            raise ToolError(f"glob {glob!r} is not a file name pattern: {error}") from None
    files = sorted(file for file in resolved if root in file.parents)
    matches: list[dict[str, object]] = []
    for file in files:
        shown = str(file.relative_to(root))
        with _reported(shown), file.open("rb") as handle:
            for number, text in matching_lines(handle, regex):
                matches.append({"path": shown, "line": number, "text": text})
                if len(matches) == MAX_MATCHES:
                    return {"matches": matches, "truncated": True}
    return {"matches": matches, "truncated": False}


@tool
def delete(path: str) -> dict[str, object]:
    """Delete a file or an empty directory in the workspace.

    Args:
        path: Path relative to the workspace.
    """
    target = _inside(path)
    if target == _root():
        raise ToolError("the workspace itself cannot be deleted")
    with _reported(path):
        if target.is_dir():
            os.rmdir(target)
        else:
            target.unlink()
    return {"deleted": path}
