"""Workspace.apply killed at every line it executes: the workspace is the whole old or new tree.

A child process (single-threaded, so it may fork) applies one call's changes
to a workspace over and over; each time a forked grandchild traces the lines
of ``orchestrator/sandbox/workspace.py`` it executes and SIGKILLs itself at
the N-th, for every N up to the number a full apply takes. After each kill
the workspace is opened again (which recovers what a kill left beside it) and
must hold exactly the old content or exactly the new one, with nothing left
beside it. Run both with the atomic exchange and with the two-rename fallback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_CHILD = r"""
import json, os, shutil, signal, sys
from pathlib import Path, PurePosixPath
import orchestrator.sandbox.workspace as ws
from orchestrator.sandbox._archive import KEPT, SafeWorkspace

root, fallback = Path(sys.argv[1]), sys.argv[2] == "fallback"
if fallback:
    ws._exchange = lambda first, second: False
OLD = {"keep.txt": b"kept", "a.txt": b"old a", "sub/b.txt": b"old b"}
NEW = {"keep.txt": b"kept", "a.txt": b"new a", "sub/c.txt": b"new c", "d/e.txt": b"new e"}

def reset():
    shutil.rmtree(root, ignore_errors=True)
    for name, data in OLD.items():
        path = root / "r1" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

def content():
    base = root / "r1"
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

def apply():
    manager = ws.WorkspaceManager(root)
    workspace = manager.open("r1")
    sent = workspace.outgoing(max_bytes=1 << 20, max_files=100)
    entries = {PurePosixPath("keep.txt"): KEPT, PurePosixPath("sub"): None,
               PurePosixPath("d"): None}
    entries.update({PurePosixPath(k): v for k, v in NEW.items() if k != "keep.txt"})
    workspace.apply(SafeWorkspace(entries=entries), sent)

def traced(limit):
    count = 0
    target = ws.__file__
    def tracer(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename != target:
            return None
        if event == "line":
            count += 1
            if count == limit:
                os.kill(os.getpid(), signal.SIGKILL)
        return tracer
    sys.settrace(tracer)
    apply()
    sys.settrace(None)
    return count

reset()
total = traced(10**9)
assert content() == NEW, content()
seen = {"old": 0, "new": 0}
for limit in range(1, total + 1):
    reset()
    pid = os.fork()
    if pid == 0:
        traced(limit)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert killed or limit == total + 1, (limit, status)
    ws.WorkspaceManager(root).open("r1")  # recovery
    now = content()
    assert now in (OLD, NEW), (limit, now)
    seen["old" if now == OLD else "new"] += 1
    left = sorted(p.name for p in root.iterdir())
    assert left == ["r1"], (limit, left)  # no lock file: it exists only while held
print(json.dumps({"lines": total, **seen}))
"""


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_a_kill_at_any_line_of_apply_leaves_the_old_or_the_new_tree(
    tmp_path: Path, mode: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "workspaces"), mode],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["lines"] > 40, report
    # Killed early the old tree stays; killed after the swap the new one is there.
    assert report["old"] > 0 and report["new"] > 0, report
