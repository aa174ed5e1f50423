"""Python requirements resolved on the host for an image's Python, pinned with hashes.

Image builds have no network, so what an image installs is decided on the
host, before any build starts: pip resolves the requirements transitively for
the *image's* interpreter and machine (``--python-version``, ``--platform``,
``--implementation cp``, binary wheels only) without installing anything
(``pip install --dry-run --report``), and every distribution it chose is
pinned as ``name==version`` with the wheel's SHA-256. A requirement that
cannot be met is reported by name — no such package on the index, no wheel
for this image's platform, or a conflict (with the toolkits' own pins, which
an image spec's resolution takes as constraints) — as a
:class:`~orchestrator.errors.ConfigError` naming the setting.

Resolutions are cached by their inputs, so a second build resolves nothing
(and needs no network once the wheels are downloaded). The cache decides what
images install, so only this user may write it (:func:`private_cache`), and a
cached resolution is used only when every pin in it is well formed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from orchestrator.errors import ConfigError, ErrorCode, InfrastructureError

__all__ = ["PROBE", "Pin", "Target", "pip_command", "private_cache", "resolve"]

PROBE = (
    "import os, platform, sys; "
    "print(f'{sys.version_info[0]}{sys.version_info[1]}', platform.machine(), "
    "os.confstr('CS_GNU_LIBC_VERSION'))"
)
"""Python that prints what a :class:`Target` is made of (run by the image's python3)."""

_PIP_TIMEOUT_S = 900
_WHEEL_NAME = re.compile(r"^[A-Za-z0-9_.+!-]+\.whl$")
_CANONICAL_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION_TEXT = re.compile(r"^[A-Za-z0-9.+!_-]+$")
_NAME_AT_START = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")
_OLDEST_GLIBC_MINOR = 5  # manylinux1 is glibc 2.5
_LEGACY_MANYLINUX = (("manylinux2014", 17), ("manylinux2010", 12), ("manylinux1", 5))


@dataclass(frozen=True, kw_only=True)
class Target:
    """The interpreter and platform an image's wheels must fit."""

    python: str
    """CPython version without the dot (``311``)."""
    machine: str
    """``x86_64``, ``aarch64``..."""
    glibc: tuple[int, int]
    """The C library's version (wheels for manylinux up to it fit)."""

    @classmethod
    def parse(cls, text: str) -> Target:
        """From :data:`PROBE`'s output (``311 x86_64 glibc 2.36``)."""
        match = re.fullmatch(r"\s*(\d{2,3}) (\S+) glibc (\d+)\.(\d+)\s*", text)
        if match is None:
            raise InfrastructureError(
                f"cannot tell the image's Python and platform from {text.strip()!r}",
                code=ErrorCode.IMAGE_BUILD_FAILED,
                op="images.target",
                retryable=False,
            )
        python, machine, major, minor = match.groups()
        return cls(python=python, machine=machine, glibc=(int(major), int(minor)))

    def platforms(self) -> list[str]:
        """Every manylinux platform tag this target runs, newest first."""
        major, newest = self.glibc
        tags = [
            f"manylinux_{major}_{minor}_{self.machine}"
            for minor in range(newest, _OLDEST_GLIBC_MINOR - 1, -1)
        ]
        tags += [
            f"{legacy}_{self.machine}" for legacy, minor in _LEGACY_MANYLINUX if minor <= newest
        ]
        return tags

    def pip_options(self) -> list[str]:
        """pip's options that make it choose binary wheels for this target."""
        options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python]
        for platform in self.platforms():
            options += ["--platform", platform]
        return options

    def __str__(self) -> str:
        return (
            f"CPython {self.python[0]}.{self.python[1:]} on {self.machine}, "
            f"glibc {self.glibc[0]}.{self.glibc[1]}"
        )


@dataclass(frozen=True, kw_only=True)
class Pin:
    """One distribution an image installs, exactly."""

    name: str
    """Canonical project name."""
    version: str
    """The version chosen."""
    sha256: str
    """The wheel's SHA-256 (hex)."""
    filename: str
    """The wheel's file name."""

    def line(self) -> str:
        """A requirements-file line pip checks the download against."""
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


def pip_command(*args: str) -> list[str]:
    """``python -m pip ARGS`` with this process's interpreter, quiet and non-interactive."""
    return [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--no-input"]


def _run_pip(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            pip_command(*args), capture_output=True, text=True, check=False, timeout=_PIP_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfrastructureError(
            f"pip did not finish: {exc}",
            code=ErrorCode.IMAGE_BUILD_FAILED,
            op="images.resolve",
            retryable=True,
        ) from exc


def private_cache(directory: Path) -> Path:
    """``directory``, made if missing (0700), checked to be writable by this user alone.

    Whoever can write the cache chooses what images install: a resolution in
    ``locks/`` names each distribution, version and hash that is downloaded (an
    old, vulnerable version; another project), and is trusted as it stands.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = directory.stat()
    if status.st_uid != os.geteuid() or status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise InfrastructureError(
            f"the wheel cache {directory} can be written by others (owner uid {status.st_uid}, "
            f"mode {stat.S_IMODE(status.st_mode):o}): whoever writes it chooses what the images "
            "install; make it this user's alone (chown, chmod go-w) or remove it",
            code=ErrorCode.IMAGE_BUILD_FAILED,
            op="images.cache",
            retryable=False,
        )
    return directory


def _cached_pins(path: Path) -> list[Pin] | None:
    """The pins a cached resolution holds; None when it is not one this module wrote.

    Each goes into a requirements file (``name==version --hash=...``) and names
    a file in the cache: nothing in one may be read as an option or a path.
    """
    try:
        entries = json.loads(path.read_text())
        pins = [Pin(**entry) for entry in entries]
    except (OSError, ValueError, TypeError):
        return None
    for pin in pins:
        if not (
            _CANONICAL_NAME.fullmatch(pin.name)
            and _SHA256.fullmatch(pin.sha256)
            and _WHEEL_NAME.fullmatch(pin.filename)
            and _plain_version(pin.version)
        ):
            return None
    return pins


def _plain_version(text: str) -> bool:
    """A version as a distribution's metadata states it (PEP 440, not always normalised)."""
    try:
        Version(text)
    except InvalidVersion:
        return False
    return _VERSION_TEXT.fullmatch(text) is not None


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def resolve(
    requirements: Sequence[str],
    target: Target,
    *,
    cache: Path,
    field: str,
    what: str,
    constraints: Sequence[Pin] = (),
    progress: Callable[[str], None] = lambda _message: None,
) -> list[Pin]:
    """Every distribution ``requirements`` need on ``target``, pinned with its hash.

    ``constraints`` are pins that must stay as they are (the toolkits' own);
    ``what`` and ``field`` name the requirements' owner in errors (a
    :class:`ConfigError` listing every package that cannot be had, by name)
    and in ``progress`` (told only when pip has to be asked).
    """
    if not requirements:
        return []
    cached = (
        cache
        / "locks"
        / f"{_key(list(requirements), [asdict(p) for p in constraints], asdict(target))}.json"
    )
    private_cache(cache)
    if cached.is_file():
        pins = _cached_pins(cached)
        if pins is not None:
            return pins
    progress(f"resolving {what}: {', '.join(requirements)}")
    problems = _direct_conflicts(requirements, constraints)
    if problems:
        raise _error(what, field, target, problems)
    with tempfile.TemporaryDirectory(prefix="stockade-resolve-") as work:
        wanted = Path(work) / "requirements.txt"
        wanted.write_text("".join(f"{line}\n" for line in requirements))
        pinned = Path(work) / "toolkit-pins.txt"
        pinned.write_text("".join(f"{pin.name}=={pin.version}\n" for pin in constraints))
        report = Path(work) / "report.json"
        completed = _run_pip(
            # Not --quiet: pip says what conflicts only at its normal verbosity.
            "install", "--dry-run", "--ignore-installed", "--report", str(report),
            *target.pip_options(), "-r", str(wanted), "-c", str(pinned),
        )  # fmt: skip
        if completed.returncode != 0:
            said = completed.stdout + "\n" + completed.stderr
            raise _error(what, field, target, _explain(said, target))
        pins = _pins(json.loads(report.read_text()), what, field, target)
    private_cache(cached.parent)
    partial = cached.with_suffix(".partial")
    partial.write_text(json.dumps([asdict(pin) for pin in pins], indent=1))
    partial.replace(cached)
    return pins


def _direct_conflicts(requirements: Sequence[str], constraints: Sequence[Pin]) -> list[str]:
    """Requirements the toolkits' pins rule out on their own (no resolver needed to say so)."""
    pins = {pin.name: pin for pin in constraints}
    problems = []
    for text in requirements:
        requirement = Requirement(text)
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is not None and not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(
                f"{requirement.name}: {text!r} conflicts with the toolkits' pin "
                f"{pin.name}=={pin.version}"
            )
    return problems


def _explain(said: str, target: Target) -> list[str]:
    """What pip's failure (its output, both streams) means, package by package."""
    problems = []
    for wanted in dict.fromkeys(re.findall(r"No matching distribution found for (\S+)", said)):
        problems.append(_why_missing(wanted, target))
    if "The conflict is caused by:" in said:
        lines = said.split("The conflict is caused by:", 1)[1].strip().splitlines()
        causes = []
        for line in lines:
            if not line.strip():
                break
            causes.append(line.strip().replace("(constraint)", "(the toolkits' pin)"))
        problems.append("conflicting requirements: " + "; ".join(causes))
    if not problems:
        errors = [line for line in said.splitlines() if line.startswith("ERROR")]
        problems.append(" ".join(errors[-3:]) or said.strip()[-500:] or "pip failed")
    return problems


def _why_missing(wanted: str, target: Target) -> str:
    """``wanted`` (a requirement pip found nothing for): unknown, or without a wheel here."""
    match = _NAME_AT_START.match(wanted)
    name = match.group(0) if match else wanted
    probe = _run_pip("index", "versions", name)
    if probe.returncode != 0:
        return f"{name}: no such package on the index"
    versions = next(
        (line.split(":", 1)[1].strip() for line in probe.stdout.splitlines()
         if line.startswith("Available versions:")),
        "",
    )  # fmt: skip
    shown = ", ".join(versions.split(", ")[:5]) if versions else "some"
    return (
        f"{name}: no wheel of {wanted} for {target} (the index has versions {shown}, "
        "but only as source distributions or for other platforms; images install wheels only)"
    )


def _pins(report: dict[str, object], what: str, field: str, target: Target) -> list[Pin]:
    pins = []
    installs = report.get("install")
    for item in installs if isinstance(installs, list) else []:
        metadata, info = item.get("metadata", {}), item.get("download_info", {})
        name = str(canonicalize_name(str(metadata.get("name", "?"))))
        digest = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        filename = urllib.parse.unquote(str(info.get("url", "")).rsplit("/", 1)[-1])
        if not isinstance(digest, str) or not _WHEEL_NAME.fullmatch(filename):
            raise _error(what, field, target, [f"{name}: the index gave no hashed wheel"])
        pins.append(
            Pin(name=name, version=str(metadata.get("version")), sha256=digest, filename=filename)
        )
    return sorted(pins, key=lambda pin: pin.name)


def _error(what: str, field: str, target: Target, problems: list[str]) -> ConfigError:
    listed = "\n  ".join(problems)
    return ConfigError(
        f"{what} cannot be installed on the image ({target}):\n  {listed}", field=field
    )
