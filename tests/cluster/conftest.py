"""One real two-node Ray cluster for every test of this package.

Forming it costs ~30 s and a lot of the machine, so the test modules share it;
it is torn down once the package's last test is done, not at the end of the
session, so that its idle daemons do not tax the tests that follow.
``STOCKADE_CLUSTER_SLOT`` (0 to 9, default 0) picks its namespaces, subnet and
directory, so that two test sessions on one machine (two developers) can each
form their own cluster without touching the other's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from orchestrator.sandbox.images import ImageBuilder
from orchestrator.testing.ray_cluster import RayCluster


def _slot() -> int:
    raw = os.environ.get("STOCKADE_CLUSTER_SLOT", "0")
    if not raw.isdigit() or not 0 <= int(raw) <= 9:
        raise pytest.UsageError(f"STOCKADE_CLUSTER_SLOT must be a digit 0-9, not {raw!r}")
    return int(raw)


@pytest.fixture(scope="package")
def cluster(images: ImageBuilder) -> Iterator[RayCluster]:
    """The cluster, formed once for this package (each test enters the head's namespace)."""
    if os.geteuid() != 0 or not shutil.which("nsenter"):
        pytest.fail("the cluster tests need root and nsenter (network namespaces)")
    # Built now: the checkout's inputs may have changed since the session's images were.
    base = images.build_base()
    tags = [images.build_sandbox(base).tag, base.tag]
    slot = _slot()
    root = Path(f"/tmp/stk-ray-{slot}")
    made = RayCluster(root=root, prefix=f"stkr{slot}n", subnet=f"10.77.{slot}", images=tuple(tags))
    made.up()
    saved = {key: os.environ.get(key) for key in made.environment()}
    os.environ.update(made.environment())  # the driver's token, before Ray is imported
    try:
        yield made
        with made.enter():
            import ray

            ray.shutdown()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        made.down()
    assert not Path(f"/run/netns/{made.head_netns}").exists()
    assert not root.exists()


@pytest.fixture(scope="package")
def second_engine(cluster: RayCluster) -> Iterator[docker.DockerClient]:
    """A client of the second node's own Docker engine."""
    client = docker.DockerClient(base_url=cluster.nodes[1].docker_host)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _in_the_heads_namespace(cluster: RayCluster) -> Iterator[None]:
    """Run each cluster test (the Ray driver) in the head's namespace, and only those.

    Entered per test, not for the session: the tests that run after these must
    find the machine's own network (the image tests reach PyPI and Debian's
    mirror), and an engine a later test restarts must not start inside a
    namespace this module's teardown empties.
    """
    before = os.stat("/proc/thread-self/ns/net").st_ino
    with cluster.enter():
        yield
    assert os.stat("/proc/thread-self/ns/net").st_ino == before
