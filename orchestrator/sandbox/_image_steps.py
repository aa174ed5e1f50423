"""The long steps of an image build: debootstrap a root filesystem, run a Docker build.

Both report progress as they go (debootstrap's phases, the Dockerfile's
steps) and fail with an :class:`~orchestrator.errors.InfrastructureError`
carrying the tail of what went wrong.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from orchestrator.errors import ErrorCode, InfrastructureError
from orchestrator.sandbox.engine import engine_error, engine_errors
from orchestrator.sandbox.labels import PLATFORM_LABEL, PLATFORM_VALUE

__all__ = ["debootstrap_import", "docker_build", "host_debian_suite", "missing_debian_packages"]

_log = logging.getLogger(__name__)

_LOG_TAIL = 30
_SHORT_ID = 12
_STEP_IMAGE = re.compile(r"---> ([0-9a-f]{12})")
"""A step's image in the builder's output (`` ---> 0123456789ab``)."""
_DEBOOTSTRAP_TIMEOUT_S = 1800
_STOP_GRACE_S = 60
"""How long a stopped debootstrap gets to unmount and remove its root filesystem."""


def host_debian_suite(script: Path) -> str | None:
    """The host's Debian codename when it is the suite ``script`` builds bases from, else None.

    Then the host's own ``/usr/bin/python3`` is Debian's Python of that suite:
    what the images will have, known before any of them is built.
    """
    try:
        release = Path("/etc/os-release").read_text()
        said = subprocess.run(
            ["bash", str(script), "--suite"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = dict(
        line.split("=", 1)
        for line in release.splitlines()
        if "=" in line and not line.startswith("#")
    )
    if fields.get("ID", "").strip('"') != "debian":
        return None
    codename = fields.get("VERSION_CODENAME", "").strip('"')
    return codename if codename and said.stdout.strip() == codename else None


def missing_debian_packages(script: Path, packages: Sequence[str]) -> list[str] | None:
    """Which of ``packages`` Debian does not have, asked of the host's apt lists; None: unknown.

    Known only when the host is the suite ``script`` builds from and its apt
    lists are there (``python3-minimal`` is found): then an unknown package is
    named before any build, instead of failing debootstrap a minute in.
    """
    if not packages or shutil.which("apt-cache") is None or host_debian_suite(script) is None:
        return None
    try:
        said = subprocess.run(
            ["apt-cache", "show", "--no-all-versions", "python3-minimal", *packages],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = {
        line.split(":", 1)[1].strip()
        for line in said.stdout.splitlines()
        if line.startswith("Package:")
    }
    if "python3-minimal" not in found:
        return None  # no apt lists to ask
    return [name for name in packages if name not in found]


def debootstrap_import(
    client: docker.DockerClient,
    *,
    script: Path,
    packages: Sequence[str],
    tag: str,
    deb_cache: Path,
    progress: Callable[[str], None],
) -> None:
    """Build a root filesystem with ``script`` (Debian + ``packages``) and import it as ``tag``."""
    if shutil.which("debootstrap") is None:
        raise InfrastructureError(
            "debootstrap is not installed (scripts/setup.sh installs it)",
            code=ErrorCode.IMAGE_BUILD_FAILED,
            op="images.build_base",
            retryable=False,
        )
    extra = f" + {', '.join(packages)}" if packages else ""
    progress(
        f"building {tag} from Debian packages{extra} with their updates "
        "(debootstrap, a minute or two)"
    )
    with tempfile.TemporaryDirectory(prefix="stockade-base-") as work:
        rootfs = Path(work) / "rootfs.tar"
        command = ["bash", str(script), "--cache-dir", str(deb_cache.resolve())]
        try:
            completed = _run_group([*command, str(rootfs), *packages], _DEBOOTSTRAP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise _failed(f"{script} did not finish in {_DEBOOTSTRAP_TIMEOUT_S}s", True) from exc
        if completed.returncode != 0:
            raise _failed(
                f"{script} failed (exit {completed.returncode}): {completed.stderr.strip()}",
                completed.returncode != 2,  # 2: an argument the script refused (a name)
            )
        for line in completed.stderr.splitlines():
            if line.strip():  # what the script did: the suite, the updates it applied
                progress(line.strip())
        progress(f"importing root filesystem ({rootfs.stat().st_size // 2**20} MiB)")
        repository, _, version = tag.partition(":")
        with engine_errors("images.import"):
            client.api.import_image_from_file(
                str(rootfs),
                repository=repository,
                tag=version,
                changes=[f"LABEL {PLATFORM_LABEL}={PLATFORM_VALUE}", 'CMD ["python3"]'],
            )


def _run_group(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a process group of its own, stopped as a whole if it does not finish.

    ``subprocess.run`` would SIGKILL the script alone on the deadline (and on
    Ctrl-C): debootstrap, its child, went on unattended, and the script never
    cleaned up (a root filesystem in ``/var/tmp``, with ``/proc`` and binds of
    ``/dev`` mounted in it). The group is asked to stop (SIGTERM: the script
    and debootstrap clean up), and killed only if it does not in time.
    """
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a terminal's Ctrl-C reaches us, which stops the group
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        _stop_group(process)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _stop_group(process: subprocess.Popen[str]) -> None:
    """Stop ``process``'s group: SIGTERM, then SIGKILL after :data:`_STOP_GRACE_S`."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.communicate(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    except ProcessLookupError:
        process.wait()  # the group is gone already


def _failed(message: str, retryable: bool) -> InfrastructureError:
    return InfrastructureError(
        message, code=ErrorCode.IMAGE_BUILD_FAILED, op="images.build_base", retryable=retryable
    )


def docker_build(
    client: docker.DockerClient,
    context: Path,
    *,
    tag: str,
    buildargs: dict[str, str],
    labels: dict[str, str],
    progress: Callable[[str], None],
) -> str:
    """Build ``context`` as ``tag`` with no network; its image id. Steps are shown as they run."""
    steps: set[str] = set()
    try:
        image_id = _run_build(
            client,
            context,
            tag=tag,
            buildargs=buildargs,
            labels=labels,
            steps=steps,
            progress=progress,
        )
    except BaseException:
        # A failed or interrupted build leaves the images of the steps it finished:
        # untagged, labelled as building, never used again (the install stage's are
        # hundreds of MB). They go, as a finished build's earlier stages do.
        _discard_steps(client, steps)
        raise
    _remove_stages(client, steps)
    return image_id


def _run_build(
    client: docker.DockerClient,
    context: Path,
    *,
    tag: str,
    buildargs: dict[str, str],
    labels: dict[str, str],
    steps: set[str],
    progress: Callable[[str], None],
) -> str:
    """The build of :func:`docker_build`; each step's image id is added to ``steps``."""
    tail: deque[str] = deque(maxlen=_LOG_TAIL)
    image_id: str | None = None
    try:
        stream = client.api.build(
            path=str(context),
            tag=tag,
            buildargs=buildargs,
            labels=labels,
            rm=True,
            forcerm=True,
            network_mode="none",
            decode=True,
        )
        for chunk in stream:
            image_id = _follow(chunk, tail, steps, progress) or image_id
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise engine_error("images.build", exc) from exc
    except _BuildFailed as exc:
        log = "\n".join(tail)
        raise InfrastructureError(
            f"building {tag} failed: {exc}\n{log}",
            code=ErrorCode.IMAGE_BUILD_FAILED,
            op="images.build",
            retryable=False,
        ) from None
    if image_id is None:
        raise InfrastructureError(
            f"building {tag} produced no image",
            code=ErrorCode.IMAGE_BUILD_FAILED,
            op="images.build",
            retryable=True,
        )
    return image_id


def _discard_steps(client: docker.DockerClient, steps: set[str]) -> None:
    """:func:`_remove_stages` after a build that did not finish: never raises, since
    the build's own error (or the interruption) is what the caller must see."""
    try:
        _remove_stages(client, steps)
    except InfrastructureError as exc:
        _log.warning("could not remove the steps of a failed build: %s", exc)


def _remove_stages(client: docker.DockerClient, steps: set[str]) -> None:
    """The images of a multi-stage build's earlier stages, which the engine keeps untagged.

    ``steps`` are the short ids of every step's image, as the build announced
    them. Those of the finished image's own stage are its parents; a finished
    earlier stage (the tools image's ``install`` stage, ~380 MB) is an untagged
    image with no children, which the engine would keep for as long as it runs.
    Only images of this build go (another build's or an operator's never do), and
    removing one also removes the untagged steps under it.
    """
    with engine_errors("images.list"):
        dangling = client.api.images(filters={"dangling": True}, quiet=True)
    for full in dangling:
        if str(full).removeprefix("sha256:")[:_SHORT_ID] in steps:
            try:
                client.api.remove_image(full)
            except docker.errors.NotFound:
                pass  # gone meanwhile: what was wanted
            except docker.errors.APIError as exc:
                # The image was built all the same: a stage left over is untidy,
                # not a failed build (`docker image prune` removes it).
                _log.warning("could not remove the build stage %s: %s", full, exc)


class _BuildFailed(Exception):
    pass


def _follow(
    chunk: Any, tail: deque[str], steps: set[str], progress: Callable[[str], None]
) -> str | None:
    """Take one decoded message of the build's stream; the image id once it is announced.

    Each step's image (`` ---> 0123456789ab``) is added to ``steps``.
    """
    if not isinstance(chunk, dict):
        return None
    if "error" in chunk:
        raise _BuildFailed(str(chunk["error"]).strip())
    aux = chunk.get("aux")
    if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
        return str(aux["ID"])
    for line in str(chunk.get("stream", "")).splitlines():
        if line.strip():
            tail.append(line)
        if line.startswith("Step "):
            progress(line.strip())
        step = _STEP_IMAGE.fullmatch(line.strip())
        if step:
            steps.add(step.group(1))
    return None
