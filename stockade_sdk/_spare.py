"""The next ``python.run`` snippet's process, forked by the warm host before its call arrives.

A ``python.run`` call in the warm tool host forks the snippet's process
from the host (:mod:`stockade_sdk._snippet`), and the call waits for that
fork: under gVisor 10-16 ms for ``fork()`` itself and about as long again
before the child runs (its kernel copies the host's mappings), under runc
~0.5-1 ms. So the host forks that process while its container waits in the
pool (:func:`fork`, after it said it is ready), and the call hands it the
snippet (:func:`take`) instead of forking.

The spare is the child a fork at call time would be, forked earlier: a
child of the host after the host's imports, non-dumpable like the host,
running nothing but this module's wait. Its descriptors are the snippet's
from the start (stdin ``/dev/null``, its own stdout and stderr pipes), plus a
control pipe on fd 3 that brings the call: the snippet, its options, and the
host's working directory and environment at that moment (the request's).
Then it becomes the snippet exactly as a child forked at call time does
(:func:`stockade_sdk._snippet.run_as_snippet`). Until then it stays in the
host's process group, so the runner's kill of an idle host's group ends it
too; and a control pipe closed without a call (the host served another tool)
ends it, as does :func:`discard`, which the host calls before it exits.
"""

from __future__ import annotations

import json
import os
import signal

from stockade_sdk import _snippet

__all__ = ["discard", "fork", "take"]

TYPE_CHECKING = False  # typing itself costs start-up time in the sandbox
if TYPE_CHECKING:
    from typing import NoReturn

_CHUNK = 1 << 16


class _Spare:
    """The host's side of a spare: its pid, the control pipe's write end, its output's read ends."""

    __slots__ = ("control", "pid", "stderr_r", "stdout_r")

    def __init__(self, pid: int, control: int, stdout_r: int, stderr_r: int) -> None:
        self.pid = pid
        self.control = control
        self.stdout_r = stdout_r
        self.stderr_r = stderr_r


_spare: _Spare | None = None


def fork() -> None:
    """Fork the next snippet's process now, where a call would fork it (in the warm host).

    Nothing happens where a call would not fork (see
    :func:`stockade_sdk._snippet.can_fork`), or when a spare is already there.
    """
    global _spare  # noqa: PLW0603 - one spare per host
    if _spare is not None or not _snippet.can_fork():
        return
    try:
        control_r, control_w = os.pipe()
    except OSError:
        return  # the call will fork, and say why if it cannot either
    try:
        pid, stdout_r, stderr_r = _snippet.fork_with_output(
            lambda stdout_w, stderr_w: _wait(control_r, stdout_w, stderr_w)
        )
    except OSError:
        os.close(control_r)
        os.close(control_w)
        return
    os.close(control_r)
    _spare = _Spare(pid, control_w, stdout_r, stderr_r)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, _CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _wait(control_r: int, stdout_w: int, stderr_w: int) -> NoReturn:
    """In the spare: wait for the call, then become its snippet; never return into the host."""
    status = 1
    try:
        _snippet.quiet_signals()
        control = _snippet.detach(stdout_w, stderr_w, keep=control_r)
        assert control is not None
        message = _read_all(control)
        os.close(control)
        if not message:  # the host ended without a snippet for it
            status = 0
        else:
            call = json.loads(message)
            os.chdir(call["cwd"])
            os.environ.clear()
            os.environ.update(call["env"])
            options = _snippet.Options.from_argv(call["options"])
            status = _snippet.run_as_snippet(call["source"], options)
    finally:
        os._exit(status)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def take(source: str, options: _snippet.Options) -> tuple[int, int, int] | None:
    """Hand ``source`` to the spare: its pid and the read ends of its stdout and stderr.

    None when there is no spare or it is gone (the caller forks instead). The
    working directory and environment are this process's now, as a fork
    now would pass them on.
    """
    global _spare
    spare, _spare = _spare, None
    if spare is None:
        return None
    call = {
        "source": source,
        "options": options.argv(),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
    }
    try:
        # ensure_ascii: an environment value's undecodable bytes (lone
        # surrogates) travel as escapes and come back as the same string.
        _write_all(spare.control, json.dumps(call).encode("ascii"))
    except OSError:  # it died waiting (BrokenPipeError): fork instead
        _end(spare)
        return None
    os.close(spare.control)
    return spare.pid, spare.stdout_r, spare.stderr_r


def _end(spare: _Spare) -> None:
    os.close(spare.control)
    try:  # noqa: SIM105 - contextlib costs start-up time
        os.kill(spare.pid, signal.SIGKILL)
    except OSError:
        pass  # gone already
    try:  # noqa: SIM105 - contextlib costs start-up time
        os.waitpid(spare.pid, 0)
    except ChildProcessError:
        pass
    os.close(spare.stdout_r)
    os.close(spare.stderr_r)


def discard() -> None:
    """End an unused spare (the call was not a snippet's): killed and reaped, nothing left."""
    global _spare
    spare, _spare = _spare, None
    if spare is not None:
        _end(spare)
