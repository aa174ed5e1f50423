"""Live tool output through the gateway, on real containers (issue 16, point 2).

A listener on ``Gateway.call`` sees a tool's output while the call runs; a
call killed at its deadline still returns what it printed; hostile output
never breaks the stream or the result; a listener nobody drains stays bounded.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.display import for_display
from orchestrator.gateway import Gateway
from orchestrator.platform import Platform
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.live import (
    LIVE_CAP_BYTES,
    LIVE_FRAME_LIMIT,
    ChunkQueue,
    LiveDecoder,
    OutputChunk,
)
from orchestrator.tools import ToolCall, ToolResult, ToolStatus

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


def assert_spread(times: list[float]) -> None:
    """The lines of LINES (printed 0.3 s apart) came one by one, as they were printed.

    Judged on the median gap and the whole span, not on every gap: on a loaded
    machine one line may be late and arrive with the next (what CI saw).
    """
    gaps = sorted(later - earlier for earlier, later in itertools.pairwise(times))
    assert gaps[len(gaps) // 2] > 0.15, gaps
    assert times[-1] - times[0] > 0.9, gaps


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
    assert_spread(times)
    assert returned - times[0] > 1.2, "the first line came before the snippet ended"
    # One result per call for the model; the stream is separate.
    assert "line 5" in recorder.text()


@pytest.mark.parametrize("runtime", ["runsc"])
async def test_under_gvisor_a_listener_sees_each_line_while_the_call_runs(
    images: ImageBuilder, no_leaks: None, tmp_path: Path, runtime: str
) -> None:
    recorder = Recorder()
    async with open_gateway(tmp_path, runtime) as gateway:
        result = await gateway.call(python(LINES), on_output=recorder)
        returned = time.monotonic()
    assert result.status is ToolStatus.OK, result
    times = recorder.line_times([f"line {i}" for i in range(6)])
    assert len(times) == 6, recorder.text()
    assert_spread(times)
    assert returned - times[0] > 1.2, "the first line came before the snippet ended"


# While it prints (and so while the runner sends live frames), the program
# tries to open every descriptor of the runner through /proc/1/fd: the host's
# stream (the report channel) must never be among what it can reach. Under
# runc pid 1 is not dumpable and nothing opens; under gVisor /proc/1/fd is
# open to the program's uid: fds 0 and 1 are /dev/null while it runs (the
# stream is parked in a socket, never taken out for live writes) and fd 2 is
# the live stream, which it may write into (display text only, see below).
PROBE = """
import os, threading, time
found, stop = set(), []
def spin():
    while not stop:
        for n in range(0, 16):
            try:
                fd = os.open(f"/proc/1/fd/{n}", os.O_WRONLY)
            except OSError:
                continue
            found.add((n, os.readlink(f"/proc/self/fd/{fd}").split(":")[0]))
            os.close(fd)
thread = threading.Thread(target=spin)
thread.start()
for i in range(30):
    print("tick", i, flush=True)
    time.sleep(0.06)
stop.append(1)
thread.join()
print("REACHED", sorted(found))
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
    assert last.startswith("REACHED"), last
    reached = dict(ast.literal_eval(last.removeprefix("REACHED ")))
    # Streaming was on all along, under both runtimes.
    assert "tick 29" in recorder.text()
    if runtime == "runc":
        assert reached == {}, last  # not dumpable: nothing
    else:
        # The runner's own pipes open (as they did before live output); the
        # host's stream never does: not parked, and never taken out for a write.
        assert reached.get(0) == reached.get(1) == "/dev/null", last
        assert all(kind == "pipe" for n, kind in reached.items() if n > 2), last


# Under gVisor the program can write into the live stream itself: forged and
# garbled frames change at most what is displayed, never the call's result.
FORGER = """
import os, time
print("before", flush=True)
time.sleep(0.2)
fd = os.open("/proc/1/fd/2", os.O_WRONLY)
os.write(fd, b"\\x00\\x00\\x00\\x08L1FORGED")  # a well-formed frame: display text
os.write(fd, b"\\x00\\x00\\x00\\x10{\\"timed_out\\": true}")  # a report, on the wrong stream
os.write(fd, b"\\xff" * 100000)  # garbage
os.close(fd)
time.sleep(0.3)
print("after", flush=True)
"""


async def test_under_gvisor_a_program_writing_the_live_stream_forges_only_display_text(
    images: ImageBuilder, no_leaks: None, tmp_path: Path
) -> None:
    recorder = Recorder()
    async with open_gateway(tmp_path, "runsc") as gateway:
        result = await gateway.call(python(FORGER), on_output=recorder)
        again = await gateway.call(python("print('fine')", 2), on_output=Recorder())
    assert result.status is ToolStatus.OK, result
    assert json.loads(result.output or "{}")["stdout"] == "before\nafter\n"
    assert "before" in recorder.text()
    notices = [chunk.text for _, chunk in recorder.chunks if chunk.stream == "notice"]
    assert any("garbled" in notice for notice in notices), recorder.chunks
    assert again.status is ToolStatus.OK, again


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


# Prints lines, then allocates past the memory limit of the profile below.
HOG = (
    "import time\nfor i in range(5):\n    print(f'row {i}', flush=True)\n    time.sleep(0.1)\n"
    "hog = []\nwhile True:\n    hog.append(bytearray(8 * 1024 * 1024))\n"
)
# Floods 3 MiB first (past every cap), then a last line, then the same.
FLOOD_HOG = (
    "import sys, time\n"
    "for i in range(3 * 1024):\n    sys.stdout.write(f'{i:07d}' + 'x' * 1016 + '\\n')\n"
    "print('LAST LINE', flush=True)\ntime.sleep(0.2)\n"
    "hog = []\nwhile True:\n    hog.append(bytearray(8 * 1024 * 1024))\n"
)


@contextlib.asynccontextmanager
async def small_memory_gateway(tmp_path: Path, runtime: str) -> AsyncIterator[Gateway]:
    # 128 MiB: under gVisor the sandbox kernel's own memory counts too.
    config = tmp_path / "stockade.yaml"
    config.write_text(
        f"state_dir: {tmp_path}\ntoolkits: [toolkits.python]\n"
        f"sandbox:\n  runtime: {runtime}\n"
        f"  profiles:\n    default: {{pool_size: 1, timeout_s: 20, memory_mb: 128}}\n"
    )
    async with Platform.open(load_config(config, environ={})) as platform:
        yield platform.gateway


def oom_report(result: ToolResult, runtime: str) -> tuple[str, str]:
    """What the model sees of a call the memory limit killed: its output, and why."""
    if runtime == "runsc":
        # gVisor kills the whole sandbox: the backend says so, with what streamed.
        assert result.status is ToolStatus.OOM_KILLED, result
        return result.output or "", result.error or ""
    # Under runc the kernel kills the snippet alone; python.run reports it.
    assert result.status is ToolStatus.OK, result
    value = json.loads(result.output or "{}")
    return value["stdout"] + value["stderr"], value["killed"]


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
@pytest.mark.parametrize("listening", [True, False])
async def test_a_call_killed_by_the_memory_limit_returns_what_it_printed(
    images: ImageBuilder, no_leaks: None, tmp_path: Path, runtime: str, listening: bool
) -> None:
    recorder = Recorder()
    async with small_memory_gateway(tmp_path, runtime) as gateway:
        result = await gateway.call(python(HOG), on_output=recorder if listening else None)
    printed, why = oom_report(result, runtime)
    assert "out of memory" in why and "128 MiB" in why, why
    assert printed == "".join(f"row {i}\n" for i in range(5)), printed
    assert not result.truncated, result
    if listening:
        assert "row 4" in recorder.text()


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
async def test_a_flood_killed_by_the_memory_limit_keeps_head_and_tail(
    images: ImageBuilder, no_leaks: None, tmp_path: Path, runtime: str
) -> None:
    async with small_memory_gateway(tmp_path, runtime) as gateway:
        result = await gateway.call(python(FLOOD_HOG))
    printed, why = oom_report(result, runtime)
    assert "out of memory" in why and "128 MiB" in why, why
    assert printed.startswith("0000000x"), printed[:40]
    assert "LAST LINE" in printed and "omitted" in printed, printed[-200:]
    assert len(printed) < 2 * 1024 * 1024, "head and tail, not the flood"
    # Under runc python.run reported its (cut) capture whole: its result is not cut.
    assert result.truncated is (runtime == "runsc"), result


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


def test_the_live_stream_is_framed_bounded_and_ends_at_garbage() -> None:
    def framed(payload: bytes) -> bytes:
        return len(payload).to_bytes(4, "big") + payload

    chunks: list[OutputChunk] = []
    decoder = LiveDecoder(chunks.append)
    stream = framed(b"L1one ") + framed(b"L2two ") + framed(b"L1three")
    for index in range(len(stream)):  # one byte at a time: partial frames wait
        decoder.feed(stream[index : index + 1])
    assert "".join(chunk.text for chunk in chunks) == "one two three"
    decoder.feed(framed(b"L0") + framed(b"L1after the end"))
    assert decoder.ended and "after" not in "".join(chunk.text for chunk in chunks)

    # A length past the frame limit, or a frame that is not live output: the
    # stream ends with a notice, nothing is buffered, the result is untouched.
    for garbage in (b"\xff\xff\xff\xff" + b"x" * 100, framed(b'{"timed_out": true}')):
        chunks.clear()
        decoder = LiveDecoder(chunks.append)
        decoder.feed(framed(b"L1ok") + garbage)
        decoder.feed(framed(b"L1more"))
        assert [chunk.stream for chunk in chunks] == ["stdout", "notice"], chunks
        assert decoder.ended and decoder.printed() == ("ok", False)
    # Past the cap the runner sends tail frames (latest bytes, and how many came
    # past it): kept as the result's tail, never shown; a gap restarts the tail.
    chunks.clear()
    decoder = LiveDecoder(chunks.append, cap=4)
    decoder.feed(framed(b"L1head") + framed(b"LT3\0abc") + framed(b"LT6\0def"))
    assert decoder.printed() == ("headabcdef", False)
    decoder.feed(framed(b"LT1000\0END"))
    text, cut = decoder.printed()
    assert cut and text.startswith("head") and text.endswith("END") and "omitted" in text
    assert "abc" not in text and decoder.total == 1004
    assert [chunk.stream for chunk in chunks] == ["stdout", "notice"]
    for bad in (b"LT\0x", b"LTx\0y", b"LT12", b"LT" + b"9" * 16 + b"\0z"):
        with pytest.raises(ValueError, match="tail frame"):
            LiveDecoder(None).take(bad)
    # A partial frame holds at most one frame's bytes.
    decoder = LiveDecoder(None)
    decoder.feed((LIVE_FRAME_LIMIT).to_bytes(4, "big") + b"y" * (LIVE_FRAME_LIMIT - 1))
    assert not decoder.ended and decoder.total == 0


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
