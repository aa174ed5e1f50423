"""The run timeline pages in a real browser: Debian's headless chromium, driven by selenium.

The browser fixture is the approval page tests' (throwaway profile and home, nothing
reachable but 127.0.0.1, every chromium process checked gone afterwards). Runs are real
agent runs started through ``POST /v1/runs`` on the scripted OpenAI-compatible server;
a run is held deterministically by its approval-gated call and released by an approval
through the API. Screenshots go to ``$STOCKADE_TEST_ARTIFACTS``.
"""

from __future__ import annotations

from pathlib import Path

from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from orchestrator.testing import ScriptedModelServer, text, tool_call, tool_calls
from orchestrator.testing.backend import ScriptedBackend, tool_output

from . import test_approval_page_browser as _page_browser
from .conftest import Served, issue_tokens, serve
from .test_approval_page_browser import Browser
from .test_approvals_api import pending
from .test_run_timeline import HOSTILE, issue_viewers
from .test_runs_api import NO_REFLECTION, events_of, model_config

# The approval page tests' fixtures: a throwaway headless chromium, and where screenshots go.
browser = _page_browser.browser
artifacts = _page_browser.artifacts


def _no_alert(driver: WebDriver) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018 (the property raises when there is none)
    except NoAlertPresentException:
        return True
    return False


async def _start(served: Served, run_id: str, goal: str) -> None:
    async with served.client("caller") as alice:
        started = await alice.post("/v1/runs", json={"goal": goal, "run_id": run_id})
        assert started.status_code == 201, started.text


async def _approve_when_pending(served: Served, note: str) -> None:
    async with served.client("approver") as bob:
        (request,) = await pending(bob)
        decided = await bob.post(f"/v1/approvals/{request['id']}/approve", json={"note": note})
        assert decided.status_code == 200, decided.text


async def test_an_unauthenticated_browser_is_sent_to_sign_in(
    served: Served, browser: Browser
) -> None:
    for path in ("/ui/runs", "/ui/runs/r1", "/ui"):
        await browser.open(f"{served.url}{path}")
        await browser.wait(ec.url_to_be(f"{served.url}/ui/sign-in"))
        await browser.find("#token")
    # The fragment a page polls answers 401, never the timeline.
    await browser.open(f"{served.url}/ui/runs/r1/timeline")
    body = await browser.do(lambda driver: driver.find_element(By.TAG_NAME, "body").text)
    assert "unauthenticated" in body
    assert await browser.do(lambda driver: driver.find_elements(By.ID, "timeline")) == []
    await browser.screenshot("refused")


async def test_a_finished_and_a_running_run_render_and_the_running_one_updates_in_place(
    tmp_path: Path, browser: Browser
) -> None:
    script = [
        text("all done"),
        tool_calls(
            tool_call("files__read", {"path": "notes.txt"}),
            tool_call("files__list", {"path": "."}),
            tool_call("shell__run", {"command": "make test"}),
            content="Reading the notes, then running the tests.",
        ),
        text("the tests pass"),
    ]
    async with ScriptedModelServer(script) as model:
        config = model_config(tmp_path / "state", model.base_url)
        tokens = issue_tokens(config)
        async with serve(config, backend=ScriptedBackend(), agent=NO_REFLECTION) as served:
            served.tokens = tokens
            issue_viewers(served)
            await _start(served, "r-done", "say done")
            async with served.client("caller") as alice:
                await events_of(alice, "r-done")
            await _start(served, "r-live", "run the tests")

            # A viewer of alice's runs signs in and lands on the list.
            await browser.sign_in(served.url, served.tokens["viewer"])
            await browser.wait(ec.url_to_be(f"{served.url}/ui/runs"))
            await browser.find('tr[data-run-id="r-live"]')
            await browser.find('tr[data-run-id="r-done"]')
            await browser.screenshot("runs-list")

            await browser.open(f"{served.url}/ui/runs/r-done")
            final = await browser.find("#final")
            assert "complete" in await browser.do(lambda _: final.text)
            assert "all done" in await browser.do(lambda _: browser.driver.find_element(
                By.ID, "answer").text)  # fmt: skip
            await browser.screenshot("finished")

            # The running one: held by its approval-gated call.
            await browser.do(lambda driver: driver.set_window_size(1280, 600))
            await browser.open(f"{served.url}/ui/runs/r-live")
            await browser.find("#live-mark")
            await browser.wait(
                lambda driver: "waiting for a decision" in driver.find_element(By.ID, "items").text
            )
            turn = await browser.find("li.item-turn")
            await browser.do(lambda driver: driver.execute_script("window.stockadeMark = 'kept';"))
            await browser.do(lambda driver: driver.execute_script("window.scrollTo(0, 250);"))
            scrolled = await browser.do(lambda driver: driver.execute_script("return scrollY"))
            assert scrolled == 250, "the page must be long enough to scroll"
            await browser.screenshot("running")

            await _approve_when_pending(served, "go ahead")
            await browser.wait(ec.presence_of_element_located((By.ID, "final")))
            await browser.wait(
                lambda driver: (
                    driver.find_element(By.ID, "timeline").get_attribute("data-live") == "false"
                )
            )
            # No reload (the mark is there), the reader's place kept, the first item the
            # same element, the held call now done and who approved it shown.
            assert await browser.do(lambda d: d.execute_script("return window.stockadeMark"))
            assert await browser.do(lambda d: d.execute_script("return scrollY")) == scrolled
            assert await browser.do(lambda _: turn.is_displayed())
            items = await browser.do(lambda driver: driver.find_element(By.ID, "items").text)
            assert "the tests pass" in items and "go ahead" in items and "bob" in items
            assert "waiting for a decision" not in items
            assert await browser.do(lambda d: d.find_elements(By.ID, "live-mark")) == []
            await browser.do(lambda driver: driver.execute_script("window.scrollTo(0, 0);"))
            await browser.screenshot("updated")


async def test_hostile_arguments_output_and_answer_show_as_text_and_run_nothing(
    tmp_path: Path, browser: Browser
) -> None:
    script = [
        tool_calls(tool_call("shell__run", {"command": HOSTILE}), content=HOSTILE),
        text(HOSTILE),
    ]
    # The tool's output is hostile too; it arrives through a refresh, not the first render.
    backend = ScriptedBackend([tool_output(HOSTILE)])
    async with ScriptedModelServer(script) as model:
        config = model_config(tmp_path / "state", model.base_url)
        tokens = issue_tokens(config)
        async with serve(config, backend=backend, agent=NO_REFLECTION) as served:
            served.tokens = tokens
            await _start(served, "r-hostile", HOSTILE)
            await browser.sign_in(served.url, served.tokens["caller"])
            await browser.open(f"{served.url}/ui/runs/r-hostile")
            await browser.find("pre.arguments")
            await _approve_when_pending(served, HOSTILE)
            await browser.find("#final")
            # The call's item was replaced when it finished: its elements are found anew.
            arguments = await browser.find("pre.arguments")
            output = await browser.find("pre.output")
            shown = await browser.do(lambda driver: driver.find_element(By.ID, "timeline").text)
            await browser.screenshot("hostile")
            pwned = await browser.do(
                lambda driver: driver.execute_script("return typeof window.stockadePwned")
            )
            images = await browser.do(lambda driver: driver.find_elements(By.CSS_SELECTOR, "img"))
            scripts = await browser.do(
                lambda driver: [
                    element.get_attribute("src")
                    for element in driver.find_elements(By.TAG_NAME, "script")
                ]
            )
            assert await browser.do(_no_alert)
            argument_text = await browser.do(lambda _: arguments.text)
            output_text = await browser.do(lambda _: output.text)
    assert pwned == "undefined"
    assert images == []
    assert scripts == [f"{served.url}/ui/static/poll.js", f"{served.url}/ui/static/runs.js"]
    for value in (argument_text, output_text, shown):
        assert "\x1b" not in value and "\x9b" not in value and "\x07" not in value
    assert "<script>window.stockadePwned = 1</script>" in argument_text
    assert "<script>window.stockadePwned = 1</script>" in output_text
    assert '<img src=x onerror="window.stockadePwned = 2">' in output_text
    assert "red" in output_text
    # Goal, model text, approval note and answer: all shown as the same inert text.
    assert shown.count("<script>window.stockadePwned = 1</script>") >= 5
