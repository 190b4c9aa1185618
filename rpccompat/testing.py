"""Test helpers for service developers: keep code and history in step.

Call the checks from a service's unit tests; each returns a list of problems,
empty when all is well, so a test asserts ``== []`` and shows every mismatch
at once.  :func:`scratch_database` and :func:`scratch_vhost` give a test, a
benchmark or a harness run a database and a RabbitMQ vhost of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from rpccompat.db import lint
from rpccompat.db.tree import MigrationTree
from rpccompat.history import History
from rpccompat.objects import ObjectRegistry

if TYPE_CHECKING:
    from rpccompat.rpc import Endpoint

REGENERATE_ENV = "RPCCOMPAT_REGENERATE_HASHES"


def check_history(
    history: History,
    registry: ObjectRegistry,
    endpoints: Iterable[type[Endpoint]] = (),
) -> list[str]:
    """Mismatches between the code and the newest history entry (empty: none).

    For a service's unit tests: every registered object's VERSION and every
    endpoint's ``RPC_API_VERSION`` must equal what the newest release declares,
    or peers would be pinned to versions the code does not speak.
    """
    current = history.current
    problems = []
    classes = registry.classes()
    for name, cls in sorted(classes.items()):
        declared = current.objects.get(name)
        if declared != cls.VERSION:
            problems.append(
                f"object {name} is at {cls.VERSION} but release {current.name} "
                f"declares {declared}"
            )
    for name in sorted(set(current.objects) - set(classes)):
        problems.append(
            f"release {current.name} declares object {name}, not registered"
        )
    for endpoint in endpoints:
        declared = current.rpc.get(endpoint.BINARY)
        if declared != endpoint.RPC_API_VERSION:
            problems.append(
                f"endpoint {endpoint.__name__} ({endpoint.BINARY}) is at "
                f"{endpoint.RPC_API_VERSION} but release {current.name} declares "
                f"{declared}"
            )
    return problems


def check_fingerprints(
    registry: ObjectRegistry, expected_file: str | Path
) -> list[str]:
    """Objects whose fields or methods changed without a VERSION bump.

    ``expected_file`` is a JSON map of ``name -> "version-hash"``.  Run with
    ``RPCCOMPAT_REGENERATE_HASHES=1`` to rewrite it after bumping versions.
    """
    from oslo_versionedobjects import fixture  # needs the test-only 'fixtures'

    classes = {name: [cls] for name, cls in registry.classes().items()}
    actual = fixture.ObjectVersionChecker(obj_classes=classes).get_hashes()
    path = Path(expected_file)
    if os.environ.get(REGENERATE_ENV):
        path.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
        return []
    expected = json.loads(path.read_text()) if path.exists() else {}
    return [
        f"{name}: fingerprint {actual.get(name)} but {path} expects "
        f"{expected.get(name)}; bump its VERSION (and the history), then run with "
        f"{REGENERATE_ENV}=1"
        for name in sorted(set(actual) | set(expected))
        if actual.get(name) != expected.get(name)
    ]


def check_migrations(tree: MigrationTree) -> list[str]:
    """Problems of a migration tree (empty: none), without a database.

    The head files name the real heads, every expand revision declares a
    ``serves_release`` and every contract revision a ``requires_release``
    the history knows, and the lint finds nothing that is not declared as an
    exception.
    """
    problems = tree.problems()
    problems += [str(finding) for finding in lint.errors(lint.lint(tree))]
    return problems


@contextlib.contextmanager
def scratch_database(url: str | URL, prefix: str = "rpccompat") -> Iterator[URL]:
    """A new database on the server of ``url``, dropped afterwards whatever
    happened; on SQLite, a file in a temporary directory.

    ``url`` names a database to connect to while creating and dropping (the
    server's ``test`` or ``postgres``); it is never written to.  A server out
    of reach raises SQLAlchemy's error before anything is made.
    """
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"{prefix}_") as directory:
            yield url.set(database=str(Path(directory) / "scratch.sqlite"))
        return
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    # FORCE: a node killed mid-test may leave a session behind on PostgreSQL.
    force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
    try:
        with admin.connect() as conn:  # out of reach: nothing made, nothing to drop
            conn.exec_driver_sql("SELECT 1")
        try:  # made inside: an interruption during CREATE still drops it
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
            yield url.set(database=name)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
    finally:
        admin.dispose()


class RabbitMQError(RuntimeError):
    """``rabbitmqctl`` is missing or failed; the message is one line."""


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q ARGS`` against the local broker; its output."""
    if shutil.which("rabbitmqctl") is None:
        raise RabbitMQError("rabbitmqctl not found (it manages the local RabbitMQ)")
    try:
        done = subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        raise RabbitMQError(f"rabbitmqctl {args[0]} took over 60 s") from None
    if done.returncode != 0:
        output = done.stderr.strip() or done.stdout.strip()
        reason = output.splitlines()[0] if output else f"exit code {done.returncode}"
        raise RabbitMQError(f"rabbitmqctl {args[0]} failed: {reason}")
    return done.stdout


@contextlib.contextmanager
def scratch_vhost(
    rabbit_url: str, prefix: str = "rpccompat", user: str = "guest"
) -> Iterator[str]:
    """A vhost of its own on the local RabbitMQ, deleted afterwards whatever
    happened; yields ``rabbit_url`` with the vhost appended."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:12]}"
    made = False
    try:  # added inside: an interruption during add_vhost still deletes it
        rabbitmqctl("add_vhost", vhost)
        made = True
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield f"{rabbit_url.rstrip('/')}/{vhost}"
    finally:
        try:
            rabbitmqctl("delete_vhost", vhost)
        except RabbitMQError:
            if made:
                raise
