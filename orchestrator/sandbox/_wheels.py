"""Pinned wheels downloaded on the host for an image build (which has no network).

Each wheel is fetched by pip against its pinned SHA-256 (``--require-hashes``,
binary only, for the image's Python and platform) and kept in a cache shared
by every image and build, checked again before use: a wheel already there is
not fetched twice.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.sandbox._resolve import Pin, Target, pip_command, private_cache

__all__ = ["download_wheels"]

_DOWNLOAD_TIMEOUT_S = 1800
_MiB = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(_MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached(pin: Pin, files: Path) -> bool:
    path = files / pin.filename
    return path.is_file() and _sha256(path) == pin.sha256


def download_wheels(
    pins: Sequence[Pin],
    target: Target,
    cache: Path,
    progress: Callable[[str], None] = lambda _message: None,
) -> list[Path]:
    """The wheel file of every pin, under ``cache`` (downloaded if missing, hashes checked)."""
    files = private_cache(private_cache(cache) / "files")
    missing = [pin for pin in pins if not _cached(pin, files)]
    if missing:
        progress(f"downloading {len(missing)} wheel(s) for {target}")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="download-", dir=cache) as work:
            lock = Path(work) / "lock.txt"
            lock.write_text("".join(f"{pin.line()}\n" for pin in missing))
            command = pip_command(
                "download", "--quiet", "--no-deps", "--require-hashes", *target.pip_options(),
                "--dest", work, "-r", str(lock),
            )  # fmt: skip
            try:
                completed = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=_DOWNLOAD_TIMEOUT_S,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise _failed(f"pip did not finish: {exc}") from exc
            if completed.returncode != 0:
                raise _failed(completed.stderr.strip()[-2000:])
            size = 0
            for pin in missing:
                fetched = Path(work) / pin.filename
                if not fetched.is_file() or _sha256(fetched) != pin.sha256:
                    raise _failed(f"{pin.filename} did not arrive with SHA-256 {pin.sha256}")
                size += fetched.stat().st_size
                shutil.move(fetched, files / pin.filename)
        progress(
            f"downloaded {len(missing)} wheel(s), {size / _MiB:.1f} MiB, "
            f"in {time.monotonic() - started:.1f}s"
        )
    return [files / pin.filename for pin in pins]


def _failed(detail: str) -> InfrastructureError:
    return InfrastructureError(
        f"downloading wheels failed: {detail}",
        code=ErrorCode.IMAGE_BUILD_FAILED,
        op="images.wheels",
        retryable=True,
    )
