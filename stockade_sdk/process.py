"""Running a program from inside a tool, with a result a model can act on.

``python.run`` and ``shell.run`` return what :func:`run_captured` returns::

    {"stdout": "...", "stderr": "...", "exit_code": 0}

plus, only when there is something to say:

- ``"killed"``: why the program did not exit on its own, in words and with the
  limit that ended it: ``"out of memory (limit 512 MiB)"``, ``"timed out after
  20 s"``, ``"signal 15 (SIGTERM)"``; ``exit_code`` is then None;
- ``"truncated": true`` with ``"stdout_bytes"`` and ``"stderr_bytes"``: output
  is read while the program runs and only the head and tail of each stream are
  kept, so no amount of printing fills the sandbox's memory;
- ``"left_behind"``: the call returns when the program's main process exits;
  processes it left running (a server started with ``&``, a daemon) are killed
  then and named here, instead of holding the call until its deadline. In a
  Stockade sandbox that is every process but the runner's; run anywhere else,
  only those still in the program's session;
- ``"notes"``: limits that struck without ending the program (a child killed
  for memory, new processes refused).

Where the limits come from: the container's cgroup where the sandbox kernel
shows one (runc). It holds the values actually enforced and the counters that
say a limit struck (``memory.events`` oom_kill, ``pids.events`` max), which no
value passed in could. gVisor shows no cgroup inside; there the values come
from ``STOCKADE_MEMORY_LIMIT_MB`` / ``STOCKADE_PIDS_LIMIT`` when a profile sets
them, and processes from RLIMIT_NPROC, the limit gVisor itself enforces. (A
sandbox out of memory under gVisor dies whole; the host reports that.)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

__all__ = ["run_captured"]

TYPE_CHECKING = False  # typing itself costs start-up time in the sandbox
if TYPE_CHECKING:
    from typing import IO

_HEAD_BYTES = _TAIL_BYTES = 16 * 1024
"""Kept of each stream. Escaped as JSON, the worst case (undecodable bytes)
is six times this, twice: 384 KiB, inside the default output cap of 1 MiB."""
_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl: bigger pipes mean fewer reads of a flood
_EXIT_TICK_S = 0.01  # how often the exit is checked without a pidfd (gVisor has none)
_DRAIN_S = 0.1  # output still on its way from leftovers after the main exit
_SWEEP_S = 1.0  # bound on killing leftovers
_HELPER_NAMES = frozenset({"stockade-egress"})  # the runner's own processes
_RUNNER_PATH = b"/opt/stockade/runner.py"  # where the sandbox image puts it
_MiB = 1 << 20
_UNLIMITED = 1 << 60  # cgroup v1 spells "no limit" as a huge number
_CGROUP = "/sys/fs/cgroup"
_LEFTOVERS_NAMED = 5
_CMDLINE_CHARS = 80
# How refused processes and threads show in the program's own error output.
_REFUSAL_TEXTS = ("Resource temporarily unavailable", "can't start new thread")


class _Stream:
    """Head and tail of one output stream, and its total size."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = _HEAD_BYTES - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if len(chunk) >= _TAIL_BYTES:
            self.tail = bytearray(chunk[-_TAIL_BYTES:])
        elif chunk:
            self.tail += chunk
            del self.tail[:-_TAIL_BYTES]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        if not self.truncated:
            return (self.head + self.tail).decode("utf-8", "replace")
        omitted = self.total - len(self.head) - len(self.tail)
        return (
            self.head.decode("utf-8", "replace")
            + f"\n[... {omitted} bytes omitted ...]\n"
            + self.tail.decode("utf-8", "replace")
        )


def _read_text(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_limit(*names: str) -> int | None:
    """The first readable limit among cgroup v2 and v1 file names; None if unlimited."""
    for name in names:
        text = _read_text(f"{_CGROUP}/{name}")
        if text is None:
            continue
        value = text.strip()
        if value == "max" or not value.isdigit() or int(value) >= _UNLIMITED:
            return None
        return int(value)
    return None


def _cgroup_counter(key: str, *names: str) -> int | None:
    """A counter line (``key value``) from the first readable file; None if none is."""
    for name in names:
        text = _read_text(f"{_CGROUP}/{name}")
        if text is None:
            continue
        for line in text.splitlines():
            field, _, value = line.partition(" ")
            if field == key and value.strip().isdigit():
                return int(value)
        return None
    return None


def _env_int(name: str, scale: int = 1) -> int | None:
    value = os.environ.get(name, "")
    return int(value) * scale if value.isdigit() else None


class _Limits:
    """The sandbox's memory and process limits, and how often each struck so far."""

    def __init__(self) -> None:
        self.memory = _cgroup_limit("memory.max", "memory/memory.limit_in_bytes") or _env_int(
            "STOCKADE_MEMORY_LIMIT_MB", _MiB
        )
        self.pids = _cgroup_limit("pids.max", "pids/pids.max") or _env_int("STOCKADE_PIDS_LIMIT")
        if self.pids is None:
            import resource  # noqa: PLC0415 - only where no cgroup shows the limit

            soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
            self.pids = soft if soft != resource.RLIM_INFINITY else None
        self.oom_kills = self._oom_kills()
        self.pids_refused = self._pids_refused()

    @staticmethod
    def _oom_kills() -> int | None:
        return _cgroup_counter("oom_kill", "memory.events", "memory/memory.oom_control")

    @staticmethod
    def _pids_refused() -> int | None:
        return _cgroup_counter("max", "pids.events", "pids/pids.events")

    def memory_words(self) -> str:
        if self.memory is None:
            return "no limit known"
        if self.memory % _MiB == 0:
            return f"limit {self.memory // _MiB} MiB"
        return f"limit {self.memory} bytes"

    def struck(self) -> tuple[int | None, int | None]:
        """OOM kills and refused processes since this object was made (None: not counted)."""
        oom, refused = self._oom_kills(), self._pids_refused()
        return (
            None if oom is None or self.oom_kills is None else oom - self.oom_kills,
            None if refused is None or self.pids_refused is None else refused - self.pids_refused,
        )


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def _stat(pid: int) -> tuple[str, str, int] | None:
    """The name, state and session of a process, or None once it is gone."""
    text = _read_text(f"/proc/{pid}/stat")
    if text is None:
        return None
    head, _, rest = text.rpartition(")")
    fields = rest.split()  # state, ppid, pgrp, session, ...
    if len(fields) < 4 or not fields[3].isdigit():
        return None
    return head.partition("(")[2], fields[0], int(fields[3])


def _in_sandbox() -> bool:
    """True when this process is the one program a Stockade runner (pid 1) started.

    Only then is every other process in sight the tool's own doing; anywhere
    else (a toolkit tried out on a laptop) only the program's session is.
    """
    if os.getppid() != 1:
        return False
    try:
        with open("/proc/1/cmdline", "rb") as handle:
            return handle.read().rstrip(b"\0").endswith(_RUNNER_PATH)
    except OSError:
        return False


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        raw = b""
    command = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    if not command:
        stat = _stat(pid)
        command = stat[0] if stat else "?"
    if len(command) > _CMDLINE_CHARS:
        command = command[: _CMDLINE_CHARS - 3] + "..."
    return f"{command} (pid {pid})"


def _running_others(session: int, everything: bool) -> list[int]:
    """Live processes the program left: its session's, or in a sandbox, all but ours.

    A daemon leaves the program's session; in the sandbox it is found all the
    same, as is anything else the program started: the container runs one call.
    """
    exempt = {1, os.getpid()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exempt:
            continue
        stat = _stat(int(entry))
        if stat is None or stat[1] == "Z" or stat[0] in _HELPER_NAMES:
            continue
        if everything or stat[2] == session:
            found.append(int(entry))
    return found


def _kill_leftovers(session: int) -> list[str]:
    """SIGKILL what the program left running, until nothing is left (bounded); name it."""
    everything = _in_sandbox()
    named: dict[int, str] = {}
    give_up = time.monotonic() + _SWEEP_S
    while time.monotonic() < give_up:
        alive = _running_others(session, everything)
        if not alive:
            break
        for pid in alive:
            named.setdefault(pid, _describe(pid))
            try:  # noqa: SIM105 - contextlib costs start-up time
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass  # gone meanwhile
        time.sleep(0.005)
    return [named[pid] for pid in sorted(named)]


def _left_behind_words(leftovers: list[str]) -> str:
    count = len(leftovers)
    noun = "process" if count == 1 else "processes"
    shown = ", ".join(leftovers[:_LEFTOVERS_NAMED])
    more = f" and {count - _LEFTOVERS_NAMED} more" if count > _LEFTOVERS_NAMED else ""
    return f"killed {count} {noun} the program left running: {shown}{more}"


class _Pump:
    """Reads the program's stdout and stderr as they come, keeping head and tail."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None and process.stderr is not None
        pipes: list[IO[bytes]] = [process.stdout, process.stderr]
        self.streams = {pipe.fileno(): _Stream() for pipe in pipes}
        self.stdout, self.stderr = self.streams.values()
        self.poller = select.poll()
        for fd in self.streams:
            try:
                import fcntl  # noqa: PLC0415 - built in, cheap; only here

                fcntl.fcntl(fd, _F_SETPIPE_SZ, _CHUNK)
            except OSError:
                pass  # a smaller pipe only costs speed
            self.poller.register(fd, select.POLLIN)
        self.open = set(self.streams)

    def poll(self, wait_s: float, extra: int | None = None) -> bool:
        """Read what is ready within ``wait_s``; True if ``extra`` became readable."""
        woken = False
        for fd, _ in self.poller.poll(max(wait_s, 0) * 1000):
            if fd == extra:
                woken = True
                continue
            chunk = os.read(fd, _CHUNK)
            if chunk:
                self.streams[fd].feed(chunk)
            else:
                self.poller.unregister(fd)
                self.open.discard(fd)
        return woken

    def drain(self, seconds: float) -> None:
        """Read until both pipes close or ``seconds`` pass."""
        until = time.monotonic() + seconds
        while self.open and time.monotonic() < until:
            self.poll(until - time.monotonic())


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None  # gVisor has no pidfd_open: the exit is polled instead


def _wait_for_exit(process: subprocess.Popen[bytes], pump: _Pump, deadline: float) -> bool:
    """Pump output until the main process exits; True if the deadline came first."""
    pidfd = _pidfd(process.pid)
    if pidfd is not None:
        pump.poller.register(pidfd, select.POLLIN)
    try:
        while process.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if not pump.open and pidfd is None:
                # Output closed: the exit follows at once, or the program
                # closed its output and runs on. Either way, just wait.
                try:
                    process.wait(remaining)
                except subprocess.TimeoutExpired:
                    return True
                break
            pump.poll(remaining if pidfd is not None else min(remaining, _EXIT_TICK_S), pidfd)
    finally:
        if pidfd is not None:
            pump.poller.unregister(pidfd)
            os.close(pidfd)
    return False


def _run(
    argv: list[str], timeout_s: float
) -> tuple[subprocess.Popen[bytes], _Pump, bool, list[str]]:
    """Run until the main process exits (or the deadline); then kill what is left."""
    deadline = time.monotonic() + timeout_s
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    pump = _Pump(process)
    timed_out = _wait_for_exit(process, pump, deadline)
    leftovers: list[str] = []
    if timed_out:
        try:  # noqa: SIM105 - contextlib costs start-up time
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass  # the group is gone already
        process.wait()
        _kill_leftovers(process.pid)  # not "left behind": the program never finished
    else:
        pump.drain(_DRAIN_S)
        leftovers = _kill_leftovers(process.pid)
    pump.drain(_DRAIN_S)  # what the killed ones had written; their pipes close now
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
    return process, pump, timed_out, leftovers


def _how_it_ended(
    returncode: int, timed_out: bool, timeout_s: float, limits: _Limits, stderr: str
) -> dict[str, object]:
    """The ``killed`` and ``notes`` entries of the result, if any."""
    said: dict[str, object] = {}
    oom_kills, refused = limits.struck()
    oom_kills = oom_kills or 0
    if timed_out:
        said["killed"] = f"timed out after {timeout_s:g} s"
    elif returncode < 0:
        signum = -returncode
        if signum == signal.SIGKILL and oom_kills:
            oom_kills -= 1  # this one
            said["killed"] = f"out of memory ({limits.memory_words()})"
        else:
            said["killed"] = f"signal {signum} ({_signal_name(signum)})"
    notes: list[str] = []
    if oom_kills:
        noun = "process" if oom_kills == 1 else "processes"
        notes.append(f"out of memory: {oom_kills} {noun} killed ({limits.memory_words()})")
    if limits.pids is not None:
        limit = f"the process limit ({limits.pids} processes and threads)"
        if refused:
            started = "process or thread" if refused == 1 else "processes or threads"
            notes.append(f"{limit} was reached: {refused} new {started} refused")
        elif refused is None:
            # No counter to read (gVisor): the refusal's own words are the evidence.
            evidence = [text for text in _REFUSAL_TEXTS if text in stderr]
            if evidence:
                notes.append(f"{limit} was probably reached ({evidence[0]})")
    if notes:
        said["notes"] = notes
    return said


def run_captured(argv: list[str], timeout_s: float) -> dict[str, object]:
    """Run ``argv`` with a deadline; return its output and how it ended (see the module doc)."""
    limits = _Limits()
    process, pump, timed_out, leftovers = _run(argv, timeout_s)
    stderr = pump.stderr.text()
    result: dict[str, object] = {
        "stdout": pump.stdout.text(),
        "stderr": stderr,
        "exit_code": process.returncode if process.returncode >= 0 else None,
    }
    result.update(_how_it_ended(process.returncode, timed_out, timeout_s, limits, stderr))
    if pump.stdout.truncated or pump.stderr.truncated:
        result["truncated"] = True
        result["stdout_bytes"] = pump.stdout.total
        result["stderr_bytes"] = pump.stderr.total
    if leftovers:
        result["left_behind"] = _left_behind_words(leftovers)
    return result
