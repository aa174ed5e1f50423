"""Bearer tokens: no token 401, wrong role 403, revoked at once, roles are total."""

from __future__ import annotations

import pytest

from orchestrator.server import ROLE_PERMISSIONS, Permission, Role, TokenStore

from .conftest import Served

ENDPOINTS = [
    ("GET", "/v1/tools", None),
    ("GET", "/v1/tools/python.run", None),
    ("POST", "/v1/tool-calls", {"id": "c", "name": "python.run", "arguments": {}, "run_id": "r"}),
    ("GET", "/v1/approvals", None),
    ("GET", "/v1/approvals/0123", None),
    ("POST", "/v1/approvals/0123/approve", {}),
    ("POST", "/v1/approvals/0123/deny", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_api_endpoint_needs_a_valid_token(
    served: Served, method: str, path: str, body: object
) -> None:
    store = TokenStore(served.config.tokens_db)
    revoked = store.create(principal="erin", roles=[Role.ADMIN])
    assert store.revoke(revoked.info.id)
    store.close()
    bad_tokens = {
        "no token": {},
        "not bearer": {"Authorization": f"Basic {served.tokens['admin']}"},
        "unknown": {"Authorization": "Bearer stk_000000000000_" + "A" * 43},
        "garbage": {"Authorization": "Bearer hello"},
        "tampered": {"Authorization": f"Bearer {served.tokens['admin'][:-1]}x"},
        "revoked": {"Authorization": f"Bearer {revoked.token}"},
    }
    async with served.client() as client:
        for why, headers in bad_tokens.items():
            answer = await client.request(method, path, json=body, headers=headers)
            assert answer.status_code == 401, (why, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == "unauthenticated"
            assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_a_revoked_token_is_refused_from_the_next_request(served: Served) -> None:
    store = TokenStore(served.config.tokens_db)
    issued = store.create(principal="erin", roles=[Role.CALLER])
    headers = {"Authorization": f"Bearer {issued.token}"}
    async with served.client() as client:
        assert (await client.get("/v1/tools", headers=headers)).status_code == 200
        store.revoke(issued.info.id)
        assert (await client.get("/v1/tools", headers=headers)).status_code == 401
    store.close()


async def test_roles_grant_what_they_say(served: Served) -> None:
    call = {"id": "c", "name": "python.run", "arguments": {}, "run_id": "r"}
    expected = {  # who: (tools list, tool call, approvals list)
        "caller": (200, 200, 403),
        "approver": (200, 403, 200),
        "admin": (200, 200, 200),
        "both": (200, 200, 200),
    }
    for who, statuses in expected.items():
        async with served.client(who) as client:
            answers = (
                await client.get("/v1/tools"),
                await client.post("/v1/tool-calls", json={**call, "run_id": f"run-{who}"}),
                await client.get("/v1/approvals"),
            )
        assert tuple(a.status_code for a in answers) == statuses, who


def test_the_role_table_is_total() -> None:
    assert set(ROLE_PERMISSIONS) == set(Role)
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)
    assert Permission.DECIDE_APPROVALS not in ROLE_PERMISSIONS[Role.CALLER]
    assert Permission.CALL_TOOLS not in ROLE_PERMISSIONS[Role.APPROVER]
    assert Permission.START_RUNS not in ROLE_PERMISSIONS[Role.APPROVER]
