"""node.run for real: Debian's Node.js in the tools image, limited and reported like python.run.

Every call runs in a fresh container of the tools image under the same
profile as python.run, through the one path (validation, sandbox, audit).
No test sends traffic anywhere: the network checks read the interfaces.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.gateway import Gateway
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing.platform import open_test_platform
from orchestrator.tools import ToolCall, ToolResult, ToolStatus

pytestmark = pytest.mark.docker

MEMORY_MB = 256
TOOLKITS = ("toolkits.files", "toolkits.node", "toolkits.python")


@pytest.fixture
async def tools(
    images: ImageBuilder, no_leaks: None, runtime: str, tmp_path: Path
) -> AsyncIterator[Gateway]:
    profile = {"memory_mb": MEMORY_MB, "pids": 64, "pool_size": 1}
    async with open_test_platform(
        tmp_path, toolkits=TOOLKITS, runtime=runtime, profiles={"default": profile}
    ) as platform:
        yield platform.gateway


@pytest.fixture
async def on_runc(images: ImageBuilder, no_leaks: None, tmp_path: Path) -> AsyncIterator[Gateway]:
    profile = {"memory_mb": MEMORY_MB, "pids": 64, "pool_size": 1}
    async with open_test_platform(
        tmp_path, toolkits=TOOLKITS, profiles={"default": profile}
    ) as platform:
        yield platform.gateway


async def call(
    gateway: Gateway, name: str, run_id: str | None = None, **arguments: object
) -> ToolResult:
    return await gateway.call(
        ToolCall(id="t", name=name, arguments=json.dumps(arguments), run_id=run_id)
    )


def output_of(result: ToolResult) -> dict[str, Any]:
    assert result.status is ToolStatus.OK, result
    output: dict[str, Any] = json.loads(result.output)
    return output


async def test_node_computes_and_reports_like_python(tools: Gateway) -> None:
    done = await call(
        tools,
        "node.run",
        code="const xs = [1, 2, 3].map((x) => x * x);\n"
        "console.log(xs.reduce((a, b) => a + b), process.version.startsWith('v'));\n"
        "console.error('to stderr'); process.exitCode = 3;",
    )
    assert output_of(done) == {"stdout": "14 true\n", "stderr": "to stderr\n", "exit_code": 3}
    thrown = output_of(
        await call(tools, "node.run", code="function f() { throw new Error('boom'); }\nf();")
    )
    assert thrown["exit_code"] == 1
    assert "Error: boom" in thrown["stderr"] and "[eval]:1" in thrown["stderr"]
    # The program may use any name, those the tool's own bootstrap uses included.
    names = (
        "const fs = require('fs'); const file = 1, source = 2; console.log(typeof fs.readFileSync);"
    )
    assert output_of(await call(tools, "node.run", code=names))["stdout"] == "function\n"
    syntax = output_of(await call(tools, "node.run", code="let = ;"))
    assert syntax["exit_code"] == 1 and "SyntaxError" in syntax["stderr"]


async def test_node_has_no_network_interface_but_loopback(tools: Gateway) -> None:
    # Looked at from inside, never tried: no packet leaves for any address.
    code = (
        "const os = require('os'); const fs = require('fs');\n"
        "console.log(JSON.stringify({node: Object.keys(os.networkInterfaces()).sort(),\n"
        "  sys: fs.readdirSync('/sys/class/net').sort()}));"
    )
    seen = json.loads(output_of(await call(tools, "node.run", code=code))["stdout"])
    assert seen["node"] == ["lo"]
    assert seen["sys"] in (["lo"], []), seen  # gVisor may show no sysfs entries at all


async def test_node_and_the_other_tools_share_the_run_workspace(on_runc: Gateway) -> None:
    run = "node-ws"
    wrote = await call(on_runc, "files.write", run, path="in/numbers.json", content="[4, 5, 6]")
    assert wrote.status is ToolStatus.OK, wrote
    await call(
        on_runc, "files.write", run, path="lib/twice.js", content="module.exports = (x) => 2 * x;"
    )
    code = (
        "const fs = require('fs'); const twice = require('./lib/twice.js');\n"
        "const xs = JSON.parse(fs.readFileSync('in/numbers.json', 'utf8')).map(twice);\n"
        "fs.mkdirSync('out'); fs.writeFileSync('out/result.json', JSON.stringify(xs));\n"
        "console.log(process.cwd());"
    )
    done = await call(on_runc, "node.run", run, code=code)
    assert output_of(done)["stdout"] == "/workspace\n"
    assert done.files_changed == ("out", "out/result.json")
    read = output_of(await call(on_runc, "files.read", run, path="out/result.json"))
    assert read["content"] == "[8,10,12]"
    python = await call(
        on_runc,
        "python.run",
        run,
        code="import json; print(sum(json.load(open('out/result.json'))))",
    )
    assert output_of(python)["stdout"] == "30\n"
    other = output_of(
        await call(
            on_runc, "node.run", "another-run", code="console.log(require('fs').readdirSync('.'))"
        )
    )
    assert other["stdout"] == "[]\n", "another run sees nothing"


async def test_node_out_of_memory_says_so_with_the_limit(on_runc: Gateway) -> None:
    # Off the V8 heap (Buffers), so the container's limit strikes, not node's own.
    code = "const chunks = [];\nfor (;;) chunks.push(Buffer.alloc(16 * 1024 * 1024, 1));"
    output = output_of(await call(on_runc, "node.run", code=code))
    assert output["killed"] == f"out of memory (limit {MEMORY_MB} MiB)", output
    assert output["exit_code"] is None


async def test_node_timeout_and_output_cap(tools: Gateway) -> None:
    spin = output_of(await call(tools, "node.run", code="for (;;) {}", timeout_s=1))
    assert spin == {"stdout": "", "stderr": "", "exit_code": None, "killed": "timed out after 1 s"}
    # 64 MiB of output: buffered whole it would crowd the sandbox; head and tail come back.
    flood = (
        "const chunk = 'x'.repeat(1 << 20);\nprocess.stdout.write('START\\n');\n"
        "for (let i = 0; i < 64; i++) process.stdout.write(chunk);\nprocess.stdout.write('\\nTHE END\\n');"
    )
    output = output_of(await call(tools, "node.run", code=flood))
    assert output["truncated"] is True and output["exit_code"] == 0
    assert output["stdout_bytes"] == 64 * (1 << 20) + len("START\n\nTHE END\n")
    assert output["stdout"].startswith("START\n") and output["stdout"].endswith("THE END\n")
    assert len(output["stdout"]) < 64 * 1024


async def test_node_programs_larger_than_one_argument_and_leftovers(on_runc: Gateway) -> None:
    # 200 KB: more than the kernel lets one command-line argument be (128 KiB).
    big = "// " + "x" * 200_000 + "\nconsole.log('big ran');"
    assert output_of(await call(on_runc, "node.run", code=big))["stdout"] == "big ran\n"
    leave = (
        "const {spawn} = require('child_process');\n"
        "spawn('sleep', ['300'], {detached: true, stdio: 'ignore'}).unref();\nconsole.log('left');"
    )
    output = output_of(await call(on_runc, "node.run", code=leave))
    assert output["stdout"] == "left\n"
    assert "sleep 300" in output["left_behind"], output
