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
``KeyboardInterrupt`` handled as CPython handles them). For ``python.run``
it also does what a notebook cell does (:class:`Options`): a trailing
expression's value is shown as the interactive interpreter shows it, open
matplotlib figures are saved under ``outputs/`` (:mod:`stockade_sdk._figures`)
and, for a stateful call, the namespace kept by the run's previous call is
restored before the code runs and saved after it (:mod:`stockade_sdk._state`):
here, in the snippet's own process, never in the host. :func:`can_fork` says
when that is faithful: only in a host that called :func:`prepare_fork_start`,
and only while the environment asks nothing of the interpreter (no
``PYTHON*`` variable) that the host's was not started with.
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = [
    "Options",
    "become_snippet",
    "can_fork",
    "cold_main",
    "detach",
    "finish_interpreter",
    "fork_with_output",
    "prepare_fork_start",
    "quiet_signals",
    "run_as_snippet",
]

TYPE_CHECKING = False  # typing itself costs start-up time in the sandbox
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType
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


class Options:
    """What a ``python.run`` call asks of its snippet beyond running it."""

    __slots__ = ("report", "reset", "state_cap")

    def __init__(self, *, report: str, state_cap: int | None = None, reset: bool = False) -> None:
        self.report = report
        """File the snippet writes its report to (JSON), when it has something to say."""
        self.state_cap = state_cap
        """Size cap of the namespace kept across calls; None: a stateless call."""
        self.reset = reset
        """Start from an empty namespace even if one was kept."""

    def argv(self) -> list[str]:
        """These options as command-line arguments (the cold path's)."""
        cap = "" if self.state_cap is None else str(self.state_cap)
        return [self.report, cap, "1" if self.reset else ""]

    @classmethod
    def from_argv(cls, args: list[str]) -> Options:
        """The options :meth:`argv` wrote."""
        report, cap, reset = args
        return cls(report=report, state_cap=int(cap) if cap else None, reset=bool(reset))


def _compile(source: str) -> tuple[CodeType, CodeType | None]:
    """The code of ``source`` and, if it ends in an expression, that expression's apart.

    The expression's value is then shown as the interactive interpreter
    shows it (its repr, nothing for None).
    """
    import ast  # noqa: PLC0415 - loaded by the host before any call

    tree = ast.parse(source, "<string>")
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return compile(tree, "<string>", "exec"), None
    last = tree.body.pop()
    assert isinstance(last, ast.Expr)
    expression = ast.Expression(last.value)
    return compile(tree, "<string>", "exec"), compile(expression, "<string>", "eval")


def _exec_code(source: str, namespace: dict[str, object]) -> int:
    """Run ``source`` as ``python3 -c`` runs it, a trailing expression shown; the status."""
    try:
        code, expression = _compile(source)
    except Exception as exc:
        # No traceback, as under -c: the hook prints the one a SyntaxError holds, or
        # what else the compiler refused (a NUL byte, nesting too deep: MemoryError).
        sys.excepthook(type(exc), exc.with_traceback(None), None)
        return 1
    try:
        exec(code, namespace)  # noqa: S102 - running the model's code is this tool's purpose
        if expression is not None:
            value = eval(expression, namespace)  # noqa: S307 - the same code's last expression
            sys.displayhook(value)  # as the REPL: the repr, nothing for None
    except SystemExit as exc:
        return _exit_status(exc)
    except BaseException as exc:
        # This function's own frame is not the snippet's: -c shows none of it.
        traceback = exc.__traceback__.tb_next if exc.__traceback__ else None
        sys.excepthook(type(exc), exc.with_traceback(traceback), traceback)
        return -signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1
    return 0


def _keep_state(
    namespace: dict[str, object], cap: int, root: str, report: dict[str, object]
) -> None:
    from stockade_sdk import _state  # noqa: PLC0415 - preloaded by the host

    try:
        outcome = _state.save(namespace, cap, root)
    except BaseException as exc:
        trouble: str | None = f"{type(exc).__name__}: {exc}"
    else:
        trouble = outcome.error
        if outcome.not_kept:
            report["not_kept"] = outcome.not_kept
    report["saved"] = trouble is None
    if trouble is not None:
        said = f"not saved: {trouble}; the previous state is kept"
        report["state"] = f"{report['state']}; {said}" if "state" in report else said


def _exec_main(source: str, options: Options | None = None) -> int:
    """Run ``source`` in a fresh ``__main__``: restored first and saved after, if stateful."""
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
    report: dict[str, object] = {}
    root = os.getcwd()  # the workspace; the snippet may change directory
    stateful = options is not None and options.state_cap is not None
    if options is not None:
        from stockade_sdk import _figures  # noqa: PLC0415 - preloaded by the host

        _figures.start(root)
    if stateful and options is not None:
        from stockade_sdk import _state  # noqa: PLC0415 - preloaded by the host

        if options.reset:
            # Forgotten now, not when this call saves: a call killed before
            # that must not leave the next one the namespace it was told to forget.
            _state.forget(root)
        elif (trouble := _state.restore(main.__dict__, root)) is not None:
            report["state"] = f"{trouble}; this call started with an empty namespace"
    status = _exec_code(source, main.__dict__)
    if options is None:
        return status
    if "matplotlib.pyplot" in sys.modules:
        try:
            _figures.save_open_figures()
        except BaseException as exc:
            report["figures_error"] = f"{type(exc).__name__}: {exc}"
        report["figures"], failed = _figures.saved()
        if failed:
            report["figures_error"] = "; ".join(failed)
    if stateful and options.state_cap is not None:
        _keep_state(main.__dict__, options.state_cap, root, report)
    if report:
        _write_report(options.report, report)
    return status


def _write_report(path: str, report: dict[str, object]) -> None:
    import json  # noqa: PLC0415 - loaded by the host

    try:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(report, file)
    except OSError:
        pass  # the result then says less; the snippet's own outcome stands


def detach(stdout_w: int, stderr_w: int, keep: int | None = None) -> int | None:
    """Descriptors as the snippet has them: stdin ``/dev/null``, the two pipes, nothing else.

    ``keep`` (the spare's control pipe) survives as fd 3, which is returned.
    """
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout_w, 1)
    os.dup2(stderr_w, 2)
    # Last: every source above is already where it belongs, whatever fd 3 held.
    kept = None if keep is None else os.dup2(keep, 3)
    # Nothing of the host's goes on: one close_range call.
    os.closerange(3 if kept is None else 4, os.sysconf("SC_OPEN_MAX"))
    return kept


def quiet_signals() -> None:
    """The host's signal wake-up and SIGCHLD handler are not the child's (first: before fds go)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def run_as_snippet(source: str, options: Options | None) -> int:
    """The rest of turning a forked child into ``python3 -c source``: run it; the exit status."""
    os.setsid()
    _set_dumpable(1)
    sys.argv[:] = ["-c"]
    sys.path[0] = ""  # as under -c (the host's is the directory it started in)
    return _finish(_exec_main(source, options))


def fork_with_output(child: Callable[[int, int], NoReturn]) -> tuple[int, int, int]:
    """Fork a process whose stdout and stderr are new pipes: its pid and their read ends.

    The child runs ``child(stdout_w, stderr_w)``, which never returns into the
    host. The host's buffered output is flushed first, so nothing of the host's
    is written twice. Raises :class:`OSError`, with no descriptor left open,
    when the pipes or the fork cannot be made.
    """
    stdout_r, stdout_w = os.pipe()
    try:
        stderr_r, stderr_w = os.pipe()
    except OSError:
        os.close(stdout_r)
        os.close(stdout_w)
        raise
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        pid = os.fork()
    except OSError:
        for fd in (stdout_r, stdout_w, stderr_r, stderr_w):
            os.close(fd)
        raise
    if pid == 0:
        child(stdout_w, stderr_w)
    os.close(stdout_w)
    os.close(stderr_w)
    return pid, stdout_r, stderr_r


def become_snippet(
    source: str, stdout_w: int, stderr_w: int, options: Options | None = None
) -> NoReturn:
    """In the forked child: turn into ``python3 -c source``; never return into the host."""
    status = 1
    try:
        quiet_signals()
        detach(stdout_w, stderr_w)
        status = run_as_snippet(source, options)
    finally:
        os._exit(status)


def _finish(status: int) -> int:
    """The interpreter's exit after ``__main__`` ran; the process's exit status."""
    if status == -signal.SIGINT:
        # As CPython after an uncaught KeyboardInterrupt: die of the signal.
        _wind_down(0)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        status = _SIGINT_EXIT
    return _wind_down(status)


def cold_main(args: list[str]) -> NoReturn:
    """In a new ``python3 -c`` (no warm host): ``args`` are the source file, then the options."""
    with open(args[0], encoding="utf-8") as file:
        source = file.read()
    options = Options.from_argv(args[1:])
    sys.argv[:] = ["-c"]
    status = 1
    try:
        status = _finish(_exec_main(source, options))
    finally:
        os._exit(status)


def can_fork() -> bool:
    """True where a forked snippet is what a new ``python3`` would be (see the module doc)."""
    return _host_environment is not None and _python_variables() == _host_environment
