"""The recorded model session ``stockade demo`` replays when no model is configured.

Two runs of one kind of goal. The first meets the platform: parallel calls,
a burst of calls the per-run rate limit cuts short (the model waits as told
and batches the rest into one call), an answer reflection finds incomplete
(a lesson is stored), a recursive delete an approver's rule refuses, and a
single-file delete a rule approves. The second, on a similar goal, starts
with those memories in its prompt and does the work in one call.

Only the model's replies are canned: they are played by the
:class:`~orchestrator.testing.ScriptedModelServer` on 127.0.0.1; the steps
that depend on what happened (which calls were rate limited, what memory
recalled) read the request the agent sent, as a model would.
"""

from __future__ import annotations

import json
import re

from orchestrator.approvals import AutoApprovalRule
from orchestrator.testing import (
    ChatRequest,
    Reply,
    json_reply,
    text,
    tool_call,
    tool_calls,
)
from orchestrator.testing.model_server import Step

__all__ = ["DEMO_RULES", "FIRST_GOAL", "SECOND_GOAL", "first_session", "second_session"]

_GOAL = (
    "Compute the squares of 1 to {n}: write each to its own file squares/<number>.txt, "
    "write report.txt with their sum, and leave no scratch data behind."
)
FIRST_GOAL = _GOAL.format(n=24)
"""The first run's goal."""
SECOND_GOAL = _GOAL.format(n=30)
"""The second run's goal: similar enough to recall the first."""

DEMO_RULES = (
    AutoApprovalRule(
        name="demo-no-recursive-delete",
        tools=["shell.run"],
        decision="deny",
        note="no recursive deletes here: delete the files one by one with files.delete",
    ),
    AutoApprovalRule.model_validate(
        {
            "name": "demo-scratch-files",
            "tools": ["files.delete"],
            "when": {"arg": "path", "glob": "scratch/*"},
            "decision": "approve",
            "note": "scratch files may go",
        }
    ),
)
"""The demo's approvers: rules deciding what the default policy sends for approval."""

_RETRY_AFTER = re.compile(r"retry after ([0-9.]+) s")
_REPORT = """\
numbers = [int(line) for line in open('scratch/numbers.txt').read().split()]
total = sum(n * n for n in numbers)
open('report.txt', 'w').write(f'sum of the squares of 1..{len(numbers)}: {total}\\n')
print(total)
"""


def _write_files(paths: dict[str, str]) -> str:
    return (
        "import os\n"
        f"files = {paths!r}\n"
        "for path, content in files.items():\n"
        "    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)\n"
        "    open(path, 'w').write(content)\n"
        "print(len(files), 'files written')\n"
    )


def _square_file(number: int) -> str:
    return f"squares/{number:02}.txt"


def _after_rate_limit(request: ChatRequest) -> Reply:
    """Write, in one call, the files whose calls were rate limited; first wait as told."""
    calls = {
        call["id"]: call["function"]
        for message in request.messages
        if message.get("role") == "assistant"
        for call in message.get("tool_calls") or ()
    }
    missing: dict[str, str] = {}
    waits = [0.0]
    for result in request.tool_results:
        content = str(result.get("content", ""))
        if not content.startswith("[rate_limited]"):
            continue
        waits += [float(found) for found in _RETRY_AFTER.findall(content)]
        function = calls.get(result.get("tool_call_id"), {})
        if function.get("name") == "files__write":
            arguments = json.loads(function.get("arguments", "{}"))
            missing[str(arguments["path"])] = str(arguments["content"])
    words = (
        f"{len(missing)} writes were rate limited; waiting {max(waits):.1f} s as told, then "
        "writing those files in one python.run call instead of one call each."
        if missing
        else "Every file is written."
    )
    return tool_calls(
        tool_call("python__run", {"code": _write_files(missing)}),
        content=words,
        # The model takes the time the rate limit named before its next call.
        delay_s=max(waits) + 0.2,
    )


def first_session() -> list[Step]:
    """The first run's model replies, in order."""
    numbers = "".join(f"{n}\n" for n in range(1, 25))
    plan = "# Plan\n1. keep the numbers in scratch/\n2. sum with Python\n3. one file per square\n"
    return [
        tool_calls(
            tool_call("files__write", {"path": "scratch/numbers.txt", "content": numbers}),
            tool_call("files__write", {"path": "notes.md", "content": plan}),
            content="I'll keep the numbers in a scratch file and note the plan (two calls).",
        ),
        tool_calls(
            tool_call("python__run", {"code": _REPORT}),
            content="Now the sum, with Python, into report.txt.",
        ),
        tool_calls(
            *(
                tool_call("files__write", {"path": _square_file(n), "content": f"{n * n}\n"})
                for n in range(1, 25)
            ),
            content="One file per square: 24 writes at once.",
        ),
        _after_rate_limit,
        text("Done: report.txt says the sum is 4900 and squares/ holds 24 files."),
        json_reply(
            {
                "complete": False,
                "reason": "scratch/numbers.txt is still in the workspace",
                "missing": "remove the scratch data",
                "lesson": "Remove scratch data before the final answer, and write many small "
                "files in one python.run call: one call per file runs into the per-run rate "
                "limit.",
            }
        ),
        tool_calls(
            tool_call("shell__run", {"command": "rm -rf scratch"}),
            content="Removing the scratch directory.",
        ),
        tool_calls(
            tool_call("files__delete", {"path": "scratch/numbers.txt"}),
            content="The recursive delete was refused; deleting the one scratch file instead.",
        ),
        text(
            "Done: report.txt says the sum of the squares of 1..24 is 4900, squares/ holds "
            "24 files, and the scratch file is gone."
        ),
        json_reply({"complete": True, "reason": "report, 24 files, no scratch data"}),
    ]


def _recalled_plan(request: ChatRequest) -> Reply:
    """The second run's first step: what memory brought, and one call for everything."""
    system = str(request.messages[0].get("content", "")) if request.messages else ""
    remembered = "Lesson from an earlier run" in system
    files = {_square_file(n): f"{n * n}\n" for n in range(1, 31)}
    files["report.txt"] = f"sum of the squares of 1..30: {sum(n * n for n in range(1, 31))}\n"
    words = (
        "My memory has a lesson from an earlier run of this kind: one call per file hits the "
        "rate limit, and scratch data must go. So: one python.run call, no scratch file."
        if remembered
        else "Writing everything in one python.run call."
    )
    return tool_calls(tool_call("python__run", {"code": _write_files(files)}), content=words)


def second_session() -> list[Step]:
    """The second run's model replies, in order."""
    return [
        _recalled_plan,
        text(
            "Done in one call: report.txt says the sum of the squares of 1..30 is 9455, "
            "squares/ holds 30 files, and no scratch data was made."
        ),
        json_reply({"complete": True, "reason": "report, 30 files, no scratch data"}),
    ]
