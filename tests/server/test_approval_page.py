"""The approval page over plain HTTP: sign-in, sessions, CSRF, headers, escaping, the API's checks.

The browser's side (the page updating itself, the forms clicked) is in
``tests/browser/``; here a real HTTP client plays the browser to check what
a browser cannot be trusted to show: every refusal, every header, every byte.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx

from orchestrator.config import StockadeConfig
from orchestrator.server import TokenStore
from orchestrator.server.page import SECURITY_HEADERS, SESSION_COOKIE, SESSION_LIFETIME_S, Sessions
from orchestrator.testing.backend import ScriptedBackend

from .conftest import Served, issue_tokens, serve, server_config
from .test_approvals_api import SECRET, pending, shell

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token of the first form on ``page``."""
    found = _CSRF.search(page.text)
    assert found, page.text
    return html.unescape(found.group(1))


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    """Sign ``client`` in with ``token`` as a browser would: the form, then its post."""
    form = await client.get("/ui/sign-in")
    assert form.status_code == 200, form.text
    return await client.post("/ui/sign-in", data={"csrf": csrf_of(form), "token": token})


async def signed_in(served: Served, who: str) -> tuple[httpx.AsyncClient, str]:
    """A client signed in as ``who`` and its session's CSRF token."""
    client = served.client()
    answer = await sign_in(client, served.tokens[who])
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/approvals"
    page = await client.get("/ui/approvals")
    assert page.status_code == 200, page.text
    return client, csrf_of(page)


async def one_pending(served: Served) -> dict[str, Any]:
    """The one pending request, once it is there (bounded wait)."""
    async with served.client("approver") as api:
        (request,) = await pending(api)
    return request


def set_cookie(answer: httpx.Response, name: str) -> str:
    """The ``Set-Cookie`` header of ``answer`` that sets ``name``."""
    (header,) = [h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return header


async def test_an_approver_signs_in_sees_the_request_and_approves_it(
    served: Served, scripted: ScriptedBackend
) -> None:
    async with served.client("caller") as alice, served.client("approver") as bob_api:
        waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1", "ls -l")))
        (request,) = await pending(bob_api)
        bob, csrf = await signed_in(served, "approver")
        async with aclosing(bob):
            page = await bob.get("/ui/approvals")
            cards = await bob.get("/ui/approvals/cards")
            approved = await bob.post(
                f"/ui/approvals/{request['id']}/approve", data={"csrf": csrf, "note": "fine"}
            )
            after = await bob.get(approved.headers["location"])
        answer = await waiting
    for shown in (page.text, cards.text):
        assert f'data-id="{request["id"]}"' in shown
        for value in ("shell.run", "shell commands need a person", "shell-needs-approval",
                      "alice", "run-1", "ls -l"):  # fmt: skip
            assert value in shown
    assert 'id="principal">bob<' in page.text
    assert approved.status_code == 303, approved.text
    assert "Approved." in after.text and request["id"] not in after.text
    assert answer.json()["status"] == "ok"
    assert len(scripted.requests) == 1
    records = served.audit_records()
    (decided,) = [r for r in records if r["event"] == "approval_decided"]
    assert (decided["approval"]["decided_by"], decided["reason"]) == ("bob", "fine")
    (call,) = [r for r in records if r["event"] == "call"]
    assert (call["principal"], call["approval"]["decided_by"]) == ("alice", "bob")


async def test_forms_without_the_sessions_csrf_token_are_refused(served: Served) -> None:
    async with served.client("caller") as alice:
        waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1")))
        bob, csrf = await signed_in(served, "approver")
        carol, carols_csrf = await signed_in(served, "admin")
        async with aclosing(bob), aclosing(carol):
            request = await one_pending(served)
            url = f"/ui/approvals/{request['id']}"
            refused = [
                await bob.post(f"{url}/approve", data={}),
                await bob.post(f"{url}/approve", data={"csrf": ""}),
                await bob.post(f"{url}/approve", data={"csrf": csrf[:-1] + "x"}),
                await bob.post(f"{url}/deny", data={"csrf": carols_csrf, "note": "no"}),
                await bob.post(f"{url}/approve", data={"csrf": csrf.upper()}),
                await bob.post("/ui/sign-out", data={"csrf": carols_csrf}),
            ]
            as_page = await bob.post(f"{url}/deny", data={}, headers={"Accept": "text/html"})
            # The same token twice is not a way around the check.
            twice = await bob.post(
                f"{url}/approve", content=f"csrf={csrf}&csrf=x",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            as_json = await bob.post(f"{url}/approve", json={"csrf": csrf})
            still = await bob.get("/ui/approvals")
            denied = await bob.post(f"{url}/deny", data={"csrf": csrf, "note": "no"})
        answer = (await waiting).json()
    for refusal in refused:
        assert refusal.status_code == 403, refusal.text
        assert refusal.headers["content-type"] == "application/problem+json"
        assert refusal.json()["code"] == "forbidden"
        assert "CSRF" in refusal.json()["detail"]
    assert as_page.status_code == 403
    assert as_page.headers["content-type"].startswith("text/html")
    assert 'id="problem-code">forbidden<' in as_page.text
    assert twice.status_code == 400
    assert as_json.status_code == 415
    assert f'data-id="{request["id"]}"' in still.text  # nothing was decided
    assert denied.status_code == 303
    assert answer["error"] == "bob denied the call: no"


async def test_the_sign_in_form_has_its_own_csrf_token(served: Served) -> None:
    async with served.client() as browser, served.client() as other:
        form = await browser.get("/ui/sign-in")
        token = served.tokens["approver"]
        without = await other.post("/ui/sign-in", data={"token": token})
        # A token from someone else's form, without that form's cookie.
        foreign = await other.post("/ui/sign-in", data={"csrf": csrf_of(form), "token": token})
        wrong = await browser.post("/ui/sign-in", data={"csrf": "nope", "token": token})
    for refusal in (without, foreign, wrong):
        assert refusal.status_code == 403, refusal.text
        assert SESSION_COOKIE not in refusal.headers.get("set-cookie", "")


async def test_the_session_cookie_is_httponly_strict_and_expires(served: Served) -> None:
    async with served.client() as browser:
        form = await browser.get("/ui/sign-in")
        answer = await sign_in(browser, served.tokens["approver"])
    nonce_cookie = set_cookie(form, "stockade_sign_in").lower()
    cookie = set_cookie(answer, SESSION_COOKIE).lower()
    for header in (nonce_cookie, cookie):
        assert "httponly" in header and "samesite=strict" in header and "path=/ui" in header
        assert "secure" not in header  # loopback: a browser would not send it over http
    assert "max-age=28800" in cookie


async def test_cookies_are_secure_off_loopback(tmp_path: Path) -> None:
    config = server_config(tmp_path / "state", host="0.0.0.0")  # served on 127.0.0.1 all the same
    tokens = issue_tokens(config)
    async with serve(config, backend=ScriptedBackend()) as running, running.client() as browser:
        form = await browser.get("/ui/sign-in")
        # A browser keeps a Secure cookie only over HTTPS: sent by hand here.
        nonce = set_cookie(form, "stockade_sign_in").split(";")[0]
        answer = await browser.post(
            "/ui/sign-in",
            data={"csrf": csrf_of(form), "token": tokens["approver"]},
            headers={"Cookie": nonce},
        )
    assert "; secure" in set_cookie(form, "stockade_sign_in").lower()
    assert "; secure" in set_cookie(answer, SESSION_COOKIE).lower()
    assert 'id="insecure"' in form.text  # plain HTTP off loopback: the page says it cannot work


async def test_only_approvers_and_admins_open_the_approvals(served: Served) -> None:
    answers: dict[str, httpx.Response] = {}
    for who in ("approver", "admin", "both"):
        async with served.client() as browser:
            answers[who] = await sign_in(browser, served.tokens[who])
    async with served.client() as browser:
        unknown = await sign_in(browser, "stk_" + "0" * 40)
        empty = await sign_in(browser, "")
        # A caller signs in for the runs pages (tests/server/test_run_timeline.py), not these.
        caller = await sign_in(browser, served.tokens["caller"])
        refused = await browser.get("/ui/approvals", headers={"Accept": "text/html"})
        cards = await browser.get("/ui/approvals/cards")
        post = await browser.post("/ui/approvals/x/approve", data={"csrf": "x"})
    assert (caller.status_code, caller.headers["location"]) == (303, "/ui/runs")
    assert refused.status_code == cards.status_code == post.status_code == 403
    assert "alice&#39;s token (roles: caller) may not decide approvals" in refused.text
    for who in ("approver", "admin", "both"):
        assert answers[who].status_code == 303, answers[who].text
    assert unknown.status_code == empty.status_code == 401
    assert "unknown or revoked" in unknown.text


async def test_without_a_session_the_page_sends_the_browser_to_sign_in(served: Served) -> None:
    async with served.client("approver") as bearer_only:
        page = await bearer_only.get("/ui/approvals")  # an API token is not a session
        root = await bearer_only.get("/ui")
        cards = await bearer_only.get("/ui/approvals/cards")
        post = await bearer_only.post("/ui/approvals/x/approve", data={"csrf": "x"})
        bearer_only.cookies.set(SESSION_COOKIE, "forged")
        forged = await bearer_only.get("/ui/approvals")
    assert (page.status_code, page.headers["location"]) == (303, "/ui/sign-in")
    assert (root.status_code, root.headers["location"]) == (303, "/ui/approvals")
    assert cards.status_code == 401 and cards.json()["code"] == "unauthenticated"
    assert (post.status_code, post.headers["location"]) == (303, "/ui/sign-in")
    assert forged.headers["location"] == "/ui/sign-in"


async def test_signing_out_and_revoking_the_token_end_the_session(
    served: Served, config: StockadeConfig
) -> None:
    bob, csrf = await signed_in(served, "approver")
    carol, _ = await signed_in(served, "admin")
    async with aclosing(bob), aclosing(carol):
        cookie = bob.cookies[SESSION_COOKIE]
        out = await bob.post("/ui/sign-out", data={"csrf": csrf})
        async with served.client() as replayed:
            replayed.cookies.set(SESSION_COOKIE, cookie)
            after = await replayed.get("/ui/approvals/cards")
        store = TokenStore(config.tokens_db)
        try:
            (carols,) = [t for t in store.tokens() if t.principal == "carol"]
            store.revoke(carols.id)
        finally:
            store.close()
        async with asyncio.timeout(10):
            while (revoked := await carol.get("/ui/approvals/cards")).status_code == 200:
                await asyncio.sleep(0.05)  # the server's token cache refreshes on its own
    assert out.status_code == 303 and out.headers["location"] == "/ui/sign-in?done=signed-out"
    assert "max-age=0" in set_cookie(out, SESSION_COOKIE).lower()
    assert after.status_code == 401
    assert revoked.status_code == 401


async def test_untrusted_values_render_inert_and_secrets_redacted(served: Served) -> None:
    hostile = (
        f'</pre><script>alert(1)</script><img src=x onerror="alert(2)">{{{{7*7}}}} \' " & {SECRET}'
        " rm invoice\u202egpj.sh"  # reads "invoicehs.jpg" where bidirectional text is honoured
    )
    async with served.client("caller") as alice:
        waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1", hostile)))
        bob, csrf = await signed_in(served, "approver")
        async with aclosing(bob):
            request = await one_pending(served)
            page = await bob.get("/ui/approvals")
            cards = await bob.get("/ui/approvals/cards")
            # A note is untrusted too: it comes back in the denial, never as markup here.
            await bob.post(
                f"/ui/approvals/{request['id']}/deny",
                data={"csrf": csrf, "note": "<b>no</b>"},
            )
        answer = (await waiting).json()
    for shown in (page.text, cards.text):
        assert "<script>alert" not in shown and "<img" not in shown
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
        assert "{{7*7}}" in shown  # not evaluated as a template
        assert "\u202e" not in shown and "invoice\\u202egpj.sh" in shown
        assert SECRET not in shown
        assert "[REDACTED]" in shown
    # No script but the page's static files.
    assert re.findall(r"<script[^>]*>", page.text) == [
        '<script src="/ui/static/poll.js" defer>',
        '<script src="/ui/static/approvals.js" defer>',
    ]
    assert answer["error"] == "bob denied the call: <b>no</b>"


async def test_every_answer_carries_the_security_headers(served: Served) -> None:
    bob, _ = await signed_in(served, "approver")
    async with aclosing(bob), served.client() as anonymous:
        answers = [
            await bob.get("/ui/approvals"),
            await bob.get("/ui/approvals/cards"),
            await bob.get("/ui/static/approvals.js"),
            await bob.get("/ui/static/page.css"),
            await anonymous.get("/ui/sign-in"),
            await anonymous.get("/ui/approvals"),
            await anonymous.get("/ui/approvals/cards"),
            await anonymous.get("/ui/static/missing.js"),
            await bob.get("/ui/static/poll.js"),
        ]
        outside = await anonymous.get("/ui/static/..%2F_app.py")
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            if (
                name != "Cache-Control"
                or answer.status_code != 200
                or "/static/" not in str(answer.url)
            ):
                assert answer.headers.get(name) == value, (answer.url, name)
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert answers[2].headers["content-type"] == "text/javascript; charset=utf-8"
    assert answers[8].headers["content-type"] == "text/javascript; charset=utf-8"
    assert answers[3].headers["content-type"] == "text/css; charset=utf-8"
    assert answers[7].status_code == outside.status_code == 404


async def test_edited_arguments_go_through_the_apis_checks(
    served: Served, scripted: ScriptedBackend
) -> None:
    async with served.client("caller") as alice:
        waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1", "rm -rf /")))
        bob, csrf = await signed_in(served, "approver")
        async with aclosing(bob):
            request = await one_pending(served)
            url = f"/ui/approvals/{request['id']}/approve"

            async def edit(arguments: str, note: str = "") -> httpx.Response:
                return await bob.post(url, data={"csrf": csrf, "arguments": arguments,
                                                 "note": note})  # fmt: skip

            wrong_type = await edit('{"command": 42}')
            not_json = await edit("{command: ls}")
            not_object = await edit('["ls"]')
            not_finite = [
                await edit('{"command": "ls", "timeout_s": ' + number + "}")
                for number in ("NaN", "-Infinity", "1e999")
            ]
            too_deep = await edit('{"command": ' + "[" * 40 + "]" * 40 + "}")
            long_note = await edit('{"command": "ls"}', "x" * 2001)
            still = await bob.get("/ui/approvals/cards")
            edited = await edit('{"command": "ls /"}')
        answer = (await waiting).json()
    assert wrong_type.status_code == 422
    problem = re.search(r'id="problem"[^>]*>([^<]*)<', wrong_type.text)
    assert problem is not None, wrong_type.text
    assert "command" in problem.group(1)
    assert "{&#34;command&#34;: 42}" in wrong_type.text  # the draft is kept to be fixed
    assert not_json.status_code == not_object.status_code == too_deep.status_code == 422
    assert "not JSON" in not_json.text and "a JSON object" in not_object.text
    assert "deeper than 32" in too_deep.text
    # Python's JSON reader takes these; the store refused them, answered as a bare problem.
    for refused, number in zip(not_finite, ("NaN", "-Infinity", "1e999"), strict=True):
        assert refused.status_code == 422
        assert refused.headers["content-type"].startswith("text/html")
        assert f"not a number JSON can carry: {number}" in html.unescape(refused.text)
        assert f"&#34;timeout_s&#34;: {number}}}" in refused.text  # the draft is kept
    assert long_note.status_code == 422 and "2000" in long_note.text
    assert f'data-id="{request["id"]}"' in still.text
    assert edited.status_code == 303
    assert answer["status"] == "ok"
    request_sent, _ = scripted.requests[0]
    assert json.loads(request_sent.stdin)["command"] == "ls /"


async def test_a_request_decided_elsewhere_is_refused_with_the_apis_answer(
    served: Served,
) -> None:
    async with served.client("caller") as alice, served.client("admin") as carol_api:
        waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1")))
        (request,) = await pending(carol_api)
        bob, csrf = await signed_in(served, "approver")
        async with aclosing(bob):
            await carol_api.post(f"/v1/approvals/{request['id']}/deny", json={"note": "mine"})
            late = await bob.post(f"/ui/approvals/{request['id']}/approve", data={"csrf": csrf})
            missing = await bob.post("/ui/approvals/0123456789abcdef/deny", data={"csrf": csrf})
        await waiting
    assert late.status_code == 409 and "no longer pending" in late.text
    assert missing.status_code == 404


async def test_without_self_approval_the_page_refuses_ones_own_request(tmp_path: Path) -> None:
    config = server_config(tmp_path / "state", self_approval=False)
    tokens = issue_tokens(config)
    async with serve(config, backend=ScriptedBackend()) as running:
        running.tokens = tokens
        async with running.client("both") as dave_api:
            waiting = asyncio.create_task(dave_api.post("/v1/tool-calls", json=shell("c1")))
            (request,) = await pending(dave_api)
            dave, csrf = await signed_in(running, "both")
            carol, carols_csrf = await signed_in(running, "admin")
            async with aclosing(dave), aclosing(carol):
                url = f"/ui/approvals/{request['id']}/approve"
                own = await dave.post(url, data={"csrf": csrf})
                other = await carol.post(url, data={"csrf": carols_csrf})
            answer = (await waiting).json()
    assert own.status_code == 403
    assert "someone else must decide it" in own.text
    assert other.status_code == 303
    assert answer["status"] == "ok"
    decided: list[dict[str, Any]] = [r for r in running.audit_records() if r["event"] == "call"]
    assert decided[0]["approval"]["decided_by"] == "carol"


def test_signing_in_again_and_again_with_one_token_ends_only_its_own_sessions() -> None:
    """Sessions are capped (10 000) and the oldest went first: one token's sign-ins in a
    loop signed everyone else out."""
    sessions = Sessions()
    alice = sessions.open("stk_alice")
    mallory = [sessions.open("stk_mallory") for _ in range(10_050)]
    assert sessions.get(alice.id) == alice
    assert sessions.get(mallory[-1].id) is not None and sessions.get(mallory[-33].id) is None
    assert sum(sessions.get(m.id) is not None for m in mallory[-40:]) == 32


def test_sessions_expire_and_sign_in_nonces_are_keyed() -> None:
    now = [1000.0]
    sessions = Sessions(clock=lambda: now[0])
    session = sessions.open("stk_token")
    assert sessions.get(session.id) == session
    assert sessions.get(session.id + "x") is None and sessions.get(None) is None
    now[0] += SESSION_LIFETIME_S - 1
    assert sessions.get(session.id) is not None
    now[0] += 1
    assert sessions.get(session.id) is None  # expired: gone for good
    now[0] -= 10
    assert sessions.get(session.id) is None
    nonce = sessions.sign_in_nonce()
    assert sessions.sign_in_csrf(nonce) == sessions.sign_in_csrf(nonce)
    assert sessions.sign_in_csrf(nonce) != Sessions().sign_in_csrf(nonce)  # a key per server
