"""A ``python.run`` namespace kept across calls: saved into the run's workspace, restored next call.

Every call runs in a new container, so nothing of an interpreter survives
it; what survives is the workspace. At the end of a stateful call the
snippet's own process serialises its ``__main__`` namespace with
``cloudpickle`` into :data:`STATE_PATH` (a temporary file, then one rename:
a call killed while writing leaves the previous state whole); the next
call's snippet process, before it runs its code, loads that file back into
its fresh ``__main__``. Only that process ever loads the file: it runs the
tool's code anyway, under the tool's uid, so a hostile file can do nothing
the code could not. The warm host never loads it (it forks the snippet
first) and neither does the runner or the orchestrator, which treat the
file as opaque bytes of a hostile workspace.

Why cloudpickle and not dill: cloudpickle extends the C pickler (only
functions, classes and modules go through its Python reducers), so lists,
dicts and arrays serialise at the speed of :mod:`pickle`, and what it writes
loads with plain :func:`pickle.loads`; dill subclasses the pure-Python
pickler, several times slower on data. Functions and classes defined by the
snippet are kept by value, imported modules by name.

What cannot be kept (open files, sockets, threads, locks, generators,
anything that fails to serialise) is dropped and named; a namespace over the
cap is not written at all, and the message names its largest names.
Functions share the namespace they were defined in after a restore, as they
did before it: a function still sees a global redefined in a later call.
"""

from __future__ import annotations

import io
import os
import pickle
import sys

__all__ = [
    "STATE_ENV",
    "STATE_PATH",
    "SaveOutcome",
    "cap_from_env",
    "describe_size",
    "restore",
    "save",
]

TYPE_CHECKING = False  # typing itself costs start-up time in the sandbox
if TYPE_CHECKING:
    from typing import Any

STATE_ENV = "STOCKADE_PYTHON_STATE"
"""Set (to the size cap in bytes) when this call keeps its namespace; absent: a stateless call."""
STATE_DIR = os.path.join(".stockade", "python-state")
STATE_PATH = os.path.join(STATE_DIR, "namespace.pickle")
"""Relative to the working directory, the workspace."""
_MAGIC = b"stockade-python-state 1\n"
_TEMP_PREFIX = ".namespace-"
_LARGEST_NAMED = 3
_REASON_CHARS = 120
_KiB = 1024

_restored: bytes | None = None
"""The state file's bytes as this process restored them."""


def cap_from_env() -> int | None:
    """The state's size cap when this call is stateful, else None."""
    value = os.environ.get(STATE_ENV, "")
    return int(value) if value.isdigit() else None


def describe_size(size: int) -> str:
    """Bytes in words: ``812 B``, ``14.2 KiB``, ``3.0 MiB``."""
    if size < _KiB:
        return f"{size} B"
    if size < _KiB * _KiB:
        return f"{size / _KiB:.1f} KiB"
    return f"{size / (_KiB * _KiB):.1f} MiB"


def _main_namespace() -> dict[str, Any]:
    """At load: the namespace to fill, the running snippet's ``__main__``."""
    return sys.modules["__main__"].__dict__


class _Namespace(dict):  # type: ignore[type-arg]
    """The names to keep. A subclass, because the pickler offers plain dicts to no reducer."""


def _pickler_class() -> type:
    import cloudpickle  # noqa: PLC0415 - preloaded by the warm host; stateless calls never need it

    class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
        """cloudpickle, with ``__main__``'s namespace written as "the loader's ``__main__``".

        cloudpickle gives the functions it serialises by value a globals dict
        of their own; here the functions defined in ``__main__`` get the
        namespace being written instead, and that namespace loads into the
        new ``__main__``: after a restore they see its globals, as before.
        """

        def __init__(self, file: io.BytesIO, namespace: _Namespace, main: dict[str, Any]) -> None:
            super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
            self._namespace = namespace
            self._main = main
            self.globals_ref[id(main)] = namespace

        def reducer_override(self, obj: object) -> Any:
            if obj is self._namespace:
                return _main_namespace, (), None, None, iter(self._namespace.items())
            return super().reducer_override(obj)

        def _dynamic_function_reduce(self, func: Any) -> Any:
            # cloudpickle also stores the globals a function names beside it. For
            # a function of __main__ they are the namespace itself, restored as
            # __main__: what was kept is there, and what was not (an open file the
            # function uses) must not make the function unkeepable too. After a
            # restore the function finds such a name again once the code redefines it.
            reduced = super()._dynamic_function_reduce(func)
            try:
                _, slotstate = reduced[2]
                if func.__globals__ is self._main:
                    named = slotstate["__globals__"]
                    slotstate["__globals__"] = {k: named[k] for k in named if k in self._namespace}
            except (TypeError, ValueError, KeyError, IndexError):
                pass  # another cloudpickle's layout: its own behaviour stands
            return reduced

    return Pickler


def _dumps(namespace: _Namespace, main: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(_MAGIC)
    _pickler_class()(buffer, namespace, main).dump(namespace)
    return buffer.getvalue()


def _loads(data: memoryview) -> object:
    """``pickle.loads`` without the cyclic collector: what it makes is all alive anyway.

    Tens of thousands of new containers would otherwise set off collections
    that traverse them for nothing.
    """
    import gc  # noqa: PLC0415 - built in

    enabled = gc.isenabled()
    gc.disable()
    try:
        return pickle.loads(data)  # noqa: S301 - see the module doc
    finally:
        if enabled:
            gc.enable()


def _unkeepable(value: object) -> str | None:
    """Why ``value`` is certainly not kept, told from its type alone (no serialising)."""
    import types  # noqa: PLC0415 - loaded by the interpreter itself

    if isinstance(value, io.IOBase):
        return "open file" if not value.closed else "file object"
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        ((types.GeneratorType, types.AsyncGeneratorType), "generator"),
        (types.CoroutineType, "coroutine"),
        ((types.FrameType, types.TracebackType), "frame"),
    ]
    socket = sys.modules.get("socket")
    if socket is not None:
        kinds.append((socket.socket, "socket"))
    threading = sys.modules.get("threading")
    if threading is not None:
        kinds.append((threading.Thread, "thread"))
        kinds.append(((type(threading.Lock()), type(threading.RLock())), "lock"))
    for kind, words in kinds:
        if isinstance(value, kind):
            return words
    return None


def _reason(exc: BaseException) -> str:
    text = f"cannot be serialised ({type(exc).__name__}: {exc})"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 4] + "...)"


class SaveOutcome:
    """What :func:`save` did: names dropped and, if the namespace was not written, why."""

    __slots__ = ("error", "not_kept", "size")

    def __init__(self) -> None:
        self.not_kept: list[str] = []
        """``"name — why"`` for each name left out."""
        self.error: str | None = None
        """Why nothing was written (the previous state stays); None when it was."""
        self.size = 0
        """Bytes written."""


def _candidates(main: dict[str, Any], outcome: SaveOutcome) -> _Namespace:
    namespace = _Namespace()
    for name, value in main.items():
        if name.startswith("__") and name.endswith("__"):
            continue  # the interpreter's own (__builtins__, __name__, ...)
        why = _unkeepable(value)
        if why is None:
            namespace[name] = value
        else:
            outcome.not_kept.append(f"{name} — {why}")
    return namespace


def _each_alone(namespace: _Namespace, main: dict[str, Any]) -> dict[str, bytes | BaseException]:
    """Every name serialised on its own: its size, or why it fails. The slow path only."""
    found: dict[str, bytes | BaseException] = {}
    for name, value in namespace.items():
        try:
            found[name] = _dumps(_Namespace({name: value}), main)
        except Exception as exc:
            found[name] = exc
    return found


def _largest(alone: dict[str, bytes | BaseException]) -> str:
    sizes = sorted(
        ((len(data), name) for name, data in alone.items() if isinstance(data, bytes)),
        reverse=True,
    )
    return ", ".join(f"{name} ({describe_size(size)})" for size, name in sizes[:_LARGEST_NAMED])


def _write(root: str, data: bytes) -> None:
    directory = os.path.join(root, STATE_DIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = os.path.join(directory, f"{_TEMP_PREFIX}{os.getpid()}")
    with open(temporary, "wb") as file:
        file.write(data)
    os.replace(temporary, os.path.join(root, STATE_PATH))


def _clear_leftovers(root: str) -> None:
    """Temporary files of calls killed while writing (their containers are gone)."""
    directory = os.path.join(root, STATE_DIR)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(_TEMP_PREFIX):
            try:  # noqa: SIM105 - contextlib costs start-up time
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def save(main: dict[str, Any], cap: int, root: str) -> SaveOutcome:
    """Serialise ``main`` (a ``__main__`` namespace) to :data:`STATE_PATH` under ``root``.

    Written atomically. Names that cannot be kept are dropped and listed;
    over ``cap`` bytes nothing is written and the previous state stays.
    """
    outcome = SaveOutcome()
    namespace = _candidates(main, outcome)
    path = os.path.join(root, STATE_PATH)
    if not namespace:
        # Nothing to keep: no file at all (a stateless-looking call writes nothing).
        if os.path.exists(path):
            os.unlink(path)
        return outcome
    try:
        data = _dumps(namespace, main)
    except Exception:
        alone = _each_alone(namespace, main)
        for name, result in alone.items():
            if not isinstance(result, bytes):
                del namespace[name]
                outcome.not_kept.append(f"{name} — {_reason(result)}")
        try:
            data = _dumps(namespace, main)
        except Exception as exc:
            outcome.error = f"the namespace could not be saved: {_reason(exc)}"
            return outcome
    if len(data) > cap:
        outcome.error = (
            f"the namespace is {describe_size(len(data))}, over the cap of "
            f"{describe_size(cap)}; largest names: {_largest(_each_alone(namespace, main))}. "
            f"Delete or shrink them (del NAME), or write big data to files"
        )
        return outcome
    outcome.size = len(data)
    if data == _restored:
        # The file already holds exactly this: not rewriting it means it does not
        # travel back to the host either (the runner reports it unchanged).
        return outcome
    _clear_leftovers(root)
    _write(root, data)
    return outcome


def restore(main: dict[str, Any], root: str) -> str | None:
    """Load :data:`STATE_PATH` under ``root`` into ``main``, this process's ``__main__``.

    Returns None when it loaded or there was nothing to load, else why it did
    not (the call then starts with an empty namespace).
    """
    try:
        with open(os.path.join(root, STATE_PATH), "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"the saved namespace could not be read ({exc})"
    global _restored  # noqa: PLW0603 - one restore per snippet process
    _restored = data
    if not data.startswith(_MAGIC):
        return "the saved namespace is not in a format this SDK writes"
    try:
        loaded = _loads(memoryview(data)[len(_MAGIC) :])
    except BaseException as exc:
        _forget_names(main)
        return f"the saved namespace could not be restored ({type(exc).__name__}: {exc})"
    if loaded is not main:
        _forget_names(main)
        return "the saved namespace could not be restored (not a namespace)"
    return None


def _forget_names(main: dict[str, Any]) -> None:
    """Drop what a failed load put in ``main``; the interpreter's own names stay."""
    for name in [name for name in main if not (name.startswith("__") and name.endswith("__"))]:
        del main[name]
