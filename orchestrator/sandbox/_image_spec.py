"""Image specs: a team's own Debian packages and Python requirements on the tools image.

A spec is named in ``stockade.yaml`` (``images.specs.<name>``) and chosen by
a profile (``image_spec: <name>``). ``stockade images build`` builds its
image offline: the Debian packages through the same debootstrap as the base
(one root filesystem per package set), the Python requirements resolved on
the host for the image's Python, with hashes, and installed in the build.
"""

from __future__ import annotations

from typing import Annotated

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import Field, field_validator

from orchestrator.sandbox._requirement_text import check_requirement
from orchestrator.strict import StrictModel

__all__ = ["IMAGE_REFERENCE_PATTERN", "SPEC_NAME_PATTERN", "ImageSpec", "spec_image_name"]

SPEC_NAME_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
"""A spec's name: lower case, digits and single dashes (it becomes part of a Docker name)."""

_SPEC_IMAGE_PREFIX = "stockade-tools-"

DebianPackage = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$", max_length=100)]
"""A Debian package name (no version, no option: debootstrap takes names only)."""


_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
IMAGE_REFERENCE_PATTERN = (
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?/)?"
    rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
"""A Docker image reference (``[registry[:port]/]path[:tag][@sha256:digest]``), as the
engine's own grammar has it: a typo in the form is named when the file is read, not
taken for a registry that cannot be reached (the base then quietly comes from Debian)."""


def spec_image_name(spec: str) -> str:
    """The logical image name of a spec's image (``stockade-tools-<spec>``)."""
    return f"{_SPEC_IMAGE_PREFIX}{spec}"


class ImageSpec(StrictModel):
    """What a team adds to the tools image: Debian packages and Python requirements."""

    debian: list[DebianPackage] = Field(default_factory=list, max_length=200)
    """Debian packages (names) installed with the base by debootstrap, dependencies included."""
    python: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=200
    )
    """Python requirements (``name``, ``name[extra]``, ``name>=1.2,<2``), resolved with their
    dependencies for the image's Python; no URLs, files, options, environment markers, nor
    what pip reads in a requirements file (``$``, ``\\``, ``#``)."""

    @field_validator("debian")
    @classmethod
    def _unique_packages(cls, packages: list[str]) -> list[str]:
        repeated = sorted({name for name in packages if packages.count(name) > 1})
        if repeated:
            raise ValueError(f"Debian packages named twice: {', '.join(repeated)}")
        return packages

    @field_validator("python")
    @classmethod
    def _plain_requirements(cls, requirements: list[str]) -> list[str]:
        seen: dict[str, str] = {}
        for text in requirements:
            requirement = check_requirement(text, markers=False)
            key = canonicalize_name(requirement.name)
            if key in seen:
                raise ValueError(f"{requirement.name!r} is required twice ({seen[key]!r})")
            seen[key] = text
        return requirements

    def requirements(self) -> list[Requirement]:
        """The Python requirements, parsed."""
        return [Requirement(text) for text in self.python]
