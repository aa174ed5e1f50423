"""``stockade tools call`` writes a call's artifacts to a directory it prints (real containers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import PNG_WRITER, png

pytestmark = pytest.mark.docker

CODE = (
    PNG_WRITER
    + """
import os
os.makedirs("outputs/plots", exist_ok=True)
open("outputs/plots/chart.png", "wb").write(png(5, 4))
open("outputs/report.csv", "w").write("a,b\\n1,2\\n")
"""
)


def stockade(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "STOCKADE_HOME": str(home)},
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_tools_call_writes_artifacts_and_prints_the_directory(
    tmp_path: Path, images: object
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    arguments = tmp_path / "args.json"
    arguments.write_text(json.dumps({"code": CODE}))
    target = tmp_path / "out"
    done = stockade(
        "tools", "call", "python.run", "--json", "--args", f"@{arguments}",
        "--workspace", str(tmp_path / "ws"), "--artifacts-dir", str(target), home=home, cwd=cwd,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {a["name"]: a["media_type"] for a in result["artifacts"]} == {
        "plots/chart.png": "image/png",
        "report.csv": "text/csv",
    }
    assert f"artifacts written to {target}" in done.stderr
    assert (target / "plots" / "chart.png").read_bytes() == png(5, 4)
    assert (target / "report.csv").read_text() == "a,b\n1,2\n"
    # The outputs stay in the workspace as well.
    assert (tmp_path / "ws" / "outputs" / "report.csv").exists()

    # By default: a new directory under the current one, named after the call.
    again = stockade(
        "tools", "call", "python.run", "--args", "@" + str(arguments),
        "--run-id", "r2", home=home, cwd=cwd,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    (line,) = [ln for ln in again.stderr.splitlines() if ln.startswith("artifacts written to ")]
    written = Path(line.removeprefix("artifacts written to "))
    assert written.parent == cwd / "stockade-artifacts"
    assert written.name.startswith("cli-")
    assert (written / "plots" / "chart.png").read_bytes() == png(5, 4)
    assert "artifact: plots/chart.png, image/png" in again.stderr
    # The same directory again: nothing is overwritten, the command says why.
    clash = stockade(
        "tools", "call", "python.run", "--args", "@" + str(arguments),
        "--run-id", "r3", "--artifacts-dir", str(target), home=home, cwd=cwd,
    )  # fmt: skip
    assert clash.returncode != 0
    assert "cannot write artifact" in clash.stderr and "exists" in clash.stderr
