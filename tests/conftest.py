"""Shared fixtures: a real Docker engine, the built images, leak checks."""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import subprocess
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
from orchestrator.sandbox.profile import Runtime, SandboxProfile

RUNTIMES: tuple[Runtime, ...] = ("runc", "runsc")

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
_SESSIONS = pytest.StashKey[int]()
# Every test session on this machine holds a shared lock on this file while it
# runs: the untagged images a build leaves are judged only by a session that
# finds itself alone, since another's build under way has untagged images too
# (between its steps, in no container), and removing one breaks that build.
_SESSIONS_LOCK = Path("/run/lock/stockade-test-sessions.lock")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Note when the session began and that it runs, for the check of what its builds left."""
    if hasattr(session.config, "workerinput"):
        return  # the controller speaks for the whole session
    session.config.stash[_BEGAN] = int(time.time())
    _SESSIONS_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_SESSIONS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    session.config.stash[_SESSIONS] = fd


def _alone(session: pytest.Session) -> bool:
    """Whether no other test session runs on this machine (then the lock file goes too)."""
    fd = session.config.stash[_SESSIONS]
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # lets the lock go, shared or exclusive
    _SESSIONS_LOCK.unlink(missing_ok=True)
    return True


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove, and fail the session on, untagged Stockade images its builds left behind.

    Checked once, in the process that sees the whole session: under
    pytest-xdist that is the controller, after every worker is done, since one
    worker finishing early must not take a build's intermediate image that
    another worker is still using for one left behind.
    """
    if _BEGAN not in session.config.stash:
        return  # an xdist worker
    if not _alone(session):
        _say(session, "untagged images not checked: another test session is running")
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
            except docker.errors.NotFound:
                continue  # gone meanwhile
            left.append(image_id)
    finally:
        client.close()
    if left:
        _say(
            session,
            f"FAILED: the tests left {len(left)} untagged Stockade image(s) behind (removed now)",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _say(session: pytest.Session, line: str, *, red: bool = False) -> None:
    """A line on the terminal at the session's end."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n")  # the progress line may still be open
        reporter.write_line(line, red=red)


def _untagged_images(client: docker.DockerClient, since: int) -> list[str]:
    """Untagged images with Stockade's label made since ``since`` (a build's leftovers)."""
    found = client.api.images(filters={"dangling": True, "label": PLATFORM_LABEL})
    return [image["Id"] for image in found if int(image["Created"]) >= since]


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
def runtime(request: pytest.FixtureRequest) -> Runtime:
    """Each sandbox test runs under runc and under gVisor."""
    param: Runtime = request.param  # one of RUNTIMES
    return param


@pytest.fixture
def profile(runtime: Runtime) -> SandboxProfile:
    """A tight profile for tests: short deadline, small pool."""
    return SandboxProfile(
        name=f"test-{runtime}",
        runtime=runtime,
        timeout_s=10,
        pool_size=1,
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


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 KiB tmpfs, mounted for the test and unmounted after it."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k,mode=0700", "tmpfs", str(mount)],
                   check=True)  # fmt: skip
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
