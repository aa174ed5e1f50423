"""Image specs: a team's packages, resolved with hashes before any build, installed offline.

The builds are real (debootstrap reaches Debian's mirror and pip the package
index on the host; the image builds themselves have no network), and so are
the tool calls on the images they make.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from orchestrator.platform import Platform
from orchestrator.platform.doctor import diagnose
from orchestrator.sandbox._image_spec import ImageSpec
from orchestrator.sandbox._image_steps import missing_debian_packages
from orchestrator.sandbox.images import TOOLS_PACKAGES, ImageBuilder, default_images_dir
from orchestrator.tools import ToolCall, ToolResult, ToolStatus

UNKNOWN = "this-package-does-not-exist-stockade"


def write_config(tmp_path: Path, specs: dict[str, object], profile: dict[str, object]) -> Path:
    policy = tmp_path / "allow.yaml"
    policy.write_text("version: 1\ndefault: allow\n")
    config = tmp_path / "stockade.yaml"
    config.write_text(
        json.dumps(
            {
                "state_dir": str(tmp_path / "state"),
                "policy": str(policy),
                "toolkits": ["toolkits.python", "toolkits.shell"],
                "images": {"specs": specs},
                "sandbox": {"profiles": {"default": {"pool_size": 0, **profile}}},
            },
            indent=1,  # one key a line: errors point at the line of the field
        )
    )
    return config


def stockade(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("STOCKADE_")},
    )


def test_spec_fields_refuse_what_pip_or_debootstrap_would_misread() -> None:
    for python in (["--index-url=http://127.0.0.1/simple"], ["pkg @ https://127.0.0.1/p.whl"],
                   ["numpy; python_version < '3'"], ["numpy", "NumPy>=1"], ["not a requirement!"]):  # fmt: skip
        with pytest.raises(ValueError, match="python"):
            ImageSpec.model_validate({"python": python})
    for debian in (["--include=evil"], ["jq", "jq"], ["Upper"], ["a,b"]):
        with pytest.raises(ValueError, match="debian"):
            ImageSpec.model_validate({"debian": debian})
    ImageSpec.model_validate({"debian": ["jq", "libgomp1"], "python": ["sympy>=1.12,<2", "a[b]"]})


def test_a_profile_naming_an_unknown_spec_fails_with_file_line_and_field(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"science": {"python": ["sympy"]}}, {"image_spec": "scince"})
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    error = caught.value
    assert error.file == str(config) and error.line is not None
    assert "image_spec" in str(error) and "'scince'" in str(error) and "science" in str(error)
    good = load_config(write_config(tmp_path, {"science": {}}, {"image_spec": "science"}))
    profile = good.config.sandbox.effective_profiles()["default"]
    assert profile.image == "stockade-tools-science"


def test_a_changed_spec_is_a_new_image_and_equal_package_sets_share_a_base(
    docker_client: docker.DockerClient,
) -> None:
    def builder(**specs: ImageSpec) -> ImageBuilder:
        return ImageBuilder(docker_client, specs=specs)

    one = builder(s=ImageSpec(python=["sympy"]))
    assert one.spec_tag("s", "sha256:tools") == one.spec_tag("s", "sha256:tools"), "pure"
    assert builder(s=ImageSpec(python=["sympy==1.13.3"])).spec_tag("s", "sha256:tools") != (
        one.spec_tag("s", "sha256:tools")
    )
    assert one.spec_tag("s", "sha256:other-tools") != one.spec_tag("s", "sha256:tools")
    # Python requirements only: the tools image's own base serves the spec.
    assert one.base_tag(one.spec_packages("s")) == one.base_tag(TOOLS_PACKAGES)
    same = builder(s=ImageSpec(debian=["nodejs"]))
    assert same.base_tag(same.spec_packages("s")) == one.base_tag(TOOLS_PACKAGES)
    more = builder(s=ImageSpec(debian=["jq"]), t=ImageSpec(debian=["jq", "nodejs"], python=["x"]))
    assert more.base_tag(more.spec_packages("s")) != one.base_tag(TOOLS_PACKAGES)
    assert more.base_tag(more.spec_packages("s")) == more.base_tag(more.spec_packages("t"))


@pytest.mark.docker
def test_an_unknown_requirement_fails_before_any_build_with_its_name(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"science": {"python": ["sympy", UNKNOWN]}}, {})
    done = stockade("images", "build", "--config", str(config))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{UNKNOWN}: no such package on the index" in done.stderr
    assert f"{config}:" in done.stderr and "images.specs.science.python" in done.stderr
    assert "building " not in done.stderr and "Step " not in done.stderr, "nothing was built"


@pytest.mark.docker
@pytest.mark.parametrize(
    ("requirement", "named"),
    [
        # Only a source distribution on the index: nothing the offline build could install.
        ("pycrypto", "pycrypto: no wheel of pycrypto for CPython 3."),
        # Against the toolkits' own pin of numpy, directly...
        ("numpy<2", "numpy: 'numpy<2' conflicts with the toolkits' pin numpy=="),
        # ... and through a dependency (numba 0.58 needs numpy<1.27).
        ("numba==0.58.1", "numba 0.58.1 depends on numpy"),
    ],
)
def test_what_cannot_be_installed_is_named_before_any_build(
    docker_client: docker.DockerClient, images: ImageBuilder, tmp_path: Path, requirement: str,
    named: str,
) -> None:  # fmt: skip
    progress: list[str] = []
    builder = ImageBuilder(
        docker_client,
        specs={"team": ImageSpec(python=[requirement])},
        wheel_cache=tmp_path / "wheels",
        progress=progress.append,
    )
    with pytest.raises(ConfigError) as caught:
        builder.build_all()
    assert caught.value.field == "images.specs.team.python"
    assert named in str(caught.value), str(caught.value)
    assert not [line for line in progress if line.startswith(("building", "Step"))], progress


@pytest.mark.docker
def test_an_unknown_debian_package_is_named_before_any_build(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    # This host is the Debian suite the bases come from, with its apt lists:
    # they tell, so debootstrap is never started to find out.
    script = default_images_dir() / "base" / "build-rootfs.sh"
    if missing_debian_packages(script, ["jq"]) != []:
        pytest.fail("the host's apt lists cannot tell: run apt-get update (scripts/setup.sh)")
    progress: list[str] = []
    builder = ImageBuilder(
        docker_client,
        specs={"team": ImageSpec(debian=["jq", UNKNOWN])},
        wheel_cache=tmp_path / "wheels",
        progress=progress.append,
    )
    with pytest.raises(ConfigError) as caught:
        builder.check_requirements()
    assert caught.value.field == "images.specs.team.debian"
    assert f"no Debian package named {UNKNOWN}" in str(caught.value)
    assert progress == [], "nothing resolved, downloaded or built"


async def _call(platform: Platform, name: str, **arguments: object) -> dict[str, object]:
    result: ToolResult = await platform.gateway.call(
        ToolCall(id="t", name=name, arguments=json.dumps(arguments))
    )
    assert result.status is ToolStatus.OK, result
    output: dict[str, object] = json.loads(result.output)
    return output


@pytest.fixture
def removed_after(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Tags the test built, removed afterwards."""
    tags: list[str] = []
    yield tags
    for tag in reversed(tags):
        docker_client.images.remove(tag, force=True)


_BUILT = re.compile(r"^\s*built (\S+) in ", re.MULTILINE)


def build(config: Path, removed_after: list[str]) -> tuple[dict[str, bool], str]:
    """``stockade images build --json``: whether each tag was built; the progress shown.

    Every image it built is removed after the test, also when the build
    failed half-way (its progress names each one as it is done).
    """
    done = stockade("images", "build", "--json", "--config", str(config))
    removed_after += [tag for tag in _BUILT.findall(done.stderr) if tag not in removed_after]
    assert done.returncode == 0, done.stderr
    return {image["tag"]: image["built"] for image in json.loads(done.stdout)}, done.stderr


def remove_with_what_is_built_on_it(client: docker.DockerClient, tag: str) -> None:
    """Remove ``tag`` and every image built on it (what an interrupted run may have left)."""
    try:
        root = client.images.get(tag).id
    except docker.errors.ImageNotFound:
        return
    parents = {image["Id"]: image["ParentId"] for image in client.api.images(all=True)}

    def built_on_root(image_id: str) -> bool:
        while image_id:
            image_id = parents.get(image_id, "")
            if image_id == root:
                return True
        return False

    on_it = [image for image in client.api.images() if built_on_root(image["Id"])]
    for image in sorted(on_it, key=lambda image: -int(image["Created"])):  # the last built first
        for name in image["RepoTags"] or []:
            client.images.remove(name, force=True)
    client.images.remove(tag, force=True)


def _tag(images: dict[str, bool], prefix: str) -> str:
    return next(tag for tag in images if tag.startswith(prefix))


@pytest.mark.docker
async def test_a_spec_with_python_packages_builds_offline_and_its_profile_uses_it(
    images: ImageBuilder,
    no_leaks: None,
    tmp_path: Path,
    removed_after: list[str],
    docker_client: docker.DockerClient,
) -> None:
    config = write_config(tmp_path, {"science": {"python": ["sympy"]}}, {"image_spec": "science"})
    built, shown = build(config, removed_after)
    tag = _tag(built, "stockade-tools-science:")
    if tag not in removed_after:
        removed_after.append(tag)
    assert built[tag], "the spec's image was built"
    # The spec's Dockerfile has an install stage on the tools image: it is not
    # left behind as an untagged image (it would carry the tools image's labels).
    tools = _tag(built, "stockade-tools:")
    leftovers = {"dangling": True, "label": f"org.stockade.inputs={tools}"}
    assert not docker_client.images.list(filters=leftovers), "no stage is left behind"
    assert "resolving image spec 'science': sympy" in shown
    assert "downloading" in shown and f"built {tag}" in shown
    assert _tag(built, "stockade-tools:") == images.resolve("stockade-tools"), (
        "a spec with Python packages only stands on the tools image itself"
    )
    assert [tag for tag, new in built.items() if new] == [tag], "nothing else was rebuilt"
    loaded = load_config(config)
    checks = {check.name: check for check in await diagnose(loaded)}
    assert checks["images built and current"].outcome == "ok"
    assert tag in checks["images built and current"].detail
    async with Platform.open(loaded) as platform:
        done = await _call(platform, "python.run", code="import sympy\nprint(sympy.sqrt(8))")
        assert done == {"stdout": "2*sqrt(2)\n", "stderr": "", "exit_code": 0}
        # A real install, not an unzip: the wheel's console script and its data
        # directory (a manual page) are where pip would put them, and the script runs.
        script = (
            "head -n 1 /usr/local/bin/isympy; isympy --help | head -n 1; "
            "test -f /usr/local/share/man/man1/isympy.1 && echo man page; "
            "ls /opt/stockade/lib | grep -c '\\.data$'; command -v f2py"
        )
        shell = await _call(platform, "shell.run", command=script)
        assert shell["stdout"] == (
            "#!/usr/bin/python3\nusage: isympy [options] -- [ipython options]\n"
            "man page\n0\n/usr/local/bin/f2py\n"
        ), shell


@pytest.mark.docker
async def test_a_spec_with_a_debian_package_gets_a_base_of_its_own(
    images: ImageBuilder,
    no_leaks: None,
    tmp_path: Path,
    removed_after: list[str],
    docker_client: docker.DockerClient,
) -> None:
    config = write_config(tmp_path, {"jq": {"debian": ["jq"]}}, {"image_spec": "jq"})
    stale = ImageBuilder(docker_client, specs={"jq": ImageSpec(debian=["jq"])})
    remove_with_what_is_built_on_it(docker_client, stale.base_tag(stale.spec_packages("jq")))
    built, shown = build(config, removed_after)
    assert "debootstrap" in shown and "+ jq, nodejs" in shown
    assert [tag.split(":")[0] for tag, new in built.items() if new] == [
        "stockade-base",
        "stockade-sandbox",
        "stockade-tools",
        "stockade-tools-jq",
    ], "a base of its own, and the images on it"
    async with Platform.open(load_config(config)) as platform:
        done = await _call(
            platform,
            "shell.run",
            command="echo '{\"a\": [1, 2]}' | jq -c .a; node -e 'console.log(1)'",
        )
        assert done["stdout"] == "[1,2]\n1\n", done
