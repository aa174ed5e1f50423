"""Offline image builds, tagged by a content hash of their inputs.

The images, each on the one before:

- *base*: Debian with Python 3 — from debootstrap and ``docker import`` (no
  registry needed), or a registry image when one is configured and can be had.
  There is one base per Debian package set: the plain one, the tools image's
  (plus ``nodejs``), and one per image spec that adds packages. Equal sets
  share one base; debootstrap's downloads are cached between sets.
  A base is built once and then kept: ``refresh_base`` (``stockade images
  build --refresh-base``) builds it again from Debian's current packages,
  security updates included, under the same tag.
- *sandbox*: a base plus the in-container runner (``stockade-sandbox``).
- *tools*: the sandbox image on the tools base plus the SDK, the toolkits and
  their Python dependencies (``stockade-tools``).
- *spec images*: for each image spec in ``stockade.yaml``, the tools image
  on the spec's package set plus the spec's Python distributions
  (``stockade-tools-<spec>``).

Python dependencies are resolved on the host for the image's own Python and
platform, pinned with hashes and checked *before any build starts*
(:meth:`ImageBuilder.check_requirements`), downloaded on the host and
installed properly (PyPA's ``installer``) in builds without network. An image
is rebuilt only when the hash of its inputs changes, so a second build is a
no-op. A base's tag is the hash of its inputs too, not of its packages'
versions; the images on it are tagged by a hash that includes the base's
image id, so a refreshed base has them rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import docker
import docker.errors

from orchestrator.assets import shipped
from orchestrator.errors import ConfigError, ErrorCode, InfrastructureError
from orchestrator.sandbox._image_spec import ImageSpec, spec_image_name
from orchestrator.sandbox._image_steps import (
    debootstrap_import,
    docker_build,
    host_debian_suite,
    missing_debian_packages,
)
from orchestrator.sandbox._requirement_text import check_requirement
from orchestrator.sandbox._resolve import PROBE, Pin, Target, resolve
from orchestrator.sandbox._wheels import download_wheels
from orchestrator.sandbox.engine import engine_errors
from orchestrator.sandbox.image_prune import remove_superseded
from orchestrator.sandbox.labels import PLATFORM_LABEL, PLATFORM_VALUE, container_labels
from orchestrator.sandbox.profile import DEFAULT_IMAGE, TOOLS_IMAGE

__all__ = [
    "BASE_IMAGE",
    "TOOLS_IMAGE",
    "TOOLS_PACKAGES",
    "BuiltImage",
    "ImageBuilder",
    "default_images_dir",
]

BASE_IMAGE = "stockade-base"
"""Logical name of the base image."""
TOOLS_PACKAGES = ("nodejs",)
"""Debian packages the tools image's base adds to the plain base (``node.run``'s ``node``)."""

_INPUTS_LABEL = "org.stockade.inputs"
_SPEC_LABEL = "org.stockade.image-spec"
_BASE_SCRIPT = "base/build-rootfs.sh"
_SANDBOX_FILES = (
    "sandbox/Dockerfile",
    "runner/stockade_runner.py",
    "runner/egress_forwarder.py",
)
_INSTALL_SCRIPT = "tools/install_wheels.py"
_SPEC_DOCKERFILE = "spec/Dockerfile"
_PROBE_S = 60


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


def _package_files(source: Path, destination: Path) -> list[tuple[Path, Path]]:
    """Every file of a package directory: (source, destination), in a stable order.

    What goes into an image is read by whatever code runs there, a model's
    included. So it is the package, not what sits beside it in a checkout:
    hidden files and directories (``.env``, ``.git``, ``.venv``) and byte code
    stay out, and a symbolic link to a file outside the package (which the copy
    would follow: ``notes -> ~/.ssh/id_ed25519``) is refused.
    """
    root = source.resolve()
    files = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise ConfigError(
                f"{path} links to {path.resolve()}, outside its package {source}: "
                "its content would go into the image; copy it into the package instead",
                field="toolkits",
            )
        if path.is_file():
            files.append((path, destination / relative))
    return files


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


def _uncommented(line: str) -> str:
    """A requirements file's line without its comment (pip's rule: ``#`` at the start or after
    a blank), stripped."""
    return re.sub(r"(^|\s)#.*", "", line).strip()


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
        specs: Mapping[str, ImageSpec] | None = None,
        wheel_cache: Path | None = None,
        refresh_base: bool = False,
        progress: Callable[[str], None] = lambda _message: None,
    ) -> None:
        """``base_image``: a registry image to use as the plain base (e.g. ``python:3.12-slim``).

        It is used when present locally or when it can be pulled; otherwise
        the base is built from Debian packages. ``None`` (the default) means
        build from Debian packages and never contact a registry. Bases with
        added packages (the tools image's, specs') always come from Debian.

        ``toolkits``: importable toolkit packages outside ``toolkits/`` to bake
        into the tools image too (with their ``requirements.txt``).

        ``specs``: image specs by name (``stockade.yaml``'s ``images.specs``).

        ``wheel_cache``: where resolutions and downloaded wheels are kept
        between builds (default ``~/.cache/stockade/wheels``); debootstrap's
        packages are kept beside it, in ``debs``.

        ``refresh_base``: build each base this builder is asked for again
        (once), though its tag exists: from Debian's current packages, or by
        pulling the registry base again. The tag is re-pointed at the new
        image, so the images built on it get new tags and are built again;
        the superseded image is removed unless a container or an image built
        on it still uses it (``stockade images prune`` removes those, and it
        with them).
        """
        self._client = client
        self._dir = images_dir or default_images_dir()
        self._base_image = base_image
        self._toolkits = tuple(toolkits)
        self._specs = dict(specs or {})
        self._wheel_cache = wheel_cache or Path.home() / ".cache" / "stockade" / "wheels"
        self._progress = progress
        self._target: Target | None = None
        self._refresh_base = refresh_base
        # The base tags this builder was asked for: a refresh happens once for each,
        # however often the bases are asked for (the tools image's, each spec's).
        self._refreshed: set[str] = set()

    # -- inputs and tags --------------------------------------------------

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

    def spec_packages(self, spec: str) -> tuple[str, ...]:
        """The Debian packages the base of ``spec``'s image adds (the tools' included)."""
        return tuple(sorted({*TOOLS_PACKAGES, *self._spec(spec).debian}))

    def _spec(self, name: str) -> ImageSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "none"
            raise ConfigError(
                f"image spec {name!r} is not configured (configured: {known})",
                field="images.specs",
            ) from None

    def base_tag(self, packages: Sequence[str] = ()) -> str:
        """The tag the base image with ``packages`` added has for the current inputs."""
        if not packages:
            source = (self._base_image or "debootstrap").encode()
            return f"{BASE_IMAGE}:{_hash([source, self._read(_BASE_SCRIPT)])}"
        added = [name.encode() for name in sorted(set(packages))]
        return f"{BASE_IMAGE}:{_hash([b'debootstrap', self._read(_BASE_SCRIPT), *added])}"

    def sandbox_tag(self, base_id: str) -> str:
        """The tag the sandbox image has for the current inputs on ``base_id``."""
        inputs = [base_id.encode(), *(self._read(name) for name in _SANDBOX_FILES)]
        return f"{DEFAULT_IMAGE}:{_hash(inputs)}"

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
            inputs += _package_files(source, destination)
        return inputs

    def _installer_inputs(self) -> list[bytes]:
        """The install script and PyPA's installer, as they go into a build."""
        parts = [self._read(_INSTALL_SCRIPT)]
        for source, destination in _package_files(_package_dir("installer"), Path("installer")):
            parts += [str(destination).encode(), source.read_bytes()]
        return parts

    def tools_tag(self, sandbox_id: str) -> str:
        """The tag the tools image has for the current inputs on ``sandbox_id``."""
        inputs = [sandbox_id.encode(), self._read("tools/Dockerfile"), *self._installer_inputs()]
        for source, destination in self._tools_inputs():
            inputs += [str(destination).encode(), source.read_bytes()]
        return f"{TOOLS_IMAGE}:{_hash(inputs)}"

    def spec_tag(self, spec: str, tools_id: str) -> str:
        """The tag ``spec``'s image has for its current inputs on the tools image ``tools_id``.

        The spec's packages are inputs of ``tools_id`` (its base); its Python
        requirements are inputs here: a changed spec is a new image.
        """
        requirements = json.dumps(self._spec(spec).python).encode()
        inputs = [tools_id.encode(), self._read(_SPEC_DOCKERFILE), requirements]
        return f"{spec_image_name(spec)}:{_hash([*inputs, *self._installer_inputs()])}"

    # -- what the images install --------------------------------------------

    def target(self) -> Target:
        """The Python and platform of the tools images, learnt before they are built.

        From the tools base when it exists; else from the host's Debian Python
        when the host is the Debian suite the bases come from; else the tools
        base is built first to ask it.
        """
        if self._target is None:
            tag = self.base_tag(TOOLS_PACKAGES)
            debian_host = host_debian_suite(self._dir / _BASE_SCRIPT) is not None
            if self._existing(tag) is None and debian_host:
                probe = subprocess.run(
                    ["/usr/bin/python3", "-I", "-c", PROBE],
                    capture_output=True, text=True, check=False, timeout=60,
                )  # fmt: skip
                self._target = Target.parse(probe.stdout)
            else:
                if self._existing(tag) is None:
                    self._progress("the image's Python is learnt from its base: building it first")
                    self.build_base(TOOLS_PACKAGES)
                self._target = Target.parse(self._run_probe(tag))
        return self._target

    def _run_probe(self, tag: str) -> str:
        """:data:`PROBE`'s output in a container of ``tag`` (removed after; labelled as ours)."""
        with engine_errors("images.python_version"):
            container = self._client.containers.create(
                tag,
                ["python3", "-I", "-c", PROBE],
                network_mode="none",
                labels=container_labels("image-probe", lifetime_s=_PROBE_S),  # not reaped
            )
            try:
                container.start()
                container.wait(timeout=_PROBE_S)
                return bytes(container.logs(stdout=True, stderr=False)).decode()
            finally:
                container.remove(force=True)

    def _requirement_files(self) -> list[Path]:
        return [source for source, _ in self._tools_inputs() if source.name == "requirements.txt"]

    def toolkit_pins(self) -> list[Pin]:
        """The toolkits' Python dependencies, resolved for the images and pinned with hashes."""
        lines: list[str] = []
        for path in self._requirement_files():
            for number, text in enumerate(path.read_text().splitlines(), start=1):
                line = _uncommented(text)
                if not line or line in lines:
                    continue
                try:
                    check_requirement(line, markers=True)
                except ValueError as exc:
                    # A toolkit's file, not stockade.yaml: the error names it and the line.
                    raise ConfigError(
                        f"a toolkit's requirement cannot be used: {exc}",
                        file=str(path),
                        line=number,
                        field="toolkits",
                    ) from None
                lines.append(line)
        files = ", ".join(str(path) for path in self._requirement_files())
        return resolve(
            lines,
            self.target(),
            cache=self._wheel_cache,
            field="toolkits",
            what=f"the toolkits' requirements ({files})",
            progress=self._progress,
        )

    def spec_pins(self, spec: str, toolkit_pins: Sequence[Pin] | None = None) -> list[Pin]:
        """What ``spec``'s image adds to the tools image's, pinned (the toolkits' pins held)."""
        held = list(self.toolkit_pins() if toolkit_pins is None else toolkit_pins)
        pins = resolve(
            self._spec(spec).python,
            self.target(),
            cache=self._wheel_cache,
            field=f"images.specs.{spec}.python",
            what=f"image spec {spec!r}",
            constraints=held,
            progress=self._progress,
        )
        installed = {pin.name for pin in held}
        return [pin for pin in pins if pin.name not in installed]

    def check_requirements(self) -> None:
        """Resolve every requirement the images install, before any build starts.

        Raises :class:`~orchestrator.errors.ConfigError` naming the setting
        and every package that cannot be had: a Debian package the suite does
        not have (when the host's apt lists can tell), a Python one unknown on
        the index, without a wheel for the image's platform, or in conflict
        with the toolkits' pins.
        """
        for spec, wanted in self._specs.items():
            missing = missing_debian_packages(self._dir / _BASE_SCRIPT, wanted.debian)
            if missing:
                raise ConfigError(
                    f"image spec {spec!r}: no Debian package named {', '.join(missing)} in the "
                    "suite the images are built from",
                    field=f"images.specs.{spec}.debian",
                )
        held = self.toolkit_pins()
        for spec in self._specs:
            self.spec_pins(spec, held)

    # -- building -----------------------------------------------------------

    def _ensure(self, name: str, tag: str, build: Callable[[], str]) -> BuiltImage:
        """The image ``tag``: found, or made by ``build`` (which returns its id)."""
        started = time.monotonic()
        existing = self._existing(tag)
        image_id = existing or build()
        seconds = time.monotonic() - started
        if existing is None:
            self._progress(f"built {tag} in {seconds:.1f}s")
        return BuiltImage(
            name=name, tag=tag, image_id=image_id, built=existing is None, seconds=seconds
        )

    def build_base(self, packages: Sequence[str] = ()) -> BuiltImage:
        """The base image with ``packages`` added, built only if missing (or refreshed)."""
        packages = tuple(sorted(set(packages)))
        tag = self.base_tag(packages)
        refresh = self._refresh_base and tag not in self._refreshed
        self._refreshed.add(tag)

        def build() -> str:
            from_registry = (
                self._base_from_registry(tag, refresh=refresh)
                if self._base_image and not packages
                else None
            )
            if from_registry:
                return from_registry
            debootstrap_import(
                self._client,
                script=self._dir / _BASE_SCRIPT,
                packages=packages,
                tag=tag,
                deb_cache=self._wheel_cache.parent / "debs",
                progress=self._progress,
            )
            return self.image_id(tag)

        old = self._existing(tag) if refresh else None
        if old is None:
            return self._ensure(BASE_IMAGE, tag, build)
        return self._refresh(tag, old, build)

    def _refresh(self, tag: str, old: str, build: Callable[[], str]) -> BuiltImage:
        """The base ``tag`` (now ``old``) made again by ``build``, the superseded image removed."""
        started = time.monotonic()
        self._progress(f"refreshing {tag} from what is published now")
        image_id = build()
        seconds = time.monotonic() - started
        if image_id == old:
            self._progress(f"{tag} is unchanged ({seconds:.1f}s)")
        else:
            self._progress(f"refreshed {tag} in {seconds:.1f}s; what is built on it is built again")
            # Never forced: a container or an image built on it keeps it, and says so.
            outcome = remove_superseded(self._client, old)
            short = old.removeprefix("sha256:")[:12]
            if outcome.removed:
                self._progress(f"removed the superseded {tag} (image {short})")
            else:
                self._progress(f"kept the superseded {tag} (image {short}): {outcome.reason}")
        return BuiltImage(
            name=BASE_IMAGE, tag=tag, image_id=image_id, built=image_id != old, seconds=seconds
        )

    def _base_from_registry(self, tag: str, *, refresh: bool = False) -> str | None:
        """``tag`` on the registry base (pulled if missing, or again on ``refresh``); None
        when there is none to be had (then the base is built from Debian)."""
        assert self._base_image is not None
        reference = self._base_image
        local = self._existing(reference)
        if local is None or refresh:
            self._progress(f"pulling {reference}")
            # The registry's refusal means building from Debian, or, on a refresh, keeping
            # the local copy; an engine that does not answer is an engine error, as
            # anywhere else (no SDK exception escapes).
            with engine_errors("images.pull"):
                try:
                    self._client.images.pull(reference)
                except docker.errors.APIError as exc:
                    if local is None:
                        self._progress(
                            f"cannot pull {reference} ({exc.explanation}); building from Debian"
                        )
                        return None
                    self._progress(
                        f"cannot pull {reference} ({exc.explanation}); the local {reference} "
                        "is kept as it is, with the packages it was built with"
                    )
        with engine_errors("images.tag"):
            image = self._client.images.get(reference)
            image.tag(tag)
        return str(image.id)

    def _build(self, context: Path, tag: str, buildargs: dict[str, str], **labels: str) -> str:
        self._progress(f"building {tag}")
        return docker_build(
            self._client,
            context,
            tag=tag,
            buildargs=buildargs,
            labels={PLATFORM_LABEL: PLATFORM_VALUE, _INPUTS_LABEL: tag, **labels},
            progress=self._progress,
        )

    def build_sandbox(self, base: BuiltImage) -> BuiltImage:
        """The sandbox image on ``base``, built only if its inputs changed."""
        tag = self.sandbox_tag(base.image_id)

        def build() -> str:
            with tempfile.TemporaryDirectory(prefix="stockade-context-") as context:
                for name in _SANDBOX_FILES:
                    shutil.copy(self._dir / name, Path(context) / Path(name).name)
                return self._build(Path(context), tag, {"BASE_IMAGE": base.tag})

        return self._ensure(DEFAULT_IMAGE, tag, build)

    def _installer_context(self, context: Path, wheels: Sequence[Path]) -> None:
        """The install script, the installer and ``wheels`` into a build context."""
        shutil.copy(self._dir / _INSTALL_SCRIPT, context / "install_wheels.py")
        for source, destination in _package_files(_package_dir("installer"), Path("installer")):
            target = context / "installer" / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
        (context / "wheels").mkdir()
        for wheel in wheels:
            shutil.copy(wheel, context / "wheels" / wheel.name)

    def build_tools(self, sandbox: BuiltImage) -> BuiltImage:
        """The tools image on ``sandbox``: SDK, toolkits and their wheels."""
        tag = self.tools_tag(sandbox.image_id)
        return self._ensure(TOOLS_IMAGE, tag, lambda: self._make_tools(tag, sandbox))

    def _make_tools(self, tag: str, sandbox: BuiltImage) -> str:
        wheels = download_wheels(
            self.toolkit_pins(), self.target(), self._wheel_cache, self._progress
        )
        with tempfile.TemporaryDirectory(prefix="stockade-context-") as context_dir:
            context = Path(context_dir)
            shutil.copy(self._dir / "tools" / "Dockerfile", context / "Dockerfile")
            self._installer_context(context, wheels)
            for source, destination in self._tools_inputs():
                if source.name != "requirements.txt":
                    target = context / "lib" / destination
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(source, target)
            return self._build(context, tag, {"SANDBOX_IMAGE": sandbox.tag})

    def build_spec(self, spec: str) -> list[BuiltImage]:
        """``spec``'s image and those it stands on, each built only if missing."""
        base = self.build_base(self.spec_packages(spec))
        sandbox = self.build_sandbox(base)
        tools = self.build_tools(sandbox)
        tag = self.spec_tag(spec, tools.image_id)

        def build() -> str:
            pins = self.spec_pins(spec)
            wheels = download_wheels(pins, self.target(), self._wheel_cache, self._progress)
            with tempfile.TemporaryDirectory(prefix="stockade-context-") as context_dir:
                context = Path(context_dir)
                shutil.copy(self._dir / _SPEC_DOCKERFILE, context / "Dockerfile")
                self._installer_context(context, wheels)
                labels = {_SPEC_LABEL: spec}
                return self._build(context, tag, {"TOOLS_IMAGE": tools.tag}, **labels)

        return [base, sandbox, tools, self._ensure(spec_image_name(spec), tag, build)]

    def build_all(self) -> list[BuiltImage]:
        """Every image, in order: plain base and sandbox, the tools image, each spec's image.

        Requirements are resolved first (:meth:`check_requirements`): a spec
        that cannot be installed fails before anything is built.
        """
        self.check_requirements()
        base = self.build_base()
        built = [base, self.build_sandbox(base)]
        tools_base = self.build_base(TOOLS_PACKAGES)
        tools_sandbox = self.build_sandbox(tools_base)
        built += [tools_base, tools_sandbox, self.build_tools(tools_sandbox)]
        for spec in self._specs:
            built += self.build_spec(spec)
        unique = {image.tag: image for image in reversed(built)}
        return [image for image in built if unique.pop(image.tag, None) is not None]

    # -- finding --------------------------------------------------------------

    def resolve(self, image: str) -> str:
        """Map a logical image name to its current tag; other references pass through."""
        if image == DEFAULT_IMAGE:
            return self.sandbox_tag(self.image_id(self.base_tag()))
        if image == TOOLS_IMAGE:
            return self._tools_tag_on(TOOLS_PACKAGES)
        for spec in self._specs:
            if image == spec_image_name(spec):
                tools_id = self.image_id(self._tools_tag_on(self.spec_packages(spec)))
                return self.spec_tag(spec, tools_id)
        return image

    def base_of(self, image: str) -> str | None:
        """The tag of the base the logical image ``image`` stands on; None for other references."""
        if image == DEFAULT_IMAGE:
            return self.base_tag()
        if image == TOOLS_IMAGE:
            return self.base_tag(TOOLS_PACKAGES)
        for spec in self._specs:
            if image == spec_image_name(spec):
                return self.base_tag(self.spec_packages(spec))
        return None

    def created(self, tag: str) -> datetime:
        """When the engine made the image ``tag``, which must exist.

        For a base built from Debian, when its packages were fetched (``docker
        import`` stamps the image then); for a registry base, when its
        publisher built it.
        """
        self.image_id(tag)
        with engine_errors("images.get"):
            stamp = str(self._client.images.get(tag).attrs.get("Created", ""))
        try:
            return datetime.fromisoformat(stamp)
        except ValueError as exc:
            raise InfrastructureError(
                f"the engine gives image {tag} no creation time ({stamp!r})",
                code=ErrorCode.ENGINE_ERROR,
                op="images.get",
                retryable=False,
            ) from exc

    def current_tags(self) -> set[str]:
        """The tags of the images the current inputs make, among those built.

        What ``stockade images prune`` keeps: each image's chain (base,
        sandbox, tools, spec) is followed as far as it is built.
        """
        kept: set[str] = set()

        def built(tag: str) -> str | None:
            image_id = self._existing(tag)
            if image_id is not None:
                kept.add(tag)
            return image_id

        base = built(self.base_tag())
        if base is not None:
            built(self.sandbox_tag(base))
        chains: dict[tuple[str, ...], list[str]] = {tuple(sorted(TOOLS_PACKAGES)): []}
        for spec in self._specs:
            chains.setdefault(self.spec_packages(spec), []).append(spec)
        for packages, specs in chains.items():
            base = built(self.base_tag(packages))
            sandbox = built(self.sandbox_tag(base)) if base is not None else None
            tools = built(self.tools_tag(sandbox)) if sandbox is not None else None
            for spec in specs:
                if tools is not None:
                    built(self.spec_tag(spec, tools))
        return kept

    def _tools_tag_on(self, packages: Sequence[str]) -> str:
        sandbox = self.sandbox_tag(self.image_id(self.base_tag(packages)))
        return self.tools_tag(self.image_id(sandbox))

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
