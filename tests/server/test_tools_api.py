"""/v1/tools and /v1/tool-calls: the tools in OpenAI's format, calls through the gateway."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from orchestrator.config import StockadeConfig
from orchestrator.sandbox.execution import ExecRequest, ExecResult
from orchestrator.sandbox.profile import SandboxProfile
from orchestrator.testing.backend import ScriptedBackend, tool_output

from .conftest import Served, issue_tokens, serve, server_config


def call(
    call_id: str, name: str = "python.run", run_id: str = "run-1", **extra: object
) -> dict[str, object]:
    arguments = extra.pop("arguments", {"code": "print(1)"})
    return {"id": call_id, "name": name, "arguments": arguments, "run_id": run_id, **extra}


async def test_the_tools_are_listed_in_openai_function_format(served: Served) -> None:
    async with served.client("caller") as client:
        listed = await client.get("/v1/tools")
        one = await client.get("/v1/tools/python.run")
        same = await client.get("/v1/tools/python__run")
        missing = await client.get("/v1/tools/python.walk")
    assert listed.status_code == 200
    tools = listed.json()["tools"]
    names = [tool["function"]["name"] for tool in tools]
    assert "python__run" in names and "files__read" in names
    assert names == sorted(names)
    assert all(tool["type"] == "function" for tool in tools)
    assert (
        one.json()
        == same.json()
        == next(t for t in tools if t["function"]["name"] == "python__run")
    )
    assert one.json()["function"]["parameters"]["properties"]["code"]["type"] == "string"
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["code"] == "not_found"


async def test_a_call_goes_through_the_gateway_and_answers_its_result(
    served: Served, scripted: ScriptedBackend
) -> None:
    async with served.client("caller") as client:
        answer = await client.post("/v1/tool-calls", json=call("c1"))
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["status"] == "ok"
    assert result["call_id"] == "c1"
    assert result["output"] == "ok"
    request, _profile = scripted.requests[0]
    assert json.loads(request.stdin) == {
        "code": "print(1)", "timeout_s": 20.0, "reset": False, "stateless": False,
    }  # fmt: skip
    record = [r for r in served.audit_records() if r.get("call_id") == "c1"][-1]
    assert (record["principal"], record["run_id"], record["status"]) == ("alice", "run-1", "ok")


async def test_a_principal_in_the_body_is_ignored(served: Served) -> None:
    async with served.client("caller") as client:
        answer = await client.post(
            "/v1/tool-calls",
            json=call("c1", principal="carol"),
            headers={"X-Principal": "carol", "X-Forwarded-User": "carol"},
        )
    assert answer.json()["status"] == "ok"
    records = [r for r in served.audit_records() if r.get("call_id") == "c1"]
    assert records and {r["principal"] for r in records} == {"alice"}


async def test_unknown_tools_bad_arguments_and_denials_are_results(served: Served) -> None:
    async with served.client("caller") as client:
        unknown = await client.post("/v1/tool-calls", json=call("c1", name="python.walk"))
        invalid = await client.post("/v1/tool-calls", json=call("c2", arguments={"cod": "1"}))
        as_text = await client.post("/v1/tool-calls", json=call("c3", arguments="{not json"))
        denied = await client.post(
            "/v1/tool-calls", json=call("c4", name="files.delete", arguments={"path": "a"})
        )
    assert [r.status_code for r in (unknown, invalid, as_text, denied)] == [200] * 4
    assert unknown.json()["status"] == "unknown_tool"
    assert invalid.json()["status"] == "invalid_arguments"
    assert as_text.json()["status"] == "invalid_arguments"
    assert denied.json()["status"] == "denied"
    assert denied.json()["error"] == "nothing is deleted here"
    statuses = {r["call_id"]: r["status"] for r in served.audit_records() if r["event"] == "call"}
    assert statuses == {
        "c1": "unknown_tool", "c2": "invalid_arguments", "c3": "invalid_arguments",
        "c4": "denied",
    }  # fmt: skip


async def test_half_a_surrogate_pair_in_the_arguments_never_reaches_an_approval(
    served: Served,
) -> None:
    """JSON's lone "\\ud800" escape decodes to something no page or log can encode: a call
    that needed approval with one made every GET /v1/approvals a 500, for every approver."""
    body = (
        '{"id": "s1", "name": "shell.run", "run_id": "r1", "arguments": {"command": "rm \\ud800"}}'
    )
    async with served.client("caller") as client:
        refused = await client.post(
            "/v1/tool-calls", content=body, headers={"content-type": "application/json"}
        )
    async with served.client("approver") as client:
        listed = await client.get("/v1/approvals")
    assert refused.status_code == 200
    assert refused.json()["status"] == "invalid_arguments"
    assert refused.json()["error"].startswith("command: holds half a UTF-16 surrogate pair")
    assert listed.status_code == 200 and listed.json() == {"approvals": [], "more": False}


_TIMEOUT_POLICY = """\
version: 1
default: deny
rules:
  - name: no-long-runs
    tools: python.run
    when: {arg: timeout_s, gt: 60}
    decision: deny
    reason: at most a minute
  - name: everything-else
    tools: "*"
    decision: allow
"""


async def test_a_number_json_cannot_carry_is_refused_before_the_policy(tmp_path: Path) -> None:
    """1e999 is valid JSON text (inf once read), NaN and Infinity Python's reader takes: each
    passed validation. The policy's comparison never holds for NaN, so a rule denying
    timeout_s over 60 let the call run, the tool got NaN on its stdin (no JSON) and the
    audit log recorded null."""
    config = server_config(tmp_path / "state")
    (tmp_path / "state" / "policy.yaml").write_text(_TIMEOUT_POLICY)
    scripted = ScriptedBackend()
    tokens = issue_tokens(config)
    async with serve(config, backend=scripted) as running:
        running.tokens = tokens
        async with running.client("caller") as client:
            answers = [
                await client.post(
                    "/v1/tool-calls",
                    content=(
                        f'{{"id": "n{n}", "name": "python.run", "run_id": "r1", "arguments": '
                        f'{{"code": "print(1)", "timeout_s": {number}}}}}'
                    ),
                    headers={"content-type": "application/json"},
                )
                for n, number in enumerate(("NaN", "1e999", "Infinity", "-Infinity"))
            ]
            long = await client.post(
                "/v1/tool-calls", json=call("n9", arguments={"code": "1", "timeout_s": 90})
            )
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "invalid_arguments", answer.text
        assert "is not a number JSON can carry" in answer.json()["error"]
    assert long.json()["status"] == "denied"
    assert scripted.requests == []
    refused = [r for r in running.audit_records() if r.get("call_id", "").startswith("n")]
    assert {r["call_id"]: r["status"] for r in refused if r["call_id"] != "n9"} == {
        f"n{n}": "invalid_arguments" for n in range(4)
    }


async def test_rate_limits_count_the_tokens_principal_and_say_when_to_retry(
    served: Served,
) -> None:
    write = {"path": "a.txt", "content": "x"}
    async with served.client("caller") as alice, served.client("both") as dave:
        answers = [
            await alice.post("/v1/tool-calls", json=call(f"w{n}", "files.write", arguments=write))
            for n in range(3)
        ]
        # Another principal has a budget of its own, whatever principal the body names.
        other = await dave.post(
            "/v1/tool-calls",
            json=call("w9", "files.write", run_id="run-dave", arguments=write, principal="alice"),
        )
    assert [a.json()["status"] for a in answers] == ["ok", "ok", "rate_limited"]
    limited = answers[2]
    assert limited.status_code == 200
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["retry_after_s"] > 0
    assert other.json()["status"] == "ok"


async def test_a_run_belongs_to_the_principal_that_used_it_first(served: Served) -> None:
    async with served.client("caller") as alice, served.client("both") as dave:
        first = await alice.post("/v1/tool-calls", json=call("c1", run_id="shared"))
        taken = await dave.post("/v1/tool-calls", json=call("c2", run_id="shared"))
        again = await alice.post("/v1/tool-calls", json=call("c3", run_id="shared"))
    assert first.json()["status"] == "ok"
    assert taken.status_code == 403
    assert taken.json()["code"] == "run_owned_by_another_principal"
    assert again.json()["status"] == "ok"
    assert not [r for r in served.audit_records() if r.get("call_id") == "c2"]


async def test_the_call_body_is_strict(served: Served) -> None:
    async with served.client("caller") as client:
        no_run = await client.post("/v1/tool-calls", json={"id": "c1", "name": "python.run",
                                                           "arguments": {}})  # fmt: skip
        bad_run = await client.post("/v1/tool-calls", json=call("c2", run_id="../etc"))
        extra = await client.post("/v1/tool-calls", json=call("c3", sneaky=True))
        not_json = await client.post(
            "/v1/tool-calls", content=b"{", headers={"content-type": "application/json"}
        )
    for answer in (no_run, bad_run, extra, not_json):
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "invalid_request"
    assert no_run.json()["errors"][0]["loc"] == ["body", "run_id"]
    # Where and what only: the request is never echoed back.
    assert all(set(error) == {"loc", "msg"} for error in extra.json()["errors"])


async def test_a_retry_of_a_running_call_joins_it(config: StockadeConfig) -> None:
    # A sandbox that holds the first call until the test lets it go.
    release = asyncio.Event()

    class Held(ScriptedBackend):
        async def execute(self, request: ExecRequest, profile: SandboxProfile) -> ExecResult:
            self.requests.append((request, profile))
            await release.wait()
            return tool_output("done")

    held = Held()
    tokens = issue_tokens(config)
    async with serve(config, backend=held) as running:
        running.tokens = tokens
        async with running.client("caller") as client:
            first = asyncio.create_task(client.post("/v1/tool-calls", json=call("c1")))
            async with asyncio.timeout(10):
                while not held.requests:
                    await asyncio.sleep(0.01)
            retry = asyncio.create_task(client.post("/v1/tool-calls", json=call("c1")))
            other = await client.post(
                "/v1/tool-calls", json=call("c1", arguments={"code": "print(2)"})
            )
            release.set()
            answers = await asyncio.gather(first, retry)
    assert other.status_code == 409 and other.json()["code"] == "call_id_in_use"
    assert [a.json()["output"] for a in answers] == ["done", "done"]
    assert len(held.requests) == 1  # one execution for both requests
