"""python.run keeps a run's namespace like a notebook, with every call in its own destroyed container.

Real containers throughout: the namespace travels as a file in the run's
workspace, written by one call's snippet process and loaded by the next
one's, never by the host. Figures come back as PNG files under ``outputs/``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from orchestrator.platform import Platform
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing.platform import open_test_platform
from orchestrator.tools import ToolCall, ToolStatus
from stockade_sdk import _state

pytestmark = pytest.mark.docker

# The engine bind-mounts each container's own hostname file: its path names the container.
CONTAINER_ID = """
import re
mounts = open("/proc/self/mountinfo").read()
print("container", re.search(r"/containers/([0-9a-f]{64})/hostname /etc/hostname ", mounts)[1])
"""


@pytest.fixture
async def platform(images: ImageBuilder, no_leaks: None, tmp_path: Path) -> AsyncIterator[Platform]:
    async with open_test_platform(
        tmp_path / "state",
        toolkits=("toolkits.files", "toolkits.python"),
        profiles={"default": {"pool_size": 1}},
    ) as opened:
        yield opened


async def python(
    platform: Platform, code: str, run_id: str | None = "r1", **arguments: Any
) -> dict[str, Any]:
    call = ToolCall(
        id="t",
        name="python.run",
        arguments={"code": textwrap.dedent(code), **arguments},
        run_id=run_id,
    )
    result = await platform.gateway.call(call)
    assert result.status is ToolStatus.OK, result
    output: dict[str, Any] = json.loads(result.output)
    return output


def state_file(platform: Platform, run_id: str) -> Path:
    return platform.config.workspaces_root / run_id / _state.STATE_PATH


def container_id(output: dict[str, Any]) -> str:
    found = re.search(r"^container ([0-9a-f]{64})$", output["stdout"], re.MULTILINE)
    assert found, output
    return found[1]


async def test_a_function_defined_in_one_call_is_used_in_the_next(
    platform: Platform, docker_client: docker.DockerClient
) -> None:
    first = await python(
        platform,
        CONTAINER_ID
        + textwrap.dedent(
            """
            def greet(name):
                return f"hello {name}, {suffix}"
            suffix = "from call one"
            """
        ),
    )
    assert first["exit_code"] == 0 and "state" not in first, first
    second = await python(platform, CONTAINER_ID + "suffix = 'redefined'\nprint(greet('two'))")
    assert second["stdout"].endswith("hello two, redefined\n"), second
    ids = container_id(first), container_id(second)
    assert ids[0] != ids[1], "each call in a container of its own"
    # Removal finishes after the result is back: wait for it, with a bound.
    deadline = time.monotonic() + 15
    for gone in ids:
        while True:
            try:
                docker_client.containers.get(gone)
            except docker.errors.NotFound:
                break
            assert time.monotonic() < deadline, f"container {gone} still exists"
            await asyncio.sleep(0.05)


async def test_state_is_kept_under_gvisor_too(
    images: ImageBuilder, no_leaks: None, tmp_path: Path
) -> None:
    async with open_test_platform(
        tmp_path, toolkits=("toolkits.python",), runtime="runsc", profiles={"default": {}}
    ) as platform:
        await python(
            platform, "import numpy as np\nsquares = np.arange(4) ** 2\nf = open('x', 'w')"
        )
        later = await python(platform, "squares.tolist()")
    assert later["stdout"] == "[0, 1, 4, 9]\n", later


async def test_numpy_arrays_instances_and_modules_survive(platform: Platform) -> None:
    await python(
        platform,
        """
        import numpy as np
        class Account:
            def __init__(self, owner, balances):
                self.owner, self.balances = owner, balances
            def total(self):
                return float(self.balances.sum())
        account = Account("ada", np.arange(5, dtype=np.float64) * 1.5)
        """,
    )
    second = await python(
        platform,
        """
        import sys
        print(account.owner, account.total(), np.__name__, type(account).__name__)
        print(isinstance(account, Account), account.balances.dtype)
        """,
    )
    assert second["stdout"] == "ada 15.0 numpy Account\nTrue float64\n", second


async def test_a_big_array_changed_in_place_is_kept_changed(platform: Platform) -> None:
    # 1 MiB of float64 travels out of band (raw bytes after the pickle) and is
    # restored into memory the array then owns: changing it in place must make
    # the next save differ from the file, never pass for the namespace restored.
    await python(platform, "import numpy as np\nbig = np.arange(131072, dtype=np.float64)")
    file = state_file(platform, "r1")
    assert file.read_bytes().startswith(b"stockade-python-state 2\n")
    assert file.stat().st_size > 131072 * 8, "the array's bytes are in the file"
    changed = await python(
        platform,
        """
        print(big.flags.writeable, big.flags.aligned, big.ctypes.data % 16)
        big[7] = -1.0
        big *= 2
        """,
    )
    assert changed["stdout"] == "True True 0\n", changed
    later = await python(
        platform, "print(big[7], big[8], big.sum() == 2 * (131072 * 131071 / 2 - 8))"
    )
    assert later["stdout"] == "-2.0 16.0 True\n", later
    unchanged = file.read_bytes()
    await python(platform, "print(big.shape)")
    assert file.read_bytes() == unchanged


async def test_a_namespace_saved_in_the_first_format_is_restored(platform: Platform) -> None:
    # Written by the earlier SDK: the pickle alone, every buffer in band. Built
    # here with the SDK's own pickler (the test writes it; the host never loads it).
    namespace = _state._Namespace({"answer": 41, "words": ["a", "b"]})
    stream = io.BytesIO()
    _state._pickler_class()(stream, namespace, {}, None).dump(namespace)
    await python(platform, "seed = 1")  # creates the run's workspace
    state_file(platform, "r1").write_bytes(_state._MAGIC_IN_BAND + stream.getvalue())
    output = await python(platform, "print(answer + 1, words, 'seed' in globals())")
    assert output["stdout"] == "42 ['a', 'b'] False\n", output


async def test_a_state_file_cut_short_is_reported_and_the_call_starts_empty(
    platform: Platform,
) -> None:
    await python(platform, "import numpy as np\nbig = np.ones(131072)\nkept = 1")
    file = state_file(platform, "r1")
    file.write_bytes(file.read_bytes()[:-100])  # its last buffer cut
    output = await python(platform, "print('kept' in globals())")
    assert output["stdout"] == "False\n", output
    assert output["state"].startswith("the saved namespace is cut short"), output


MODULES_LOADED = "import sys\nprint([n for n in ('numpy', 'cloudpickle') if n in sys.modules])"


async def test_numpy_is_loaded_before_the_call(
    images: ImageBuilder, no_leaks: None, tmp_path: Path
) -> None:
    async with open_test_platform(
        tmp_path / "state", toolkits=("toolkits.python",), profiles={}, warm=True
    ) as warmed:
        output = await python(warmed, MODULES_LOADED, run_id=None)
        # The snippet's parent is the host: numpy's OpenBLAS started no thread
        # beyond the one the profile's CPU quota (1) allows, whatever the cores.
        threads = await python(
            warmed,
            "import os\n"
            "status = open(f'/proc/{os.getppid()}/status').read().split('\\n')\n"
            "print([line for line in status if line.startswith('Threads:')], "
            "os.environ['OMP_NUM_THREADS'])",
            run_id=None,
        )
    assert output["stdout"] == "['numpy', 'cloudpickle']\n", (
        "the warm host imported numpy (the default preload) and the state serialiser"
    )
    assert threads["stdout"] == "['Threads:\\t1'] 1\n", threads


async def test_a_container_a_call_waits_for_skips_the_optional_preloads(
    images: ImageBuilder, no_leaks: None, tmp_path: Path
) -> None:
    # No pool: every call waits for a container started for it. Its host
    # imports neither numpy nor the serialiser; a kept namespace holding a
    # numpy array is saved and restored all the same (the snippet imports them).
    async with open_test_platform(
        tmp_path / "state", toolkits=("toolkits.python",), profiles={"default": {"pool_size": 0}}
    ) as opened:
        assert (await python(opened, MODULES_LOADED, run_id=None))["stdout"] == "[]\n"
        # Nor pickle: a stateless call never needs it.
        stateless = "import sys\nprint('pickle' in sys.modules)"
        assert (await python(opened, stateless, run_id=None))["stdout"] == "False\n"
        await python(opened, "import numpy as np\nkept = np.arange(3)")
        saved = state_file(opened, "r1").read_bytes()
        output = await python(opened, "print(kept.sum())")
        # numpy came from the snippet's import, then from the restore: the same
        # bytes all the same, so the unchanged namespace is not written again.
        assert state_file(opened, "r1").read_bytes() == saved
    assert output["stdout"] == "3\n", output


async def test_what_cannot_be_kept_is_dropped_and_named(platform: Platform) -> None:
    first = await python(
        platform,
        """
        import threading
        log = open("log.txt", "w")
        squares = (i * i for i in range(3))
        lock = threading.Lock()
        kept = [1, 2, 3]
        def note(text):
            return log.write(text)
        """,
    )
    assert first["exit_code"] == 0, first
    assert sorted(first["not_kept"]) == [
        "lock — lock",
        "log — open file",
        "squares — generator",
    ], first
    second = await python(
        platform, "print(kept, [n for n in ('log', 'squares', 'lock') if n in dir()])"
    )
    assert second["stdout"] == "[1, 2, 3] []\n", second
    # A function using a name that was not kept is kept; it works once the name is back.
    third = await python(platform, "log = open('log.txt', 'a')\nnote('again')")
    assert third["stdout"] == "5\n", third


async def test_state_over_the_cap_is_refused_with_its_biggest_names(
    images: ImageBuilder, no_leaks: None, tmp_path: Path
) -> None:
    profile = {"pool_size": 1, "python_state_mb": 1}
    async with open_test_platform(
        tmp_path, toolkits=("toolkits.python",), profiles={"default": profile}
    ) as platform:
        await python(platform, "small = 'kept'")
        before = state_file(platform, "r1").read_bytes()
        over = await python(
            platform, "blob = bytes(3_000_000)\nmedium = list(range(100_000))\nsmall = 'changed'"
        )
        message = over["state"]
        assert "over the cap of 1.0 MiB" in message, over
        assert "largest names: blob (2.9 MiB), medium (" in message, over
        assert "the previous state is kept" in message, over
        assert state_file(platform, "r1").read_bytes() == before
        after = await python(platform, "print(small, 'blob' in dir())")
        assert after["stdout"] == "kept False\n", after


async def test_reset_starts_from_an_empty_namespace(platform: Platform) -> None:
    await python(platform, "x = 1")
    fresh = await python(platform, "print(sorted(n for n in dir() if n[0] != '_'))", reset=True)
    assert fresh["stdout"] == "[]\n", fresh
    # The reset call kept nothing: the next one starts empty too.
    later = await python(platform, "print('x' in dir())")
    assert later["stdout"] == "False\n", later


async def test_two_runs_do_not_see_each_others_names(platform: Platform) -> None:
    await python(platform, "secret = 'run one'", run_id="one")
    await python(platform, "mine = 'run two'", run_id="two")
    one = await python(platform, "print(sorted(n for n in dir() if n[0] != '_'))", run_id="one")
    two = await python(platform, "print(sorted(n for n in dir() if n[0] != '_'))", run_id="two")
    assert (one["stdout"], two["stdout"]) == ("['secret']\n", "['mine']\n")


async def test_stateless_calls_neither_restore_nor_keep(
    platform: Platform, images: ImageBuilder, no_leaks: None, tmp_path: Path
) -> None:
    await python(platform, "x = 1")
    alone = await python(platform, "print('x' in dir())\ny = 2", stateless=True)
    assert alone["stdout"] == "False\n", alone
    assert (await python(platform, "print('x' in dir(), 'y' in dir())"))["stdout"] == (
        "True False\n"
    )
    # A call with no run has no workspace that lasts: stateless.
    await python(platform, "z = 1", run_id=None)
    assert (await python(platform, "print('z' in dir())", run_id=None))["stdout"] == "False\n"
    # A profile can make every call stateless.
    profile = {"pool_size": 0, "python_state": False}
    async with open_test_platform(
        tmp_path / "stateless", toolkits=("toolkits.python",), profiles={"default": profile}
    ) as other:
        await python(other, "x = 1")
        assert (await python(other, "print('x' in dir())"))["stdout"] == "False\n"
        assert not state_file(other, "r1").exists()


async def test_a_timeout_keeps_the_previous_state_and_says_so(platform: Platform) -> None:
    await python(platform, "x = 'before'")
    slow = await python(platform, "x = 'during'\nimport time\ntime.sleep(30)", timeout_s=1.0)
    assert slow["killed"] == "timed out after 1 s", slow
    assert slow["state"].startswith("not saved: the snippet ended before"), slow
    assert "starts from the namespace this call started with" in slow["state"]
    after = await python(platform, "print(x)")
    assert after["stdout"] == "before\n", after


async def test_a_reset_call_killed_still_forgets_the_namespace(platform: Platform) -> None:
    """The result says the next call starts from what this one started with: empty, as
    asked. The kept file was left as it was, and the next call found the old names."""
    await python(platform, "secret = 41")
    slow = await python(platform, "import time\ntime.sleep(30)", timeout_s=1.0, reset=True)
    assert "starts from the namespace this call started with" in slow["state"], slow
    after = await python(platform, "print(sorted(n for n in dir() if n[0] != '_'))")
    assert after["stdout"] == "[]\n", after


async def test_an_oom_kill_keeps_the_previous_state_and_says_so(
    images: ImageBuilder, no_leaks: None, tmp_path: Path
) -> None:
    async with open_test_platform(
        tmp_path, toolkits=("toolkits.python",), profiles={"default": {"memory_mb": 128}}
    ) as platform:
        await python(platform, "x = 'before'")
        killed = await python(platform, "x = 'during'\nhog = b'x' * (400 << 20)")
        assert killed["killed"] == "out of memory (limit 128 MiB)", killed
        assert killed["state"].startswith("not saved: the snippet ended before"), killed
        assert (await python(platform, "x"))["stdout"] == "'before'\n"


async def test_an_exception_still_saves(platform: Platform) -> None:
    # Saved into the workspace, wherever the snippet went meanwhile.
    failed = await python(platform, "import os\nos.chdir('/tmp')\nx = 41\nraise ValueError('boom')")
    assert failed["exit_code"] == 1 and "ValueError: boom" in failed["stderr"], failed
    assert (await python(platform, "x + 1"))["stdout"] == "42\n"


async def test_a_trailing_expression_is_shown_as_a_repl_shows_it(platform: Platform) -> None:
    shown = await python(platform, "x = {'a': [1, 2]}\nx", run_id=None)
    assert shown["stdout"] == "{'a': [1, 2]}\n", shown
    hidden = await python(platform, "print('only this')\nNone", run_id=None)
    assert hidden["stdout"] == "only this\n", hidden
    text = await python(platform, "'quoted'", run_id=None)
    assert text["stdout"] == "'quoted'\n", text


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG whose pixel data really decodes (RGBA, 8 bits)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        chunks[kind] = chunks.get(kind, b"") + data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 6), "8-bit RGBA"
    pixels = zlib.decompress(chunks[b"IDAT"])
    assert len(pixels) == height * (1 + width * 4), "one filter byte and the row's pixels"
    return width, height


async def test_figures_are_saved_as_png_of_their_drawn_size(platform: Platform) -> None:
    output = await python(
        platform,
        """
        import matplotlib.pyplot as plt
        plt.figure(figsize=(4, 3), dpi=50)
        plt.plot([1, 3, 2])
        plt.show()
        fig, ax = plt.subplots(figsize=(2, 2), dpi=40)
        ax.bar(["a", "b"], [3, 5])
        """,
    )
    assert output["exit_code"] == 0 and output["stderr"] == "", output
    assert output["figures"] == ["outputs/figure-1.png", "outputs/figure-2.png"], output
    workspace = platform.config.workspaces_root / "r1"
    assert png_size((workspace / "outputs" / "figure-1.png").read_bytes()) == (200, 150)
    assert png_size((workspace / "outputs" / "figure-2.png").read_bytes()) == (80, 80)
    # A later call's figure gets the next free name; the kept `fig` is still drawable.
    again = await python(platform, "fig.savefig('outputs/again.png')\nplt.plot([1])\nNone")
    assert again["figures"] == ["outputs/figure-3.png"], again
    assert png_size((workspace / "outputs" / "again.png").read_bytes()) == (80, 80)


class _MakeMarker:
    """A pickle whose load creates a directory: planted where the host must never load it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (str(self.marker),)


async def test_a_hostile_state_file_is_never_loaded_by_the_host(
    platform: Platform, tmp_path: Path
) -> None:
    marker = tmp_path / "host-loaded-the-state"
    planted = state_file(platform, "hostile")
    planted.parent.mkdir(parents=True)
    hostile = b"stockade-python-state 1\n" + pickle.dumps({"x": _MakeMarker(marker)})
    planted.write_bytes(hostile)
    # Every host-side path a workspace takes: sent out, read back, its files listed and read.
    read = await platform.gateway.call(
        ToolCall(id="t", name="files.read", arguments={"path": _state.STATE_PATH}, run_id="hostile")
    )
    assert read.status is ToolStatus.OK, read
    output = await python(platform, "print('ran')", run_id="hostile")
    assert output["stdout"] == "ran\n", output
    # The snippet's process, in the sandbox, is the only loader: there the path does not exist.
    assert "could not be restored (FileNotFoundError" in output["state"], output
    # A snippet can write any bytes as its "state": still nothing on the host loads them.
    rewrite = f"open({_state.STATE_PATH!r}, 'wb').write(bytes.fromhex({hostile.hex()!r}))\nNone"
    await python(platform, rewrite, run_id="hostile", stateless=True)
    assert planted.read_bytes() == hostile
    assert not marker.exists(), "the host unpickled the workspace's state file"


def test_tools_call_with_a_workspace_keeps_state_and_without_one_does_not(
    images: ImageBuilder, no_leaks: None, tmp_path: Path
) -> None:
    def stockade(code: str, *where: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "tools", "call", "--json", "python.run",
             "--args", json.dumps({"code": code}), *where],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "STOCKADE_TOOLKITS": ""},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        output: dict[str, Any] = json.loads(json.loads(done.stdout)["output"])
        return output

    workspace = tmp_path / "ws"
    stockade("def double(x):\n    return 2 * x", "--workspace", str(workspace))
    assert (workspace / _state.STATE_PATH).is_file()
    assert stockade("double(21)", "--workspace", str(workspace))["stdout"] == "42\n"
    stockade("y = 1")
    assert "NameError" in stockade("y")["stderr"], "no workspace: stateless"


@pytest.mark.parametrize(
    ("preload", "loaded"),
    [(None, {"numpy": True, "fractions": False}), ([], {"numpy": False, "fractions": False}),
     (["fractions"], {"numpy": False, "fractions": True})],
)  # fmt: skip
async def test_the_profiles_preload_list_is_what_the_host_imports_before_the_call(
    images: ImageBuilder,
    no_leaks: None,
    tmp_path: Path,
    preload: list[str] | None,
    loaded: dict[str, bool],
) -> None:
    profile: dict[str, Any] = {"pool_size": 1}
    if preload is not None:
        profile["python_preload"] = preload
    async with open_test_platform(
        tmp_path / "state", toolkits=("toolkits.python",), profiles={"default": profile}, warm=True
    ) as opened:
        # Forked from the warm host: what it imported is in sys.modules before the snippet's
        # first line (the SDK itself imports neither module).
        output = await python(
            opened,
            "import sys\nprint(sorted(n for n in ('numpy', 'fractions') if n in sys.modules))",
            run_id=None,
        )
    assert output["stdout"] == f"{sorted(name for name, yes in loaded.items() if yes)}\n"
