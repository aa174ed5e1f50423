"""Workspace.apply killed at every line it executes: the workspace is the whole old or new tree.

A child process (single-threaded, so it may fork) applies one call's changes
to a workspace over and over; each time a forked grandchild traces the lines
of the workspace's modules it executes and SIGKILLs itself at the N-th, for
every N up to the number a full apply takes. After each kill the workspace is
opened again (which finishes or removes what a kill left beside it) and must
hold exactly the old content or exactly the new one, with nothing left beside
it, in the same directory (its inode is kept: the changes are written in
place). The call changes files, removes some, turns a file into a directory
and a directory into a file, and takes the place of one of the user's links
while another stays.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import json, os, shutil, signal, sys
from pathlib import Path, PurePosixPath
import orchestrator.sandbox._journal as journal
import orchestrator.sandbox._plan as plan
import orchestrator.sandbox.workspace as ws
from orchestrator.sandbox._archive import KEPT, SafeWorkspace

root = Path(sys.argv[1])
base = root / "r1"
OLD_FILES = {"keep.txt": b"kept", "a.txt": b"old a", "sub/b.txt": b"old b",
             "f2d": b"a file, then a directory", "d2f/x.txt": b"in a directory, then gone"}
NEW = {"keep.txt": ("file", b"kept"), "a.txt": ("file", b"new a"), "sub": ("dir",),
       "sub/c.txt": ("file", b"new c"), "d": ("dir",), "d/e.txt": ("file", b"new e"),
       "f2d": ("dir",), "f2d/y.txt": ("file", b"y"), "d2f": ("file", b"now a file"),
       "taken": ("file", b"the call's"), "link": ("link", "keep.txt")}

def reset():
    shutil.rmtree(root, ignore_errors=True)
    for name, data in OLD_FILES.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (base / "empty").mkdir()
    (base / "link").symlink_to("keep.txt")
    (base / "taken").symlink_to("a.txt")

def content():
    found = {}
    for path in sorted(base.rglob("*")):
        name = str(path.relative_to(base))
        if path.is_symlink():
            found[name] = ("link", os.readlink(path))
        elif path.is_dir():
            found[name] = ("dir",)
        else:
            found[name] = ("file", path.read_bytes())
    return found

def apply():
    workspace = ws.WorkspaceManager(root).open("r1")
    sent = workspace.outgoing(max_bytes=1 << 20, max_files=100)
    entries = {PurePosixPath(name): KEPT if name == "keep.txt" else
               None if value == ("dir",) else value[1]
               for name, value in NEW.items() if value[0] != "link"}
    workspace.apply(SafeWorkspace(entries=entries), sent)

def traced(limit):
    count = 0
    targets = {ws.__file__, journal.__file__, plan.__file__}
    def tracer(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename not in targets:
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

def inodes():
    return base.stat().st_ino, (base / "keep.txt").stat().st_ino

reset()
OLD, before = content(), inodes()
total = traced(10**9)
assert content() == NEW, content()
assert inodes() == before
seen = {"old": 0, "new": 0}
for limit in range(1, total + 1):
    reset()
    before = inodes()
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
    assert inodes() == before, limit
    left = sorted(p.name for p in root.iterdir())
    assert left == ["r1"], (limit, left)  # no lock file: it exists only while held
print(json.dumps({"lines": total, **seen}))
"""


def test_a_kill_at_any_line_of_apply_leaves_the_old_or_the_new_tree(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "workspaces")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["lines"] > 100, report
    # Killed before the commit the old tree stays; after it, the next opening finishes it.
    assert report["old"] > 0 and report["new"] > 0, report
