"""Artifacts from real containers: outputs/ files come back typed from their bytes, within caps."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.platform import Platform
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.tools import ToolCall, ToolResult, ToolStatus

from .helpers import PNG_WRITER, png, png_size

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

# Caps small enough to break: 3 a call, ~30 KiB a file, ~50 KiB a run.
CONFIG = """\
state_dir: {state}
toolkits: [toolkits.python]
artifacts: {{max_per_call: 3, max_file_mb: 0.03, run_quota_mb: 0.05}}
"""

WRITE_OUTPUTS = (
    PNG_WRITER
    + """
import os
os.makedirs("outputs", exist_ok=True)
open("outputs/report.csv", "w").write("city,temp\\nOslo,3\\nLima,19\\n")
open("outputs/chart.png", "wb").write(png(40, 30))
open("outputs/fake.png", "w").write("<html><script>alert(%d)</script></html>" % (6 * 7))
os.symlink("/etc/passwd", "outputs/link.png")
os.mkfifo("outputs/pipe.png")
open("notes.txt", "w").write("not an output")
print("written")
"""
)


@pytest.fixture
async def platform(tmp_path: Path, images: ImageBuilder, no_leaks: None) -> AsyncIterator[Platform]:
    config = tmp_path / "stockade.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state"))
    async with Platform.open(load_config(config, environ={}), pools=False) as opened:
        yield opened


async def python(platform: Platform, code: str, call_id: str, run_id: str = "run-a") -> ToolResult:
    result = await platform.gateway.call(
        ToolCall(id=call_id, name="python.run", arguments={"code": code}, run_id=run_id)
    )
    assert result.status is ToolStatus.OK, result
    return result


async def test_outputs_come_back_typed_from_their_bytes(platform: Platform) -> None:
    result = await python(platform, WRITE_OUTPUTS, "c1")
    by_name = {a.name: a for a in result.artifacts}
    # The link and the pipe never leave the sandbox; a file outside outputs/ is no artifact.
    assert set(by_name) == {"chart.png", "fake.png", "report.csv"}
    assert by_name["chart.png"].media_type == "image/png"
    assert by_name["report.csv"].media_type == "text/csv"
    assert by_name["fake.png"].media_type == "text/plain", "HTML named .png is not an image"
    expected = png(40, 30)
    chart = by_name["chart.png"]
    assert chart.size == len(expected)
    assert chart.sha256 == hashlib.sha256(expected).hexdigest()
    stored = platform.artifacts.read("run-a", chart)
    assert stored == expected and png_size(stored) == (40, 30)
    assert platform.artifacts.get("run-a", chart.id) == chart
    # The model reads one line per artifact; the result carries no bytes.
    assert f"artifact: chart.png, image/png, {len(expected)} B, id {chart.id}" in result.for_model()
    dumped = result.model_dump_json()
    assert "sha256" in dumped and "city,temp" not in dumped
    # Outputs stay in the workspace (a later call may read them); the link and pipe do not.
    workspace = platform.workspaces.root / "run-a"
    assert (workspace / "outputs" / "chart.png").read_bytes() == expected
    assert not (workspace / "outputs" / "link.png").exists()
    assert not (workspace / "outputs" / "pipe.png").exists()
    assert sorted(p.name for p in (workspace / "outputs").iterdir()) == [
        "chart.png",
        "fake.png",
        "report.csv",
    ]
    # The audit record has the hashes and sizes, never the bytes.
    lines = (platform.config.audit_path).read_text().splitlines()
    record = next(r for r in map(json.loads, lines) if r.get("call_id") == "c1" and
                  r["event"] == "call")  # fmt: skip
    assert {(a["name"], a["size"], a["sha256"]) for a in record["artifacts"]} == {
        (a.name, a.size, a.sha256) for a in result.artifacts
    }
    assert all(
        set(a) == {"id", "name", "media_type", "size", "sha256"} for a in record["artifacts"]
    )
    assert "alert(42)" not in "\n".join(lines), "an artifact's content reached the audit log"
    # It names what the call changed in the workspace and what the host refused.
    assert record["files_changed"] == list(result.files_changed)
    assert {"notes.txt", "outputs/chart.png"} <= set(record["files_changed"])
    assert record["files_rejected"] == list(result.files_rejected)
    assert any(
        entry.startswith("outputs/link.png: symbolic link") for entry in record["files_rejected"]
    )

    # An untouched output is no new artifact; a rewritten one is.
    again = await python(platform, "open('outputs/report.csv', 'a').write('Rome,12\\n')", "c2")
    assert [(a.name, a.media_type) for a in again.artifacts] == [("report.csv", "text/csv")]
    assert again.artifacts[0].id != by_name["report.csv"].id


async def test_caps_and_the_quota_hold(platform: Platform) -> None:
    many = "import os\nos.makedirs('outputs')\n" + "".join(
        f"open('outputs/f{n}.txt', 'w').write('{n}')\n" for n in range(5)
    )
    counted = await python(platform, many, "c1")
    assert [a.name for a in counted.artifacts] == ["f0.txt", "f1.txt", "f2.txt"]
    assert counted.artifacts_dropped == (
        "f3.txt: past the cap of 3 artifacts a call",
        "f4.txt: past the cap of 3 artifacts a call",
    )
    assert "artifact dropped: f3.txt" in counted.for_model()
    # 40 000 bytes is over the file cap; two distinct 30 000-byte files pass the run's quota.
    sized = (
        "import os\nos.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/big.bin', 'wb').write(os.urandom(40000))\n"
        "open('outputs/q1.bin', 'wb').write(os.urandom(30000))\n"
        "open('outputs/q2.bin', 'wb').write(os.urandom(30000))\n"
    )
    capped = await python(platform, sized, "c2")
    assert [a.name for a in capped.artifacts] == ["q1.bin"]
    assert capped.artifacts[0].media_type == "application/octet-stream"
    assert capped.artifacts_dropped == (
        "big.bin: 39 KB, over the cap of 31 KB an artifact",
        "q2.bin: the run's artifacts would pass their quota of 51 KB",
    )
    limits = platform.artifacts.limits
    assert platform.artifacts.used_bytes("run-a") <= limits.run_quota_bytes
    # Another run has a quota of its own.
    other = await python(platform, sized, "c3", run_id="run-b")
    assert [a.name for a in other.artifacts] == ["q1.bin"]


async def test_a_call_without_a_run_keeps_no_artifacts(platform: Platform) -> None:
    result = await platform.gateway.call(
        ToolCall(
            id="c1",
            name="python.run",
            arguments={"code": "import os\nos.makedirs('outputs')\nopen('outputs/a.txt','w')"},
        )
    )
    assert result.status is ToolStatus.OK, result
    assert result.artifacts == () and result.artifacts_dropped == ()
    assert not (platform.config.runs_dir).exists()


async def test_outputs_as_a_link_out_of_the_workspace_brings_nothing(platform: Platform) -> None:
    code = (
        "import os\n"
        "os.symlink('/etc', 'outputs')\n"
        "os.makedirs('real', exist_ok=True)\n"
        "os.symlink('/etc/hostname', 'real/hostname')\n"
        "print(sorted(os.listdir('outputs'))[:3])\n"
    )
    result = await python(platform, code, "c1", run_id="run-link")
    assert "adduser.conf" in result.output, "the link worked inside the sandbox"
    assert result.artifacts == () and result.artifacts_dropped == ()
    workspace = platform.workspaces.root / "run-link"
    assert not (workspace / "outputs").exists() and not (workspace / "outputs").is_symlink()
    assert platform.artifacts.list("run-link") == []


async def test_a_matplotlib_figure_comes_back_as_a_png_artifact(platform: Platform) -> None:
    code = (
        "import matplotlib.pyplot as plt\nplt.figure(figsize=(4, 3), dpi=50)\nplt.plot([1, 3, 2])\n"
    )
    result = await python(platform, code, "c1", run_id="run-plot")
    (figure,) = result.artifacts
    assert figure.name.endswith(".png") and figure.media_type == "image/png"
    data = platform.artifacts.read("run-plot", figure)
    assert hashlib.sha256(data).hexdigest() == figure.sha256 and len(data) == figure.size
    assert png_size(data) == (200, 150)
