"""An orchestrator's cluster id kept in its state directory (issue 14, point 3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.sandbox.ray_identity import claim_instance_id


def test_ids_are_unique_while_held_and_taken_again_once_free(tmp_path: Path) -> None:
    first = claim_instance_id(tmp_path)
    second = claim_instance_id(tmp_path)  # held by `first`: the next slot
    assert first.instance_id != second.instance_id
    first.release()
    third = claim_instance_id(tmp_path)
    assert third.instance_id == first.instance_id
    second.release()
    third.release()


def test_a_killed_holders_id_is_taken_by_the_next_process(tmp_path: Path) -> None:
    code = (
        "import sys, pathlib, os\n"
        "from orchestrator.sandbox.ray_identity import claim_instance_id\n"
        "print(claim_instance_id(pathlib.Path(sys.argv[1])).instance_id, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"  # no release: the kernel drops the lock
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == -9, done.stderr
    claim = claim_instance_id(tmp_path)
    assert claim.instance_id == done.stdout.strip()
    claim.release()


def test_a_damaged_slot_file_gets_a_new_id(tmp_path: Path) -> None:
    (tmp_path / "ray-orchestrators").mkdir()
    (tmp_path / "ray-orchestrators" / "0.id").write_text("not an id")
    claim = claim_instance_id(tmp_path)
    assert len(claim.instance_id) == 32 and claim.instance_id != "not an id"
    claim.release()


def test_a_slot_file_is_never_opened_through_a_link(tmp_path: Path) -> None:
    """Writing an id through a link planted in the state directory would write elsewhere."""
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not the orchestrator's")
    (tmp_path / "ray-orchestrators").mkdir()
    (tmp_path / "ray-orchestrators" / "0.id").symlink_to(elsewhere)
    with pytest.raises(OSError, match=r"0\.id"):
        claim_instance_id(tmp_path)
    assert elsewhere.read_text() == "not the orchestrator's"
