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

The file: a header, the pickle (protocol 5), then the big binary buffers
(numpy arrays' data, bytearrays of 64 KiB or more) out of band, each as raw
bytes. Out of band, an array's bytes are written straight from its memory
and loaded back as one read into memory the new array then uses, instead of
being copied into the pickle stream and out of it again (two copies each
way, and a 100 MB array's pickle stream regrown as it is written). Whether
the namespace changed is told by comparing what would be written with the
file as it is now (a read, no copy kept), so an array changed in place is
never mistaken for the one restored.
"""

from __future__ import annotations

import io
import os
import sys
import types

__all__ = [
    "STATE_ENV",
    "STATE_PATH",
    "SaveOutcome",
    "cap_from_env",
    "describe_size",
    "forget",
    "restore",
    "save",
]

TYPE_CHECKING = False  # typing itself costs start-up time in the sandbox
if TYPE_CHECKING:
    import pickle  # imported where used: python.run imports this module for every call
    from typing import Any

STATE_ENV = "STOCKADE_PYTHON_STATE"
"""Set (to the size cap in bytes) when this call keeps its namespace; absent: a stateless call."""
STATE_DIR = os.path.join(".stockade", "python-state")
STATE_PATH = os.path.join(STATE_DIR, "namespace.pickle")
"""Relative to the working directory, the workspace."""
_MAGIC_IN_BAND = b"stockade-python-state 1\n"
"""The first format: the pickle alone, every buffer in band (still restored)."""
_MAGIC = b"stockade-python-state 2\n"
"""Then: the pickle's size (8 bytes), the buffer count (4), each buffer's size (8 each),
the pickle, and each buffer at an offset that is a multiple of :data:`_ALIGN`."""
_OUT_OF_BAND_MIN = 64 * 1024
"""Smaller buffers stay in the pickle: a separate part costs more than it saves."""
_ALIGN = 64
_COMPARE_CHUNK = 1 << 16
_TEMP_PREFIX = ".namespace-"
_LARGEST_NAMED = 3
_REASON_CHARS = 120
_KiB = 1024


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


def _import_module(name: str) -> Any:
    """At load: a kept module, imported under its name as an interned string.

    A module's ``__name__`` is the very string it was imported by, and the
    pickler shares one entry among identical string objects only: a namespace
    whose ``numpy`` came from ``import numpy`` (an interned constant) and the
    same namespace after a restore (a name read from the file) would pickle to
    different bytes, and an unchanged namespace would be written again.
    Interned, every import path names it with the same object (the warm host
    interns its preloads too).
    """
    import importlib  # noqa: PLC0415 - only a namespace that holds a module needs it

    return importlib.import_module(sys.intern(name))


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

        def __init__(
            self,
            file: io.BytesIO,
            namespace: _Namespace,
            main: dict[str, Any],
            buffer_callback: Any,
        ) -> None:
            super().__init__(file, protocol=5, buffer_callback=buffer_callback)
            self._namespace = namespace
            self._main = main
            self.globals_ref[id(main)] = namespace

        def reducer_override(self, obj: object) -> Any:
            if obj is self._namespace:
                return _main_namespace, (), None, None, iter(self._namespace.items())
            if isinstance(obj, types.ModuleType) and _importable(obj):
                return _import_module, (obj.__name__,)
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


def _importable(module: types.ModuleType) -> bool:
    """Whether ``module`` is kept by name (else cloudpickle decides: by value, or not at all)."""
    name = getattr(module, "__name__", None)
    return isinstance(name, str) and name != "__main__" and sys.modules.get(name) is module


def _dumps(namespace: _Namespace, main: dict[str, Any]) -> list[bytes | memoryview]:
    """The state file's content, in parts: header and pickle, then padding and buffer, each."""
    buffers: list[memoryview] = []

    def in_band(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()  # numpy hands out contiguous buffers only
        if raw.nbytes < _OUT_OF_BAND_MIN:
            return True
        buffers.append(raw)
        return False

    stream = io.BytesIO()
    _pickler_class()(stream, namespace, main, in_band).dump(namespace)
    data = stream.getvalue()
    header = bytearray(_MAGIC)
    header += len(data).to_bytes(8, "big") + len(buffers).to_bytes(4, "big")
    for raw in buffers:
        header += raw.nbytes.to_bytes(8, "big")
    parts: list[bytes | memoryview] = [bytes(header), data]
    offset = len(header) + len(data)
    for raw in buffers:
        padding = -offset % _ALIGN
        parts += [b"\0" * padding, raw]
        offset += padding + raw.nbytes
    return parts


def _size(parts: list[bytes | memoryview]) -> int:
    return sum(len(part) if isinstance(part, bytes) else part.nbytes for part in parts)


def _loads(data: memoryview, buffers: list[memoryview] | None = None) -> object:
    """``pickle.loads`` without the cyclic collector: what it makes is all alive anyway.

    Tens of thousands of new containers would otherwise set off collections
    that traverse them for nothing.
    """
    import gc  # noqa: PLC0415 - built in
    import pickle  # noqa: PLC0415 - 2 ms: only a call that restores a namespace needs it

    enabled = gc.isenabled()
    gc.disable()
    try:
        return pickle.loads(data, buffers=buffers)  # noqa: S301 - see the module doc
    finally:
        if enabled:
            gc.enable()


def _read_state(path: str) -> tuple[memoryview, list[memoryview] | None] | str:
    """The pickle and its out-of-band buffers from the file at ``path``, or what is wrong.

    The buffers are views of one bytearray read once: the arrays restored
    from them use that memory as their own (writable, like any array's).
    The bytearray starts at the first buffer, so each buffer sits at a
    multiple of :data:`_ALIGN` in it: aligned in memory as numpy wants.
    """
    with open(path, "rb", buffering=0) as file:
        magic = file.read(len(_MAGIC))
        if magic == _MAGIC_IN_BAND:
            return memoryview(file.readall()), None
        if magic != _MAGIC:
            return "the saved namespace is not in a format this SDK writes"
        fixed = file.read(12)
        size, count = int.from_bytes(fixed[:8], "big"), int.from_bytes(fixed[8:12], "big")
        if len(fixed) != 12 or size + 8 * count > os.fstat(file.fileno()).st_size:
            return "the saved namespace is cut short"  # never read past what is there
        sizes_raw = file.read(8 * count)
        sizes = [int.from_bytes(sizes_raw[i : i + 8], "big") for i in range(0, len(sizes_raw), 8)]
        data = file.read(size)
        offset = len(_MAGIC) + len(fixed) + len(sizes_raw) + len(data)
        if not count:
            return memoryview(data), []
        file.seek(offset + -offset % _ALIGN)
        rest = bytearray(max(0, os.fstat(file.fileno()).st_size - file.tell()))
        view = memoryview(rest)
        got = 0
        while got < len(rest) and (count_read := file.readinto(view[got:])):
            got += count_read
    buffers = []
    at = 0
    for length in sizes:
        at += -at % _ALIGN
        if at + length > got:
            return "the saved namespace is cut short"
        buffers.append(view[at : at + length])
        at += length
    return memoryview(data), buffers


def _same_as_file(path: str, parts: list[bytes | memoryview]) -> bool:
    """Whether the file at ``path`` holds exactly ``parts`` (read in chunks, nothing kept)."""
    try:
        with open(path, "rb", buffering=0) as file:
            if os.fstat(file.fileno()).st_size != _size(parts):
                return False
            chunk = bytearray(_COMPARE_CHUNK)
            for part in parts:
                view = memoryview(part)
                for start in range(0, len(view), _COMPARE_CHUNK):
                    piece = view[start : start + _COMPARE_CHUNK]
                    got = bytearray(len(piece)) if len(piece) < len(chunk) else chunk
                    if file.readinto(got) != len(piece) or got != piece:
                        return False
    except OSError:
        return False
    return True


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


def _each_alone(namespace: _Namespace, main: dict[str, Any]) -> dict[str, int | BaseException]:
    """Every name serialised on its own: its size, or why it fails. The slow path only."""
    found: dict[str, int | BaseException] = {}
    for name, value in namespace.items():
        try:
            found[name] = _size(_dumps(_Namespace({name: value}), main))
        except Exception as exc:
            found[name] = exc
    return found


def _largest(alone: dict[str, int | BaseException]) -> str:
    sizes = sorted(
        ((size, name) for name, size in alone.items() if isinstance(size, int)),
        reverse=True,
    )
    return ", ".join(f"{name} ({describe_size(size)})" for size, name in sizes[:_LARGEST_NAMED])


def _write(root: str, parts: list[bytes | memoryview]) -> None:
    directory = os.path.join(root, STATE_DIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = os.path.join(directory, f"{_TEMP_PREFIX}{os.getpid()}")
    with open(temporary, "wb", buffering=0) as file:
        for part in parts:
            view = memoryview(part)
            while view:  # straight from the array's memory
                view = view[file.write(view) :]
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
        parts = _dumps(namespace, main)
    except Exception:
        alone = _each_alone(namespace, main)
        for name, result in alone.items():
            if not isinstance(result, int):
                del namespace[name]
                outcome.not_kept.append(f"{name} — {_reason(result)}")
        try:
            parts = _dumps(namespace, main)
        except Exception as exc:
            outcome.error = f"the namespace could not be saved: {_reason(exc)}"
            return outcome
    size = _size(parts)
    if size > cap:
        outcome.error = (
            f"the namespace is {describe_size(size)}, over the cap of "
            f"{describe_size(cap)}; largest names: {_largest(_each_alone(namespace, main))}. "
            f"Delete or shrink them (del NAME), or write big data to files"
        )
        return outcome
    outcome.size = size
    if _same_as_file(path, parts):
        # The file already holds exactly this: not rewriting it means it does not
        # travel back to the host either (the runner reports it unchanged).
        return outcome
    _clear_leftovers(root)
    _write(root, parts)
    return outcome


def forget(root: str) -> None:
    """Delete the namespace kept under ``root`` (if any): the next restore finds none.

    A kept file that cannot be deleted (a directory stands there) is left to
    :func:`save`, which says why it cannot write either.
    """
    try:  # noqa: SIM105 - contextlib costs start-up time
        os.unlink(os.path.join(root, STATE_PATH))
    except OSError:
        pass


def restore(main: dict[str, Any], root: str) -> str | None:
    """Load :data:`STATE_PATH` under ``root`` into ``main``, this process's ``__main__``.

    Returns None when it loaded or there was nothing to load, else why it did
    not (the call then starts with an empty namespace).
    """
    try:
        read = _read_state(os.path.join(root, STATE_PATH))
    except FileNotFoundError:
        return None
    except (OSError, MemoryError) as exc:
        return f"the saved namespace could not be read ({type(exc).__name__}: {exc})"
    if isinstance(read, str):
        return read
    try:
        loaded = _loads(*read)
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
