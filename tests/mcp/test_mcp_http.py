"""MCP over streamable HTTP on ``stockade serve``, driven by the official client (``ClientSession``).

The server runs on 127.0.0.1 (a free port) in the test's event loop, with API
tokens issued before it starts. Calls run on the scripted sandbox backend,
except one test on real containers. Refusals (no token, wrong role, foreign
host, another token's session) are checked on the raw HTTP exchange, and with
the real client where it can see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
import uvicorn
from fastapi import FastAPI
from mcp import Client, ClientSession
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from orchestrator.approvals import ApprovalStatus, ApprovalStore
from orchestrator.config import LoadedConfig, StockadeConfig
from orchestrator.errors import ConfigError
from orchestrator.platform import check_configuration
from orchestrator.sandbox.backend import SandboxBackend
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.server import Role, TokenStore, _mcp_http, create_app, uvicorn_config
from orchestrator.testing.backend import ScriptedBackend

POLICY = """\
version: 1
default: deny
approval_timeout_s: 60
rules:
  - name: shell-needs-approval
    tools: shell.run
    decision: require_approval
    reason: shell commands need a person
  - {name: no-deleting, tools: files.delete, decision: deny, reason: nothing is deleted here}
  - {name: everything-else, tools: "*", decision: allow}
"""

# name: (principal, roles)
PEOPLE: dict[str, tuple[str, tuple[Role, ...]]] = {
    "alice": ("alice", (Role.CALLER,)),
    "dave": ("dave", (Role.CALLER,)),
    "bob": ("bob", (Role.APPROVER,)),
}

INITIALIZE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@dataclass
class Served:
    """A running server and the tokens of :data:`PEOPLE`."""

    url: str
    config: StockadeConfig
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def http(self, who: str | None = None) -> httpx.AsyncClient:
        """A plain HTTP client of this server (the API, or raw MCP exchanges)."""
        return httpx.AsyncClient(
            base_url=self.url,
            headers=self.auth(who) if who else None,
            trust_env=False,  # never a proxy: 127.0.0.1 only
            timeout=30,
        )

    @contextlib.asynccontextmanager
    async def mcp(self, who: str | None, **session: Any) -> AsyncIterator[ClientSession]:
        """An initialised MCP session of ``who`` (None: no token) over streamable HTTP."""
        client = httpx2.AsyncClient(
            headers=self.auth(who) if who else None,
            trust_env=False,
            timeout=httpx2.Timeout(30, read=120),
        )
        async with (
            client,
            streamable_http_client(f"{self.url}/mcp", http_client=client) as (read, write),
            ClientSession(read, write, **session) as mcp_session,
        ):
            await mcp_session.initialize()
            yield mcp_session

    @contextlib.asynccontextmanager
    async def modern(self, who: str, **options: Any) -> AsyncIterator[Client]:
        """The SDK's high-level client of ``who``: it negotiates 2026-07-28 (no session)."""
        http = httpx2.AsyncClient(
            headers=self.auth(who), trust_env=False, timeout=httpx2.Timeout(30, read=120)
        )
        transport = streamable_http_client(f"{self.url}/mcp", http_client=http)
        async with http, Client(transport, **options) as client:
            assert client.protocol_version == "2026-07-28"
            yield client

    def audit_calls(self) -> list[dict[str, Any]]:
        lines = self.config.audit_path.read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["event"] == "call"]


def make_config(tmp_path: Path, *, approvers: str | None = None, **server: Any) -> StockadeConfig:
    state = tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "policy.yaml").write_text(POLICY)
    approvals: dict[str, Any] = {}
    if approvers is not None:
        (state / "approvers.yaml").write_text(approvers)
        approvals["approvers"] = state / "approvers.yaml"
    return StockadeConfig.model_validate(
        {
            "state_dir": state,
            "policy": state / "policy.yaml",
            "toolkits": ["toolkits.python", "toolkits.files", "toolkits.shell"],
            "sandbox": {"profiles": {"default": {"pool_size": 0}}},
            "approvals": approvals,
            "server": server,
        }
    )


@contextlib.asynccontextmanager
async def serve(config: StockadeConfig, backend: SandboxBackend | None) -> AsyncIterator[Served]:
    """``create_app`` under uvicorn on 127.0.0.1, a free port, until the block ends."""
    store = TokenStore(config.tokens_db)
    try:
        tokens = {
            who: store.create(principal=principal, roles=roles).token
            for who, (principal, roles) in PEOPLE.items()
        }
    finally:
        store.close()
    app: FastAPI = create_app(config, backend=backend)
    server = uvicorn.Server(
        uvicorn_config(
            app,
            host="127.0.0.1",
            port=0,
            shutdown_grace_s=1,
            access_log=False,
            configure_logging=False,
        )
    )

    async def run() -> None:
        with contextlib.suppress(SystemExit):
            await server.serve()

    task = asyncio.create_task(run())
    async with asyncio.timeout(60):
        while not server.started:
            if task.done():
                await task
                raise RuntimeError(f"no start: {getattr(app.state, 'startup_error', None)!r}")
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(url=f"http://127.0.0.1:{port}", config=config, tokens=tokens)
    finally:
        server.should_exit = True
        await task


async def _client_refusal(served: Served, who: str | None) -> BaseException:
    """What the real client raises when the server refuses its session (it must raise)."""
    try:
        async with served.mcp(who):
            pass
    except BaseException as exc:
        leaves: list[BaseException] = [exc]
        while isinstance(leaves[-1], BaseExceptionGroup):
            leaves.append(leaves[-1].exceptions[0])
        return leaves[-1]
    raise AssertionError(f"the client of {who} was not refused")


def _text(result: types.CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    return content.text


async def _pending(served: Served, *, tool: str = "shell.run") -> dict[str, Any]:
    """The one pending request for ``tool``, once it is there (as the approver sees it)."""
    async with served.http("bob") as api, asyncio.timeout(30):
        while True:
            listed = (await api.get("/v1/approvals")).json()["approvals"]
            found = [a for a in listed if a["tool"] == tool]
            if found:
                (request,) = found
                return dict(request)
            await asyncio.sleep(0.05)


class Progress:
    """A progress callback that keeps what it was told."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.values: list[float] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.values.append(progress)
        self.messages.append(message or "")


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend()


# -- the tools, on real containers ---------------------------------------------------------


@pytest.mark.docker
async def test_tools_listed_and_called_in_a_real_container_a_denial_is_an_error_result(
    tmp_path: Path, images: ImageBuilder, no_leaks: None
) -> None:
    config = make_config(tmp_path)
    async with (
        serve(config, backend=None) as served,
        served.mcp("alice") as session,
        served.mcp("dave") as other,
    ):
        listed = await session.list_tools()
        ran = await session.call_tool("python.run", {"code": "print(6 * 7)"})
        denied = await session.call_tool("files.delete", {"path": "a.txt"})
        invalid = await session.call_tool("python.run", {"cod": "print(1)"})
        # Another principal's session has a workspace of its own.
        await session.call_tool("files.write", {"path": "secret.txt", "content": "alice's"})
        foreign = await other.call_tool("files.read", {"path": "secret.txt"})
        own = await session.call_tool("files.read", {"path": "secret.txt"})
        calls = served.audit_calls()
    tools = {tool.name: tool for tool in listed.tools}
    assert {"python.run", "files.read", "files.delete", "shell.run"} <= set(tools)
    assert tools["python.run"].input_schema["properties"]["code"]["type"] == "string"
    assert ran.is_error is False, _text(ran)
    assert json.loads(_text(ran))["stdout"] == "42\n"
    assert ran.structured_content is not None
    assert ran.structured_content["image_digest"].startswith("sha256:")  # a real container
    assert denied.is_error is True
    assert _text(denied).startswith("denied: ") and "nothing is deleted here" in _text(denied)
    assert invalid.is_error is True
    assert foreign.is_error is True
    assert own.is_error is False and "alice's" in _text(own)
    # Every call acted for the token's principal, in one run of the session.
    (run_id,) = {r["run_id"] for r in calls if r["principal"] == "alice"}
    assert run_id.startswith("mcp-")
    assert {r["run_id"] for r in calls if r["principal"] == "dave"} != {run_id}
    assert [r["status"] for r in calls][:2] == ["ok", "denied"]


@pytest.mark.docker
async def test_a_2026_client_sees_a_calls_output_line_by_line_as_progress(
    tmp_path: Path, images: ImageBuilder, no_leaks: None
) -> None:
    config = make_config(tmp_path)
    code = "import time\nfor i in range(5):\n    print(f'line {i}')\n    time.sleep(0.4)\n"
    arrived: list[tuple[float, str]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        arrived.append((asyncio.get_running_loop().time(), message or ""))

    async with serve(config, backend=None) as served, served.modern("alice") as client:
        result = await client.call_tool(
            "python.run", {"code": code, "stateless": True}, progress_callback=on_progress
        )
        returned = asyncio.get_running_loop().time()
    assert result.is_error is False, _text(result)
    assert json.loads(_text(result))["stdout"] == "".join(f"line {i}\n" for i in range(5))
    # Each line came as it was printed (0.4 s apart), all before the result.
    seen, times = "", list[float]()
    for at, message in arrived:
        seen += message
        while len(times) < 5 and f"line {len(times)}\n" in seen:
            times.append(at)
    assert len(times) == 5, arrived
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap > 0.2 for gap in gaps), gaps
    assert returned - times[0] > 1.2, "the first line came only with the result"


# -- who may connect --------------------------------------------------------------------------


async def test_no_token_wrong_role_and_foreign_host_are_refused(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path)
    async with serve(config, scripted) as served:
        async with served.http() as raw:
            anonymous = await raw.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
            bad_token = await raw.post(
                "/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer stk_x"}
            )
        async with served.http("bob") as raw:
            approver = await raw.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        async with served.http("alice") as raw:
            rebound = await raw.post(
                "/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Host": "evil.example:80"}
            )
            cross_site = await raw.post(
                "/mcp",
                json=INITIALIZE,
                headers={**MCP_HEADERS, "Origin": "http://evil.example"},
            )
            accepted = await raw.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        # The real client is refused too: its initialize fails.
        refusals = [await _client_refusal(served, who) for who in (None, "bob")]
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert anonymous.json()["code"] == "unauthenticated"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert bad_token.status_code == 401
    assert approver.status_code == 403, approver.text
    assert approver.json()["code"] == "forbidden"
    assert "bob" in approver.json()["detail"]
    assert rebound.status_code == 403 and rebound.json()["code"] == "host_not_allowed"
    assert cross_site.status_code == 403 and cross_site.json()["code"] == "host_not_allowed"
    assert accepted.status_code == 200, accepted.text
    assert accepted.headers["mcp-session-id"]
    assert all(isinstance(refusal, MCPError) for refusal in refusals), refusals


async def test_a_session_answers_only_the_token_that_opened_it(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path)
    async with serve(config, scripted) as served:
        async with served.http("alice") as raw:
            opened = await raw.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        session_id = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        headers = {
            **MCP_HEADERS,
            "Mcp-Session-Id": session_id,
            "Mcp-Protocol-Version": "2025-11-25",
        }
        async with served.http("dave") as raw:
            hijack = await raw.post("/mcp", json=listing, headers=headers)
        async with served.http("alice") as raw:
            own = await raw.post("/mcp", json=listing, headers=headers)
    assert hijack.status_code == 404, hijack.text
    assert own.status_code == 200, own.text


async def test_one_token_holds_a_few_sessions_and_never_takes_anothers(
    tmp_path: Path, scripted: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One session manager had the SDK's one cap for everyone (10 000 open sessions): a
    caller token opening sessions in a loop (~80 s) refused every other client for as long
    as it kept them. Each token now has a cap of its own (3 here, for speed)."""
    monkeypatch.setattr(_mcp_http, "MAX_SESSIONS_PER_TOKEN", 3, raising=False)
    config = make_config(tmp_path)
    async with serve(config, scripted) as served:
        async with served.http("alice") as raw:
            opened = [
                await raw.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS) for _ in range(3)
            ]
            over = await raw.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        async with served.http("dave") as raw:
            other = await raw.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        async with served.mcp("dave") as dave:  # the real client, beside the raw sessions
            called = await dave.call_tool("files.read", {"path": "a.txt"})
        async with served.http("alice") as raw:
            ended = await raw.delete(
                "/mcp",
                headers={
                    **MCP_HEADERS,
                    "Mcp-Session-Id": opened[0].headers["mcp-session-id"],
                    "Mcp-Protocol-Version": "2025-11-25",
                },
            )
            again = await raw.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert [answer.status_code for answer in opened] == [200, 200, 200]
    assert over.status_code == 503, over.text
    assert other.status_code == 200, other.text
    assert not called.is_error, called
    assert ended.status_code == 200, ended.text
    assert again.status_code == 200, again.text


async def test_oversized_and_deeply_nested_bodies_are_refused_before_the_sdk(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path, max_body_bytes=4096, max_json_depth=8)
    nested: Any = "x"
    for _ in range(20):
        nested = [nested]
    deep = {**INITIALIZE, "params": {**INITIALIZE["params"], "capabilities": {"x": nested}}}
    big = {**INITIALIZE, "params": {**INITIALIZE["params"], "pad": "x" * 8000}}
    async with serve(config, scripted) as served, served.http("alice") as raw:
        too_big = await raw.post("/mcp", json=big, headers=MCP_HEADERS)
        too_deep = await raw.post("/mcp", json=deep, headers=MCP_HEADERS)
    assert too_big.status_code == 413 and too_big.json()["code"] == "body_too_large"
    assert too_deep.status_code == 400 and too_deep.json()["code"] == "json_too_deep"


# -- runs and workspaces ----------------------------------------------------------------------


async def test_two_principals_sessions_do_not_share_a_run(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path)
    async with serve(config, scripted) as served:
        async with served.mcp("alice") as alice, served.mcp("dave") as dave:
            await alice.call_tool("files.read", {"path": "a.txt"})
            await dave.call_tool("files.read", {"path": "a.txt"})
            await alice.call_tool("files.read", {"path": "b.txt"})
        calls = served.audit_calls()
        runs = {r["principal"]: r["run_id"] for r in calls}
        # Dave cannot reach Alice's run (its workspace) through the API either.
        async with served.http("dave") as api:
            foreign = await api.post(
                "/v1/tool-calls",
                json={
                    "id": "c1",
                    "name": "files.read",
                    "arguments": {"path": "a.txt"},
                    "run_id": runs["alice"],
                },
            )
    assert set(runs) == {"alice", "dave"}
    assert runs["alice"] != runs["dave"]
    # One run per session: both of Alice's calls are in hers.
    assert {r["run_id"] for r in calls if r["principal"] == "alice"} == {runs["alice"]}
    assert foreign.status_code == 403, foreign.text
    assert foreign.json()["code"] == "run_owned_by_another_principal"


# -- approvals: progress while waiting, and elicitation ---------------------------------------


async def test_a_gated_call_reports_progress_and_completes_after_approval_through_the_api(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path)
    progress = Progress()
    async with serve(config, scripted) as served, served.mcp("alice") as session:
        call = asyncio.create_task(
            session.call_tool("shell.run", {"command": "ls"}, progress_callback=progress)
        )
        request = await _pending(served)
        async with asyncio.timeout(30):
            while not progress.messages:
                await asyncio.sleep(0.02)
        assert not call.done()
        async with served.http("bob") as api:
            approved = await api.post(
                f"/v1/approvals/{request['id']}/approve", json={"note": "fine"}
            )
        result = await asyncio.wait_for(call, 30)
    assert approved.status_code == 200, approved.text
    assert result.is_error is False, _text(result)
    assert request["principal"] == "alice" and request["run_id"].startswith("mcp-")
    assert any(
        f"waiting for approval {request['id']} (rule shell-needs-approval)" in message
        for message in progress.messages
    ), progress.messages
    assert progress.values == sorted(set(progress.values))  # increasing, as the spec asks
    store = ApprovalStore(config.approvals_db)
    decided = store.get(request["id"])
    assert decided is not None and decided.decided_by == "bob"


class Answers:
    """An elicitation callback answering each question with the next of its answers."""

    def __init__(self, *answers: types.ElicitResult) -> None:
        self.answers = list(answers)
        self.asked: list[types.ElicitRequestParams] = []

    async def __call__(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        self.asked.append(params)
        return self.answers.pop(0)


FORM = "elicitation: {mode: form}\n"


async def test_the_elicitation_approver_approves_and_denies_as_the_sessions_principal(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path, approvers=FORM)
    answers = Answers(
        types.ElicitResult(action="accept", content={"decision": "approve", "note": "go"}),
        types.ElicitResult(action="accept", content={"decision": "deny", "note": "not today"}),
        types.ElicitResult(action="decline"),
    )
    async with (
        serve(config, scripted) as served,
        served.mcp("alice", elicitation_callback=answers) as session,
    ):
        approved = await session.call_tool("shell.run", {"command": "ls"})
        denied = await session.call_tool("shell.run", {"command": "rm -rf /"})
        declined = await session.call_tool("shell.run", {"command": "reboot"})
    assert approved.is_error is False, _text(approved)
    assert denied.is_error is True and "not today" in _text(denied)
    assert declined.is_error is True and "declined in the MCP client" in _text(declined)
    first = answers.asked[0]
    assert isinstance(first, types.ElicitRequestFormParams)
    assert "shell.run" in first.message and "shell commands need a person" in first.message
    assert first.requested_schema["properties"]["decision"]["enum"] == ["approve", "deny"]
    # The store holds each answer as alice's decision.
    store = ApprovalStore(config.approvals_db)
    decided = store.find(None)
    assert [(r.status, r.decided_by, r.note) for r in decided] == [
        (ApprovalStatus.APPROVED, "alice", "go"),
        (ApprovalStatus.DENIED, "alice", "not today"),
        (ApprovalStatus.DENIED, "alice", "declined in the MCP client"),
    ]


async def test_the_elicitation_approver_ignores_a_form_that_does_not_fit(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path, approvers=FORM)
    answers = Answers(types.ElicitResult(action="accept", content={"decision": "yes please"}))
    async with (
        serve(config, scripted) as served,
        served.mcp("alice", elicitation_callback=answers) as session,
    ):
        call = asyncio.create_task(session.call_tool("shell.run", {"command": "ls"}))
        request = await _pending(served)
        async with asyncio.timeout(30):
            while not answers.asked:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the answer is in; the request must still be pending
        still = ApprovalStore(config.approvals_db).get(request["id"])
        async with served.http("bob") as api:
            await api.post(f"/v1/approvals/{request['id']}/deny", json={"note": "no"})
        result = await asyncio.wait_for(call, 30)
    assert still is not None and still.status is ApprovalStatus.PENDING
    assert result.is_error is True and "no" in _text(result)


async def test_with_self_approval_off_the_elicitation_approver_does_not_decide(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path, approvers=FORM, self_approval=False)
    answers = Answers(types.ElicitResult(action="accept", content={"decision": "approve"}))
    progress = Progress()
    async with (
        serve(config, scripted) as served,
        served.mcp("alice", elicitation_callback=answers) as session,
    ):
        call = asyncio.create_task(
            session.call_tool("shell.run", {"command": "ls"}, progress_callback=progress)
        )
        request = await _pending(served)
        async with asyncio.timeout(30):
            while not progress.messages:
                await asyncio.sleep(0.02)
        async with served.http("bob") as api:
            await api.post(f"/v1/approvals/{request['id']}/approve", json={"note": "ok"})
        result = await asyncio.wait_for(call, 30)
    assert answers.asked == []  # never asked: alice may not decide alice's request
    assert result.is_error is False, _text(result)
    decided = ApprovalStore(config.approvals_db).get(request["id"])
    assert decided is not None and decided.decided_by == "bob"


async def test_url_mode_sends_the_user_to_the_approval_page_and_the_page_decides(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    page = "https://stockade.example.org/ui/approvals"
    config = make_config(tmp_path, approvers=f"elicitation: {{mode: url, page_url: {page}}}\n")
    answers = Answers(types.ElicitResult(action="accept"))
    completed: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ElicitCompleteNotification):
            completed.append(message.params.elicitation_id)

    async with (
        serve(config, scripted) as served,
        served.mcp("alice", elicitation_callback=answers, message_handler=on_message) as session,
    ):
        call = asyncio.create_task(session.call_tool("shell.run", {"command": "ls"}))
        request = await _pending(served)
        async with asyncio.timeout(30):
            while not answers.asked:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        still = ApprovalStore(config.approvals_db).get(request["id"])
        async with served.http("bob") as api:
            await api.post(f"/v1/approvals/{request['id']}/approve", json={})
        result = await asyncio.wait_for(call, 30)
        async with asyncio.timeout(10):
            while not completed:
                await asyncio.sleep(0.02)
    (asked,) = answers.asked
    assert isinstance(asked, types.ElicitRequestURLParams)
    assert asked.url == f"{page}#request-{request['id']}"
    assert asked.elicitation_id == request["id"]
    # Consenting to open the page decides nothing: an approver there does.
    assert still is not None and still.status is ApprovalStatus.PENDING
    assert result.is_error is False, _text(result)
    assert completed == [request["id"]]


async def test_a_bad_elicitation_mode_is_a_clear_error(tmp_path: Path) -> None:
    config = make_config(tmp_path, approvers="elicitation: {mode: telepathy}\n")
    with pytest.raises(ConfigError) as failed:
        check_configuration(LoadedConfig(config=config, file=None, sources={}))
    message = str(failed.value)
    assert "approvers.yaml" in message and "elicitation" in message and "mode" in message
    assert "telepathy" in message


# -- the protocol revisions: 2026-07-28 (no session, rounds) and 2025-06-18 (form only) --------


async def test_a_2026_client_calls_and_sees_progress_without_a_session(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path)
    progress = Progress()
    async with serve(config, scripted) as served, served.modern("alice") as client:
        listed = await client.list_tools()
        denied = await client.call_tool("files.delete", {"path": "a.txt"})
        call = asyncio.create_task(
            client.call_tool("shell.run", {"command": "ls"}, progress_callback=progress)
        )
        request = await _pending(served)
        async with asyncio.timeout(30):
            while not progress.messages:
                await asyncio.sleep(0.02)
        async with served.http("bob") as api:
            await api.post(f"/v1/approvals/{request['id']}/approve", json={})
        result = await asyncio.wait_for(call, 30)
        calls = served.audit_calls()
    assert "shell.run" in {tool.name for tool in listed.tools}
    assert denied.is_error is True and "nothing is deleted here" in _text(denied)
    assert result.is_error is False, _text(result)
    assert f"waiting for approval {request['id']}" in progress.messages[0]
    # No session: the token's calls share one run of its own.
    assert {(r["principal"], r["run_id"]) for r in calls} == {("alice", request["run_id"])}


async def test_a_2026_client_answers_the_elicitation_form_in_its_next_round(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path, approvers=FORM)
    answers = Answers(
        types.ElicitResult(action="accept", content={"decision": "approve", "note": "go"}),
        types.ElicitResult(action="accept", content={"decision": "deny", "note": "not today"}),
    )
    async with (
        serve(config, scripted) as served,
        served.modern("alice", elicitation_callback=answers) as client,
    ):
        approved = await client.call_tool("shell.run", {"command": "ls"})
        denied = await client.call_tool("shell.run", {"command": "rm -rf /"})
    assert approved.is_error is False, _text(approved)
    assert denied.is_error is True and "not today" in _text(denied)
    assert all(isinstance(asked, types.ElicitRequestFormParams) for asked in answers.asked)
    decided = ApprovalStore(config.approvals_db).find(None)
    assert [(r.status, r.decided_by) for r in decided] == [
        (ApprovalStatus.APPROVED, "alice"),
        (ApprovalStatus.DENIED, "alice"),
    ]


async def test_a_2026_retry_by_another_principal_or_with_other_arguments_is_refused(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path, approvers=FORM)
    async with (
        serve(config, scripted) as served,
        served.modern("alice", elicitation_callback=Answers()) as alice,
    ):
        first = await alice.session.call_tool(
            "shell.run", {"command": "ls"}, allow_input_required=True
        )
        assert isinstance(first, types.InputRequiredResult), first
        assert first.request_state is not None and first.input_requests
        (key,) = first.input_requests
        approve: types.InputResponses = {
            key: types.ElicitResult(action="accept", content={"decision": "approve"})
        }
        # The SDK's sealed state is bound to the tool and arguments.
        with pytest.raises(MCPError, match="Invalid or expired requestState"):
            await alice.session.call_tool(
                "shell.run",
                {"command": "rm -rf /"},
                input_responses=approve,
                request_state=first.request_state,
                allow_input_required=True,
            )
        async with served.modern("dave") as dave:
            other_principal = await dave.session.call_tool(
                "shell.run",
                {"command": "ls"},
                input_responses=approve,
                request_state=first.request_state,
                allow_input_required=True,
            )
        pending = await _pending(served)
    assert isinstance(other_principal, types.CallToolResult) and other_principal.is_error
    assert "names no call of yours" in _text(other_principal)
    assert pending["status"] == "pending"  # nobody's answer was taken


async def test_a_2025_06_18_client_gets_the_form_and_no_url(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path, approvers=FORM)
    answers = Answers(types.ElicitResult(action="accept", content={"decision": "approve"}))
    async with serve(config, scripted) as served:
        client = httpx2.AsyncClient(
            headers=served.auth("alice"), trust_env=False, timeout=httpx2.Timeout(30, read=120)
        )
        async with (
            client,
            streamable_http_client(f"{served.url}/mcp", http_client=client) as (read, write),
            ClientSession(read, write, elicitation_callback=answers) as session,
        ):
            # The handshake of a 2025-06-18 client: elicitation declared as {} (form only).
            init = await session.send_request(
                types.InitializeRequest(
                    params=types.InitializeRequestParams(
                        protocol_version="2025-06-18",
                        capabilities=types.ClientCapabilities(
                            elicitation=types.ElicitationCapability()
                        ),
                        client_info=types.Implementation(name="old", version="1"),
                    )
                ),
                types.InitializeResult,
            )
            session.adopt(init)
            await session.send_notification(types.InitializedNotification())
            result = await session.call_tool("shell.run", {"command": "ls"})
    assert init.protocol_version == "2025-06-18"
    assert result.is_error is False, _text(result)
    (asked,) = answers.asked
    assert isinstance(asked, types.ElicitRequestFormParams)


async def test_a_2026_client_is_sent_to_the_approval_page_in_its_next_round(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    page = "https://stockade.example.org/ui/approvals"
    config = make_config(tmp_path, approvers=f"elicitation: {{mode: url, page_url: {page}}}\n")
    answers = Answers(types.ElicitResult(action="accept"))
    async with (
        serve(config, scripted) as served,
        served.modern("alice", elicitation_callback=answers) as client,
    ):
        call = asyncio.create_task(client.call_tool("shell.run", {"command": "ls"}))
        request = await _pending(served)
        async with asyncio.timeout(30):
            while not answers.asked:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        still = ApprovalStore(config.approvals_db).get(request["id"])
        async with served.http("bob") as api:
            await api.post(f"/v1/approvals/{request['id']}/deny", json={"note": "see the page"})
        result = await asyncio.wait_for(call, 30)
    (asked,) = answers.asked
    assert isinstance(asked, types.ElicitRequestURLParams)
    assert asked.url == f"{page}#request-{request['id']}"
    assert still is not None and still.status is ApprovalStatus.PENDING
    assert result.is_error is True and "see the page" in _text(result)


async def test_a_decision_taken_elsewhere_first_wins_over_the_clients_late_answer(
    tmp_path: Path, scripted: ScriptedBackend
) -> None:
    config = make_config(tmp_path, approvers=FORM)
    asked = asyncio.Event()
    decided_elsewhere = asyncio.Event()

    async def late_approval(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        asked.set()
        await decided_elsewhere.wait()  # the user answers after bob has denied
        return types.ElicitResult(action="accept", content={"decision": "approve"})

    async with (
        serve(config, scripted) as served,
        served.mcp("alice", elicitation_callback=late_approval) as session,
    ):
        call = asyncio.create_task(session.call_tool("shell.run", {"command": "ls"}))
        request = await _pending(served)
        await asyncio.wait_for(asked.wait(), 30)
        async with served.http("bob") as api:
            denied = await api.post(f"/v1/approvals/{request['id']}/deny", json={"note": "no"})
        decided_elsewhere.set()
        result = await asyncio.wait_for(call, 30)
    assert denied.status_code == 200, denied.text
    assert result.is_error is True and "no" in _text(result)
    decided = ApprovalStore(config.approvals_db).get(request["id"])
    assert decided is not None
    assert (decided.status, decided.decided_by) == (ApprovalStatus.DENIED, "bob")
    assert scripted.requests == []  # nothing ran
