"""What goes into an image build from a configuration file or a toolkit, checked before it is used.

Pure logic: no engine, no network (nothing here reaches pip, debootstrap or Docker).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import docker
import docker.errors
import pytest
import requests.exceptions

from orchestrator.config import load_config
from orchestrator.errors import ConfigError, InfrastructureError
from orchestrator.sandbox._image_spec import ImageSpec
from orchestrator.sandbox.images import ImageBuilder

NO_ENGINE = cast(docker.DockerClient, None)


def toolkit(root: Path, name: str, requirements: str) -> None:
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "requirements.txt").write_text(requirements)


@pytest.mark.parametrize(
    "requirement",
    [
        "sympy===${AWS_SECRET_ACCESS_KEY}",  # pip expands it: the secret in its error
        "sympy===1\\",  # pip joins the next line to it
        "sympy===1#x",
        "sympy===1\x1b]0;owned\x07",
        "sympy===1\u202e",
    ],
)
def test_a_spec_requirement_pip_would_read_more_into_is_refused(requirement: str) -> None:
    with pytest.raises(ValueError, match="not allowed in a requirement"):
        ImageSpec.model_validate({"python": [requirement]})


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("--index-url http://127.0.0.1:9/simple", "is an option"),
        ("-r /etc/shadow", "is an option"),
        ("evil @ https://127.0.0.1:9/evil.whl", "not a URL"),
        ("evil===${HOME}", "not allowed in a requirement"),
        ("not a requirement!", "is not a requirement"),
    ],
)
def test_a_toolkit_requirement_line_that_is_not_a_plain_requirement_names_its_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, why: str
) -> None:
    toolkit(tmp_path, "evil_toolkit", f"# pinned by the team\ntabulate  # tables\n{line}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    builder = ImageBuilder(NO_ENGINE, toolkits=["evil_toolkit"], wheel_cache=tmp_path / "cache")
    with pytest.raises(ConfigError) as caught:
        builder.toolkit_pins()
    error = caught.value
    assert error.file == str(tmp_path / "evil_toolkit" / "requirements.txt")
    assert error.line == 3 and error.field == "toolkits"
    assert why in error.message and repr(line) in error.message


def test_only_the_package_goes_into_the_tools_image_never_what_sits_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toolkit(tmp_path, "team_toolkit", "")
    package = tmp_path / "team_toolkit"
    (package / "tools.py").write_text("TOOLS = []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    builder = ImageBuilder(NO_ENGINE, toolkits=["team_toolkit"], wheel_cache=tmp_path / "cache")
    clean = builder.tools_tag("sha256:sandbox")
    # A checkout's secrets and tooling are not the package: a model's code would read them.
    (package / ".env").write_text("API_KEY=secret\n")
    (package / ".git").mkdir()
    (package / ".git" / "config").write_text("[credential]\n")
    assert builder.tools_tag("sha256:sandbox") == clean
    (package / "more.py").write_text("")
    assert builder.tools_tag("sha256:sandbox") != clean, "the package's own files count"
    # A link out of the package would copy what it points at (a key, a host file).
    secret = tmp_path / "id_ed25519"
    secret.write_text("PRIVATE KEY\n")
    (package / "notes.txt").symlink_to(secret)
    with pytest.raises(ConfigError) as caught:
        builder.tools_tag("sha256:sandbox")
    assert caught.value.field == "toolkits"
    assert str(package / "notes.txt") in caught.value.message and str(secret) in str(caught.value)
    (package / "notes.txt").unlink()
    (package / "notes.txt").symlink_to(package / "tools.py")  # inside the package: fine
    builder.tools_tag("sha256:sandbox")


@pytest.mark.parametrize(
    "reference",
    [
        "python:3.12-slim",
        "debian",
        "registry.example.com:5000/team/python:3.12",
        "localhost/py@sha256:" + "0" * 64,
        "ghcr.io/org/sub_group/image__x:v1.2-rc_3",
    ],
)
def test_a_base_image_reference_in_the_engines_grammar_is_taken(reference: str) -> None:
    assert load_config(environ={"STOCKADE_BASE_IMAGE": reference}).config.images.base_image == (
        reference
    )


@pytest.mark.parametrize(
    "reference", ["--help", "Python:3.12", "python:3.12 slim", "python:3.12\n", "../x", "x:"]
)
def test_a_base_image_that_is_no_reference_names_the_setting(reference: str) -> None:
    # It was taken for an image no registry had: the base quietly came from Debian.
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"STOCKADE_BASE_IMAGE": reference})
    assert caught.value.field == "images.base_image"
    assert "STOCKADE_BASE_IMAGE" in str(caught.value)


class _NoImages:
    """The images of an engine that has none, and whose pulls never get an answer."""

    def get(self, name: str) -> None:
        raise docker.errors.ImageNotFound(f"no such image: {name}")

    def pull(self, reference: str) -> None:
        raise requests.exceptions.ConnectionError("connection reset while pulling")


def test_a_pull_the_engine_does_not_answer_is_an_engine_error(tmp_path: Path) -> None:
    client = SimpleNamespace(images=_NoImages())
    builder = ImageBuilder(
        cast(docker.DockerClient, client), base_image="python:3.12-slim", wheel_cache=tmp_path
    )
    with pytest.raises(InfrastructureError) as caught:
        builder.build_base()
    assert caught.value.op == "images.pull"
