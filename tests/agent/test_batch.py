"""Batches of agent runs (``run_batch``, ``stockade run --batch``) against the scripted model.

Real containers, the real ``openai`` SDK over HTTP: the model's answers are
chosen from each request's goal (:func:`batch_model`), so runs of one batch
can interleave freely.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import docker
import pytest

from orchestrator.agent import (
    AgentConfig,
    AgentEvent,
    BatchItem,
    BatchResult,
    BatchResultsFile,
    RunStatus,
    read_batch,
    results_path_for,
    run_batch,
)
from orchestrator.errors import ConfigError
from orchestrator.testing import ScriptedModelServer, text, tool_call, tool_calls
from orchestrator.testing.model_server import Answer, ChatRequest

from .conftest import containers_of, open_agent, write_config

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240)]

ALLOW_ALL = "version: 1\nrules:\n  - {name: all, tools: '*', decision: allow}\n"
QUIET = AgentConfig(reflection=False, memory=False)


def batch_model(request: ChatRequest) -> Answer:
    """The model's next turn for the goal of ``request``'s run.

    - ``write NAME``: writes ``NAME.txt`` (content NAME), then answers ``wrote NAME.txt``;
    - ``read PATH``: reads PATH, then answers with the tool's answer;
    - ``spin``: writes a new file every turn and never answers (a run over any budget);
    - ``sleep``: asks for a 60 s ``python.run`` (a run to interrupt).
    """
    goal = next(m["content"] for m in request.messages if m.get("role") == "user")
    verb, _, argument = str(goal).partition(" ")
    done = request.tool_results
    if verb == "write":
        if not done:
            return tool_calls(
                tool_call("files__write", {"path": f"{argument}.txt", "content": argument})
            )
        return text(f"wrote {argument}.txt")
    if verb == "read":
        if not done:
            return tool_calls(tool_call("files__read", {"path": argument}))
        return text(f"read: {done[-1]['content']}")
    if verb == "spin":
        return tool_calls(tool_call("files__write", {"path": f"s{len(done)}.txt", "content": "x"}))
    if verb == "sleep":
        if not done:
            return tool_calls(tool_call("python__run", {"code": "import time; time.sleep(60)"}))
        return text("slept")
    raise AssertionError(f"no script for the goal {goal!r}")


def items_of(*lines: Mapping[str, object]) -> list[BatchItem]:
    return [BatchItem.model_validate(line) for line in lines]


# -- the input file --------------------------------------------------------------------------


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("bad", "where", "message"),
    [
        ('{"id": "a", "goal": "x"', ":2: ", "not JSON"),
        ('["a", "x"]', ":2: ", "must be a JSON object, not list"),
        ('{"goal": "x"}', ":2: id: ", "Field required"),
        ('{"id": "one", "goal": "x"}', ":2: id: ", "the id 'one' is already used on line 1"),
        ('{"id": "b", "goal": "x", "gaol": "y"}', ":2: gaol: ", "Extra inputs are not permitted"),
        ('{"id": "b c", "goal": "x"}', ":2: id: ", "String should match pattern"),
        ('{"id": "b", "goal": "  "}', ":2: goal: ", "the goal is blank (got '  ')"),
        ('{"id": "b", "goal": "x", "files": {"../up.txt": ""}}', ":2: files.../up.txt: ",
         "escapes the workspace"),
        ('{"id": "b", "goal": "x", "files": {"/etc/passwd": ""}}', ":2: files./etc/passwd: ",
         "escapes the workspace"),
        ('{"id": "b", "goal": "x", "files": {"a": "", "a/b": ""}}', ":2: files.a/b: ",
         "a is a file and the directory of a/b"),
        ('{"id": "b", "goal": "x", "files": {"a.txt": 3}}', ":2: files.a.txt: ",
         "Input should be a valid string (got 3)"),
    ],
)  # fmt: skip
def test_a_bad_line_is_refused_naming_file_line_and_field(
    tmp_path: Path, bad: str, where: str, message: str
) -> None:
    path = write_lines(tmp_path / "b.jsonl", '{"id": "one", "goal": "x"}', bad)
    with pytest.raises(ConfigError) as caught:
        read_batch(path)
    assert str(caught.value).startswith(f"{path}{where}"), caught.value
    assert message in str(caught.value)
    assert caught.value.line == 2


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('"b c"', "(got 'b c')"),
        ('"\\u001b[2Jx\\u202e"', "(got '\\x1b[2Jx\\u202e')"),  # escaped, not acted on
        ('"' + "y" * 5000 + '"', "(got '" + "y" * 80),
    ],
)
def test_a_refused_value_is_named_and_shown_safely(tmp_path: Path, value: str, shown: str) -> None:
    path = write_lines(tmp_path / "b.jsonl", f'{{"id": {value}, "goal": "x"}}')
    with pytest.raises(ConfigError) as caught:
        read_batch(path)
    assert shown in str(caught.value)
    assert len(str(caught.value)) < 400


def test_blank_lines_are_skipped_and_paths_normalised(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "b.jsonl",
        '{"id": "a", "goal": "x", "files": {"./d//f.txt": "hi"}}',
        "",
        '{"id": "b", "goal": "y", "principal": "ana"}',
    )
    items = read_batch(path)
    assert [(i.id, i.files, i.principal) for i in items] == [
        ("a", {"d/f.txt": "hi"}, None),
        ("b", {}, "ana"),
    ]
    assert results_path_for(path) == tmp_path / "b.results.jsonl"
    with pytest.raises(ConfigError, match="holds no runs"):
        read_batch(write_lines(tmp_path / "empty.jsonl", ""))


def test_the_results_file_skips_cut_lines_and_keeps_the_latest(tmp_path: Path) -> None:
    results = BatchResultsFile(tmp_path / "r.jsonl")
    first: dict[str, object] = {
        "id": "a", "run_id": "a-1", "status": "failed", "answer": None, "error": "e",
        "iterations": 1, "tool_calls": 0, "tool_calls_by_status": {}, "tokens": 0,
        "duration_s": 1.0, "log_path": None,
    }  # fmt: skip
    again = {**first, "run_id": "a-2", "status": "complete", "answer": "ok", "error": None}
    cut = '{"id": "b", "run'  # a write the killed process never finished
    results.path.write_text(f"{json.dumps(first)}\n{cut}\n{json.dumps(again)}\n{cut}")
    assert {k: v.run_id for k, v in results.read().items()} == {"a": "a-2"}
    results.append(BatchResult.model_validate({**first, "id": "c"}))
    results.close()
    *_, before, appended = results.path.read_text().splitlines()
    assert before == cut and json.loads(appended)["id"] == "c"  # on a line of its own
    assert set(results.read()) == {"a", "c"}
    results.path.write_text('{"id": "b"}\n' + json.dumps(first) + "\n")
    with pytest.raises(ConfigError, match=r"r\.jsonl:1: run_id: not a batch result"):
        results.read()


def test_unicode_line_breaks_inside_strings_do_not_cut_lines(tmp_path: Path) -> None:
    """JSON leaves U+2028, U+2029 and NEL unescaped in strings; only "\\n" ends a line."""
    breaks = "\u2028\u2029\x85"
    path = tmp_path / "b.jsonl"
    path.write_text(
        json.dumps({"id": "a", "goal": f"x{breaks}y"}, ensure_ascii=False)
        + '\n{"id": "b", "goal": "z"}\n',
        encoding="utf-8",
    )
    assert [(i.id, i.goal) for i in read_batch(path)] == [("a", f"x{breaks}y"), ("b", "z")]
    path.write_text(f'{{"id": "a", "goal": "a{breaks}"}}\n{{\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        read_batch(path)
    assert caught.value.line == 2
    results = BatchResultsFile(tmp_path / "r.jsonl")
    ended = BatchResult.not_started("a", "a-1", RunStatus.FAILED, f"the model said {breaks}")
    results.append(ended)
    results.close()
    assert results.read() == {"a": ended}, "a recorded run is not run again"


# -- running ---------------------------------------------------------------------------------


async def test_a_batch_runs_concurrently_and_a_failing_run_fails_alone(
    tmp_path: Path, images: object, no_leaks: None
) -> None:
    """Per-run model budgets: the run that never answers fails on its own budget, alone."""
    policy = ALLOW_ALL + "model_limits: {max_model_calls_per_run: 3}\n"
    items = items_of(
        {"id": "w1", "goal": "write one"},
        {"id": "spin", "goal": "spin"},
        {"id": "r1", "goal": "read in/data.txt", "files": {"in/data.txt": "seeded 42"}},
        {"id": "w2", "goal": "write two"},
        {"id": "w3", "goal": "write three", "principal": "ana"},
    )
    most_running = 0
    async with ScriptedModelServer(handler=batch_model) as server:
        config = write_config(tmp_path, server.base_url, policy=policy)
        async with open_agent(config, QUIET) as agent:

            def seen(item_id: str, event: AgentEvent) -> None:
                nonlocal most_running
                most_running = max(most_running, batch.progress.running)

            batch = run_batch(agent, items, concurrency=3, principal="batcher", on_event=seen)
            results = {result.id: result async for result in batch}
    assert set(results) == {"w1", "spin", "r1", "w2", "w3"}
    spin = results.pop("spin")
    assert spin.status is RunStatus.FAILED and spin.answer is None
    assert spin.error == (
        "the run's model budget is spent: max_model_calls_per_run is 3 and the run has used 3 "
        "(the policy's model_limits)"
    )
    assert spin.tool_calls == 3 and spin.tool_calls_by_status == {"ok": 3}
    for result in results.values():
        assert result.status is RunStatus.COMPLETE and result.error is None, result
        assert result.iterations == 2 and result.tool_calls == 1, result
        assert result.run_id.startswith(f"{result.id}-")
    assert results["w2"].answer == "wrote two.txt"
    assert "seeded 42" in (results["r1"].answer or "")
    workspaces = tmp_path / "workspaces"
    assert (workspaces / results["w3"].run_id / "three.txt").read_text() == "three"
    assert (workspaces / results["r1"].run_id / "in" / "data.txt").read_text() == "seeded 42"
    progress = batch.progress
    assert (progress.complete, progress.failed, progress.cancelled, progress.running) == (
        4,
        1,
        0,
        0,
    )
    assert progress.tool_calls == 7 and 2 <= most_running <= 3
    assert "5/5 done, 0 running, 1 failed" in progress.line()
    # Each run acted for its own principal, under its own run id.
    audited = {r["run_id"]: r["principal"] for r in (tmp_path / "audit.jsonl").read_text()
               .splitlines() for r in [json.loads(r)] if r.get("event") == "call"}  # fmt: skip
    assert audited[results["w3"].run_id] == "ana" and audited[results["w1"].run_id] == "batcher"


async def test_stop_cancels_the_running_runs_and_starts_no_more(
    tmp_path: Path, images: object, no_leaks: None
) -> None:
    items = items_of(*({"id": f"s{n}", "goal": "sleep"} for n in range(4)))
    async with ScriptedModelServer(handler=batch_model) as server:
        config = write_config(tmp_path, server.base_url, policy=ALLOW_ALL)
        async with open_agent(config, QUIET) as agent:
            batch = run_batch(agent, items, concurrency=2)

            async def collect() -> list[BatchResult]:
                return [result async for result in batch]

            collecting = asyncio.create_task(collect())
            deadline = time.monotonic() + 60
            while _intents(tmp_path) < 2:  # both runs' sandboxed calls are under way
                assert time.monotonic() < deadline, "the calls never started"
                await asyncio.sleep(0.1)
            batch.stop("stopped by the test")
            results = await asyncio.wait_for(collecting, 60)
    assert [r.status for r in results] == [RunStatus.CANCELLED] * 2
    assert {r.error for r in results} == {"stopped by the test"}
    assert batch.progress.cancelled == 2 and batch.progress.done == 2


def _intents(home: Path) -> int:
    path = home / "audit.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(1 for line in lines if json.loads(line).get("event") == "intent")


# -- stockade run --batch ------------------------------------------------------------------------


def stockade(home: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "STOCKADE_HOME": str(home), "STOCKADE_CONFIG": str(config)},
    )


QUIET_FLAGS = ("--no-reflection", "--no-memory")


def test_the_command_writes_every_result_a_summary_and_resumes(
    tmp_path: Path, images: object, no_leaks: None
) -> None:
    policy = ALLOW_ALL + "model_limits: {max_model_calls_per_run: 3}\n"
    lines = [
        {"id": "w1", "goal": "write one"},
        {"id": "r1", "goal": "read data.txt", "files": {"data.txt": "from the batch"}},
        {"id": "spin", "goal": "spin"},
        {"id": "w2", "goal": "write two"},
    ]
    batch = write_lines(tmp_path / "tasks.jsonl", *map(json.dumps, lines))
    with ScriptedModelServer(handler=batch_model) as server:
        config = write_config(tmp_path, server.base_url, policy=policy)
        done = stockade(tmp_path, config, "run", "--batch", str(batch), "--concurrency", "2",
                        "--json", *QUIET_FLAGS)  # fmt: skip
        assert done.returncode == 1, done.stderr  # the spinning run failed
        results_path = tmp_path / "tasks.results.jsonl"
        assert f"results: {results_path}" in done.stderr
        assert "batch: 4/4 done, 0 running, 1 failed" in done.stderr
        summary = json.loads(done.stdout)
        assert summary["items"] == 4 and summary["runs"] == 4 and summary["skipped"] == 0
        assert summary["by_status"] == {"complete": 3, "failed": 1}
        assert summary["not_complete"] == ["spin"] and summary["exit_code"] == 1
        assert summary["tool_calls"] == 6 and summary["tool_calls_per_s"] > 0
        assert summary["runs_per_s"] > 0 and not summary["interrupted"]
        written = [json.loads(line) for line in results_path.read_text().splitlines()]
        assert sorted(r["id"] for r in written) == ["r1", "spin", "w1", "w2"]
        by_id = {r["id"]: r for r in written}
        assert "from the batch" in by_id["r1"]["answer"]
        assert by_id["spin"]["status"] == "failed" and "model budget" in by_id["spin"]["error"]
        assert Path(by_id["w1"]["log_path"]).exists()

        # Rerun: nothing left to run (a failed run stays failed) unless asked to retry.
        again = stockade(tmp_path, config, "run", "--batch", str(batch), "--json", *QUIET_FLAGS)
        assert again.returncode == 1, again.stderr
        summary = json.loads(again.stdout)
        assert (summary["runs"], summary["skipped"], summary["not_complete"]) == (0, 4, ["spin"])
        assert "4 skipped (already done)" in again.stderr

        # An interrupted batch's results: w2 cancelled, w1's last line cut short.
        kept = [by_id["r1"], by_id["spin"], {**by_id["w2"], "status": "cancelled"}]
        results_path.write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"id": "w1", "ru')
        human = stockade(tmp_path, config, "run", "--batch", str(batch), *QUIET_FLAGS)
        assert human.returncode == 1, human.stderr
        assert "2 skipped (already done)" in human.stderr
        assert re.search(r"^runs +2 \(2 complete\)", human.stdout, re.M), human.stdout
        assert re.search(r"^not complete +spin", human.stdout, re.M), human.stdout
        rows = [json.loads(line) for line in results_path.read_text().splitlines()[4:]]
        assert sorted((r["id"], r["status"]) for r in rows) == [
            ("w1", "complete"), ("w2", "complete")
        ]  # fmt: skip

        # --retry-failed runs spin again (it fails again: exit 1); --results elsewhere.
        other = tmp_path / "other.jsonl"
        retried = stockade(tmp_path, config, "run", "--batch", str(batch), "--results",
                           str(other), "--json", *QUIET_FLAGS)  # fmt: skip
        assert json.loads(retried.stdout)["runs"] == 4 and other.exists()


def test_the_command_refuses_bad_input_before_running(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/v1")
    batch = write_lines(
        tmp_path / "t.jsonl", '{"id": "a", "goal": "x"}', '{"id": "a", "goal": "y"}'
    )
    done = stockade(tmp_path, config, "run", "--batch", str(batch))
    assert done.returncode == 2
    assert f"{batch}:2: id: the id 'a' is already used on line 1" in done.stderr
    assert not (tmp_path / "t.results.jsonl").exists()
    both = stockade(tmp_path, config, "run", "GOAL", "--batch", str(batch))
    assert both.returncode == 2 and "give a GOAL or --batch FILE" in both.stderr


def test_ctrl_c_stops_the_batch_removes_containers_and_keeps_results(
    tmp_path: Path, images: object, docker_client: docker.DockerClient
) -> None:
    lines = [{"id": "w1", "goal": "write one"}] + [
        {"id": f"s{n}", "goal": "sleep"} for n in range(3)
    ]
    batch = write_lines(tmp_path / "t.jsonl", *map(json.dumps, lines))
    with ScriptedModelServer(handler=batch_model) as server:
        config = write_config(tmp_path, server.base_url, policy=ALLOW_ALL)
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", "--batch", str(batch),
             "--concurrency", "2", "--json", *QUIET_FLAGS],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "STOCKADE_HOME": str(tmp_path), "STOCKADE_CONFIG": str(config)},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            # w1 ends, then two sleeping calls are under way.
            while _intents(tmp_path) < 3:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the calls never started"
                time.sleep(0.1)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    summary = json.loads(out)
    assert summary["interrupted"] and summary["by_status"] == {"complete": 1, "cancelled": 2}
    assert "stopping: no new runs" in err
    written = [json.loads(line) for line in (tmp_path / "t.results.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["status"]) for r in written) == [
        ("s0", "cancelled"), ("s1", "cancelled"), ("w1", "complete")
    ]  # fmt: skip
    assert {r["error"] for r in written if r["status"] == "cancelled"} == {"interrupted (Ctrl-C)"}
    assert containers_of(docker_client, process.pid) == []
