"""The wheel cache decides what images install: only its user writes it, nothing odd is used.

pip is replaced by a stand-in that writes the report a real resolution would:
no network, no engine.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest

from orchestrator.errors import InfrastructureError
from orchestrator.sandbox import _resolve
from orchestrator.sandbox._resolve import Target, resolve
from orchestrator.sandbox._wheels import download_wheels

TARGET = Target(python="311", machine="x86_64", glibc=(2, 36))
DIGEST = "ab" * 32


@pytest.fixture
def pip_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Each call of the stand-in pip, which resolves anything to tabulate 0.9.0."""
    calls: list[tuple[str, ...]] = []

    def fake_pip(*args: str) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        report = Path(args[args.index("--report") + 1])
        item = {
            "metadata": {"name": "tabulate", "version": "0.9.0"},
            "download_info": {
                "url": "https://127.0.0.1:9/tabulate-0.9.0-py3-none-any.whl",
                "archive_info": {"hashes": {"sha256": DIGEST}},
            },
        }
        report.write_text(json.dumps({"install": [item]}))
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(_resolve, "_run_pip", fake_pip)
    return calls


def test_a_tampered_cached_resolution_is_resolved_again_not_used(
    tmp_path: Path, pip_calls: list[tuple[str, ...]]
) -> None:
    cache = tmp_path / "wheels"
    first = resolve(["tabulate"], TARGET, cache=cache, field="toolkits", what="test")
    assert resolve(["tabulate"], TARGET, cache=cache, field="toolkits", what="test") == first
    assert len(pip_calls) == 1, "a second resolution comes from the cache"
    (lock,) = (cache / "locks").iterdir()
    for tampered in (
        # pin.line() goes into pip's requirements file; the file name is a path in the cache.
        {"version": "0.9.0 --index-url http://127.0.0.1:9/simple"},
        {"filename": "../../../../root/.ssh/id_ed25519.whl"},
        {"sha256": "not a digest"},
        {"name": "tabulate --pre"},
    ):
        lock.write_text(json.dumps([{**asdict(first[0]), **tampered}]))
        again = resolve(["tabulate"], TARGET, cache=cache, field="toolkits", what="test")
        assert again == first, tampered
    assert len(pip_calls) == 5


def test_a_wheel_cache_others_can_write_is_refused(
    tmp_path: Path, pip_calls: list[tuple[str, ...]]
) -> None:
    cache = tmp_path / "wheels"
    (cache / "locks").mkdir(parents=True)
    (cache / "locks").chmod(0o777)
    with pytest.raises(InfrastructureError, match="can be written by others") as caught:
        resolve(["tabulate"], TARGET, cache=cache, field="toolkits", what="test")
    assert str(cache / "locks") in str(caught.value)
    (cache / "locks").chmod(0o755)
    resolve(["tabulate"], TARGET, cache=cache, field="toolkits", what="test")
    (cache / "files").mkdir(mode=0o775)
    (cache / "files").chmod(0o775)
    with pytest.raises(InfrastructureError, match="can be written by others"):
        download_wheels([], TARGET, cache)
    assert pip_calls and all("download" not in call for call in pip_calls)


def test_a_new_wheel_cache_is_its_users_alone(tmp_path: Path) -> None:
    cache = tmp_path / "state" / "cache" / "wheels"
    download_wheels([], TARGET, cache)
    assert (cache / "files").stat().st_mode & 0o777 == 0o700
    assert cache.stat().st_mode & 0o777 == 0o700
