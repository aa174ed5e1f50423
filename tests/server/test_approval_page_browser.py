"""The approval page in a real browser: Debian's headless chromium, driven by selenium.

Each test starts chromium (through Debian's ``chromedriver``) with a throwaway
profile and home, reaching nothing but 127.0.0.1: host names do not
resolve, any other address goes to a proxy on a closed loopback port, and
background networking, component updates, crash reporting and the like are
off. The browser and every process it started are gone when the test ends
(checked). WebDriver calls block, so they run in a worker thread while the
server serves on the test's event loop; every wait is a bounded
``WebDriverWait`` on something the page shows.

Screenshots go to ``$STOCKADE_TEST_ARTIFACTS`` (default: ``screenshots/``
under pytest's base temporary directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import docker
import httpx
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from processes import alive, command_line, descendants, live_parents
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chromium.remote_connection import ChromiumRemoteConnection
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from orchestrator.config import StockadeConfig
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.server.page import SESSION_COOKIE
from orchestrator.testing import ScriptedModelServer, text, tool_call, tool_calls
from orchestrator.testing.backend import ScriptedBackend

from .conftest import Served, issue_tokens, serve
from .test_approvals_api import pending, shell
from .test_runs_api import NO_REFLECTION, events_of, model_config

T = TypeVar("T")

WAIT_S = 30
"""The longest any one transition may take (a loaded 2-core machine)."""

# Gated python.run, for real containers (the tools image has no shell toolkit to gate).
GATED_PYTHON_POLICY = """\
version: 1
default: deny
approval_timeout_s: 120
rules:
  - name: code-needs-a-person
    tools: python.run
    decision: require_approval
    reason: code runs only when a person agrees
  - {name: everything-else, tools: "*", decision: allow}
"""

_CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # tests run as root; the page under test is our own
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,1100",
    "--no-first-run",
    "--no-default-browser-check",
    "--password-store=basic",
    # Nothing but 127.0.0.1: no name resolves, other addresses meet a closed proxy port
    # (loopback never goes through the proxy).
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
    # Nothing of its own either: no updates, pings, reports, safe-browsing lists or translation.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--metrics-recording-only",
    "--no-pings",
    "--safebrowsing-disable-auto-update",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater,"
    "InterestFeedContentSuggestions,NetworkTimeServiceQuerying",
)


def _chromium() -> str:
    # The binary itself, not Debian's wrapper script (which adds extensions and API keys).
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("chromium is not installed: run scripts/setup.sh")


def _mentioning(path: Path) -> set[int]:
    """Live processes whose command line names ``path`` (chromium's detached crash handler)."""
    marker = str(path).encode()
    return {pid for pid in live_parents() if marker in b"\0".join(command_line(pid))}


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go."""
    named = os.environ.get("STOCKADE_TEST_ARTIFACTS")
    directory = Path(named) if named else tmp_path_factory.getbasetemp() / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@dataclass
class Browser:
    """A chromium under WebDriver, driven from async tests (each call in a worker thread)."""

    driver: WebDriver
    artifacts: Path
    test: str

    async def do(self, action: Callable[[WebDriver], T]) -> T:
        """Run ``action`` on the driver, off the event loop."""
        return await asyncio.to_thread(action, self.driver)

    async def open(self, url: str) -> None:
        await self.do(lambda driver: driver.get(url))

    async def wait(
        self, condition: Callable[[WebDriver], T | Literal[False]], timeout: float = WAIT_S
    ) -> T:
        """The first truthy value of ``condition``; fails after ``timeout`` seconds."""
        waiting = WebDriverWait(self.driver, timeout, poll_frequency=0.1)
        return await asyncio.to_thread(waiting.until, condition)

    async def find(self, css: str) -> WebElement:
        """The element ``css`` selects, once it is visible."""
        return await self.wait(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))

    async def screenshot(self, label: str) -> Path:
        """A PNG of the page as it is, saved as a test artifact."""
        path = self.artifacts / f"{self.test}-{label}.png"
        saved = await self.do(lambda driver: driver.save_screenshot(str(path)))
        assert saved and path.read_bytes().startswith(b"\x89PNG")
        return path

    async def sign_in(self, url: str, token: str) -> None:
        """Sign in through the form, and wait for the approvals page."""
        await self.open(f"{url}/ui/sign-in")
        field = await self.find("#token")
        await self.do(lambda _: field.send_keys(token))
        button = await self.find("#sign-in-button")
        await self.do(lambda _: button.click())
        await self.find("#principal")

    async def card(self, request_id: str) -> WebElement:
        """The card of a pending request, once the page shows it."""
        return await self.find(f'article[data-id="{request_id}"]')

    async def submit(self, card: WebElement, form: str, note: str | None = None) -> None:
        """Fill the note of ``card``'s ``form`` (a class: approve, deny, edit-form) and send it."""

        def fill_and_send(_: WebDriver) -> None:
            element = card.find_element(By.CSS_SELECTOR, f"form.{form}")
            if note is not None:
                element.find_element(By.NAME, "note").send_keys(note)
            element.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

        await self.do(fill_and_send)


@pytest.fixture
def browser(request: pytest.FixtureRequest, artifacts: Path) -> Iterator[Browser]:
    """A headless chromium with a throwaway profile; it and its processes gone afterwards."""
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        pytest.fail(
            "chromedriver is not installed (Debian's chromium-driver): run scripts/setup.sh"
        )
    # A short path of its own, not pytest's: chromium puts a Unix socket in its profile,
    # and under a long base directory (CI's) the socket's path passes the kernel's 108
    # bytes and the browser exits at start.
    with tempfile.TemporaryDirectory(prefix="stk-chromium-") as short:
        yield from _browser(request, artifacts, chromedriver, Path(short) / "home")


def _browser(
    request: pytest.FixtureRequest, artifacts: Path, chromedriver: str, home: Path
) -> Iterator[Browser]:
    profile = home / "profile"
    profile.mkdir(parents=True)
    options = Options()
    options.binary_location = _chromium()
    for flag in (*_CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # Its own home: nothing of the browser's is written outside the test's directory.
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "TMPDIR": str(home),
    }
    service = Service(executable_path=chromedriver, env=environment, log_output=os.devnull)
    service.start()
    browser_processes: set[int] = set()
    driver: WebDriver | None = None
    try:
        # Spoken to at 127.0.0.1 itself (selenium would say "localhost"), never via a proxy.
        executor = ChromiumRemoteConnection(
            remote_server_addr=f"http://127.0.0.1:{service.port}",
            browser_name="chrome",
            vendor_prefix="goog",
            keep_alive=True,
            ignore_proxy=True,
        )
        driver = webdriver.Remote(command_executor=executor, options=options)
        assert service.process is not None
        yield Browser(driver=driver, artifacts=artifacts, test=request.node.name)
    finally:
        if service.process is not None:
            # Its crash handler (not a descendant: it detaches) names the throwaway home.
            browser_processes = descendants(service.process.pid) | {service.process.pid}
            browser_processes |= _mentioning(home)
        if driver is not None:
            driver.quit()
        service.stop()
    deadline = time.monotonic() + 15
    while (
        left := {pid for pid in browser_processes if alive(pid)}
    ) and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded: the browser's processes end on their own after quit()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"chromium left processes behind: {sorted(left)}"


async def one_pending(served: Served, count: int = 1) -> list[dict[str, Any]]:
    """The pending requests once there are ``count`` (as the API shows them)."""
    async with served.client("approver") as api:
        return await pending(api, count)


async def test_sign_in_a_request_appears_without_reload_and_deny_reaches_the_caller(
    served: Served, browser: Browser
) -> None:
    # Not signed in: sent to the sign-in page. A caller's token does not open it.
    await browser.open(f"{served.url}/ui/approvals")
    await browser.wait(ec.url_to_be(f"{served.url}/ui/sign-in"))
    await browser.find("#token")
    await browser.screenshot("sign-in")
    await browser.open(f"{served.url}/ui/sign-in")
    field = await browser.find("#token")
    await browser.do(lambda _: field.send_keys(served.tokens["caller"]))
    await browser.do(lambda driver: driver.find_element(By.ID, "sign-in-button").click())
    await browser.wait(ec.url_to_be(f"{served.url}/ui/runs"))  # a caller signs in for runs
    await browser.open(f"{served.url}/ui/approvals")
    refusal = await browser.find("#problem")
    assert "may not decide approvals" in await browser.do(lambda _: refusal.text)
    await browser.screenshot("caller-refused")
    await browser.do(lambda driver: driver.delete_cookie(SESSION_COOKIE))

    await browser.sign_in(served.url, served.tokens["approver"])
    await browser.find("#empty")
    # A mark the page keeps only as long as it is not reloaded.
    await browser.do(lambda driver: driver.execute_script("window.stockadeMark = 'kept';"))
    async with served.client("caller") as alice:
        waiting = asyncio.create_task(
            alice.post("/v1/tool-calls", json=shell("c1", "rm -rf build/"))
        )
        (request,) = await one_pending(served)
        card = await browser.card(request["id"])
        assert await browser.do(lambda driver: driver.execute_script("return window.stockadeMark"))
        shown = await browser.do(lambda _: card.text)
        for value in ("shell.run", "rm -rf build/", "shell commands need a person",
                      "shell-needs-approval", "alice", "run-1"):  # fmt: skip
            assert value in shown
        await browser.wait(lambda driver: driver.find_element(By.ID, "count").text == "1 pending")
        await browser.screenshot("request-appeared")
        # A second request, decided elsewhere (the API) while the page is open: it comes and
        # goes without a reload, and the first card stays as it was.
        second = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c2", "pwd")))
        other = (await one_pending(served, 2))[1]
        other_card = await browser.card(other["id"])
        await browser.wait(lambda driver: driver.find_element(By.ID, "count").text == "2 pending")
        async with served.client("admin") as carol:
            decided = await carol.post(f"/v1/approvals/{other['id']}/approve")
            assert decided.status_code == 200, decided.text
        await browser.wait(ec.staleness_of(other_card))
        await browser.wait(lambda driver: driver.find_element(By.ID, "count").text == "1 pending")
        assert (await second).json()["status"] == "ok"
        assert await browser.do(lambda driver: driver.execute_script("return window.stockadeMark"))
        assert await browser.do(lambda _: card.is_displayed())  # the same element, not redrawn
        await browser.submit(card, "deny", "not the build directory, please")
        await browser.find("#done")
        answer = (await waiting).json()
    assert answer["status"] == "approval_denied"
    assert answer["error"] == "bob denied the call: not the build directory, please"
    await browser.find("#empty")
    await browser.screenshot("denied")


async def test_a_denial_note_reaches_the_model_of_a_run(tmp_path: Path, browser: Browser) -> None:
    script = [
        tool_calls(tool_call("shell__run", {"command": "rm -rf /data"})),
        text("understood, nothing deleted"),
    ]
    async with ScriptedModelServer(script) as model:
        config = model_config(tmp_path / "state", model.base_url)
        tokens = issue_tokens(config)
        async with serve(config, backend=ScriptedBackend(), agent=NO_REFLECTION) as served:
            served.tokens = tokens
            await browser.sign_in(served.url, tokens["approver"])
            async with served.client("caller") as alice:
                started = await alice.post("/v1/runs", json={"goal": "clean up", "run_id": "r1"})
                assert started.status_code == 201, started.text
                streaming = asyncio.create_task(events_of(alice, "r1"))
                (request,) = await one_pending(served)
                card = await browser.card(request["id"])
                await browser.submit(card, "deny", "never delete /data; archive it instead")
                await browser.find("#done")
                events = await streaming
    assert events[-1]["type"] == "run_finished"
    assert events[-1]["answer"] == "understood, nothing deleted"
    (tool_message,) = model.chat_requests[-1].tool_results
    assert "never delete /data; archive it instead" in tool_message["content"]
    assert "bob denied the call" in tool_message["content"]


async def test_edited_arguments_refused_then_accepted(
    served: Served, scripted: ScriptedBackend, browser: Browser
) -> None:
    await browser.sign_in(served.url, served.tokens["approver"])
    async with served.client("caller") as alice:
        waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1", "rm -rf /")))
        (request,) = await one_pending(served)
        card = await browser.card(request["id"])

        async def edit(arguments: str) -> None:
            def replace_and_send(driver: WebDriver) -> None:
                article = driver.find_element(
                    By.CSS_SELECTOR, f'article[data-id="{request["id"]}"]'
                )
                details = article.find_element(By.CSS_SELECTOR, "details.edit")
                if details.get_attribute("open") is None:
                    details.find_element(By.TAG_NAME, "summary").click()
                area = article.find_element(By.NAME, "arguments")
                area.clear()
                area.send_keys(arguments)
                article.find_element(By.CSS_SELECTOR, "form.edit-form button").click()

            await browser.do(replace_and_send)

        await browser.do(lambda _: card.find_element(By.TAG_NAME, "summary").click())
        await browser.screenshot("edit-open")
        await edit('{"command": 42}')
        problem = await browser.find("#problem")
        message = await browser.do(lambda _: problem.text)
        assert "command" in message, message
        draft = await browser.do(
            lambda driver: driver.find_element(By.NAME, "arguments").get_attribute("value")
        )
        assert draft == '{"command": 42}'  # kept, to be fixed
        await browser.screenshot("edit-refused")
        assert not waiting.done()
        async with served.client("approver") as api:
            still = (await api.get(f"/v1/approvals/{request['id']}")).json()
        assert still["status"] == "pending"
        await edit('{"command": "ls /"}')
        await browser.find("#done")
        answer = (await waiting).json()
    assert answer["status"] == "ok"
    request_sent, _ = scripted.requests[0]
    assert json.loads(request_sent.stdin)["command"] == "ls /"
    (call,) = [r for r in served.audit_records() if r["event"] == "call"]
    assert call["approval"]["edited_arguments"] == {"command": "ls /"}
    assert call["approval"]["decided_by"] == "bob"


async def test_a_form_posted_without_the_csrf_token_with_the_browsers_cookie_is_refused(
    served: Served, browser: Browser
) -> None:
    await browser.sign_in(served.url, served.tokens["approver"])
    cookie = await browser.do(lambda driver: driver.get_cookie(SESSION_COOKIE))
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui")
    assert cookie["expiry"] > time.time() + 3600
    async with served.client("caller") as alice:
        waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=shell("c1")))
        (request,) = await one_pending(served)
        card = await browser.card(request["id"])
        async with httpx.AsyncClient(base_url=served.url, trust_env=False) as forger:
            forger.cookies.set(SESSION_COOKIE, cookie["value"])
            forged = await forger.post(
                f"/ui/approvals/{request['id']}/approve", data={"note": "no token"}
            )
            forged_page = await forger.post(
                f"/ui/approvals/{request['id']}/approve",
                data={"csrf": "guessed"},
                headers={"Accept": "text/html"},
            )
        assert forged.status_code == forged_page.status_code == 403
        assert forged.json()["code"] == "forbidden"
        assert "CSRF" in forged_page.text
        # Still pending, still on the page; the real form still works.
        await browser.do(lambda driver: driver.refresh())
        card = await browser.card(request["id"])
        await browser.submit(card, "approve", "checked by hand")
        await browser.find("#done")
        assert (await waiting).json()["status"] == "ok"
    await browser.do(lambda driver: driver.find_element(By.ID, "sign-out").click())
    await browser.wait(ec.url_contains("/ui/sign-in"))
    assert await browser.do(lambda driver: driver.get_cookie(SESSION_COOKIE)) is None
    await browser.open(f"{served.url}/ui/approvals")
    await browser.wait(ec.url_to_be(f"{served.url}/ui/sign-in"))


@pytest.mark.docker
async def test_approving_in_the_browser_lets_a_real_container_run_the_call(
    tmp_path: Path, images: ImageBuilder, no_leaks: None, browser: Browser
) -> None:
    (tmp_path / "policy.yaml").write_text(GATED_PYTHON_POLICY)
    config = StockadeConfig.model_validate(
        {"state_dir": tmp_path / "state", "policy": tmp_path / "policy.yaml",
         "toolkits": ["toolkits.python"], "sandbox": {"profiles": {"default": {"pool_size": 1}}}}
    )  # fmt: skip
    tokens = issue_tokens(config)
    async with serve(config) as served:
        served.tokens = tokens
        await browser.sign_in(served.url, tokens["approver"])
        async with served.client("caller") as alice:
            call = {"id": "c1", "name": "python.run", "arguments": {"code": "print(6 * 7)"},
                    "run_id": "r1"}  # fmt: skip
            waiting = asyncio.create_task(alice.post("/v1/tool-calls", json=call))
            (request,) = await one_pending(served)
            card = await browser.card(request["id"])
            assert "print(6 * 7)" in await browser.do(lambda _: card.text)
            await browser.screenshot("pending")
            await browser.submit(card, "approve")
            await browser.find("#done")
            answer = await waiting
        await browser.screenshot("approved")
    result = answer.json()
    assert result["status"] == "ok", result
    assert json.loads(result["output"])["stdout"] == "42\n"
    assert result["image_digest"].startswith("sha256:")
    (call_record,) = [r for r in served.audit_records() if r["event"] == "call"]
    assert (call_record["principal"], call_record["approval"]["decided_by"]) == ("alice", "bob")


@contextlib.asynccontextmanager
async def mcp_session(config_file: Path, home: Path, errors: Path) -> AsyncIterator[ClientSession]:
    """``stockade mcp`` over stdio as alice, with the real MCP client."""
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "orchestrator", "mcp", "--config", str(config_file), "--principal", "alice",
              "--run-id", "mcp-run"],
        env={"STOCKADE_HOME": str(home)},
    )  # fmt: skip
    with errors.open("w") as log:
        async with (
            stdio_client(server, errlog=log) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


@pytest.mark.docker
async def test_an_mcp_call_completes_after_approval_in_the_browser(
    tmp_path: Path,
    images: ImageBuilder,
    docker_client: docker.DockerClient,
    stockade_home: Path,
    browser: Browser,
) -> None:
    # STOCKADE_HOME (set for every test) is stockade mcp's state directory, whatever the
    # file says: the page's server shares it, and with it the approval store.
    state = stockade_home
    (tmp_path / "policy.yaml").write_text(GATED_PYTHON_POLICY)
    config_file = tmp_path / "stockade.yaml"
    config_file.write_text(
        f"state_dir: {state}\n"
        "toolkits: [toolkits.python]\n"
        f"policy: {tmp_path / 'policy.yaml'}\n"
        "sandbox: {profiles: {default: {pool_size: 0}}}\n"
    )
    config = StockadeConfig.model_validate(
        {"state_dir": state, "toolkits": ["toolkits.python"], "policy": tmp_path / "policy.yaml",
         "sandbox": {"profiles": {"default": {"pool_size": 0}}}}
    )  # fmt: skip
    tokens = issue_tokens(config)
    async with serve(config, backend=ScriptedBackend()) as served:
        served.tokens = tokens
        await browser.sign_in(served.url, tokens["approver"])
        async with mcp_session(config_file, stockade_home, tmp_path / "mcp.stderr") as session:
            calling = asyncio.create_task(session.call_tool("python.run", {"code": "print(6 * 7)"}))
            (request,) = await one_pending(served)
            assert (request["principal"], request["run_id"]) == ("alice", "mcp-run")
            card = await browser.card(request["id"])
            await browser.screenshot("mcp-pending")
            assert not calling.done()
            await browser.submit(card, "approve", "fine from the page")
            await browser.find("#done")
            async with asyncio.timeout(120):
                result = await calling
    assert isinstance(result, types.CallToolResult), (tmp_path / "mcp.stderr").read_text()
    assert result.is_error is False, result.content
    assert result.structured_content is not None
    assert result.structured_content["status"] == "ok"
    assert json.loads(result.structured_content["output"])["stdout"] == "42\n"
    # The page's server ran nothing: the call ran in stockade mcp's own container.
    assert served.backend is not None
    assert isinstance(served.backend, ScriptedBackend) and not served.backend.requests
