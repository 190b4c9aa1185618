"""Faults a rolling upgrade must survive, and which failed calls they explain.

Each injected fault leaves a :class:`Fault`: when it happened and, for the
two faults that may cost a call (a node killed while serving, the broker
down), the interval in which a failed call is put down to it.  A database
connection dropped or a data migration killed mid-batch must cost nothing:
they explain no failure.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from typing import Any

import sqlalchemy as sa

from rpccompat.testing import rabbitmqctl

BROKER_RESTART = "broker-restart"
KILL_NODE = "kill-node"
KILL_MIGRATION = "kill-migration"
DROP_DB_CONNECTIONS = "drop-db-connections"
ALL = (BROKER_RESTART, KILL_NODE, KILL_MIGRATION, DROP_DB_CONNECTIONS)


@dataclasses.dataclass
class Fault:
    """One injected fault; ``explains`` is the wall-clock interval whose
    failed calls it accounts for (None: it may cost no call)."""

    name: str
    at: float
    detail: str
    explains: tuple[float, float] | None = None

    def explanation(self, failure: dict[str, Any]) -> str | None:
        if self.explains is None:
            return None
        first, last = self.explains
        if failure["started"] <= last and failure["ended"] >= first:
            return f"{self.name}: {self.detail}"
        return None


def explain(failure: dict[str, Any], faults: list[Fault]) -> str | None:
    """The injected fault a failed call is put down to, or None."""
    return next(
        (why for f in faults if (why := f.explanation(failure)) is not None), None
    )


def check_broker_restart_possible() -> str | None:
    """Why the broker cannot be restarted from here, or None."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not on PATH (it restarts the local RabbitMQ)"
    return None


def restart_broker(outage: float, grace: float) -> Fault:
    """Stop RabbitMQ's application for ``outage`` seconds, then start it.

    Every connection drops and every transient queue goes.  A call is put
    down to it if it was in flight from the stop until ``grace`` seconds
    after the broker is back - the time clients need to reconnect.
    """
    stopped = time.time()
    rabbitmqctl("stop_app")
    time.sleep(outage)
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")
    back = time.time()
    return Fault(
        BROKER_RESTART,
        stopped,
        f"RabbitMQ down {back - stopped:.1f}s",
        explains=(stopped, back + grace),
    )


def node_killed(name: str, sent: float, dead: float) -> Fault:
    """A node SIGKILLed between ``sent`` and ``dead``: the calls in flight
    then may have been the ones it was serving."""
    return Fault(KILL_NODE, sent, f"{name} killed (SIGKILL)", explains=(sent, dead))


def drop_db_connections(engine: sa.Engine) -> Fault:
    """Kill every other session on the test's database, server side.

    What a database failover or a proxy restart does: pooled connections
    die under the services, idle or in the middle of a transaction.
    """
    at = time.time()
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            dropped = conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        elif conn.dialect.name == "mysql":
            ids = conn.scalars(
                sa.text(
                    "SELECT id FROM information_schema.processlist "
                    "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                )
            ).all()
            dropped = sum(_kill_mysql(conn, session) for session in ids)
        else:
            raise ValueError(
                f"cannot drop connections on {conn.dialect.name}: "
                "use MariaDB/MySQL or PostgreSQL"
            )
    return Fault(DROP_DB_CONNECTIONS, at, f"{dropped} database connections dropped")


def _kill_mysql(conn: sa.Connection, session: int) -> int:
    try:
        conn.execute(sa.text(f"KILL {int(session)}"))
    except sa.exc.OperationalError:  # it ended by itself meanwhile
        return 0
    return 1


def migration_killed(cursor: Any, at: float) -> Fault:
    """The data migration SIGKILLed mid-batch, its cursor where it stopped."""
    return Fault(KILL_MIGRATION, at, f"db migrate killed at cursor {cursor!r}")
