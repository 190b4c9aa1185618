"""Real backends for the tests: SQLite, MariaDB, PostgreSQL and RabbitMQ.

Every test gets its own database (or vhost) and drops it afterwards, so tests
run in parallel and again.  Outside CI a backend that is not reachable skips
its tests with one line saying why; with CI=true it fails them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rpccompat.testing import RabbitMQError, scratch_database, scratch_vhost

warnings.filterwarnings("ignore", category=DeprecationWarning)

MYSQL_URL = os.environ.get("RPCCOMPAT_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
POSTGRESQL_URL = os.environ.get(
    "RPCCOMPAT_POSTGRESQL_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432"
)
RABBIT_URL = os.environ.get(
    "RPCCOMPAT_RABBIT_URL", "rabbit://guest:guest@127.0.0.1:5672"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(what: str, why: object) -> None:
    message = f"{what} is not reachable ({why})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def _server_database(base_url: str, admin_db: str, label: str) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        try:
            made = stack.enter_context(scratch_database(f"{base_url}/{admin_db}"))
        except sa.exc.OperationalError as e:
            unavailable(label, e.orig)
        yield made.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite'}"
    elif request.param == "mysql":
        yield from _server_database(MYSQL_URL, "test", "MariaDB")
    else:
        yield from _server_database(POSTGRESQL_URL, "test", "PostgreSQL")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'test.sqlite'}"


@pytest.fixture
def mysql_url() -> Iterator[str]:
    yield from _server_database(MYSQL_URL, "test", "MariaDB")


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    yield from _server_database(POSTGRESQL_URL, "test", "PostgreSQL")


@pytest.fixture
def rabbit_url() -> Iterator[str]:
    """A RabbitMQ vhost of the test's own."""
    with contextlib.ExitStack() as stack:
        try:
            made = stack.enter_context(scratch_vhost(RABBIT_URL))
        except RabbitMQError as e:
            unavailable("RabbitMQ", e)
        yield made


@pytest.fixture(params=["memory", "rabbit"])
def transport_url(request: pytest.FixtureRequest) -> str:
    """The in-memory transport and a RabbitMQ vhost."""
    if request.param == "memory":
        return "kombu+memory:////"
    return request.getfixturevalue("rabbit_url")


def mixed_period_database(db_url: str, release: str = "beta") -> sa.Engine:
    """The sample service's database installed at alpha and expanded for
    ``release``: what every release uses while an upgrade is under way."""
    from rpccompat import engine as dbengine
    from rpccompat_demo import schema

    engine = dbengine.create_engine(db_url)
    schema.install_mixed_period(engine, tree=schema.TREES[release])
    return engine


def write_config(path: Path, db_url: str, **defaults: Any) -> Path:
    """An oslo.config file for nodes and rpccompat-manage, on the sample tree."""
    settings = {"report_interval": 1.0, "service_down_time": 30.0, **defaults}
    lines = ["[DEFAULT]", *(f"{k} = {v}" for k, v in settings.items())]
    lines += ["[database]", f"connection = {db_url}", "migration_trees = volumes"]
    path.write_text("\n".join(lines) + "\n")
    return path


class Cluster:
    """Nodes and clients of the sample service, stopped at the end of a test."""

    def __init__(self, db_url: str, transport_url: str) -> None:
        from rpccompat.registry import ServiceRegistry
        from rpccompat_demo.node import Settings

        self.settings = Settings(
            db_url=db_url, transport_url=transport_url, pin_refresh_interval=60
        )
        self.engine = mixed_period_database(db_url)
        self.registry = ServiceRegistry(self.engine)
        self._stoppable: list = []

    def node(self, release: str, host: str = "node-1", binary: str = "volume"):
        from rpccompat_demo.node import Node

        node = Node(self.settings, release, binary, host)
        node.start()
        self._stoppable.append(node)
        return node

    def client(self, release: str, level: str = "auto", timeout: float = 10):
        """A client of ``release`` whose pin follows the table or ``level``."""
        from rpccompat.pins import Pins
        from rpccompat.rpc import RPCClient, make_transport
        from rpccompat_demo.node import RELEASES, make_conf

        code = RELEASES[release]
        transport = make_transport(make_conf(self.settings, "test-client"))
        self._stoppable.append(transport)
        pins = Pins(code.HISTORY, self.registry, upgrade_levels={"volume": level})
        return RPCClient(
            transport, code.VolumeManager, pins, code.VolumesObject, timeout=timeout
        )

    def close(self) -> None:
        for item in reversed(self._stoppable):
            item.stop() if hasattr(item, "stop") else item.cleanup()
        self.engine.dispose()


@pytest.fixture
def cluster(sqlite_url: str, transport_url: str) -> Iterator[Cluster]:
    """Sample-service nodes on SQLite, over the in-memory transport and RabbitMQ."""
    made = Cluster(sqlite_url, transport_url)
    yield made
    made.close()


def spawn_node(
    db_url: str,
    transport_url: str,
    release: str,
    binary: str,
    host: str,
    *extra: str,
    stderr: int = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    """A node of the sample service as its own OS process; it prints READY."""
    return subprocess.Popen(
        [sys.executable, "-m", "rpccompat_demo.node", "--release", release,
         "--binary", binary, "--host", host, "--db-url", db_url,
         "--transport-url", transport_url, *extra],
        stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip
