"""The run timeline pages over plain HTTP: who sees which runs, the list's filters, what a run
page shows, and untrusted values rendered inert.

Real runs: the agent on the scripted OpenAI-compatible server (the real ``openai`` SDK),
started through ``POST /v1/runs``, their tool calls through the gateway (policy, approvals,
audit) on the scripted sandbox backend. The browser's side is in
``test_run_timeline_browser.py``.

Another principal's run answers 404 on the page (as a run that does not exist does), so the
page never confirms someone else's run id; the API answers 403 there.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from orchestrator.agent import (
    AgentEvent,
    RunFinished,
    RunStarted,
    RunStatus,
    ToolCallFinished,
    ToolCallStarted,
)
from orchestrator.audit.timeline import CallEntry
from orchestrator.cli import cli
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.server import ROLE_PERMISSIONS, Permission, Role, TokenStore
from orchestrator.server.page import SECURITY_HEADERS
from orchestrator.server.page._call_reads import MAX_AGE_S, CallReads
from orchestrator.server.page._timeline import LINES_SHOWN, build_timeline, inert_text
from orchestrator.testing import (
    Failure,
    Reply,
    ScriptedModelServer,
    server_error,
    text,
    tool_call,
    tool_calls,
)
from orchestrator.testing.backend import ScriptedBackend

from .conftest import Served, issue_tokens, serve
from .test_approval_page import sign_in
from .test_approvals_api import pending
from .test_runs_api import NO_REFLECTION, events_of, model_config

HOSTILE = (
    "<script>window.stockadePwned = 1</script>"
    '<img src=x onerror="window.stockadePwned = 2">'
    "\x1b[31mred\x1b[0m \x1b]0;a title\x07 \x9b2J"
)
"""Arguments a model might write: markup that would run, and terminal control sequences."""

# name: (principal, roles) — besides conftest's PEOPLE (alice the caller, carol the admin…)
VIEWERS = {"viewer": ("alice", (Role.VIEWER,)), "stranger": ("erin", (Role.VIEWER,))}


def issue_viewers(served: Served) -> None:
    store = TokenStore(served.config.tokens_db)
    try:
        for who, (principal, roles) in VIEWERS.items():
            served.tokens[who] = store.create(principal=principal, roles=roles).token
    finally:
        store.close()


@asynccontextmanager
async def session(served: Served, who: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in to the page as ``who``."""
    async with served.client() as client:
        answer = await sign_in(client, served.tokens[who])
        assert answer.status_code == 303, answer.text
        yield client


async def run_to_end(served: Served, who: str, run_id: str, goal: str) -> list[dict[str, object]]:
    async with served.client(who) as api:
        started = await api.post("/v1/runs", json={"goal": goal, "run_id": run_id})
        assert started.status_code == 201, started.text
        return await events_of(api, run_id)


def listed(page: httpx.Response) -> list[str]:
    """The run ids of a runs list page, in order."""
    assert page.status_code == 200, page.text
    return re.findall(r'class="run-row [^"]*" data-run-id="([^"]+)"', page.text)


@pytest.fixture
async def three_runs(tmp_path: Path) -> AsyncIterator[Served]:
    """alice's r1 (complete) and r2 (failed: the model server fails), carol's r3 (complete)."""
    script: list[Reply | Failure] = [
        text("first answer"),
        server_error(),
        text("the admin's answer"),
    ]
    async with ScriptedModelServer(script) as model:
        config = model_config(tmp_path / "state", model.base_url)
        tokens = issue_tokens(config)
        async with serve(config, backend=ScriptedBackend(), agent=NO_REFLECTION) as served:
            served.tokens = tokens
            issue_viewers(served)
            for who, run_id in (("caller", "r1"), ("caller", "r2"), ("admin", "r3")):
                await run_to_end(served, who, run_id, f"goal of {run_id}")
            yield served


async def test_the_list_shows_own_runs_to_callers_and_viewers_and_every_run_to_admins(
    three_runs: Served,
) -> None:
    served = three_runs
    async with session(served, "viewer") as viewer, session(served, "admin") as admin:
        assert listed(await viewer.get("/ui/runs")) == ["r2", "r1"]  # newest first
        assert listed(await admin.get("/ui/runs")) == ["r3", "r2", "r1"]
        # Filters: principal (an admin's), status, start time.
        assert listed(await admin.get("/ui/runs", params={"principal": "alice"})) == ["r2", "r1"]
        assert listed(await admin.get("/ui/runs", params={"status": "failed"})) == ["r2"]
        assert listed(await viewer.get("/ui/runs", params={"status": "complete"})) == ["r1"]
        assert listed(await admin.get("/ui/runs", params={"status": "unfinished"})) == []
        today = time.strftime("%Y-%m-%d", time.gmtime())
        assert listed(await admin.get("/ui/runs", params={"since": today, "until": today})) == [
            "r3",
            "r2",
            "r1",
        ]
        assert listed(await admin.get("/ui/runs", params={"since": "2999-01-01"})) == []
        assert listed(await admin.get("/ui/runs", params={"until": "2000-01-01T00:00"})) == []
        # The last day there is, up to its end (its next day overflowed: a 500).
        assert listed(await admin.get("/ui/runs", params={"until": "9999-12-31"})) == [
            "r3",
            "r2",
            "r1",
        ]
        # A viewer naming another principal sees nothing of theirs.
        assert listed(await viewer.get("/ui/runs", params={"principal": "carol"})) == []
        bad_time = await admin.get(
            "/ui/runs", params={"since": "yesterday"}, headers={"Accept": "text/html"}
        )
        bad_status = await admin.get(
            "/ui/runs", params={"status": "<b>done</b>"}, headers={"Accept": "text/html"}
        )
    async with session(served, "stranger") as stranger:
        assert listed(await stranger.get("/ui/runs")) == []
    assert bad_time.status_code == 400
    assert "since: 'yesterday' is not a date or time" in html.unescape(bad_time.text)
    assert bad_status.status_code == 400 and "<b>" not in bad_status.text
    assert "&lt;b&gt;done&lt;/b&gt;" in bad_status.text


async def test_a_viewer_reads_its_runs_but_starts_and_approves_nothing(three_runs: Served) -> None:
    served = three_runs
    async with served.client("viewer") as viewer:
        start = await viewer.post("/v1/runs", json={"goal": "anything"})
        cancel = await viewer.post("/v1/runs/r1/cancel")
        approve = await viewer.post("/v1/approvals/x/approve")
        approvals = await viewer.get("/v1/approvals")
        tools = await viewer.get("/v1/tools")
        own = await viewer.get("/v1/runs/r1")
        others = await viewer.get("/v1/runs/r3")
    for refused in (start, cancel, approve, approvals, tools):
        assert refused.status_code == 403, refused.text
    assert "roles: viewer" in start.json()["detail"]
    assert own.status_code == 200 and own.json()["status"] == "complete"
    assert others.status_code == 403 and others.json()["code"] == "run_owned_by_another_principal"
    async with session(served, "viewer") as page:
        mine = await page.get("/ui/runs/r1")
        fragment = await page.get("/ui/runs/r1/timeline")
        theirs = await page.get("/ui/runs/r3", headers={"Accept": "text/html"})
        unknown = await page.get("/ui/runs/no-such-run", headers={"Accept": "text/html"})
        hostile_id = await page.get("/ui/runs/%3Cscript%3E", headers={"Accept": "text/html"})
        approvals_page = await page.get("/ui/approvals", headers={"Accept": "text/html"})
        root = await page.get("/ui")
    assert mine.status_code == 200 and 'id="run-id">r1<' in mine.text
    assert "first answer" in mine.text
    assert fragment.status_code == 200 and fragment.text.startswith('<section id="timeline"')
    assert theirs.status_code == unknown.status_code == hostile_id.status_code == 404
    assert "<script>" not in hostile_id.text
    assert approvals_page.status_code == 403
    assert "may not decide approvals" in approvals_page.text
    assert (root.status_code, root.headers["location"]) == (303, "/ui/runs")
    async with session(served, "admin") as admin:
        every = [await admin.get(f"/ui/runs/{run_id}") for run_id in ("r1", "r2", "r3")]
    assert [page.status_code for page in every] == [200, 200, 200]
    assert "the model server failed" in every[1].text or "failed" in every[1].text


async def test_without_a_session_the_runs_pages_send_the_browser_to_sign_in(
    three_runs: Served,
) -> None:
    async with three_runs.client("admin") as bearer_only:  # an API token is not a session
        runs = await bearer_only.get("/ui/runs")
        run = await bearer_only.get("/ui/runs/r1")
        fragment = await bearer_only.get("/ui/runs/r1/timeline")
        artifact = await bearer_only.get("/ui/runs/r1/artifacts/" + "0" * 32)
    for page in (runs, run, artifact):
        assert (page.status_code, page.headers["location"]) == (303, "/ui/sign-in")
    assert fragment.status_code == 401 and fragment.json()["code"] == "unauthenticated"


async def test_a_run_page_shows_decisions_approvals_and_result_and_renders_arguments_inert(
    tmp_path: Path,
) -> None:
    script = [
        tool_calls(
            tool_call("shell__run", {"command": HOSTILE}),
            tool_call("files__delete", {"path": "/data"}),
        ),
        text("done: " + HOSTILE),
    ]
    async with ScriptedModelServer(script) as model:
        config = model_config(tmp_path / "state", model.base_url)
        tokens = issue_tokens(config)
        async with serve(config, backend=ScriptedBackend(), agent=NO_REFLECTION) as served:
            served.tokens = tokens
            async with served.client("caller") as alice, session(served, "caller") as page:
                started = await alice.post("/v1/runs", json={"goal": "clean up", "run_id": "r1"})
                assert started.status_code == 201, started.text
                async with served.client("approver") as bob:
                    (request,) = await pending(bob)
                    waiting = await page.get("/ui/runs/r1")
                    decided = await bob.post(
                        f"/v1/approvals/{request['id']}/approve", json={"note": "fine <b>once</b>"}
                    )
                    assert decided.status_code == 200, decided.text
                events = await events_of(alice, "r1")
                done = await page.get("/ui/runs/r1")
    assert events[-1]["type"] == "run_finished"
    # While waiting: live, the call shown as waiting for a decision.
    assert waiting.status_code == 200
    assert 'data-live="true"' in waiting.text
    assert "waiting for a decision" in waiting.text
    # Ended: the decisions with their rules, the approval (who, note), sandbox, output, result.
    body = done.text
    assert 'data-live="false"' in body
    assert "shell-needs-approval" in body and "no-deleting" in body
    assert "nothing is deleted here" in body
    assert 'class="decided-by">bob<' in body
    assert "fine &lt;b&gt;once&lt;/b&gt;" in body
    assert "profile <code>default</code>, runtime <code>runc</code>" in body
    assert 'id="final"' in body and "approval_denied" not in body
    # Inert: markup escaped, control sequences gone, no script but the page's own.
    assert "&lt;script&gt;window.stockadePwned = 1&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=" in body
    assert "<img" not in body and "\x1b" not in body and "\x9b" not in body and "\x07" not in body
    assert re.findall(r"<script[^>]*>", body) == [
        '<script src="/ui/static/poll.js" defer>',
        '<script src="/ui/static/runs.js" defer>',
    ]
    assert "red" in body
    for name, value in SECURITY_HEADERS.items():
        assert done.headers[name] == value


def test_control_sequences_are_removed_and_text_kept() -> None:
    assert inert_text("\x1b[1;31mred\x1b[0m plain\x1b]8;;http://x\x07link\x1b]8;;\x07") == (
        "red plainlink"
    )
    assert inert_text("a\x00b\x7fc\x9b31md\r\ne\tf") == "abcd\ne\tf"
    assert inert_text("x" * 50, 10) == "x" * 9 + "…"
    assert inert_text({"k": "<v>"}) == '{\n  "k": "<v>"\n}'


def test_a_call_is_one_item_joined_with_its_audit_records_in_the_runs_order() -> None:
    events: list[AgentEvent] = [
        RunStarted(run_id="r", at=1, goal="g", principal="p", model="m", tools=("a.b",)),
        ToolCallStarted(run_id="r", at=2, iteration=1, call_id="c1", tool="a.b", arguments="{}"),
        ToolCallFinished(
            run_id="r",
            at=3,
            iteration=1,
            call_id="c1",
            model_id="m1",
            tool="a.b",
            status="ok",
            decision="require_approval",
            duration_s=0.5,
            output="out",
        ),
        RunFinished(
            run_id="r",
            at=4,
            status=RunStatus.COMPLETE,
            answer="yes",
            reason=None,
            iterations=2,
            total_tokens=10,
            duration_s=3,
        ),
    ]
    approval = {"request_id": "q1", "status": "approved", "decided_by": "bob"}
    calls = [
        CallEntry(
            call_id="c1",
            tool="a.b",
            approvals=[
                {
                    "event": "approval_requested",
                    "ts": "T1",
                    "reason": "why",
                    "approval": {"request_id": "q1", "status": "pending"},
                },
                {
                    "event": "approval_decided",
                    "ts": "T2",
                    "reason": "ok by me",
                    "approval": approval,
                },
            ],
            outcome={
                "status": "ok",
                "decision": "require_approval",
                "rule": "r1",
                "sandbox_profile": "default",
                "arguments": {"x": 1},
                "files_changed": [f"f{index}\x1b[2J" for index in range(LINES_SHOWN + 2)],
                "files_rejected": {"sha256": "0" * 64, "bytes": 9000, "head": "[..."},
            },
        ),
        CallEntry(call_id="c2", tool="a.b", intents=[{"sandbox_profile": "big"}]),
    ]
    timeline = build_timeline(events, calls, {"default": "runc", "big": "runsc"})
    assert [item.kind for item in timeline.items] == ["call", "final", "call"]
    first, _, second = (item.data for item in timeline.items)
    assert (first["status"], first["rule"], first["runtime"], first["output"]) == (
        "ok", "r1", "runc", "out",
    )  # fmt: skip
    assert first["approval"].decided_by == "bob" and first["approval"].note == "ok by me"
    assert first["approval"].requested_at == "T1" and first["approval"].decided_at == "T2"
    # The workspace paths the audit log names, inert and cut; a list it bounded, by its size.
    assert first["files_changed"][:2] == ["f0", "f1"] and len(first["files_changed"]) == 51
    assert first["files_changed"][-1] == "… and 2 more (the audit log has them all)"
    assert first["files_rejected"] == ["9000 bytes of them, kept in the audit log as a SHA-256"]
    assert (second["status"], second["runtime"]) == ("running", "runsc")
    assert timeline.finished and timeline.model == "m" and timeline.tool_calls == 2


async def test_the_page_of_a_run_under_way_reads_its_events_from_memory(tmp_path: Path) -> None:
    # The approval holds the run: its events since the start come from the live run.
    script = [tool_calls(tool_call("shell__run", {"command": "ls"})), text("listed")]
    async with ScriptedModelServer(script) as model:
        config = model_config(tmp_path / "state", model.base_url)
        tokens = issue_tokens(config)
        async with serve(config, backend=ScriptedBackend(), agent=NO_REFLECTION) as served:
            served.tokens = tokens
            async with (
                served.client("caller") as alice,
                served.client("approver") as bob,
                session(served, "admin") as page,
            ):
                started = await alice.post("/v1/runs", json={"goal": "list", "run_id": "r1"})
                assert started.status_code == 201, started.text
                (request,) = await pending(bob)
                async with asyncio.timeout(10):
                    while True:
                        fragment = (await page.get("/ui/runs/r1/timeline")).text
                        if "Model turn" in fragment and "waiting for a decision" in fragment:
                            break
                        await asyncio.sleep(0.05)
                assert 'data-live="true"' in fragment and 'id="final"' not in fragment
                denied = await bob.post(f"/v1/approvals/{request['id']}/deny", json={"note": "no"})
                assert denied.status_code == 200, denied.text
                await events_of(alice, "r1")
                ended = (await page.get("/ui/runs/r1/timeline")).text
    assert 'data-live="false"' in ended and 'id="final"' in ended
    assert "approval_denied" in ended and '“<span class="note text">no</span>”' in ended


@pytest.mark.docker
async def test_artifacts_of_a_real_call_are_linked_and_served_to_be_saved(
    tmp_path: Path, images: ImageBuilder, no_leaks: None
) -> None:
    code = (
        "import os\nos.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/report.html', 'w').write('<script>alert(1)</script>')\nprint('written')"
    )
    script = [tool_calls(tool_call("python__run", {"code": code})), text("see report.html")]
    async with ScriptedModelServer(script) as model:
        config = model_config(
            tmp_path / "state",
            model.base_url,
            toolkits=["toolkits.python"],
            sandbox={"profiles": {"default": {"pool_size": 1}}},
        )
        tokens = issue_tokens(config)
        async with serve(config, agent=NO_REFLECTION) as served:
            served.tokens = tokens
            issue_viewers(served)
            await run_to_end(served, "caller", "r1", "write a report")
            async with session(served, "viewer") as viewer, session(served, "stranger") as erin:
                page = await viewer.get("/ui/runs/r1")
                (link,) = re.findall(r'<a href="([^"]+)" class="artifact"', page.text)
                served_file = await viewer.get(html.unescape(link))
                refused = await erin.get(html.unescape(link), headers={"Accept": "text/html"})
            async with served.client("viewer") as api:
                listed_api = await api.get("/v1/runs/r1/artifacts")
    assert page.status_code == 200
    assert "report.html" in page.text and "written" in page.text
    assert re.search(r'<ul class="files-changed">.*outputs/report\.html', page.text)
    assert "profile <code>default</code>, runtime <code>runc</code>, exit code 0" in page.text
    assert link.startswith("/ui/runs/r1/artifacts/")
    assert served_file.status_code == 200
    assert served_file.content == b"<script>alert(1)</script>"
    assert served_file.headers["content-disposition"].startswith("attachment;")
    assert served_file.headers["content-security-policy"] == "sandbox; default-src 'none'"
    assert not served_file.headers["content-type"].startswith("text/html")
    assert refused.status_code == 404
    assert listed_api.status_code == 200 and [a["name"] for a in listed_api.json()] == [
        "report.html"
    ]


async def test_the_artifact_link_of_anothers_run_of_tool_calls_answers_as_no_run(
    three_runs: Served,
) -> None:
    """A run id used by tool calls alone (no agent run) belongs to its caller too: another
    principal's artifact link gets the page's 404, as a run that does not exist does, never
    a 403 that confirms the id is in use."""
    async with three_runs.client("caller") as api:
        call = {"id": "c1", "name": "python.run", "run_id": "calls-only",
                "arguments": {"code": "print(1)"}}  # fmt: skip
        assert (await api.post("/v1/tool-calls", json=call)).status_code == 200
    link = "/ui/runs/{}/artifacts/" + "0" * 32
    async with session(three_runs, "stranger") as erin:
        used = await erin.get(link.format("calls-only"), headers={"Accept": "text/html"})
        unused = await erin.get(link.format("never-used"), headers={"Accept": "text/html"})
    assert (used.status_code, unused.status_code) == (404, 404)
    assert used.text.replace("calls-only", "ID") == unused.text.replace("never-used", "ID")


def test_the_cli_issues_viewer_tokens(tmp_path: Path) -> None:
    config = tmp_path / "stockade.yaml"
    config.write_text("server: {tokens: tokens.db}\n")
    created = CliRunner().invoke(
        cli,
        ["tokens", "create", "--config", str(config), "--principal", "ci-bot", "--role", "viewer",
         "--json"],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    issued = json.loads(created.stdout)
    assert issued["roles"] == ["viewer"]
    store = TokenStore(tmp_path / "tokens.db")
    try:
        info = store.authenticate(issued["token"])
    finally:
        store.close()
    assert info is not None and info.roles == frozenset({Role.VIEWER})
    assert ROLE_PERMISSIONS[Role.VIEWER] == frozenset({Permission.READ_RUNS})
    assert Permission.READ_RUNS in ROLE_PERMISSIONS[Role.CALLER]
    assert Permission.READ_RUNS not in ROLE_PERMISSIONS[Role.APPROVER]


async def test_a_runs_calls_are_read_from_the_audit_log_again_only_when_worth_it(
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    seq = iter(range(1_000))

    def append(run_id: str, call_id: str) -> None:
        record = {"seq": next(seq), "event": "call", "call_id": call_id, "run_id": run_id,
                  "tool": "t", "status": "ok"}  # fmt: skip
        with log.open("a") as file:
            file.write(json.dumps(record) + "\n")

    now = [0.0]
    reads = CallReads(clock=lambda: now[0])
    assert await reads.calls(log, "r1", 0) == []  # no log yet
    append("r1", "c1")
    first = await reads.calls(log, "r1", 1)
    assert [entry.call_id for entry in first] == ["c1"]
    assert await reads.calls(log, "r1", 1) is first  # nothing changed
    assert await reads.calls(log, "r1", 2) is first  # the log did not change
    append("r2", "c2")  # another run's record: kept while young and the run's events stand
    assert await reads.calls(log, "r1", 2) is not first  # …but its events changed: read
    kept = await reads.calls(log, "r1", 2)
    append("r1", "c3")
    now[0] += 1.0
    assert await reads.calls(log, "r1", 2) is kept  # young, same events: at most MAX_AGE_S late
    now[0] += MAX_AGE_S
    assert [e.call_id for e in await reads.calls(log, "r1", 2)] == ["c1", "c3"]
