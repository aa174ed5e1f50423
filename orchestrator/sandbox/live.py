"""Live tool output: chunks as a call prints them, decoded from the runner's hostile frames.

The runner sends a program's output as it comes in ``L`` frames (see
``docs/runner-protocol.md``): coalesced (at most every 50 ms or 4 KiB per
stream), capped per call. The host decodes them here and hands each chunk to
the call's listener (``ExecRequest.on_output``), a plain function the
backend calls and never awaits: consumers buffer in bounded queues
(:class:`ChunkQueue`) and drop, with a marker, what they cannot keep up with,
so a slow reader never slows a call. Nothing above the backend knows frames.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import contextvars
import logging
import struct
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "LIVE_CAP_BYTES",
    "LIVE_END",
    "LIVE_ENV",
    "LIVE_FRAME_LIMIT",
    "LIVE_TAG",
    "ChunkQueue",
    "LiveDecoder",
    "LiveFrameError",
    "OutputChunk",
    "OutputListener",
    "current_listener",
    "listening",
]

_log = logging.getLogger(__name__)

LIVE_ENV = "STOCKADE_LIVE_OUTPUT"
"""Set in a request's environment (the runner removes it) to the number of bytes that may
stream live; absent, the runner sends no live frames."""
LIVE_TAG = b"L"
"""First byte of a live frame; then ``1`` (stdout) or ``2`` (stderr), then the bytes."""
LIVE_END = b"L0"
"""The runner's last live frame: nothing follows on the live stream."""
LIVE_FRAME_LIMIT = 16 * 1024 + 2
"""Largest live frame the host accepts (the runner sends at most 16 KiB of output in one,
or a tail frame of 8 KiB and a count)."""
LIVE_CAP_BYTES = 256 * 1024
"""Bytes of output one call streams live; past it the stream stops (the result keeps its
own capture rules)."""
_STREAMS = {b"1": "stdout", b"2": "stderr"}
_HEAD = _TAIL = 16 * 1024
_LEN = struct.Struct(">I")
_TAIL_TAG = b"LT"
_COUNT_DIGITS = 15


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """A piece of a running call's output, as it came (not yet made safe to display)."""

    stream: Literal["stdout", "stderr", "notice"]
    """Which stream wrote it; ``notice`` for the platform's own words (the cap was hit,
    chunks were dropped)."""
    text: str
    """The bytes decoded as UTF-8 (invalid sequences replaced); may hold control sequences:
    see :func:`orchestrator.display.for_display`."""


OutputListener = Callable[[OutputChunk], None]
"""Called with each chunk while the call runs, on the event loop: must not block."""

_listener: contextvars.ContextVar[OutputListener | None] = contextvars.ContextVar(
    "stockade_output_listener", default=None
)


@contextlib.contextmanager
def listening(listener: OutputListener | None) -> Iterator[None]:
    """Make ``listener`` the current call's output listener (the gateway sets it per call)."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def current_listener() -> OutputListener | None:
    """The listener :func:`listening` set for the call in progress, if any."""
    return _listener.get()


class LiveFrameError(ValueError):
    """A live frame the runner could not have sent: the reply is malformed."""


class LiveDecoder:
    """Turns the runner's live frames into :class:`OutputChunk` calls; keeps head and tail.

    Every frame is checked as hostile: its stream byte, its size, and the
    call's cap (bytes past it are dropped, and one notice says so). A
    listener that raises is logged and dropped; the call goes on.

    :meth:`feed` takes the live stream (the container's stderr) as it comes.
    Under gVisor the program itself can write into that stream, so a stream
    that stops making sense ends the live output (with a notice), never the
    call: what it carries is display text, and what streamed never decides
    a result the runner reported.
    """

    def __init__(self, listener: OutputListener | None, cap: int = LIVE_CAP_BYTES) -> None:
        self._listener = listener
        self._room = cap
        self._cap = cap
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")("replace") for name in _STREAMS.values()
        }
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0
        """Bytes of output received."""
        self._past = 0  # bytes the runner says came past the cap (its tail frames)
        self._buffer = bytearray()
        self.ended = False
        """The runner's end frame came, or the stream broke: nothing more will be taken."""

    def feed(self, data: bytes) -> None:
        """Bytes of the live stream: whole frames are taken, a partial one waits (bounded)."""
        if self.ended:
            return
        self._buffer += data
        while len(self._buffer) >= _LEN.size:
            (size,) = _LEN.unpack_from(self._buffer)
            if size > LIVE_FRAME_LIMIT:
                self._break(f"frame of {size} bytes announced")
                return
            if len(self._buffer) < _LEN.size + size:
                return
            payload = bytes(self._buffer[_LEN.size : _LEN.size + size])
            del self._buffer[: _LEN.size + size]
            if payload == LIVE_END:
                self.ended = True
                self._buffer.clear()
                return
            try:
                self.take(payload)
            except LiveFrameError as exc:
                self._break(str(exc))
                return

    def _break(self, why: str) -> None:
        _log.info("live output stream stopped making sense: %s", why)
        self.ended = True
        self._buffer.clear()
        self._emit(OutputChunk("notice", "[live output stopped: the stream was garbled]\n"))

    def take(self, payload: bytes) -> None:
        """One live frame (its tag included); :class:`LiveFrameError` if it is malformed."""
        if len(payload) > LIVE_FRAME_LIMIT:
            raise LiveFrameError(f"live frame of {len(payload)} bytes, limit {LIVE_FRAME_LIMIT}")
        if payload[:2] == _TAIL_TAG:
            self._take_tail(payload[2:])
            return
        which = _STREAMS.get(payload[1:2])
        if payload[:1] != LIVE_TAG or which is None:
            raise LiveFrameError(f"malformed live frame {payload[:8]!r}")
        data = payload[2:]
        if self._room <= 0:
            return
        data = data[: self._room]
        self._room -= len(data)
        self.total += len(data)
        self._keep(data)
        text = self._decoders[which].decode(data)
        if text:
            self._emit(OutputChunk(which, text))  # type: ignore[arg-type]
        if self._room <= 0:
            self._emit(
                OutputChunk(
                    "notice",
                    f"[live output stopped at {self._cap} bytes; the result keeps its own]\n",
                )
            )

    def _take_tail(self, body: bytes) -> None:
        """``LT<bytes past the cap>\\0<latest of them>``: kept as the tail, not shown."""
        count, nul, data = body.partition(b"\0")
        if not nul or not count.isdigit() or len(count) > _COUNT_DIGITS:
            raise LiveFrameError(f"malformed tail frame {body[:24]!r}")
        past = int(count)
        if past - self._past > len(data):
            self._tail.clear()  # bytes between the last tail frame and this one are gone
        self._past = max(self._past, past)
        self._tail += data  # never the head: that is what came first
        del self._tail[:-_TAIL]
        self.total = self._cap - self._room + self._past

    def _keep(self, data: bytes) -> None:
        room = _HEAD - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            del self._tail[:-_TAIL]

    def printed(self) -> tuple[str, bool]:
        """What was received (stdout and stderr interleaved): head and tail, and if cut."""
        if self.total <= len(self._head) + len(self._tail):
            return (self._head + self._tail).decode("utf-8", "replace"), False
        omitted = self.total - len(self._head) - len(self._tail)
        text = (
            self._head.decode("utf-8", "replace")
            + f"\n[... {omitted} bytes omitted ...]\n"
            + self._tail.decode("utf-8", "replace")
        )
        return text, True

    def _emit(self, chunk: OutputChunk) -> None:
        if self._listener is None:
            return
        try:
            self._listener(chunk)
        except Exception:
            _log.exception("output listener failed; it gets no more chunks of this call")
            self._listener = None


class ChunkQueue:
    """A bounded buffer between a listener (never blocks) and a reader that may be slow.

    When full, new chunks are dropped and counted; the reader gets one
    ``notice`` chunk saying how many before the next chunk it can take.
    Made on the event loop's thread, and used there.
    """

    def __init__(self, maxsize: int = 256) -> None:
        self._chunks: deque[OutputChunk] = deque()
        self._maxsize = maxsize
        self._wake = asyncio.Event()
        self._closed = False
        self.dropped = 0
        """Chunks dropped since the last notice."""

    def put(self, chunk: OutputChunk) -> None:
        """An :data:`OutputListener`: queue ``chunk`` or count it dropped."""
        if self.dropped and len(self._chunks) < self._maxsize - 1:
            self._chunks.append(OutputChunk("notice", f"[{self.dropped} chunks dropped]\n"))
            self.dropped = 0
        if len(self._chunks) < self._maxsize:
            self._chunks.append(chunk)
            self._wake.set()
        else:
            self.dropped += 1

    def close(self) -> None:
        """No more chunks: :meth:`get` answers None once the queue is empty."""
        self._closed = True
        self._wake.set()

    async def get(self) -> OutputChunk | None:
        """The next chunk, waiting for one; None once closed and empty."""
        while not self._chunks:
            if self._closed:
                return None
            self._wake.clear()
            await self._wake.wait()
        return self._chunks.popleft()

    def get_nowait(self) -> OutputChunk | None:
        """The next chunk, or None when there is none."""
        return self._chunks.popleft() if self._chunks else None
