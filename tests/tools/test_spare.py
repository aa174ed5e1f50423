"""The snippet process a warm host forks ahead of its call (``stockade_sdk._spare``), in a host of its own.

Each case runs in a fresh interpreter that makes itself a warm host
(``prepare_fork_start``), forks the spare and then does what the host does
with it; the in-container path is in ``test_tool_host.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

HOST = """
import json, os, signal, sys, time
from stockade_sdk import _snippet, _spare, process
def running(pid):  # neither gone nor a zombie (whose descriptors are closed)
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
def wait_until_ended(pid):
    give_up = time.monotonic() + 10
    while running(pid) and time.monotonic() < give_up:
        time.sleep(0.001)
_snippet.prepare_fork_start()
_spare.fork()
spare = _spare._spare.pid if _spare._spare else None
"""
WHO = (
    "import json, os\n"
    "print(json.dumps({'pid': os.getpid(), 'cwd': os.getcwd(), 'odd': os.environb.get(b'ODD', b'').hex(),\n"
    "                  'leader': os.getsid(0) == os.getpid(), 'stdin': os.read(0, 10).hex(),\n"
    "                  'fds': sorted(int(fd) for fd in os.listdir('/proc/self/fd'))}))\n"
)


def host(tmp_path: Path, script: str) -> dict[str, Any]:
    """Run ``script`` after HOST in a new interpreter in ``tmp_path``; its last line as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", HOST + textwrap.dedent(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_a_call_runs_in_the_spare_with_the_hosts_directory_and_environment_of_that_moment(
    tmp_path: Path,
) -> None:
    (tmp_path / "later").mkdir()
    found = host(
        tmp_path,
        f"""
        os.chdir("later")  # as the host takes the request's after the fork
        os.environb[b"ODD"] = b"\\xff\\xfe"  # bytes no codec decodes
        result = process.run_python({WHO!r}, 20)
        print(json.dumps({{"spare": spare, "result": result}}))
        """,
    )
    assert found["spare"] is not None
    snippet = json.loads(found["result"]["stdout"])
    assert snippet == {
        "pid": found["spare"],
        "cwd": str(tmp_path / "later"),
        "odd": "fffe",
        "leader": True,
        "stdin": "",
        "fds": [0, 1, 2, 3],  # 3: the listing's own descriptor
    }
    assert found["result"]["exit_code"] == 0, found


def test_a_spare_that_died_waiting_is_replaced_by_a_fork(tmp_path: Path) -> None:
    found = host(
        tmp_path,
        f"""
        os.kill(spare, signal.SIGKILL)
        # The kill is delivered asynchronously: until the spare is a zombie its
        # control pipe may still be open and take a call it will never run.
        wait_until_ended(spare)
        result = process.run_python({WHO!r}, 20)
        print(json.dumps({{"spare": spare, "result": result}}))
        """,
    )
    assert found["result"]["exit_code"] == 0, found
    snippet = json.loads(found["result"]["stdout"])
    assert snippet["pid"] != found["spare"]
    assert snippet["leader"] is True


def test_an_unused_spare_is_ended_and_reaped(tmp_path: Path) -> None:
    found = host(
        tmp_path,
        """
        _spare.discard()
        try:
            left = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            left = None
        print(json.dumps({"spare": spare, "left": left,
                          "gone": not os.path.exists(f"/proc/{spare}")}))
        """,
    )
    assert found == {"spare": found["spare"], "left": None, "gone": True}


def test_a_spare_whose_host_ends_exits_by_itself(tmp_path: Path) -> None:
    # A host killed before any call: the spare's control pipe closes, and
    # the spare ends instead of waiting (holding its pipes) forever.
    found = host(
        tmp_path,
        """
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # a host of its own, with its own spare, killed at once
            _spare._spare = None
            _spare.fork()
            os.write(write_end, str(_spare._spare.pid).encode())
            os.kill(os.getpid(), signal.SIGKILL)
        os.close(write_end)
        orphan = int(os.read(read_end, 32))
        os.waitpid(pid, 0)
        wait_until_ended(orphan)
        print(json.dumps({"orphan running": running(orphan)}))
        """,
    )
    assert found == {"orphan running": False}


def test_a_fork_that_fails_leaves_no_descriptor_and_the_call_says_why(tmp_path: Path) -> None:
    # The process limit reached: neither the spare nor the call's own fork can
    # be made. Nothing of either attempt stays open in the host, and the call
    # reports the failure instead of hanging on a pipe nobody writes.
    found = host(
        tmp_path,
        f"""
        _spare.discard()
        before = sorted(os.listdir("/proc/self/fd"))
        def refuse():
            raise BlockingIOError(11, "Resource temporarily unavailable")
        os.fork = refuse
        _spare.fork()
        try:
            process.run_python({WHO!r}, 20)
            said = None
        except OSError as exc:
            said = str(exc)
        after = sorted(os.listdir("/proc/self/fd"))
        print(json.dumps({{"spare": _spare._spare is not None, "said": said,
                          "leaked": sorted(set(after) - set(before))}}))
        """,
    )
    assert found == {
        "spare": False,
        "said": "[Errno 11] Resource temporarily unavailable",
        "leaked": [],
    }
