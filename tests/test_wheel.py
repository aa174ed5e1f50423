"""A real wheel, installed in a new virtual environment outside the checkout, works.

The wheel is built offline (no build isolation) from a copy of the source
tree, so the checkout gets no ``build/`` or ``*.egg-info``. The new
environment installs only the wheel; its dependencies come from the test
environment's site-packages through a plain path entry (no network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from orchestrator.sandbox.images import ImageBuilder

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
_SKIP = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", ".mypy_cache", ".ruff_cache"
)


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a fresh venv with only the stockade wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_SKIP)
    dist = work / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "-q", "-w", dist, source, cwd=work)  # fmt: skip
    (wheel,) = dist.glob("stockade-*.whl")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q",
        "--no-deps", "--no-index", wheel, cwd=work)  # fmt: skip
    purelib = Path(sysconfig.get_paths()["purelib"])
    site = next((venv / "lib").glob("python3*/site-packages"))
    # A plain path line: the test environment's packages, but not its editable
    # install of stockade (that would need the .pth files there processed).
    (site / "test-dependencies.pth").write_text(f"{purelib}\n")
    return venv / "bin"


def test_the_installed_wheel_works_outside_the_checkout(
    installed: Path, tmp_path: Path, images: ImageBuilder
) -> None:
    env = {
        "PATH": f"{installed}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "STOCKADE_HOME": str(tmp_path / "state"),
    }
    where = run(installed / "python", "-c",
                "import orchestrator.assets as a, toolkits; "
                "print(a.__file__); print(toolkits.__file__); print(a.shipped('policies'))",
                cwd=tmp_path, env=env).split()  # fmt: skip
    venv = installed.parent
    assert all(Path(path).is_relative_to(venv) for path in where), where
    policies = Path(where[2])

    doctor = json.loads(run(installed / "stockade", "doctor", "--json", cwd=tmp_path, env=env))
    assert {check["outcome"] for check in doctor} == {"ok"}, doctor

    checked = run(installed / "stockade", "policy", "check", policies / "default.yaml",
                  policies / "strict.yaml", cwd=tmp_path, env=env)  # fmt: skip
    assert checked.count(": ok (") == 2

    answer = run(installed / "stockade", "tools", "call", "python.run", "--json",
                 "--args", '{"code": "print(6 * 7)"}', cwd=tmp_path, env=env)  # fmt: skip
    result = json.loads(answer)
    assert result["status"] == "ok", result
    assert json.loads(result["output"])["stdout"] == "42\n"
