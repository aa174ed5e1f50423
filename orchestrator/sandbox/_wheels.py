"""Python dependencies of toolkits, downloaded on the host as wheels for an image.

Image builds have no network, so a toolkit's ``requirements.txt`` is resolved
on the host with pip (binary wheels only, for the image's Python and machine)
and the wheels are copied into the build. Downloads are cached by content.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from pathlib import Path

from orchestrator.errors import ErrorCode, InfrastructureError

__all__ = ["download_wheels"]


def download_wheels(requirements: list[Path], python_tag: str, cache: Path) -> list[Path]:
    """Wheels for all ``requirements`` files, for CPython ``python_tag`` (e.g. ``311``).

    Downloads are kept under ``cache``, keyed by the requirements and the target.
    """
    if not requirements:
        return []
    machine = platform.machine()
    key = hashlib.sha256(
        b"".join(path.read_bytes() for path in requirements) + f"{python_tag}/{machine}".encode()
    ).hexdigest()[:16]
    target = cache / key
    done = target / ".complete"
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--implementation", "cp", "--python-version", python_tag,
            "--platform", f"manylinux2014_{machine}", "--platform", f"manylinux_2_28_{machine}",
            "--dest", str(target),
        ]  # fmt: skip
        for path in requirements:
            command += ["-r", str(path)]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise InfrastructureError(
                f"downloading toolkit dependencies failed: {completed.stderr.strip()[-2000:]}",
                code=ErrorCode.IMAGE_BUILD_FAILED,
                op="images.wheels",
                retryable=True,
            )
        done.touch()
    return sorted(target.glob("*.whl"))
