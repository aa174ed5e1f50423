"""The summary table ``stockade run`` prints under its answer."""

from __future__ import annotations

import pytest

from orchestrator.agent import RunResult, RunStatus, TokenUsage
from orchestrator.cli._run_view import summary_rows


def result(reflections: int, summaries: int) -> RunResult:
    return RunResult(
        run_id="run-1",
        goal="a goal",
        principal="alice",
        status=RunStatus.COMPLETE,
        success=True,
        answer="done",
        reason=None,
        iterations=2,
        tool_calls={"ok": 3, "rate_limited": 1},
        usage=TokenUsage(prompt_tokens=1200, completion_tokens=34, total_tokens=1234),
        model_calls=3,
        reflections=reflections,
        summaries=summaries,
        interventions=0,
        memory_ids=(),
        started_at=0.0,
        duration_s=1.5,
        workspace=None,
        log_path="/tmp/run.jsonl",
    )


@pytest.mark.parametrize(
    ("reflections", "summaries", "shown"),
    [
        (1, 0, "3 (1 reflection, 0 summaries)"),
        (2, 1, "3 (2 reflections, 1 summary)"),
    ],
)
def test_model_calls_are_counted_in_words(reflections: int, summaries: int, shown: str) -> None:
    rows = dict(summary_rows(result(reflections, summaries)))
    assert rows["model calls"] == shown
    assert rows["tool calls"] == "4 (ok 3, rate_limited 1)"
    assert rows["tokens"] == "1,234 (prompt 1,200, completion 34)"
