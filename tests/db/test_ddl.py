"""DDL behind a lock holder gives way instead of stalling every query on the table.

A statement such as ``ALTER TABLE`` that waits for its table lock sits in the
lock queue, and every later query on the table queues behind it: one long
transaction plus one plain ``ALTER`` is an outage for as long as the
transaction lasts.  ``run_ddl`` waits at most ``lock_timeout`` per attempt and
retries, so queries wait at most one attempt.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat.db import waiting
from rpccompat.db.ddl import (
    MAX_LOCK_TIMEOUT,
    is_lock_timeout,
    lock_timeout_statement,
    run_ddl,
)
from rpccompat.exceptions import LockNotGranted
from rpccompat_demo import schema

HOLD = 2.0  # seconds the holder keeps its lock once the DDL is under way
# Per attempt: PostgreSQL takes milliseconds; MariaDB whole seconds, so under
# one second it does not wait at all.
SHORT_TIMEOUT = {"postgresql": 0.2, "mysql": 0.5}
# Longer than HOLD: the DDL waits the holder out, as a plain ALTER would.
LONG_TIMEOUT = 30


@pytest.fixture(params=["mysql", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    """A table ``t`` with some rows, on PostgreSQL and on MariaDB."""
    url = request.getfixturevalue(f"{request.param}_url")
    made = dbengine.create_engine(url)
    with made.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(50))")
        conn.execute(
            sa.text("INSERT INTO t (id, v) VALUES (:id, :v)"),
            [{"id": i, "v": f"row {i}"} for i in range(1, 21)],
        )
    yield made
    made.dispose()


def add_column(engine: sa.Engine) -> str:
    statement = "ALTER TABLE t ADD COLUMN w VARCHAR(10)"
    if engine.dialect.name == "mysql":
        statement += ", ALGORITHM=INSTANT"
    return statement


def columns(engine: sa.Engine) -> list[str]:
    return [c["name"] for c in sa.inspect(engine).get_columns("t")]


def hold_table(engine: sa.Engine) -> sa.Connection:
    """An open transaction that read ``t``.

    PostgreSQL: its ACCESS SHARE lock conflicts with ALTER's ACCESS EXCLUSIVE.
    MariaDB: its shared metadata lock, kept until commit, conflicts with the
    exclusive one ALTER needs.  Neither blocks other readers or writers.
    """
    conn = engine.connect()
    conn.exec_driver_sql("SELECT * FROM t").all()
    return conn


class Traffic(threading.Thread):
    """The running service: short autocommit queries on ``t``, each one timed."""

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.latencies: list[tuple[float, float]] = []  # (started, seconds)
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            with self.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as conn:
                n = 0
                while not self.stopping.is_set():
                    n += 1
                    self._timed(conn, "SELECT v FROM t WHERE id = 1", {})
                    self._timed(conn, "UPDATE t SET v = :v WHERE id = 2", {"v": n})
                    time.sleep(0.005)
        except BaseException as e:  # re-raised by the test
            self.error = e

    def _timed(self, conn: sa.Connection, statement: str, params: dict) -> None:
        started = time.monotonic()
        conn.execute(sa.text(statement), params).close()
        self.latencies.append((started, time.monotonic() - started))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=60)
        assert not self.is_alive(), "a query of the traffic never returned"
        if self.error is not None:
            raise self.error

    def worst(self) -> float:
        return max(seconds for _, seconds in self.latencies)

    def served_between(self, start: float, end: float) -> int:
        return sum(1 for started, s in self.latencies if start <= started + s <= end)


def alter_behind_a_holder(engine: sa.Engine, lock_timeout: float):
    """ALTER ``t`` while a transaction holds it for HOLD seconds, under traffic.

    Returns the attempts ``run_ddl`` made, the traffic, and the window during
    which the DDL and the holder overlapped.
    """
    outcome: dict = {}

    def ddl() -> None:
        try:
            with engine.connect() as conn:
                outcome["attempts"] = run_ddl(
                    conn, [add_column(engine)], lock_timeout=lock_timeout, budget=30
                )
                conn.commit()  # PostgreSQL: run_ddl leaves its transaction open
        except BaseException as e:
            outcome["error"] = e

    traffic = Traffic(engine)
    thread = threading.Thread(target=ddl, daemon=True)
    holder = hold_table(engine)
    try:
        traffic.start()
        time.sleep(0.2)  # the traffic is flowing
        started = time.monotonic()
        thread.start()
        time.sleep(HOLD)
        holder.commit()
        released = time.monotonic()
        thread.join(timeout=40)
    finally:
        holder.close()
        traffic.stop()
    assert not thread.is_alive(), "run_ddl never returned"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["attempts"], traffic, (started, released)


def test_ddl_waiting_on_a_lock_retries_within_its_timeout_instead_of_queueing_queries(
    engine,
):
    attempts, traffic, (started, released) = alter_behind_a_holder(
        engine, SHORT_TIMEOUT[engine.dialect.name]
    )
    assert attempts > 1, "run_ddl never met the holder's lock, or never retried"
    assert "w" in columns(engine)
    # Had run_ddl waited for its lock without a timeout, the ALTER would have
    # sat in the lock queue from `started` until `released` (HOLD = 2 s), and
    # the first query on t after it would have waited there too: the worst
    # latency would be about HOLD (the sibling test below measures ~1.9 s).
    # With the short timeout a query waits at most one attempt: 0.2 s on
    # PostgreSQL, nothing on MariaDB.  HOLD / 2 leaves room for a busy machine
    # and still fails a DDL that queues for the whole hold.
    held = released - started
    assert held >= HOLD
    assert traffic.worst() < held / 2, (
        f"a query on t waited {traffic.worst():.2f}s behind the DDL"
    )
    # And the service kept serving while the holder held the lock.
    assert traffic.served_between(started, released) > 20


def test_without_a_short_lock_timeout_every_query_queues_behind_the_ddl(engine):
    """The measurement above can see queueing: a DDL that waits its lock out
    (as a plain ALTER does) stalls the traffic for about the whole hold."""
    attempts, traffic, (started, released) = alter_behind_a_holder(engine, LONG_TIMEOUT)
    assert attempts == 1
    assert "w" in columns(engine)
    assert traffic.worst() > (released - started) / 2


def test_ddl_gives_up_with_lock_not_granted_when_the_holder_never_ends(engine):
    budget = 1.0
    holder = hold_table(engine)
    try:
        with engine.connect() as conn:
            executed = statements_of(conn)
            with pytest.raises(LockNotGranted) as raised:
                run_ddl(
                    conn,
                    [add_column(engine)],
                    lock_timeout=SHORT_TIMEOUT[engine.dialect.name],
                    budget=budget,
                )
    finally:
        holder.close()
    message = str(raised.value)
    assert "\n" not in message
    assert "lock not granted" in message
    tries = re.search(r"in (\d+) attempts", message)
    assert tries and int(tries.group(1)) > 1, message
    cause = raised.value.__cause__
    assert isinstance(cause, sa.exc.DBAPIError) and is_lock_timeout(cause)
    # Every attempt waited under its own short lock timeout, never the
    # server's own lock wait (a day on MariaDB), and the retries ended.
    alters = [s for s in executed if s.startswith("ALTER TABLE")]
    name = engine.dialect.name
    short = lock_timeout_statement(name, SHORT_TIMEOUT[name])
    timeouts = [s for s in executed if s == short]
    assert len(alters) == int(tries.group(1)) <= len(timeouts)
    time.sleep(0.2)  # an ALTER left queued would now go through
    assert "w" not in columns(engine)


def test_ddl_error_other_than_a_lock_timeout_is_raised_at_once(engine):
    with engine.connect() as conn:
        executed = statements_of(conn)
        with pytest.raises(sa.exc.DBAPIError) as raised:
            run_ddl(conn, ["ALTER TABLE no_such_table ADD COLUMN w INT"], budget=30)
    assert not is_lock_timeout(raised.value)
    # Not retried for its 30 s budget.
    assert [s for s in executed if s.startswith("ALTER TABLE")] == [
        "ALTER TABLE no_such_table ADD COLUMN w INT"
    ]


def statements_of(conn: sa.Connection) -> list[str]:
    """The statements ``conn`` runs from now on, as the server gets them."""
    executed: list[str] = []
    sa.event.listen(
        conn, "before_cursor_execute", lambda c, cur, s, *a: executed.append(s)
    )
    return executed


# -- one meaning for the lock timeout -------------------------------------------


def test_each_backend_waits_at_most_the_lock_timeout_and_never_forever():
    """Seeded: for any timeout in (0, MAX], PostgreSQL gets at least 1 ms (its
    0 is forever) and at most the timeout; MariaDB the whole seconds within
    it (its 0 is NOWAIT, the retries wait)."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    tiny = [1e-9, 0.0004, 0.001, 0.999, 1.0, 1.5, MAX_LOCK_TIMEOUT]
    for timeout in tiny + [rng.uniform(0, MAX_LOCK_TIMEOUT) for _ in range(500)]:
        if timeout == 0:
            continue
        pg = lock_timeout_statement("postgresql", timeout)
        ms = int(re.fullmatch(r"SET LOCAL lock_timeout = '(\d+)ms'", pg).group(1))
        assert 1 <= ms <= max(1, timeout * 1000), (seed, timeout, pg)
        my = lock_timeout_statement("mysql", timeout)
        whole = int(re.fullmatch(r"SET SESSION lock_wait_timeout = (\d+)", my)[1])
        assert whole <= timeout < whole + 1, (seed, timeout, my)
        assert lock_timeout_statement("sqlite", timeout) is None


@pytest.mark.parametrize("seconds", [0, -1, MAX_LOCK_TIMEOUT + 1, math.nan, math.inf])
def test_a_lock_timeout_no_backend_reads_alike_is_refused(engine, seconds):
    with engine.connect() as conn, pytest.raises(ValueError) as raised:
        run_ddl(conn, [add_column(engine)], lock_timeout=seconds, budget=1)
    assert "must be more than 0 and at most 3600 seconds" in str(raised.value)
    assert "w" not in columns(engine)


def test_a_sub_millisecond_lock_timeout_does_not_wait_forever_on_postgresql(
    postgresql_url,
):
    """It was sent as '0ms', which PostgreSQL reads as no timeout at all."""
    engine = dbengine.create_engine(postgresql_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(50))")
    outcome: dict = {}

    def ddl() -> None:
        with engine.connect() as conn:
            try:
                run_ddl(conn, [add_column(engine)], lock_timeout=0.0004, budget=0.5)
            except BaseException as e:
                outcome["error"] = e

    holder = hold_table(engine)
    thread = threading.Thread(target=ddl, daemon=True)
    try:
        thread.start()
        thread.join(timeout=30)  # only to detect the hang
        hung = thread.is_alive()
    finally:
        holder.close()
        thread.join(timeout=30)
        engine.dispose()
    assert not hung, "the ALTER waited for its lock with no timeout"
    assert isinstance(outcome.get("error"), LockNotGranted)


def test_an_index_build_waiting_on_an_old_transaction_gives_up_after_the_budget(
    postgresql_url, caplog
):
    """CREATE INDEX CONCURRENTLY waits for every transaction older than it, with
    no lock timeout of its own: it says which, gives up when the budget of
    waiting is spent, and the same expand run again later builds the index."""
    engine = dbengine.create_engine(postgresql_url)
    database = schema.install_alpha(engine)
    holder = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    try:
        holder.exec_driver_sql("SELECT 1").all()  # its snapshot is now taken
        pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with (
            caplog.at_level(logging.WARNING, "rpccompat.db.waiting"),
            pytest.raises(LockNotGranted) as raised,
        ):
            database.expand(retry_budget=waiting.PROGRESS_EVERY + 1)
        holder.rollback()
        message = str(raised.value)
        assert "\n" not in message
        assert f"for pid {pid} (idle in transaction for " in message
        assert "CREATE INDEX CONCURRENTLY" in message
        assert any(f"pid {pid} " in r.getMessage() for r in caplog.records)
        database.expand()
        assert [v.behind("expand") for v in database.versions()] == [False, False]
        with engine.connect() as conn:
            invalid = "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
            assert conn.exec_driver_sql(invalid).scalar() == 0
    finally:
        holder.close()
        engine.dispose()
