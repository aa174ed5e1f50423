"""A gateway result as an MCP client's model reads it: the text content says it all."""

from __future__ import annotations

import mcp_types as types

from orchestrator.server._mcp import mcp_result
from orchestrator.tools import ToolResult, ToolStatus


def _text(result: types.CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    return content.text


def test_the_text_names_dropped_artifacts_and_entries_not_kept() -> None:
    result = ToolResult(
        call_id="c", name="shell.run", status=ToolStatus.OK, output="done",
        artifacts_dropped=("big.bin: over the cap",), files_rejected=("latest: FIFO",),
    )  # fmt: skip
    answer = mcp_result(result)
    assert _text(answer) == (
        "done\nartifact dropped: big.bin: over the cap\nnot kept in the workspace: latest: FIFO"
    )
    assert not answer.is_error
    assert answer.structured_content is not None
    assert answer.structured_content["files_rejected"] == ["latest: FIFO"]


def test_a_failed_call_says_its_status_first() -> None:
    result = ToolResult(call_id="c", name="shell.run", status=ToolStatus.DENIED, error="no")
    answer = mcp_result(result)
    assert (_text(answer), answer.is_error) == ("denied: no", True)
    plain = mcp_result(ToolResult(call_id="c", name="x", status=ToolStatus.OK, output="42"))
    assert _text(plain) == "42"
