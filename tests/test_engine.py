"""Engines: a connection dropped by the server under a transaction."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat import retry_on_disconnect

OWN_SESSION = {
    "mysql": "SELECT CONNECTION_ID()",
    "postgresql": "SELECT pg_backend_pid()",
}
KILL = {"mysql": "KILL {}", "postgresql": "SELECT pg_terminate_backend({})"}


@pytest.fixture(params=["mysql", "postgresql"])
def server_engine(request):
    engine = dbengine.create_engine(request.getfixturevalue(f"{request.param}_url"))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    yield engine
    engine.dispose()


def insert_once_killed(engine: sa.Engine, attempts: list[int]) -> int:
    """Insert a row; on the first attempt the server kills the session first."""
    attempts.append(1)
    with engine.begin() as conn:
        if len(attempts) == 1:
            session = conn.scalar(sa.text(OWN_SESSION[engine.dialect.name]))
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(sa.text(KILL[engine.dialect.name].format(int(session))))
        if not conn.scalar(sa.text("SELECT id FROM t WHERE id = 1")):
            conn.execute(sa.text("INSERT INTO t (id) VALUES (1)"))
        return conn.scalar(sa.text("SELECT count(*) FROM t"))


def test_a_transaction_whose_connection_was_killed_runs_again(server_engine):
    attempts: list[int] = []
    retrying = retry_on_disconnect(delay=0)(insert_once_killed)
    assert retrying(server_engine, attempts) == 1
    assert len(attempts) == 2


def test_without_it_the_caller_gets_the_lost_connection(server_engine):
    with pytest.raises(sa.exc.DBAPIError) as raised:
        insert_once_killed(server_engine, [])
    assert raised.value.connection_invalidated


def test_other_database_errors_are_not_retried(server_engine):
    calls = []

    @retry_on_disconnect(delay=0)
    def bad_sql() -> None:
        calls.append(1)
        with server_engine.connect() as conn:
            conn.execute(sa.text("SELECT no_such_column FROM t"))

    with pytest.raises(sa.exc.DBAPIError):
        bad_sql()
    assert calls == [1]
