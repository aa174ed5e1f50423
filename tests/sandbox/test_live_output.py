"""Live tool output through the gateway, on real containers (issue 16, point 2).

A listener on ``Gateway.call`` sees a tool's output while the call runs; a
call killed at its deadline still returns what it printed; hostile output
never breaks the stream or the result; a listener nobody drains stays bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.gateway import Gateway
from orchestrator.platform import Platform
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.live import (
    LIVE_CAP_BYTES,
    LIVE_FRAME_LIMIT,
    ChunkQueue,
    LiveDecoder,
    OutputChunk,
    for_display,
)
from orchestrator.tools import ToolCall, ToolStatus

pytestmark = pytest.mark.docker

# The sandbox's deadline for every call here (the profile's timeout).
DEADLINE_S = 4


@contextlib.asynccontextmanager
async def open_gateway(tmp_path: Path, runtime: str = "runc") -> AsyncIterator[Gateway]:
    config = tmp_path / "stockade.yaml"
    config.write_text(
        f"state_dir: {tmp_path}\ntoolkits: [toolkits.python, toolkits.shell]\n"
        f"sandbox:\n  runtime: {runtime}\n"
        f"  profiles:\n    default: {{pool_size: 1, timeout_s: {DEADLINE_S}}}\n"
    )
    async with Platform.open(load_config(config, environ={})) as platform:
        yield platform.gateway


@pytest.fixture
async def gateway(images: ImageBuilder, no_leaks: None, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with open_gateway(tmp_path) as opened:
        yield opened


def python(code: str, number: int = 1) -> ToolCall:
    # The snippet's own deadline is past the sandbox's: the gateway's deadline kills it.
    arguments = {"code": code, "timeout_s": 60, "stateless": True}
    return ToolCall(id=f"c{number}", name="python.run", arguments=json.dumps(arguments))


class Recorder:
    """A listener that notes when each chunk arrived."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, OutputChunk]] = []

    def __call__(self, chunk: OutputChunk) -> None:
        self.chunks.append((time.monotonic(), chunk))

    def text(self) -> str:
        return "".join(chunk.text for _, chunk in self.chunks)

    def line_times(self, lines: list[str]) -> list[float]:
        """When each of ``lines`` was first complete in the stream."""
        seen, times = "", list[float]()
        for at, chunk in self.chunks:
            seen += chunk.text
            while len(times) < len(lines) and lines[len(times)] + "\n" in seen:
                times.append(at)
        return times


LINES = "import time\nfor i in range(6):\n    print(f'line {i}')\n    time.sleep(0.3)\n"


async def test_a_listener_sees_each_line_while_the_call_runs(gateway: Gateway) -> None:
    recorder = Recorder()
    result = await gateway.call(python(LINES), on_output=recorder)
    returned = time.monotonic()
    assert result.status is ToolStatus.OK, result
    assert json.loads(result.output)["stdout"] == "".join(f"line {i}\n" for i in range(6))

    lines = [f"line {i}" for i in range(6)]
    times = recorder.line_times(lines)
    assert len(times) == 6, recorder.text()
    # In order, one by one, about 0.3 s apart, and all before the call returned.
    assert times == sorted(times)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap > 0.15 for gap in gaps), gaps
    assert returned - times[0] > 1.2, "the first line came before the snippet ended"
    # One result per call for the model; the stream is separate.
    assert "line 5" in recorder.text()


# While it prints (and so while the runner sends live frames), the program
# tries to open the runner's descriptors through /proc/1/fd: the host's stream
# must never be among what it can reach. Under gVisor /proc/1/fd is open to the
# program's uid, so there the runner sends no live frames at all.
PROBE = """
import os, threading, time
found, stop = set(), []
def spin():
    while not stop:
        for n in range(3, 16):
            try:
                fd = os.open(f"/proc/1/fd/{n}", os.O_WRONLY)
            except OSError:
                continue
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
            os.close(fd)
thread = threading.Thread(target=spin)
thread.start()
for i in range(30):
    print("tick", i, flush=True)
    time.sleep(0.06)
stop.append(1)
thread.join()
print("REACHED", sorted(kind.split(":")[0] for kind in found))
"""


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
async def test_a_program_never_reaches_the_hosts_stream_while_output_streams(
    images: ImageBuilder, no_leaks: None, tmp_path: Path, runtime: str
) -> None:
    recorder = Recorder()
    async with open_gateway(tmp_path, runtime) as gateway:
        result = await gateway.call(python(PROBE), on_output=recorder)
    assert result.status is ToolStatus.OK, result
    last = json.loads(result.output or "{}")["stdout"].splitlines()[-1]
    assert last.startswith("REACHED") and "host" not in last, last
    if runtime == "runc":
        assert "tick 29" in recorder.text()
        assert "'pipe'" not in last and "'socket'" not in last, last  # not dumpable: nothing
    else:
        assert recorder.chunks == [], "no live output under gVisor"


async def test_a_call_killed_at_its_deadline_returns_what_it_printed(gateway: Gateway) -> None:
    code = "import time\nfor i in range(1000):\n    print(f'step {i}', flush=True)\n    time.sleep(0.2)\n"
    recorder = Recorder()
    result = await gateway.call(python(code), on_output=recorder)
    assert result.status is ToolStatus.TIMEOUT, result
    assert "deadline" in (result.error or "")
    assert result.output is not None and "step 0\n" in result.output
    assert "step 5\n" in result.output, result.output  # ~4 s at 0.2 s per step
    assert "step 0" in recorder.text()

    # Without a listener too: the runner keeps it.
    quiet = await gateway.call(python(code, 2))
    assert quiet.status is ToolStatus.TIMEOUT and "step 5\n" in (quiet.output or ""), quiet


async def test_a_flood_killed_at_its_deadline_keeps_head_and_tail(gateway: Gateway) -> None:
    # 3 MiB (past the 1 MiB cap of the sandbox), then a last line, then it hangs.
    code = (
        "import sys, time\n"
        "for i in range(3 * 1024):\n    sys.stdout.write(f'{i:07d}' + 'x' * 1016 + '\\n')\n"
        "print('LAST LINE', flush=True)\ntime.sleep(60)\n"
    )
    result = await gateway.call(python(code))
    assert result.status is ToolStatus.TIMEOUT, result
    output = result.output or ""
    assert result.truncated
    assert output.startswith("0000000x"), output[:40]
    assert "LAST LINE" in output and "omitted" in output
    assert len(output) < 20 * 1024, "head and tail, not the flood"


async def test_hostile_output_never_breaks_the_stream_or_the_result(gateway: Gateway) -> None:
    code = (
        "import sys\nout = sys.stdout.buffer\n"
        "out.write(b'A' * (1024 * 1024)); out.flush()\n"  # a megabyte without a newline
        "out.write(b'\\x00\\x00\\x00\\x10{\"timed_out\": true}\\xff\\xff\\xff\\xff')\n"
        "out.write(b'\\nstill here\\n'); out.flush()\n"
    )
    recorder = Recorder()
    result = await gateway.call(python(code), on_output=recorder)
    assert result.status is ToolStatus.OK, result
    # The stream stopped at its cap, and said so; the result keeps its own capture.
    streamed = [chunk for _, chunk in recorder.chunks if chunk.stream != "notice"]
    total = sum(len(chunk.text.encode("utf-8", "surrogatepass")) for chunk in streamed)
    assert total <= LIVE_CAP_BYTES + 3 * len(streamed)  # replacement characters may grow it
    notices = [chunk.text for _, chunk in recorder.chunks if chunk.stream == "notice"]
    assert notices and "stopped" in notices[-1]
    stdout = json.loads(result.output or "{}")["stdout"]
    assert "still here" in stdout and "bytes omitted" in stdout


async def test_invalid_utf8_and_escapes_are_made_safe_for_display(gateway: Gateway) -> None:
    code = (
        "import sys\nout = sys.stdout.buffer\n"
        "out.write(b'bad \\xff\\xfe\\xc3 utf8\\n')\n"
        "out.write(b'\\x1b[2J\\x1b[31mred\\x1b[0m \\x1b]0;title\\x07done\\x00\\x08\\n')\n"
        "out.write(b'\\x00\\x00\\x00\\x05L1abc\\x00\\x00\\x00\\x02{}')\n"
        "out.write(b'\\nstill here\\n')\n"
    )
    recorder = Recorder()
    result = await gateway.call(python(code), on_output=recorder)
    assert result.status is ToolStatus.OK, result
    text = recorder.text()
    assert "bad \ufffd\ufffd\ufffd utf8\n" in text
    shown = for_display(text)
    assert "\x1b" not in shown and "\x07" not in shown and "\x00" not in shown
    assert "red done\n" in shown and "still here" in shown
    assert "L1abc{}" in shown  # forged frame bytes are only data


async def test_a_listener_nobody_drains_stays_bounded_and_costs_the_call_nothing(
    gateway: Gateway,
) -> None:
    code = "for i in range(20000):\n    print('line', i)\n"
    queue = ChunkQueue(maxsize=4)
    began = time.monotonic()
    drained = await gateway.call(python(code, 1))
    plain = time.monotonic() - began
    began = time.monotonic()
    result = await gateway.call(python(code, 2), on_output=queue.put)
    stuck = time.monotonic() - began
    assert drained.status is ToolStatus.OK and result.status is ToolStatus.OK, result
    assert queue.dropped > 0
    kept = [queue.get_nowait() for _ in range(6)]
    assert sum(chunk is not None for chunk in kept) == 4
    assert stuck < plain + 2.0, (plain, stuck)


# The host's side alone: frames as hostile as the container can make them.


def test_the_decoder_refuses_malformed_frames_and_holds_the_cap() -> None:
    chunks: list[OutputChunk] = []
    decoder = LiveDecoder(chunks.append, cap=10)
    for bad in (b"X1abc", b"L3abc", b"L", b"L1" + b"x" * LIVE_FRAME_LIMIT):
        with pytest.raises(ValueError, match="live frame"):
            decoder.take(bad)
    # A character split across two frames survives; invalid bytes are replaced.
    decoder.take(b"L1\xc3")
    decoder.take(b"L1\xa9\xff!")
    decoder.take(b"L2" + b"y" * 100)  # past the cap of 10 bytes: cut, then one notice
    decoder.take(b"L1more")  # nothing more passes
    assert [(c.stream, c.text) for c in chunks] == [
        ("stdout", "\u00e9\ufffd!"),
        ("stderr", "yyyyyy"),
        ("notice", "[live output stopped at 10 bytes; the result keeps its own]\n"),
    ]
    assert decoder.total == 10


def test_a_listener_that_raises_is_dropped_and_the_call_goes_on() -> None:
    calls: list[str] = []

    def broken(chunk: OutputChunk) -> None:
        calls.append(chunk.text)
        raise RuntimeError("bug")

    decoder = LiveDecoder(broken)
    decoder.take(b"L1one")
    decoder.take(b"L1two")
    assert calls == ["one"]
    assert decoder.printed() == ("onetwo", False)


async def test_the_chunk_queue_drops_with_a_marker_and_closes() -> None:
    queue = ChunkQueue(maxsize=2)
    for index in range(5):
        queue.put(OutputChunk("stdout", str(index)))
    assert queue.dropped == 3
    assert [(await queue.get()).text for _ in range(2)] == ["0", "1"]  # type: ignore[union-attr]
    queue.put(OutputChunk("stdout", "5"))
    assert [c.text for c in (queue.get_nowait(), queue.get_nowait())] == [  # type: ignore[union-attr]
        "[3 chunks dropped]\n",
        "5",
    ]
    queue.close()
    assert await queue.get() is None


def test_display_strips_every_kind_of_control_sequence() -> None:
    hostile = (
        "a\x1b[2J\x1b[1;31mb\x1b[0m\x1b]0;title\x07c\x1b]8;;http://x\x1b\\d"
        "\x1bPq#0\x1b\\e\x9b31mf\x07\x08\x00\r\x7fg\tend\n"
    )
    assert for_display(hostile) == "abcdefg\tend\n"
