"""Offline image builds, tagged by a content hash of their inputs.

Two images: the *base* (Debian with Python 3) and the *sandbox* image (base
plus the in-container runner). The base comes from a registry image when one
is configured and can be had, otherwise it is built from Debian packages with
debootstrap and ``docker import`` — no registry needed. An image is rebuilt
only when the hash of its inputs changes, so a second build is a no-op.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from orchestrator.assets import shipped
from orchestrator.errors import ConfigError, ErrorCode, InfrastructureError
from orchestrator.sandbox._wheels import download_wheels
from orchestrator.sandbox.engine import engine_error, engine_errors
from orchestrator.sandbox.labels import PLATFORM_LABEL, PLATFORM_VALUE
from orchestrator.sandbox.profile import DEFAULT_IMAGE

__all__ = ["BASE_IMAGE", "TOOLS_IMAGE", "BuiltImage", "ImageBuilder", "default_images_dir"]

BASE_IMAGE = "stockade-base"
"""Logical name of the base image."""
TOOLS_IMAGE = "stockade-tools"
"""Logical name of the image with the toolkit SDK and the built-in toolkits."""

_INPUTS_LABEL = "org.stockade.inputs"
_BASE_SCRIPT = "base/build-rootfs.sh"
_SANDBOX_FILES = (
    "sandbox/Dockerfile",
    "runner/stockade_runner.py",
    "runner/egress_forwarder.py",
)


def default_images_dir() -> Path:
    """The image sources shipped with Stockade (``sandbox_images/``)."""
    return shipped("sandbox_images")


def _package_dir(name: str) -> Path:
    """Where the importable package ``name`` lives (a checkout or site-packages alike)."""
    spec = importlib.util.find_spec(name)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ConfigError(f"toolkit {name!r} is not an importable package", field="toolkits")
    return Path(locations[0])


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    """An image ready to run."""

    name: str
    """Logical name (``stockade-sandbox``)."""
    tag: str
    """Full reference, ``name:<input hash>``."""
    image_id: str
    """Content digest of the image."""
    built: bool
    """False when an up-to-date image already existed."""
    seconds: float
    """Time spent, including the check."""


def _hash(parts: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:16]


class ImageBuilder:
    """Builds (or finds) the images a sandbox needs, offline."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        images_dir: Path | None = None,
        base_image: str | None = None,
        toolkits: Sequence[str] = (),
        wheel_cache: Path | None = None,
        progress: Callable[[str], None] = lambda _message: None,
    ) -> None:
        """``base_image``: a registry image to use as base (e.g. ``python:3.12-slim``).

        It is used when present locally or when it can be pulled; otherwise
        the base is built from Debian packages. ``None`` (the default) means
        build from Debian packages and never contact a registry.

        ``toolkits``: importable toolkit packages outside ``toolkits/`` to bake
        into the tools image too (with their ``requirements.txt``).

        ``wheel_cache``: where downloaded toolkit wheels are kept between
        builds (default ``~/.cache/stockade/wheels``).
        """
        self._client = client
        self._dir = images_dir or default_images_dir()
        self._base_image = base_image
        self._toolkits = tuple(toolkits)
        self._wheel_cache = wheel_cache or Path.home() / ".cache" / "stockade" / "wheels"
        self._progress = progress

    def _read(self, relative: str) -> bytes:
        path = self._dir / relative
        try:
            return path.read_bytes()
        except OSError as exc:
            raise InfrastructureError(
                f"image input {path} cannot be read: {exc}",
                code=ErrorCode.IMAGE_BUILD_FAILED,
                op="images.build",
                retryable=False,
            ) from exc

    def _existing(self, tag: str) -> str | None:
        try:
            with engine_errors("images.get"):
                image = self._client.images.get(tag)
        except InfrastructureError as exc:
            if exc.code is ErrorCode.IMAGE_MISSING:
                return None
            raise
        return str(image.id)

    def base_tag(self) -> str:
        """The tag the base image has for the current inputs."""
        source = (self._base_image or "debootstrap").encode()
        return f"{BASE_IMAGE}:{_hash([source, self._read(_BASE_SCRIPT)])}"

    def sandbox_tag(self, base_id: str) -> str:
        """The tag the sandbox image has for the current inputs on ``base_id``."""
        inputs = [base_id.encode(), *(self._read(name) for name in _SANDBOX_FILES)]
        return f"{DEFAULT_IMAGE}:{_hash(inputs)}"

    def _ensure(self, name: str, tag: str, build: Callable[[], str]) -> BuiltImage:
        """The image ``tag``: found, or made by ``build`` (which returns its id)."""
        started = time.monotonic()
        existing = self._existing(tag)
        image_id = existing or build()
        return BuiltImage(
            name=name,
            tag=tag,
            image_id=image_id,
            built=existing is None,
            seconds=time.monotonic() - started,
        )

    def build_base(self) -> BuiltImage:
        """The base image, built only if missing."""
        tag = self.base_tag()

        def build() -> str:
            from_registry = self._base_from_registry(tag) if self._base_image else None
            return from_registry or self._base_from_debian(tag)

        return self._ensure(BASE_IMAGE, tag, build)

    def _base_from_registry(self, tag: str) -> str | None:
        assert self._base_image is not None
        reference = self._base_image
        if self._existing(reference) is None:
            self._progress(f"pulling {reference}")
            try:
                self._client.images.pull(reference)
            except docker.errors.APIError as exc:
                self._progress(f"cannot pull {reference} ({exc.explanation}); building from Debian")
                return None
        with engine_errors("images.tag"):
            image = self._client.images.get(reference)
            image.tag(tag)
        return str(image.id)

    def _base_from_debian(self, tag: str) -> str:
        if shutil.which("debootstrap") is None:
            raise InfrastructureError(
                "debootstrap is not installed (scripts/setup.sh installs it)",
                code=ErrorCode.IMAGE_BUILD_FAILED,
                op="images.build_base",
                retryable=False,
            )
        self._progress(f"building {tag} from Debian packages (debootstrap, about a minute)")
        with tempfile.TemporaryDirectory(prefix="stockade-base-") as work:
            rootfs = Path(work) / "rootfs.tar"
            script = self._dir / _BASE_SCRIPT
            completed = subprocess.run(
                ["bash", str(script), str(rootfs)], capture_output=True, text=True, check=False
            )
            if completed.returncode != 0:
                raise InfrastructureError(
                    f"{script} failed (exit {completed.returncode}): {completed.stderr.strip()}",
                    code=ErrorCode.IMAGE_BUILD_FAILED,
                    op="images.build_base",
                    retryable=True,
                )
            self._progress(f"importing root filesystem ({rootfs.stat().st_size // 2**20} MiB)")
            repository, _, version = tag.partition(":")
            with engine_errors("images.import"):
                self._client.api.import_image_from_file(
                    str(rootfs),
                    repository=repository,
                    tag=version,
                    changes=[f"LABEL {PLATFORM_LABEL}={PLATFORM_VALUE}", 'CMD ["python3"]'],
                )
        image_id = self._existing(tag)
        if image_id is None:
            raise InfrastructureError(
                f"docker import did not produce {tag}",
                code=ErrorCode.IMAGE_BUILD_FAILED,
                op="images.build_base",
                retryable=True,
            )
        return image_id

    def build_sandbox(self, base: BuiltImage) -> BuiltImage:
        """The sandbox image on ``base``, built only if its inputs changed."""
        tag = self.sandbox_tag(base.image_id)

        def build() -> str:
            self._progress(f"building {tag}")
            with tempfile.TemporaryDirectory(prefix="stockade-context-") as context:
                for name in _SANDBOX_FILES:
                    shutil.copy(self._dir / name, Path(context) / Path(name).name)
                return self._docker_build(Path(context), tag, {"BASE_IMAGE": base.tag})

        return self._ensure(DEFAULT_IMAGE, tag, build)

    def _docker_build(self, context: Path, tag: str, buildargs: dict[str, str]) -> str:
        try:
            image, _logs = self._client.images.build(
                path=str(context),
                tag=tag,
                buildargs=buildargs,
                labels={PLATFORM_LABEL: PLATFORM_VALUE, _INPUTS_LABEL: tag},
                rm=True,
                forcerm=True,
                network_mode="none",
            )
        except docker.errors.BuildError as exc:
            raise InfrastructureError(
                f"building {tag} failed: {exc.msg}",
                code=ErrorCode.IMAGE_BUILD_FAILED,
                op="images.build",
                retryable=False,
            ) from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise engine_error("images.build", exc) from exc
        return str(image.id)

    def _package_dirs(self) -> list[tuple[Path, Path]]:
        """(source directory, destination under the image's library) of each package."""
        packages = [
            (_package_dir("stockade_sdk"), Path("stockade_sdk")),
            (_package_dir("toolkits"), Path("toolkits")),
        ]
        packages += [(_package_dir(name), Path(*name.split("."))) for name in self._toolkits]
        return packages

    def _tools_inputs(self) -> list[tuple[Path, Path]]:
        """Every file of the tools image's library: (source, destination)."""
        inputs: list[tuple[Path, Path]] = []
        for source, destination in self._package_dirs():
            for path in sorted(source.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    inputs.append((path, destination / path.relative_to(source)))
        return inputs

    def tools_tag(self, sandbox_id: str) -> str:
        """The tag the tools image has for the current inputs on ``sandbox_id``."""
        inputs = [sandbox_id.encode(), self._read("tools/Dockerfile")]
        for source, destination in self._tools_inputs():
            inputs += [str(destination).encode(), source.read_bytes()]
        return f"{TOOLS_IMAGE}:{_hash(inputs)}"

    def build_tools(self, sandbox: BuiltImage) -> BuiltImage:
        """The tools image on ``sandbox``: SDK, toolkits and their wheels."""
        tag = self.tools_tag(sandbox.image_id)
        return self._ensure(TOOLS_IMAGE, tag, lambda: self._make_tools(tag, sandbox))

    def _image_python(self, image: str) -> str:
        """The image's CPython version tag, e.g. ``311``."""
        version = "import sys; print(f'{sys.version_info[0]}{sys.version_info[1]}')"
        with engine_errors("images.python_version"):
            output = self._client.containers.run(
                image, ["python3", "-c", version], network_mode="none", remove=True
            )
        return bytes(output).decode().strip()

    def _make_tools(self, tag: str, sandbox: BuiltImage) -> str:
        self._progress(f"building {tag}")
        inputs = self._tools_inputs()
        with tempfile.TemporaryDirectory(prefix="stockade-context-") as context_dir:
            context = Path(context_dir)
            shutil.copy(self._dir / "tools" / "Dockerfile", context / "Dockerfile")
            (context / "wheels").mkdir()
            requirements = [source for source, _ in inputs if source.name == "requirements.txt"]
            for wheel in download_wheels(
                requirements, self._image_python(sandbox.tag), self._wheel_cache
            ):
                shutil.copy(wheel, context / "wheels" / wheel.name)
            for source, destination in inputs:
                if source.name != "requirements.txt":
                    target = context / "lib" / destination
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(source, target)
            return self._docker_build(context, tag, {"SANDBOX_IMAGE": sandbox.tag})

    def build_all(self) -> list[BuiltImage]:
        """Base, sandbox and tools image, in order."""
        base = self.build_base()
        sandbox = self.build_sandbox(base)
        return [base, sandbox, self.build_tools(sandbox)]

    def resolve(self, image: str) -> str:
        """Map a logical image name to its current tag; other references pass through."""
        if image == TOOLS_IMAGE:
            return self.tools_tag(self.image_id(self.resolve(DEFAULT_IMAGE)))
        if image == DEFAULT_IMAGE:
            return self.sandbox_tag(self.image_id(self.base_tag()))
        return image

    def image_id(self, tag: str) -> str:
        """The content digest of an image that must exist."""
        image_id = self._existing(tag)
        if image_id is None:
            raise InfrastructureError(
                f"image {tag} is not built; run `stockade images build`",
                code=ErrorCode.IMAGE_MISSING,
                op="images.get",
                retryable=False,
            )
        return image_id
