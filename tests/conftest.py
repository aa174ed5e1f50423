"""Shared fixtures: a real Docker engine, the built images, leak checks."""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from hypothesis import settings

from orchestrator.sandbox.docker_backend import DockerBackend
from orchestrator.sandbox.images import ImageBuilder
from orchestrator.sandbox.labels import OWNER_LABEL, PLATFORM_LABEL, current_owner
from orchestrator.sandbox.profile import SandboxProfile

RUNTIMES = ("runc", "runsc")

# Tests leave nothing behind in the checkout: no example database.
settings.register_profile("stockade", database=None)
settings.load_profile("stockade")


@pytest.fixture(autouse=True)
def stockade_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test (and every ``stockade`` it runs) keeps its state in a directory of its own.

    Without this a test calling the CLI would write the audit log and the
    approval database into the real ``~/.stockade``.
    """
    home = tmp_path_factory.mktemp("stockade-home")
    monkeypatch.setenv("STOCKADE_HOME", str(home))
    for variable in ("STOCKADE_AUDIT_LOG", "STOCKADE_APPROVALS_DB", "STOCKADE_POLICY"):
        monkeypatch.delenv(variable, raising=False)
    return home


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The engine scripts/setup.sh started. Its absence fails the tests, never skips them."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine: run scripts/setup.sh first ({exc})")
    yield client
    client.close()


_BEGAN = pytest.StashKey[int]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note when the session began, for the check of what its image builds left."""
    session.config.stash[_BEGAN] = int(time.time())


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove, and fail the session on, untagged Stockade images its builds left behind.

    Checked once, in the process that sees the whole session: under
    pytest-xdist that is the controller, after every worker is done, since one
    worker finishing early must not take a build's intermediate image that
    another worker is still using for one left behind.
    """
    if hasattr(session.config, "workerinput") or _BEGAN not in session.config.stash:
        return
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        return  # no engine: the tests that needed one have failed already
    try:
        left = []
        for image_id in _untagged_images(client, since=session.config.stash[_BEGAN]):
            try:
                client.api.remove_image(image_id, force=True)
            except docker.errors.APIError as exc:
                if exc.status_code not in (404, 409):
                    raise
                continue  # gone meanwhile, or another session's build took it up again
            left.append(image_id)
    finally:
        client.close()
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")  # the progress line may still be open
            reporter.write_line(
                f"FAILED: the tests left {len(left)} untagged Stockade image(s) behind "
                "(removed now)",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _untagged_images(client: docker.DockerClient, since: int) -> list[str]:
    """Untagged images with Stockade's label made since ``since`` (a build's leftovers).

    Not one a container uses: that is a build still under way, another pytest
    session's on the same engine (a developer's run beside a whole suite).
    """
    found = client.api.images(filters={"dangling": True, "label": PLATFORM_LABEL})
    used = {container["ImageID"] for container in client.api.containers(all=True)}
    return [
        image["Id"] for image in found if int(image["Created"]) >= since and image["Id"] not in used
    ]


@pytest.fixture(scope="session")
def images(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> ImageBuilder:
    """The sandbox images, built if missing (by one pytest-xdist worker while the others wait)."""
    builder = ImageBuilder(docker_client)
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        builder.build_all()
        return builder
    # The workers' base temporary directories share this parent, removed after the run.
    lock_path = tmp_path_factory.getbasetemp().parent / "images.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        builder.build_all()
    return builder


def _own_containers(client: docker.DockerClient) -> list[str]:
    label = f"{OWNER_LABEL}={current_owner().label()}"
    return [c["Id"] for c in client.api.containers(all=True, filters={"label": label})]


@pytest.fixture
def own_containers(docker_client: docker.DockerClient) -> Callable[[], list[str]]:
    """Ids of containers, in any state, owned by this test process."""
    return lambda: _own_containers(docker_client)


@pytest.fixture
def no_leaks(docker_client: docker.DockerClient) -> Iterator[None]:
    """Fails the test if any container of this process outlives it."""
    yield
    leaked = _own_containers(docker_client)
    for container_id in leaked:
        docker_client.api.remove_container(container_id, force=True)
    assert leaked == [], f"{len(leaked)} container(s) leaked"


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    """Each sandbox test runs under runc and under gVisor."""
    return str(request.param)


@pytest.fixture
def profile(runtime: str) -> SandboxProfile:
    """A tight profile for tests: short deadline, small pool."""
    return SandboxProfile(
        name=f"test-{runtime}",
        runtime=runtime,
        timeout_s=10,
        pool_size=1,  # type: ignore[arg-type]
        memory_mb=256,
        pids=64,
        output_limit_bytes=64 * 1024,
        workspace_mb=4,
        tmp_mb=8,
        workspace_max_files=200,
    )


@pytest.fixture
async def backend(
    docker_client: docker.DockerClient, images: ImageBuilder, no_leaks: None
) -> AsyncIterator[DockerBackend]:
    """A started backend, closed (and checked for leaks) after the test."""
    async with DockerBackend(docker_client, images=images, reap_on_start=False) as started:
        yield started


def _collect_quietly() -> None:
    """Run the GC with ResourceWarning off (see ``_collect_leaked_sockets_per_module``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The same collection once more when the run ends, before pytest's own.

    Some of what an engine restart leaves (the SDK's sockets of failed
    connects, made in the backend's threads) becomes garbage only as the
    session goes; found by pytest's collection at exit instead, it would end a
    run whose last module restarted the engine with an error after every test
    had passed.
    """
    _collect_quietly()


@pytest.fixture(autouse=True, scope="module")
def _collect_leaked_sockets_per_module() -> Iterator[None]:
    """Collect what a module's tests left for the GC before the next module starts.

    A full run leaves some Unix sockets unclosed (the Docker SDK's failed
    connects, and one source not yet found: run with PYTHONTRACEMALLOC=15 to
    see where they are made). Unfound, the GC finalises them during whichever
    test runs next, which then fails on an unrelated ResourceWarning.
    """
    yield
    _collect_quietly()


@pytest.fixture
def gates_root() -> Iterator[Path]:
    """A short directory for egress gates, removed after the test: a gate's socket path
    must fit in 107 bytes, and pytest's ``tmp_path`` under CI's temporary directory is
    ~60 bytes before the gates' own names."""
    root = Path(tempfile.mkdtemp(prefix="stk-g-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)
