"""The warm tool host: an interpreter ready for one tool call before the call exists.

The tools image's runner (``runner.pyc --tool-host /opt/stockade/lib``) forks
its interpreter into the host while its container waits in the pool
(:func:`main_forked`: what ``python3 -m stockade_sdk.host`` would run, without
another interpreter's start). The host:

1. imports what a call needs: the SDK, ``json``, and the toolkits of the
   tools its profile serves (``STOCKADE_TOOLKITS``, comma-separated, set when
   the container is created; when it is not set, every toolkit baked into the
   image: ``stockade-preload.txt`` beside the SDK, written by the image
   build, one module per line); then what ``python.run`` snippets need at
   once: the state serialiser (``cloudpickle``) and the heavy modules of the
   profile's preload list (``STOCKADE_PRELOAD``, comma-separated, set when the
   container is created; ``numpy`` when it is not set), so a snippet that
   restores or imports them finds them loaded. In a container a caller
   already waits for (``STOCKADE_LEAN_START=1``: the pool ran dry) only the
   first part: the call would wait for the rest (~100 ms of CPU, numpy's
   import most of it) whether it uses them or not, and a snippet that does
   imports them itself. Only module imports run here:
   a kept namespace is loaded by the forked snippet, never by this process;
2. makes itself non-dumpable (:func:`stockade_sdk._snippet.prepare_fork_start`):
   a ``python.run`` snippet is forked from this process, and must not be able
   to ptrace it or read or write its memory;
3. says it is ready: one byte on fd 3, which it then closes; then, if it
   loaded the ``python.run`` toolkit and no caller waits yet, forks the next
   snippet's process ahead of the call (:mod:`stockade_sdk._spare`: the call
   then does not wait for that fork; a call of another tool ends it unused);
4. reads its one request on stdin (two length-prefixed frames: the call as
   NUL-separated ``cwd, argc, argv..., envc, KEY=VALUE...``, then the
   arguments), takes the request's working directory and environment, and
   serves it exactly as ``python3 -S -m stockade_sdk.run MODULE:FUNCTION``
   would (:func:`stockade_sdk.run.serve`);
5. exits. It never reads a second request: a container serves one call.

It runs with the tool's uid, under the runner's seccomp filter and the
container's limits, like any program the runner starts; it holds nothing the
request does not bring. Before the request only the SDK's and the toolkits'
own code runs in it.
"""

from __future__ import annotations

import importlib
import os
import sys

from stockade_sdk import _snippet, _spare, process, run

TYPE_CHECKING = False  # typing itself costs start-up time in the sandbox
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["ENTRY_ARGV", "main", "main_forked"]

ENTRY_ARGV = run.ENTRY_ARGV
"""The command this host stands in for, completed by ``MODULE:FUNCTION``."""
PRELOAD_FILE = "stockade-preload.txt"
"""Beside the ``stockade_sdk`` package: the modules to import before the call, one a line."""
PRELOAD_ENV = "STOCKADE_PRELOAD"
"""Comma-separated modules snippets use, imported before the call (the profile's list)."""
DEFAULT_PRELOAD = ("numpy",)
"""The list when :data:`PRELOAD_ENV` is not set."""
TOOLKITS_ENV = "STOCKADE_TOOLKITS"
"""Comma-separated toolkit modules to import instead of :data:`PRELOAD_FILE`'s (the toolkits
of the tools the container's profile serves)."""
LEAN_START_ENV = "STOCKADE_LEAN_START"
"""``1``: a caller waits for this container; the optional preloads are skipped."""
# What every python.run call may use: its parser (a trailing expression is
# shown) and the state and figure modules (they import their heavy parts when used).
_SNIPPET_MODULES = ("ast", "stockade_sdk._state", "stockade_sdk._figures")
# Toolkits whose calls fork a snippet (python.run): a host that loaded one
# forks the next snippet's process while it waits (stockade_sdk._spare).
_SNIPPET_TOOLKITS = ("toolkits.python",)
# What a call that keeps its namespace needs: the serialiser.
_STATE_MODULES = ("cloudpickle",)
_READY_FD = 3
_LEN_BYTES = 4


def preload_names() -> list[str]:
    """The modules imported before the call: the toolkits, then the snippets' modules."""
    served = os.environ.get(TOOLKITS_ENV)
    if served is not None:  # the profile's own toolkits
        names = served.replace(",", " ").split()
    else:  # every toolkit of the image
        library = os.path.dirname(os.path.dirname(os.path.abspath(process.__file__)))
        try:
            with open(os.path.join(library, PRELOAD_FILE), encoding="utf-8") as listing:
                names = [line.strip() for line in listing if line.strip()]
        except OSError:
            names = []
    if os.environ.get(LEAN_START_ENV) == "1":
        return [*names, *_SNIPPET_MODULES]
    listed = os.environ.get(PRELOAD_ENV)
    heavy = DEFAULT_PRELOAD if listed is None else listed.replace(",", " ").split()
    return [*names, *_SNIPPET_MODULES, *_STATE_MODULES, *heavy]


def _preload() -> None:
    for name in preload_names():
        try:
            # Interned, as ``import numpy`` in a snippet would name it: a kept
            # namespace then pickles alike whoever imported its modules
            # (see stockade_sdk._state._import_module).
            importlib.import_module(sys.intern(name))
        except Exception:  # noqa: S112 - the call imports it again and reports the error
            continue


def _read_exact(size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(0, size)
        if not chunk:
            raise EOFError("the runner closed the request early")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame() -> bytes:
    return _read_exact(int.from_bytes(_read_exact(_LEN_BYTES), "big"))


def _read_request() -> tuple[str, list[str], dict[str, str], bytes]:
    """The call (cwd, argv, environment) and its arguments, from stdin."""
    fields = _read_frame().decode("utf-8", "surrogateescape").split("\0")
    cwd, argc = fields[0], int(fields[1])
    argv = fields[2 : 2 + argc]
    envc = int(fields[2 + argc])
    env = dict(entry.partition("=")[::2] for entry in fields[3 + argc : 3 + argc + envc])
    return cwd, argv, env, _read_frame()


def main() -> NoReturn:
    """Prepare, wait for the one request, serve it, exit."""
    _preload()
    _snippet.prepare_fork_start()
    try:
        os.write(_READY_FD, b"1")
        os.close(_READY_FD)
    except OSError:
        pass  # not started by a runner (a test): nobody waits for the byte
    if os.environ.get(LEAN_START_ENV) != "1" and any(
        name in sys.modules for name in _SNIPPET_TOOLKITS
    ):
        _spare.fork()  # while nothing waits: a caller in a lean start already does
    cwd, argv, env, arguments = _read_request()
    if tuple(argv[:-1]) != ENTRY_ARGV or len(argv) != len(ENTRY_ARGV) + 1:
        print(f"the tool host serves {' '.join(ENTRY_ARGV)} only, not {argv!r}", file=sys.stderr)
        _spare.discard()
        _snippet.finish_interpreter(2)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    status = run.serve(argv[-1], arguments)
    _spare.discard()  # a call that forked no snippet leaves it unused
    _snippet.finish_interpreter(status)


def _unbuffered_stdio() -> None:
    """Standard streams as ``PYTHONUNBUFFERED=1`` makes them, in the runner's encodings.

    The runner's interpreter started without the variable (``-I``); the
    encoding and error handler the locale gave it are the host's too.
    """
    import io  # noqa: PLC0415 - loaded by the interpreter itself

    names = ("stdin", "stdout", "stderr")
    for fd, name in enumerate(names):
        # The runner's stream (sys.__stdin__...) says what the locale gave it.
        old = getattr(sys, f"__{name}__")
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        raw.name = f"<{name}>"
        # stdin is always buffered; stdout and stderr are the raw files, as
        # CPython wraps them under -u.
        buffer = io.BufferedReader(raw) if fd == 0 else raw
        stream = io.TextIOWrapper(
            buffer,
            encoding=old.encoding,
            errors=old.errors,
            newline="\n",
            write_through=True,
        )
        # setattr: __stdin__ and its like are final to type checkers, not here.
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _site() -> None:
    """What ``site`` does at the start of an interpreter run without ``-I -S``."""
    import site  # noqa: PLC0415 - only here: the runner's interpreter skipped it

    site.ENABLE_USER_SITE = True  # as for a process whose uid is its effective uid
    site.main()
    site.enablerlcompleter()  # main() leaves it out under -I


def main_forked() -> NoReturn:
    """:func:`main` in a child the runner forked: first what ``python3 -m`` would have set up.

    The runner (``python3 -I -S``) forked this process with the host's
    descriptors, session, signal dispositions, environment and ``sys.path``
    in place; left are the standard streams (unbuffered, as the environment's
    ``PYTHONUNBUFFERED=1`` asks), ``site``'s paths and builtins, and
    ``sys.argv``. Only ``sys.flags`` and ``sys.orig_argv`` still tell the
    runner's interpreter apart from one started for the host.
    """
    _unbuffered_stdio()
    _site()
    sys.argv[:] = [__file__]
    main()


if __name__ == "__main__":
    main()
