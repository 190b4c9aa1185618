"""Online data migrations: killed at any moment, run again, every row right."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat.db import Backfill, Database, Throttle, data
from rpccompat.db.data import DONE, ERRORS, MORE_TO_DO, DataMigration, exit_code
from rpccompat_demo import beta, schema
from tests.db import SIZES, insert_alpha_volumes
from tests.db.shapes import VISIBILITY

BACKFILL = f"{schema.TREE.name}/backfill_{beta.NAME_SYNC.name}"


def key(i: int) -> str:
    return f"vol-{i:06d}"  # in key order


def alpha_volumes(engine: sa.Engine, count: int) -> Database:
    """``count`` volumes written by alpha, then beta's expand: none has a name."""
    database = schema.install_alpha(engine)
    insert_alpha_volumes(engine, {key(i): f"volume {i}" for i in range(count)})
    database.expand()
    return database


def rows(engine: sa.Engine) -> dict[str, tuple[str | None, str | None]]:
    with engine.connect() as conn:
        return {
            r.id: (r.display_name, r.name)
            for r in conn.execute(sa.text("SELECT id, display_name, name FROM volumes"))
        }


def converted(engine: sa.Engine) -> int:
    return sum(1 for old, new in rows(engine).values() if new is not None)


def progress(engine: sa.Engine, tree: str, name: str):
    table = data.progress_table
    with engine.connect() as conn:
        return conn.execute(
            sa.select(table).where(table.c.tree == tree, table.c.name == name)
        ).one_or_none()


# -- killed in the middle of a batch ------------------------------------------

ROWS, BATCH = 5000, 1000
LOCKED = key(1500)  # in the second batch
CHILD = """
import sys
from rpccompat.db import Database, Throttle
from rpccompat_demo import schema
from rpccompat.engine import create_engine

Database(create_engine(sys.argv[1]), [schema.TREE]).migrate(
    throttle=Throttle(batch_size=int(sys.argv[2]))
)
"""
BLOCKED = {
    "postgresql": (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE volumes%%'"
    ),
    "mysql": (
        "SELECT count(*) FROM information_schema.INNODB_TRX trx "
        "JOIN information_schema.PROCESSLIST p ON p.ID = trx.trx_mysql_thread_id "
        "WHERE trx.trx_state = 'LOCK WAIT' AND p.DB = DATABASE() "
        "AND trx.trx_query LIKE 'UPDATE volumes%%'"
    ),
}


def wait_until_blocked(engine: sa.Engine, child: subprocess.Popen) -> None:
    """Until the child's batch UPDATE waits on a row lock, part-way through."""
    deadline = time.monotonic() + 60
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while time.monotonic() < deadline:
            if child.poll() is not None:
                pytest.fail(f"the migration ended first: {child.communicate()[1]}")
            if conn.exec_driver_sql(BLOCKED[engine.dialect.name]).scalar():
                return
            # Not faster: MariaDB refreshes INNODB_TRX only after 0.1 s unread.
            time.sleep(0.25)
    pytest.fail("the migration never reached the locked row")


@pytest.mark.parametrize("backend", ["mysql", "postgresql"])
def test_data_migration_killed_mid_batch_and_run_again_gets_every_row_right(
    request, backend
):
    url = request.getfixturevalue(f"{backend}_url")
    engine = dbengine.create_engine(url)
    try:
        database = alpha_volumes(engine, ROWS)
        locker = engine.connect()
        child = None
        try:
            # Batch 2 is [key(1000), key(1999)]: its UPDATE stops at this row.
            locker.execute(
                sa.text("SELECT id FROM volumes WHERE id = :id FOR UPDATE"),
                {"id": LOCKED},
            ).one()
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, url, str(BATCH)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_until_blocked(engine, child)
            child.kill()  # SIGKILL: no cleanup of any kind in the child
            assert child.wait(timeout=30) == -9
            # Killed in batch 2: batch 1 and its cursor committed, nothing else.
            cursor = progress(engine, "volumes", f"backfill_{beta.NAME_SYNC.name}")
            assert json.loads(cursor.cursor)["after"] == key(BATCH - 1)
            assert cursor.completed_at is None
            assert converted(engine) == BATCH
        finally:
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
            locker.close()  # releases the row lock

        results = database.migrate(throttle=Throttle(batch_size=BATCH))

        assert exit_code(results) == DONE
        [totals] = [t for t in results if t.name.startswith("backfill_")]
        assert (totals.found, totals.done) == (ROWS - BATCH, ROWS - BATCH), (
            "the second run did not resume at the committed cursor"
        )
        assert rows(engine) == {
            key(i): (f"volume {i}", f"volume {i}") for i in range(ROWS)
        }
        assert database.status().pending_migrations == []
    finally:
        engine.dispose()


# -- resumable and idempotent -------------------------------------------------


def test_the_backfill_ends_at_the_keys_that_existed_when_it_began(engine):
    """Rows inserted meanwhile pass through the triggers; the backfill must
    not chase them, or a steady insert rate would keep it from finishing."""
    database = alpha_volumes(engine, 100)
    first = database.migrate(max_count=40, throttle=Throttle(batch_size=40))
    assert first[0].found == 40
    # alpha keeps writing, above the old keys
    insert_alpha_volumes(engine, {key(i): f"volume {i}" for i in range(100, 400)})
    rest = database.migrate(throttle=Throttle(batch_size=40))
    assert (rest[0].found, rest[0].done, rest[0].complete) == (60, 60, True)
    assert all(old == new for old, new in rows(engine).values())


def test_max_count_does_that_many_rows_and_a_run_again_finishes(engine):
    database = alpha_volumes(engine, 250)
    with engine.begin() as conn:  # written by beta after expand: already right
        conn.execute(
            sa.text(
                "INSERT INTO volumes (id, name, size, status) "
                "VALUES (:id, :name, 1, 'available')"
            ),
            [{"id": key(i), "name": f"volume {i}"} for i in range(250, 260)],
        )
    throttle = Throttle(batch_size=30)

    first = database.migrate(max_count=100, throttle=throttle)
    assert [(t.found, t.done, t.complete) for t in first] == [(100, 100, False)]
    assert exit_code(first, limited=True) == MORE_TO_DO
    assert converted(engine) == 100 + 10
    assert database.status().pending_migrations == [BACKFILL]

    second = database.migrate(throttle=throttle)
    # Resumed after the first 100; the 10 rows beta wrote are looked at only.
    assert [(t.found, t.done, t.complete) for t in second] == [(160, 150, True)]
    assert exit_code(second) == DONE
    assert rows(engine) == {key(i): (f"volume {i}",) * 2 for i in range(260)}
    assert database.status().pending_migrations == []

    third = database.migrate(throttle=throttle)
    assert [(t.found, t.done, t.batches, t.complete) for t in third] == [
        (0, 0, 0, True)
    ]
    assert exit_code(third) == DONE
    record = progress(engine, "volumes", f"backfill_{beta.NAME_SYNC.name}")
    assert (record.found, record.done) == (260, 250)


def test_a_run_commits_without_waiting_for_the_wal_and_the_pool_gets_it_back(
    postgresql_url,
):
    """A lost batch is a batch to run again, so on PostgreSQL a run's
    commits do not wait for their WAL flush; its connection goes back to the
    pool with the setting it came with, after a failed migration too."""
    engine = dbengine.create_engine(postgresql_url, pool_size=1, max_overflow=0)
    Database(engine).expand()
    seen = []

    def looks(context: data.DataContext, max_count: int) -> tuple[int, int]:
        show = sa.text("SHOW synchronous_commit")
        seen.append(context.connection.execute(show).scalar())
        if len(seen) == 2:
            raise RuntimeError("fails")
        return 0, 0

    data.run(engine, "t", [DataMigration("a", n, looks) for n in ("one", "two")])
    with engine.connect() as conn:
        after = conn.execute(sa.text("SHOW synchronous_commit")).scalar()
    engine.dispose()
    assert (seen, after) == (["off", "off"], "on")


# -- killed between two batches, or overtaken by another runner ---------------


def backfill_totals(results: list[data.Totals]) -> data.Totals:
    [totals] = [t for t in results if t.name.startswith("backfill_")]
    return totals


KILLED_AFTER = """
import os, signal, sys
from rpccompat.db import Database, Throttle
from rpccompat_demo import schema
from rpccompat.engine import create_engine

def kill(totals):
    if totals.name.startswith("backfill_") and totals.batches == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # nothing cleaned up, nothing flushed

Database(create_engine(sys.argv[1]), [schema.TREE]).migrate(
    throttle=Throttle(batch_size=int(sys.argv[2])), progress=kill
)
"""


def test_a_run_killed_between_batches_resumes_without_skipping_a_row(db_url):
    """Killed once two batches have committed, the cursor kept in memory
    between them: the rows converted are exactly those up to the saved
    cursor, and the next run converts all the others."""
    engine = dbengine.create_engine(db_url)
    try:
        database = alpha_volumes(engine, 100)
        child = subprocess.run(
            [sys.executable, "-c", KILLED_AFTER, db_url, "10"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == -9, child.stderr
        cursor = progress(engine, "volumes", f"backfill_{beta.NAME_SYNC.name}")
        after = json.loads(cursor.cursor)["after"]
        assert after == key(19)
        assert {k for k, (old, new) in rows(engine).items() if new is not None} == {
            k for k in rows(engine) if k <= after
        }

        totals = backfill_totals(database.migrate())

        assert (totals.found, totals.done, totals.complete) == (80, 80, True)
        assert all(old == new for old, new in rows(engine).values())
    finally:
        engine.dispose()


def test_a_backfill_goes_on_from_where_another_runner_moved_its_cursor(engine):
    """Two runners at once share the work: once the other one has converted
    the rest, this one finds its next batch's cursor moved and ends there
    instead of going through the table again."""
    database = alpha_volumes(engine, 50)
    others: list[data.Totals] = []

    def meanwhile(totals: data.Totals) -> None:
        if totals.name.startswith("backfill_") and not others:
            others.extend(database.migrate(throttle=Throttle(batch_size=10)))

    ours = backfill_totals(
        database.migrate(throttle=Throttle(batch_size=10), progress=meanwhile)
    )

    other = backfill_totals(others)
    assert ours.complete and ours.error is None and other.complete
    # Its second batch found the cursor moved: rolled back, not counted.
    assert (ours.found, ours.done, other.found, other.done) == (10, 10, 40, 40)
    assert all(old == new for old, new in rows(engine).values())


def broken(context: data.DataContext, max_count: int) -> tuple[int, int]:
    """Fails as a driver does: the statement on lines of its own, which the
    totals leave out (one line per migration in the table)."""
    raise RuntimeError("cannot convert disk 7\n[SQL: UPDATE disks SET size_mb=...]")


@pytest.fixture
def disks(engine: sa.Engine) -> sa.Engine:
    """rpccompat's tables, and 20 disks whose size_mb is still to compute."""
    Database(engine).expand()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE disks (id INT PRIMARY KEY, size_gb INT, size_mb INT)"
        )
        conn.execute(
            sa.text("INSERT INTO disks (id, size_gb) VALUES (:id, :gb)"),
            [{"id": i, "gb": i} for i in range(1, 21)],
        )
    return engine


def sizes(engine: sa.Engine) -> dict[int, tuple[int, int | None]]:
    with engine.connect() as conn:
        return {
            r.id: (r.size_gb, r.size_mb)
            for r in conn.exec_driver_sql("SELECT id, size_gb, size_mb FROM disks")
        }


def test_a_failing_migration_is_reported_and_the_others_still_run(disks):
    migrations = [
        DataMigration("one", "broken", broken),
        DataMigration("one", "backfill_disks", Backfill(SIZES)),
    ]
    results = data.run(disks, "t", migrations, throttle=Throttle(batch_size=7))

    failed, backfill = results
    assert failed.error == "RuntimeError: cannot convert disk 7"
    assert not failed.complete
    assert backfill.error is None and backfill.complete
    assert (backfill.found, backfill.done) == (20, 20)
    assert sizes(disks) == {i: (i, i * 1024) for i in range(1, 21)}
    with disks.connect() as conn:
        assert data.completed(conn, "t") == {"backfill_disks"}
    # A run without max_count goes on until nothing is left, so an error at
    # its end is final: "2 - some migrations failed", as nova-manage and
    # cinder-manage say (``exceptions and (unlimited or not ran)``).  Exit
    # code 1 would tell the operator's loop to run again for nothing.
    assert exit_code(results) == ERRORS


def test_a_migration_that_keeps_failing_exits_2_once_the_others_are_done(disks):
    migrations = [
        DataMigration("one", "broken", broken),
        DataMigration("one", "backfill_disks", Backfill(SIZES)),
    ]
    data.run(disks, "t", migrations)

    again = data.run(disks, "t", migrations)

    failed, backfill = again
    assert failed.error == "RuntimeError: cannot convert disk 7"
    assert backfill.complete and backfill.found == 0
    assert exit_code(again) == ERRORS


def test_with_max_count_a_failure_next_to_progress_means_more_to_do(disks):
    migrations = [
        DataMigration("one", "broken", broken),
        DataMigration("one", "backfill_disks", Backfill(SIZES)),
    ]
    results = data.run(disks, "t", migrations, max_count=5)

    assert results[0].error and results[1].done == 5
    assert exit_code(results, limited=True) == MORE_TO_DO


def test_a_pass_ending_after_another_runner_completed_it_keeps_it_complete(
    disks,
):
    """Two ``online_data_migrations --max-count`` loops at once: the one whose
    pass ends last must not undo the other's "complete", or contract is
    refused with no row left to convert."""

    def outrun(context: data.DataContext, max_count: int) -> tuple[int, int]:
        # Meanwhile another runner takes the migration to its end.
        other = data.run(disks, "t", [DataMigration("one", "backfill_disks", backfill)])
        assert other[0].complete
        return max_count, 0  # this pass looked at its rows, and its budget ran out

    backfill = Backfill(SIZES)
    ours = data.run(
        disks, "t", [DataMigration("one", "backfill_disks", outrun)], max_count=5
    )

    assert not ours[0].complete
    with disks.connect() as conn:
        assert data.completed(conn, "t") == {"backfill_disks"}
    assert sizes(disks) == {i: (i, i * 1024) for i in range(1, 21)}


# -- throttle -------------------------------------------------------------------


def test_throttle_without_target_time_keeps_its_batch_size():
    assert Throttle(batch_size=500).next_size(500, 30.0) == 500
    assert Throttle(target_time=0.5).next_size(500, 0.0) == 500


def test_throttle_moves_the_batch_size_toward_its_target_time():
    throttle = Throttle(target_time=0.5)
    assert throttle.next_size(1000, 0.5) == 1000
    assert throttle.next_size(1000, 0.4) == 1250  # a bit fast: a bit bigger
    assert throttle.next_size(1000, 1.0) == 500  # twice too slow: half
    assert throttle.next_size(1000, 0.001) == 2000  # at most doubled
    assert throttle.next_size(1000, 60.0) == 500  # at most halved


def test_throttle_stays_within_its_bounds():
    throttle = Throttle(target_time=0.5)
    assert throttle.next_size(data.MIN_BATCH, 60.0) == data.MIN_BATCH
    assert throttle.next_size(data.MAX_BATCH, 0.001) == data.MAX_BATCH
    assert throttle.next_size(150_000, 0.001) == data.MAX_BATCH


def test_throttle_settles_where_a_batch_takes_its_target_time():
    throttle = Throttle(batch_size=100, target_time=0.5)
    size = throttle.batch_size
    for _ in range(20):  # a table where a row costs 0.1 ms
        size = throttle.next_size(size, size * 0.0001)
    assert abs(size - 5000) <= 50


def test_progress_lines_show_each_migration():
    stream = io.StringIO()
    running = data.Totals("volumes", "beta", "backfill_x", found=2000, done=1500)
    running.seconds = 0.5
    data.ProgressLines(stream, every=0)(running)
    assert stream.getvalue() == (
        "volumes/backfill_x: 2000 rows looked at, 1500 converted, 4,000 rows/s\n"
    )


def test_the_backfill_keeps_what_the_new_release_wrote_under_a_lossy_mapping(engine):
    """is_public -> visibility: the backfill used to convert every row whose
    visibility was not what is_public maps to, resetting 'private' and
    'community' to 'shared' - in rows the new release updated, and in rows it
    inserted after expand whose random keys fall among the old ones."""
    Database(engine).expand()
    with engine.begin() as conn:
        VISIBILITY.create_table(conn)
        conn.execute(
            sa.text("INSERT INTO images (id, is_public) VALUES (:id, :public)"),
            [{"id": f"img-{i:02d}", "public": i % 2 == 0} for i in range(20)],
        )
        VISIBILITY.expand(conn)
        conn.exec_driver_sql(
            "UPDATE images SET visibility = 'private' WHERE id = 'img-03'"
        )
        conn.exec_driver_sql(
            "INSERT INTO images (id, visibility) "
            "VALUES ('img-05a', 'community'), ('img-10a', 'private')"
        )
    migration = DataMigration("one", "backfill_images", Backfill(VISIBILITY.sync))

    [totals] = data.run(engine, "t", [migration], throttle=Throttle(batch_size=7))

    assert (totals.found, totals.done, totals.complete) == (22, 19, True)
    with engine.connect() as conn:
        images = {
            r.id: (bool(r.is_public), r.visibility)
            for r in conn.exec_driver_sql(
                "SELECT id, is_public, visibility FROM images"
            )
        }
    expected = {
        f"img-{i:02d}": (True, "public") if i % 2 == 0 else (False, "shared")
        for i in range(20)
    }
    expected |= {
        "img-03": (False, "private"),
        "img-05a": (False, "community"),
        "img-10a": (False, "private"),
    }
    assert images == expected
