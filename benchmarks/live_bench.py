"""Live tool output: how long after a tool prints a line an API client has it.

The assembled server (``create_app``, uvicorn on 127.0.0.1, the real Docker
backend, an agent on the scripted OpenAI-compatible model server) runs
``--runs`` agent runs; each run's one tool call is a ``python.run`` snippet
that prints ``--lines`` lines 0.2 s apart, each carrying ``time.time()`` as
it was printed inside the container (runc shares the host's clock). An SSE
client on ``/v1/runs/{id}/events`` notes ``time.time()`` as each
``tool_output`` event arrives; the latency of a line is the difference.
Reported: p50, p95 and max of the first line's latency (the issue's target:
at most 100 ms) and of every line's.

The path measured: the snippet's pipe, python.run's pump passing it on, the
runner's live frame (sent at once when nothing was sent in the last 50 ms),
the engine's attach stream, the backend's decoder, the gateway's listener,
the agent's ``tool_output`` event, the server's run stream and the SSE
response.

Under ``--runtime runsc`` the stamp is gVisor's clock, which follows the
host's (its vDSO reads the same TSC); live frames travel on the container's
stderr under both runtimes.

Run: ``.venv/bin/python benchmarks/live_bench.py [--runs 10] [--lines 5] [--runtime runsc]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform as host
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn
from _bench import stop_on_sigterm

from orchestrator.agent import AgentConfig
from orchestrator.config import StockadeConfig
from orchestrator.server import Role, TokenStore, create_app, uvicorn_config
from orchestrator.testing import ScriptedModelServer, text, tool_call, tool_calls

POLICY = "version: 1\ndefault: deny\nrules:\n  - {name: all, tools: '*', decision: allow}\n"
SNIPPET = (
    "import time\nfor i in range({lines}):\n"
    "    print(f'STAMP {{i}} {{time.time():.6f}}')\n    time.sleep(0.2)\n"
)


@contextlib.asynccontextmanager
async def serving(config: StockadeConfig) -> AsyncIterator[str]:
    """The API for ``config`` on 127.0.0.1; its base URL."""
    app = create_app(config, agent=AgentConfig(reflection=False))
    server = uvicorn.Server(
        uvicorn_config(
            app, host="127.0.0.1", port=0, shutdown_grace_s=1, access_log=False,
            configure_logging=False,
        )
    )  # fmt: skip
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(120):
        while not server.started:
            if task.done():
                await task
                raise RuntimeError("the server did not start")
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def one_run(client: httpx.AsyncClient, run_id: str, lines: int) -> list[float]:
    """Latency in seconds of each line of one run's tool call, in order."""
    started = await client.post("/v1/runs", json={"goal": "stamp", "run_id": run_id})
    started.raise_for_status()
    latencies: dict[int, float] = {}
    pending = ""
    async with client.stream("GET", f"/v1/runs/{run_id}/events") as answer:
        async for line in answer.aiter_lines():
            if not line.startswith("data: "):
                continue
            arrived = time.time()
            event = json.loads(line[6:])
            if event["type"] != "tool_output":
                continue
            pending += event["text"]
            *complete, pending = pending.split("\n")
            for entry in complete:
                words = entry.split()
                if len(words) == 3 and words[0] == "STAMP":
                    latencies.setdefault(int(words[1]), arrived - float(words[2]))
    if len(latencies) != lines:
        raise RuntimeError(f"run {run_id}: {len(latencies)} of {lines} lines seen")
    return [latencies[index] for index in range(lines)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def main(runs: int, lines: int, runtime: str) -> None:
    script = []
    for _ in range(runs + 1):  # one warm-up run
        code = SNIPPET.format(lines=lines)
        script += [tool_calls(tool_call("python__run", {"code": code})), text("done")]
    with tempfile.TemporaryDirectory(prefix="stockade-live-bench-") as directory:
        state = Path(directory)
        (state / "policy.yaml").write_text(POLICY)
        async with ScriptedModelServer(script) as model:
            config = StockadeConfig.model_validate(
                {
                    "state_dir": state,
                    "policy": state / "policy.yaml",
                    "toolkits": ["toolkits.python"],
                    "sandbox": {"runtime": runtime, "profiles": {"default": {"pool_size": 2}}},
                    "model": {"base_url": model.base_url, "name": "m", "max_attempts": 1},
                }
            )
            store = TokenStore(config.tokens_db)
            token = store.create(principal="bench", roles=[Role.CALLER]).token
            store.close()
            async with (
                serving(config) as url,
                httpx.AsyncClient(
                    base_url=url, headers={"Authorization": f"Bearer {token}"},
                    trust_env=False, timeout=120,
                ) as client,
            ):  # fmt: skip
                await one_run(client, "warm-up", lines)
                results = [await one_run(client, f"r{index}", lines) for index in range(runs)]
    first = [run[0] * 1000 for run in results]
    every = [value * 1000 for run in results for value in run]
    print(f"host: {host.machine()}, {host.python_implementation()} {host.python_version()}")
    print(f"{runs} runs x {lines} lines, 0.2 s apart ({runtime}, python.run)")
    for name, values in (("first line", first), ("every line", every)):
        print(
            f"{name:>10}: p50 {statistics.median(values):6.1f} ms  "
            f"p95 {percentile(values, 0.95):6.1f} ms  max {max(values):6.1f} ms  "
            f"(n={len(values)})"
        )


if __name__ == "__main__":
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--lines", type=int, default=5)
    parser.add_argument("--runtime", choices=["runc", "runsc"], default="runc")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.lines, arguments.runtime))
