"""The code fingerprint hosts and orchestrators compare: any source of the package counts."""

from __future__ import annotations

import shutil
from pathlib import Path

from orchestrator.sandbox._code import _PACKAGE, code_fingerprint
from orchestrator.sandbox.hosts import view
from orchestrator.sandbox.ray_host import CODE_FINGERPRINT


def test_a_change_anywhere_in_the_package_is_a_new_fingerprint(tmp_path: Path) -> None:
    package = tmp_path / "orchestrator"
    shutil.copytree(_PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = code_fingerprint(package)
    assert before == code_fingerprint(_PACKAGE), "the same sources, the same fingerprint"
    # Modules a host imports from outside sandbox/: a fix there is another host's code.
    for module in ("strict.py", "runid.py", "metrics/__init__.py"):
        path = package / module
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        assert code_fingerprint(package) != before, module
        path.write_bytes(original)
    assert code_fingerprint(package) == before
    # The runner runs in the containers: the images' tags cover it (copied here as files,
    # as a wheel has them, where a checkout has links).
    runner = package / "_assets" / "sandbox_images" / "runner" / "stockade_runner.py"
    runner.write_text(runner.read_text() + "\n# changed\n")
    assert code_fingerprint(package) == before
    cache = package / "sandbox" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "stale.py").write_text("compiled leftovers are not sources\n")
    assert code_fingerprint(package) == before


def test_stockade_hosts_shows_a_host_of_other_code_as_refused() -> None:
    """Every orchestrator of this version refuses it: `stockade hosts` must not say up."""
    assert view("host-a", {"code": CODE_FINGERPRINT}).state == "up"
    assert view("host-a", {"code": CODE_FINGERPRINT, "draining": True}).state == "draining"
    for record in ({"code": "0123456789abcdef"}, {}):
        other = view("host-a", record)
        assert other.state == "refused", record
        assert "runs other Stockade code" in other.reason
        assert "stockade-host:host-a" in other.reason
    lost = view("host-a", {"code": "0123456789abcdef", "engine_error": "no engine"})
    assert lost.state == "lost" and lost.reason == "no engine"
