"""A Python snippet forked from the warm tool host, made what ``python3 -c`` would run.

In the tools image's warm tool host (:mod:`stockade_sdk.host`), which has the
interpreter, the SDK and the toolkits loaded before its call arrives,
:func:`stockade_sdk.process.run_python` forks the snippet's process instead of
starting another interpreter, and :func:`become_snippet` turns that child into
what ``python3 -c CODE`` would be: its own session, stdin from ``/dev/null``,
its own pipes, no descriptor of the host's, dumpable again (the host is not),
``sys.argv == ['-c']``, ``sys.path[0] == ''``, a fresh ``__main__``, errors
printed as under ``-c``, and the interpreter's exit (non-daemon threads
joined, ``atexit`` run, streams flushed; ``SystemExit`` and
``KeyboardInterrupt`` handled as CPython handles them). :func:`can_fork` says
when that is faithful: only in a host that called :func:`prepare_fork_start`,
and only while the environment asks nothing of the interpreter (no
``PYTHON*`` variable) that the host's was not started with.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["become_snippet", "can_fork", "finish_interpreter", "prepare_fork_start"]

TYPE_CHECKING = False  # typing itself costs start-up time in the sandbox
if TYPE_CHECKING:
    from typing import NoReturn

_PR_SET_DUMPABLE = 4
_SIGINT_EXIT = 130


_host_environment: dict[str, str] | None = None
"""The host's own ``PYTHON*`` variables; None where no host prepared to fork."""


def _python_variables() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith("PYTHON")}


def _set_dumpable(value: int) -> None:
    import ctypes  # noqa: PLC0415 - loaded by the host before any call

    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")


def prepare_fork_start() -> None:
    """Declare this interpreter a warm host that ``run_python`` may fork snippets from.

    Called once by :mod:`stockade_sdk.host` after its imports: it also makes
    this process non-dumpable, so the snippets cannot ptrace it or touch its
    memory (each snippet makes itself dumpable again: it is an ordinary
    process, and this one's memory stays its own).
    """
    global _host_environment  # noqa: PLW0603 - set once, by the host
    _set_dumpable(0)
    _host_environment = _python_variables()
    import gc  # noqa: PLC0415 - built in

    # Everything loaded so far out of the collector's sight: a collection in
    # a forked snippet then touches (and copies) none of the host's pages.
    # python.run print(1) inside the runner: 13-14 ms before, 11-12 ms after.
    gc.collect()
    gc.freeze()


def _exit_status(exc: SystemExit) -> int:
    """What the interpreter makes of an uncaught SystemExit (printing a non-int code)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    try:  # noqa: SIM105 - contextlib costs start-up time
        print(code, file=sys.stderr)
    except BaseException:  # noqa: S110 - the exit goes on whatever printing does
        pass
    return 1


def _wind_down(status: int) -> int:
    """The interpreter's exit without tearing its modules down: threads, atexit, flush."""
    threading = sys.modules.get("threading")
    if threading is not None:
        try:  # noqa: SIM105 - contextlib costs start-up time
            threading._shutdown()  # what Py_FinalizeEx calls: joins non-daemon threads
        except BaseException:  # noqa: S110 - as at a real exit, it does not change the status
            pass
    import atexit  # noqa: PLC0415 - built in, already loaded

    atexit._run_exitfuncs()  # prints what a handler raised, as at exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            if stream is sys.stdout and status == 0:
                status = 120  # as CPython: stdout could not be flushed
    return status


def finish_interpreter(status: int) -> NoReturn:
    """End this process with ``status`` the way the interpreter ends, minus module teardown.

    Non-daemon threads are joined, ``atexit`` handlers run and the standard
    streams flushed; freeing every module's objects, which nothing would
    see, is skipped (the process is gone a moment later).
    """
    os._exit(_wind_down(status))


def _exec_main(source: str) -> int:
    """Run ``source`` as ``python3 -c`` runs it: a fresh ``__main__``, its errors printed."""
    import builtins  # noqa: PLC0415 - built in
    import importlib.machinery  # noqa: PLC0415 - loaded by the interpreter itself
    import types  # noqa: PLC0415 - loaded by the interpreter itself

    main = types.ModuleType("__main__")
    main.__dict__.update(
        __builtins__=builtins,
        __loader__=importlib.machinery.BuiltinImporter,
        __annotations__={},
    )
    sys.modules["__main__"] = main
    try:
        code = compile(source, "<string>", "exec")
    except SyntaxError as exc:
        # No traceback, as under -c: the hook prints the one the exception holds.
        sys.excepthook(type(exc), exc.with_traceback(None), None)
        return 1
    try:
        exec(code, main.__dict__)  # noqa: S102 - running the model's code is this tool's purpose
    except SystemExit as exc:
        return _exit_status(exc)
    except BaseException as exc:
        # This function's own frame is not the snippet's: -c shows none of it.
        traceback = exc.__traceback__.tb_next if exc.__traceback__ else None
        sys.excepthook(type(exc), exc.with_traceback(traceback), traceback)
        return -signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1
    return 0


def become_snippet(source: str, stdout_w: int, stderr_w: int) -> NoReturn:
    """In the forked child: turn into ``python3 -c source``; never return into the host."""
    status = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(stdout_w, 1)
        os.dup2(stderr_w, 2)
        # Nothing of the host's goes on: one close_range call.
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        _set_dumpable(1)
        sys.argv[:] = ["-c"]
        sys.path[0] = ""  # as under -c (the host's is the directory it started in)
        status = _exec_main(source)
        if status == -signal.SIGINT:
            # As CPython after an uncaught KeyboardInterrupt: die of the signal.
            _wind_down(0)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
            status = _SIGINT_EXIT
        status = _wind_down(status)
    finally:
        os._exit(status)


def can_fork() -> bool:
    """True where a forked snippet is what a new ``python3`` would be (see the module doc)."""
    return _host_environment is not None and _python_variables() == _host_environment
