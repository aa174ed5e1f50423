"""Running a program from inside a tool, with a result a model can act on.

``shell.run`` returns what :func:`run_captured` returns, ``python.run`` what
:func:`run_python` returns (the same shape)::

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

A Python snippet is not a cold interpreter start where that can be avoided:
in the tools image's warm tool host, :func:`run_python` forks the snippet's
process from the host and makes it what ``python3 -c CODE`` would be
(:mod:`stockade_sdk._snippet`), or hands the code to the process the host
forked for it before the call came (:mod:`stockade_sdk._spare`); elsewhere
it starts ``python3``: the same result, the start-up included.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from stockade_sdk import ToolError, _snippet

__all__ = ["run_captured", "run_python", "timeout_seconds"]

TYPE_CHECKING = False  # typing itself costs start-up time in the sandbox
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_HEAD_BYTES = _TAIL_BYTES = 16 * 1024
"""Kept of each stream. Escaped as JSON, the worst case (undecodable bytes)
is six times this, twice: 384 KiB, inside the default output cap of 1 MiB."""
_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031  # fcntl: bigger pipes mean fewer reads of a flood
_EXIT_TICK_S = 0.01  # how often the exit is checked without a pidfd (gVisor has none)
_DRAIN_S = 0.1  # output still on its way from leftovers after the main exit
_SWEEP_S = 1.0  # bound on killing leftovers
# Longest single wait: poll() takes at most ~24 days (a C int of milliseconds), and
# socket timeouts about 290 years. A longer timeout_s waits in several steps; the
# sandbox's own deadline ends the call long before.
_LONGEST_WAIT_S = 24 * 3600.0
_HELPER_NAMES = frozenset({"stockade-egress"})  # the runner's own processes
_RUNNER_PATH = b"/opt/stockade/runner.pyc"  # what the sandbox image runs
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
            return _RUNNER_PATH in handle.read().split(b"\0")
    except OSError:
        return False


def _cmdline(pid: int | str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _describe(pid: int) -> str:
    raw = _cmdline(pid)
    if raw and raw == _cmdline("self"):
        # Forked without exec from this process: its command line is ours.
        return f"a process the program forked (pid {pid})"
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

    def __init__(self, stdout_fd: int, stderr_fd: int) -> None:
        self.fds = (stdout_fd, stderr_fd)
        self.stdout, self.stderr = _Stream(), _Stream()
        self.streams = {stdout_fd: self.stdout, stderr_fd: self.stderr}
        self.poller = select.poll()
        for fd in self.fds:
            try:
                import fcntl  # noqa: PLC0415 - built in, cheap; only here

                fcntl.fcntl(fd, _F_SETPIPE_SZ, _CHUNK)
            except OSError:
                pass  # a smaller pipe only costs speed
            self.poller.register(fd, select.POLLIN)
        self.open = set(self.fds)
        self.forwarding = True

    def poll(self, wait_s: float, extra: int | None = None) -> bool:
        """Read what is ready within ``wait_s``; True if ``extra`` became readable."""
        if extra is not None:
            self.poller.register(extra, select.POLLIN)
        woken = False
        try:
            for fd, _ in self.poller.poll(min(max(wait_s, 0), _LONGEST_WAIT_S) * 1000):
                if fd == extra:
                    woken = True
                    continue
                chunk = os.read(fd, _CHUNK)
                if chunk:
                    self.streams[fd].feed(chunk)
                    self._forward(chunk)
                else:
                    self.poller.unregister(fd)
                    self.open.discard(fd)
        finally:
            if extra is not None:
                self.poller.unregister(extra)
        return woken

    def _forward(self, chunk: bytes) -> None:
        """Pass the program's output on to this tool's stderr as it comes.

        The sandbox's runner streams the tool's output live (capped) and keeps
        its head and tail when the call is killed at its deadline, when this
        process's own capture is lost; the result (stdout) is unchanged.
        """
        if not self.forwarding:
            return
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(2, view) :]
        except OSError:
            self.forwarding = False  # nobody reads it: stop

    def drain(self, seconds: float) -> None:
        """Read until both pipes close or ``seconds`` pass."""
        until = time.monotonic() + seconds
        while self.open and time.monotonic() < until:
            self.poll(until - time.monotonic())

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


class _Child:
    """A started program: its pid and, once it exited, its return code (as Popen says it)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def _collect(self, flags: int) -> int | None:
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, flags)
            if not pid:
                break
            if not os.WIFSTOPPED(status):  # a stop is not an exit
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        """The return code if the program has exited (negative: the signal that ended it)."""
        return self._collect(os.WNOHANG)

    def wait(self) -> int:
        """Wait for the exit; the return code."""
        code = self._collect(0)
        assert code is not None
        return code


_pidfd_works: bool | None = None


def _has_pidfd() -> bool:
    global _pidfd_works  # noqa: PLW0603 - learnt once per process
    if _pidfd_works is None:
        try:
            os.close(os.pidfd_open(os.getpid()))
            _pidfd_works = True
        except (OSError, AttributeError):
            _pidfd_works = False  # gVisor has no pidfd_open
    return _pidfd_works


def _on_child(signum: int, frame: object) -> None:
    """Nothing to do: the wake-up descriptor already woke the wait."""


class _ExitWatch:
    """A descriptor that becomes readable when the program exits.

    Its pidfd; without pidfds (gVisor), SIGCHLD's wake-up pipe, set up before
    the program starts so its exit cannot be missed. A tick instead of
    either cost up to 10 ms per call under gVisor. Off the main thread
    neither is possible: :attr:`fd` is None, the caller polls.
    """

    def __init__(self) -> None:
        self.fd: int | None = None
        self._pipe: tuple[int, int] | None = None
        self._previous: tuple[Any, int] | None = None
        if _has_pidfd():
            return
        read_end, write_end = os.pipe()
        try:
            os.set_blocking(read_end, False)
            os.set_blocking(write_end, False)
            previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
            self._previous = (signal.signal(signal.SIGCHLD, _on_child), previous_fd)
        except ValueError:  # not the main thread
            os.close(read_end)
            os.close(write_end)
            return
        self._pipe = (read_end, write_end)
        self.fd = read_end

    def started(self, pid: int) -> None:
        """Watch ``pid`` (with a pidfd, now that it exists)."""
        if self._pipe is None and _has_pidfd():
            self.fd = os.pidfd_open(pid)

    def drain(self) -> None:
        if self._pipe is not None:
            try:
                while os.read(self._pipe[0], 4096):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self._pipe is not None:
            assert self._previous is not None
            handler, previous_fd = self._previous
            signal.set_wakeup_fd(previous_fd)
            signal.signal(signal.SIGCHLD, handler)
            for fd in self._pipe:
                os.close(fd)
        elif self.fd is not None:
            os.close(self.fd)
        self.fd = self._pipe = None


def _wait_for_exit(child: _Child, pump: _Pump, deadline: float, watch: _ExitWatch) -> bool:
    """Pump output until the main process exits; True if the deadline came first."""
    while child.poll() is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        if watch.fd is None:
            pump.poll(min(remaining, _EXIT_TICK_S))
        elif pump.poll(remaining, watch.fd):
            watch.drain()
    return False


if TYPE_CHECKING:
    _Start = Callable[[], tuple[_Child, int, int]]


def _run(start: _Start, timeout_s: float) -> tuple[_Child, _Pump, bool, list[str]]:
    """Run until the main process exits (or the deadline); then kill what is left."""
    deadline = time.monotonic() + timeout_s
    watch = _ExitWatch()
    try:
        child, stdout_fd, stderr_fd = start()
        pump = _Pump(stdout_fd, stderr_fd)
        watch.started(child.pid)
        timed_out = _wait_for_exit(child, pump, deadline, watch)
    finally:
        watch.close()
    leftovers: list[str] = []
    if timed_out:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            # No such group: gone already, or a spare that had not yet made
            # its own session when the deadline came.
            try:  # noqa: SIM105 - contextlib costs start-up time
                os.kill(child.pid, signal.SIGKILL)
            except OSError:
                pass
        child.wait()
        _kill_leftovers(child.pid)  # not "left behind": the program never finished
    else:
        pump.drain(_DRAIN_S)
        leftovers = _kill_leftovers(child.pid)
    pump.drain(_DRAIN_S)  # what the killed ones had written; their pipes close now
    pump.close()
    return child, pump, timed_out, leftovers


def _spawner(argv: list[str]) -> _Start:
    """Start ``argv`` in a session of its own, stdin from /dev/null, stdout and stderr piped."""

    def start() -> tuple[_Child, int, int]:
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        try:
            pid = os.posix_spawnp(
                argv[0],
                argv,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, stdout_w, 1),
                    (os.POSIX_SPAWN_DUP2, stderr_w, 2),
                ],
                setsid=True,
                # Python ignores these; the program gets the defaults back.
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
        except BaseException:
            os.close(stdout_r)
            os.close(stderr_r)
            raise
        finally:
            os.close(stdout_w)
            os.close(stderr_w)
        return _Child(pid), stdout_r, stderr_r

    return start


def _forker(source: str, options: _snippet.Options) -> _Start:
    def start() -> tuple[_Child, int, int]:
        from stockade_sdk import _spare  # noqa: PLC0415 - loaded by the host

        taken = _spare.take(source, options)
        if taken is not None:  # forked before the call, waiting for it
            pid, stdout_r, stderr_r = taken
            return _Child(pid), stdout_r, stderr_r
        pid, stdout_r, stderr_r = _snippet.fork_with_output(
            lambda stdout_w, stderr_w: _snippet.become_snippet(source, stdout_w, stderr_w, options)
        )
        return _Child(pid), stdout_r, stderr_r

    return start


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


def _result(
    child: _Child, pump: _Pump, timed_out: bool, leftovers: list[str], *, timeout_s: float,
    limits: _Limits,
) -> dict[str, object]:  # fmt: skip
    returncode = child.returncode if child.returncode is not None else -signal.SIGKILL
    stderr = pump.stderr.text()
    result: dict[str, object] = {
        "stdout": pump.stdout.text(),
        "stderr": stderr,
        "exit_code": returncode if returncode >= 0 else None,
    }
    result.update(_how_it_ended(returncode, timed_out, timeout_s, limits, stderr))
    if pump.stdout.truncated or pump.stderr.truncated:
        result["truncated"] = True
        result["stdout_bytes"] = pump.stdout.total
        result["stderr_bytes"] = pump.stderr.total
    if leftovers:
        result["left_behind"] = _left_behind_words(leftovers)
    return result


def timeout_seconds(timeout_s: float) -> float:
    """A tool's ``timeout_s`` argument, checked, as one wait may take it (at most a day).

    Raises :class:`~stockade_sdk.ToolError` unless it is a positive number (NaN
    is not): the model asked for something no clock can wait.
    """
    if not timeout_s > 0:
        raise ToolError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return min(timeout_s, _LONGEST_WAIT_S)


def run_captured(argv: list[str], timeout_s: float) -> dict[str, object]:
    """Run ``argv`` with a deadline; return its output and how it ended (see the module doc).

    Raises :class:`~stockade_sdk.ToolError` when ``timeout_s`` is not a positive number.
    """
    timeout_seconds(timeout_s)
    limits = _Limits()
    return _result(*_run(_spawner(argv), timeout_s), timeout_s=timeout_s, limits=limits)


# The snippet travels in a file, not as the -c argument: one argument is capped
# near 128 KB by the kernel, and the policy admits longer programs. The
# bootstrap finds the SDK where this process found it, then leaves sys.path as
# -c has it; the SDK runs the snippet as the warm host's fork does.
_BOOTSTRAP = (
    "import sys\n"
    "sys.path.insert(0, sys.argv.pop(1))\n"
    "from stockade_sdk import _snippet\n"
    "del sys.path[0]\n"
    "_snippet.cold_main(sys.argv[1:])\n"
)
_REPORT_LIMIT = 1 << 20  # the snippet writes it: a bigger one is not read
_REPORT_LISTS = ("not_kept", "figures")
_REPORT_TEXTS = ("state", "figures_error")
_NOT_SAVED = (
    "not saved: the snippet ended before the namespace could be saved ({why}); "
    "the next call starts from the namespace this call started with"
)
_report_count = 0


def _report_path() -> str:
    global _report_count  # noqa: PLW0603 - one name per call of this process
    _report_count += 1
    directory = os.environ.get("TMPDIR") or "/tmp"
    path = os.path.join(directory, f".stockade-python-{os.getpid()}-{_report_count}.json")
    try:  # noqa: SIM105 - contextlib costs start-up time
        os.unlink(path)  # not a leftover's report
    except OSError:
        pass
    return path


def _take_report(path: str) -> dict[str, object]:
    """What the snippet reported (it runs the model's code: only known, well-typed keys count)."""
    import json  # noqa: PLC0415 - loaded by the host

    try:
        with open(path, "rb") as file:
            text = file.read(_REPORT_LIMIT + 1)
        os.unlink(path)
        raw = json.loads(text) if len(text) <= _REPORT_LIMIT else None
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    report: dict[str, object] = {}
    for key in _REPORT_LISTS:
        value = raw.get(key)
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            report[key] = value
    for key in (*_REPORT_TEXTS, "saved"):
        if isinstance(raw.get(key), str | bool):
            report[key] = raw[key]
    return report


def _add_report(result: dict[str, object], options: _snippet.Options) -> None:
    report = _take_report(options.report)
    saved = report.pop("saved", False) is True
    result.update(report)
    if options.state_cap is not None and not saved and "state" not in result:
        why = result.get("killed") or "it exited without the interpreter's exit"
        result["state"] = _NOT_SAVED.format(why=why)


def run_python(
    source: str, timeout_s: float, *, state_cap: int | None = None, reset: bool = False
) -> dict[str, object]:
    """Run Python ``source`` as ``python3 -c`` would, with a deadline; like :func:`run_captured`.

    Forked from the warm host where there is one (see the module docstring),
    else a new interpreter. A trailing expression's value is shown as the
    interactive interpreter shows it, and figures left open are saved under
    ``outputs/`` (listed as ``figures``). With ``state_cap`` the namespace is
    kept across calls in the working directory (:mod:`stockade_sdk._state`):
    restored before the code runs (unless ``reset``) and saved after it;
    the result then says what was not kept (``not_kept``) and, in
    ``state``, when the namespace was not saved or not restored. Raises
    :class:`~stockade_sdk.ToolError` when ``timeout_s`` is not a positive number.
    """
    from stockade_sdk import _figures  # noqa: PLC0415 - small, and loaded by the host

    timeout_seconds(timeout_s)
    limits = _Limits()
    for key, value in _figures.environment().items():
        os.environ.setdefault(key, value)
    options = _snippet.Options(report=_report_path(), state_cap=state_cap, reset=reset)
    if _snippet.can_fork():
        result = _result(
            *_run(_forker(source, options), timeout_s), timeout_s=timeout_s, limits=limits
        )
        _add_report(result, options)
        return result
    import tempfile  # noqa: PLC0415 - only the cold path needs a file

    with tempfile.NamedTemporaryFile("w", suffix=".py", encoding="utf-8", delete=False) as file:
        file.write(source)
    try:
        library = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        argv = [sys.executable, "-c", _BOOTSTRAP, library, file.name, *options.argv()]
        result = _result(*_run(_spawner(argv), timeout_s), timeout_s=timeout_s, limits=limits)
        _add_report(result, options)
        return result
    finally:
        os.unlink(file.name)
