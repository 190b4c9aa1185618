"""The ``ddl`` operations the catalogue's recipes need, on every backend.

The mixed-period model test (test_mixed_period) runs each recipe's rows;
here each operation is checked for what it must keep: the rest of the
column and the table, the sync triggers, and a second run doing nothing.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat.db import ColumnSync, ddl
from rpccompat.db.backends import backend
from rpccompat.db.sync import installed_triggers
from rpccompat.exceptions import MigrationError
from tests.db import concurrently
from tests.db.shapes import PROPERTIES, in_revision

SYNC = ColumnSync.rename("hosts", "id", "hostname", "host_name")


def _hosts(conn: sa.Connection) -> None:
    conn.exec_driver_sql(
        "CREATE TABLE hosts (id INTEGER PRIMARY KEY, "
        "hostname VARCHAR(40) NOT NULL, host_name VARCHAR(40), "
        "zone VARCHAR(10) NOT NULL DEFAULT 'nova')"
    )
    conn.exec_driver_sql("CREATE UNIQUE INDEX hosts_hostname ON hosts (hostname)")
    conn.exec_driver_sql("INSERT INTO hosts (id, hostname) VALUES (1, 'one')")


def _column(conn: sa.Connection, name: str) -> dict:
    return next(c for c in sa.inspect(conn).get_columns("hosts") if c["name"] == name)


def test_drop_not_null_lets_a_new_shape_insert_in_and_keeps_the_rest(engine):
    """On SQLite a new-shape INSERT into a table whose old column is NOT
    NULL with no default fails until expand relaxes it; relaxed, the sync
    fills it on every backend."""
    with engine.begin() as conn:
        _hosts(conn)
        with in_revision(conn):
            ddl.install_sync(SYNC)
    with engine.connect() as conn:
        try:
            conn.exec_driver_sql("INSERT INTO hosts (id, host_name) VALUES (2, 'x')")
            refused = None
        except sa.exc.DBAPIError as e:
            refused = e
        conn.rollback()
    # SQLite checks NOT NULL before its AFTER triggers run; PostgreSQL and
    # MariaDB after their BEFORE triggers filled the old column.
    assert (refused is not None) == (engine.dialect.name == "sqlite"), refused
    with engine.begin() as conn:
        zone_before = _column(conn, "zone")
        with in_revision(conn):
            ddl.drop_not_null("hosts", "hostname")
            ddl.drop_not_null("hosts", "hostname")  # a re-run does nothing
            ddl.drop_not_null("hosts", "zone")
        assert _column(conn, "hostname")["nullable"]
        zone = _column(conn, "zone")
        assert zone["nullable"]
        assert str(zone["type"]) == str(zone_before["type"])
        assert "nova" in str(zone["default"])
        assert set(SYNC.trigger_names(conn.dialect.name)) <= installed_triggers(
            conn, "hosts"
        )
        indexes = sa.inspect(conn).get_indexes("hosts")
        assert [(i["column_names"], bool(i["unique"])) for i in indexes] == [
            (["hostname"], True)
        ]
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO hosts (id, host_name) VALUES (3, 'three')")
        conn.exec_driver_sql("INSERT INTO hosts (id, hostname) VALUES (4, 'four')")
        rows = conn.exec_driver_sql(
            "SELECT id, hostname, host_name, zone FROM hosts ORDER BY id"
        ).all()
    assert [tuple(r) for r in rows] == [
        (1, "one", None, "nova"),
        (3, "three", "three", "nova"),
        (4, "four", "four", "nova"),
    ]


def test_a_unique_index_is_refused_over_duplicates_then_built_under_writes(
    engine,
):
    """Shared values refuse the index, name how many and leave nothing
    behind; without them it is built while a writer goes on inserting."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE ports (id INTEGER PRIMARY KEY, mac VARCHAR(17))"
        )
        conn.execute(
            sa.text("INSERT INTO ports (id, mac) VALUES (:id, :mac)"),
            [
                {"id": i, "mac": mac}
                for i, mac in enumerate(["a", "a", "b", "c", "c", "c", None, None])
            ],
        )
    build = _unique_mac_index(engine)
    with pytest.raises(MigrationError, match="2 distinct values are each in more"):
        build()
    assert sa.inspect(engine).get_indexes("ports") == []
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM ports WHERE id IN (1, 4, 5)")
    writer = _Writer(engine, first_id=100)
    writer.start()
    try:
        build()
    finally:
        writer.stop()
    assert writer.error is None and writer.written > 0
    [index] = sa.inspect(engine).get_indexes("ports")
    assert (index["name"], index["column_names"], bool(index["unique"])) == (
        "ports_mac",
        ["mac"],
        True,
    )
    build()  # run again: the index is there, nothing is done
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO ports (id, mac) VALUES (9, 'a')")


def _unique_mac_index(engine: sa.Engine):
    def build() -> None:
        with engine.connect() as conn, in_revision(conn):
            # recipe: unique index
            ddl.create_index("ports_mac", "ports", ["mac"], unique=True)
            # end of recipe

    return build


class _Writer(threading.Thread):
    """The running service: inserts of distinct values, one at a time."""

    def __init__(self, engine: sa.Engine, first_id: int) -> None:
        super().__init__(daemon=True)
        self.engine, self.next_id = engine, first_id
        self.written, self.error = 0, None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.text("INSERT INTO ports (id, mac) VALUES (:id, :mac)"),
                        {"id": self.next_id, "mac": f"m{self.next_id}"},
                    )
                self.next_id += 1
                self.written += 1
                self.stopping.wait(0.005)
        except Exception as e:  # asserted by the test
            self.error = e

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=60)
        assert not self.is_alive(), "an insert never returned"


def test_a_move_installs_on_both_tables_and_contracts_to_the_new_one(engine):
    """Expand creates the new table and the triggers on both tables (a run
    again adds nothing); the backfill fills the new table; contract drops
    every trigger and the old columns, and the rows stay."""
    shape = PROPERTIES
    sync = shape.sync
    with engine.begin() as conn:
        shape.create_table(conn)
        shape.write(conn, "INSERT", "r1", ('{"a": 1}', "t1"), None)
        shape.write(conn, "INSERT", "r2", (None, None), None)
        shape.expand(conn)
        shape.expand(conn)
        present = set().union(*(installed_triggers(conn, t) for t in sync.tables))
        assert set(sync.trigger_names(conn.dialect.name)) <= present
    with engine.begin() as conn:
        assert sync.migrate(conn, sa.true()) == 1
        assert sync.migrate(conn, sa.true()) == 0
    with engine.begin() as conn, in_revision(conn):
        ddl.drop_sync(sync)
        for column in sync.old:
            ddl.drop_column(sync.table, column)
    with engine.begin() as conn:
        for table in sync.tables:
            assert installed_triggers(conn, table) == set()
        assert [c["name"] for c in sa.inspect(conn).get_columns(sync.table)] == [
            "id",
            "note",
        ]
        rows = conn.exec_driver_sql(
            f"SELECT {sync.to_key}, {', '.join(sync.new)} FROM {sync.to_table}"
        ).all()
    assert [tuple(r) for r in rows] == [("r1", '{"a": 1}', "t1")]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("server", ["sqlite", "mysql", "postgresql"])
def test_readers_writers_and_the_backfill_of_a_move_never_deadlock(
    request, server, seed
):
    """New-release readers load the moved columns (inserting the rows the
    new table lacks), writers load them for update then change them, the
    backfill inserts the rest: all at once, none fails, every row ends in
    step.  On MariaDB the old code failed about one seed in four, on a
    deadlock or on error 1442 (a trigger writing back a table its
    statement read).
    """
    engine = dbengine.create_engine(request.getfixturevalue(f"{server}_url"))
    request.addfinalizer(engine.dispose)
    rng = random.Random(seed)
    sync, count = PROPERTIES.sync, 120
    keys = [f"r{i:03d}" for i in range(count)]
    with engine.begin() as conn:
        PROPERTIES.create_table(conn)
        conn.execute(
            sa.text("INSERT INTO resources (id, properties) VALUES (:id, :id)"),
            [{"id": k} for k in rng.sample(keys, count)],
        )
        PROPERTIES.expand(conn)
    written = {k: f"new {k}" for k in rng.sample(keys, 15)}
    old = sync.table_clause.c

    def reader(subset: list[str]) -> Callable[[], None]:
        def read() -> None:
            for _ in range(3):
                with engine.begin() as conn:
                    assert all(v[0] for v in sync.read(conn, subset).values())

        return read

    def backfill() -> None:  # at the isolation level a backfill runs at
        isolation = backend(engine).backfill_isolation
        options = {} if isolation is None else {"isolation_level": isolation}
        with engine.connect().execution_options(**options) as conn:
            for low in range(0, count, 30):
                with conn.begin():
                    sync.migrate(conn, old.id.between(keys[low], keys[low + 29]))

    def writer() -> None:
        for key, data in written.items():
            with engine.begin() as conn:
                sync.read(conn, [key], for_update=True)  # loads, then saves
                PROPERTIES.write(conn, "UPDATE", key, None, (data, None))

    readers = [reader(rng.sample(keys, count // 2)) for _ in range(3)]
    errors = concurrently(*readers, backfill, writer)
    assert not errors, f"seed {seed}: {errors[0]}"
    with engine.connect() as conn:
        rows = PROPERTIES.select(conn)
    for key in keys:
        value = written.get(key, key)
        assert rows[key] == ((value, None), (value, None)), f"seed {seed}, {key}"


def test_a_foreign_key_on_existing_rows_refuses_orphans_then_is_added(engine):
    """Added without a scan under lock; a row that matches nothing is one
    clear error (SQLite: no foreign key without a rebuild, said so), and
    the same operation completes once the row is fixed."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE zones (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql(
            "CREATE TABLE racks (id INTEGER PRIMARY KEY, zone INTEGER)"
        )
        conn.exec_driver_sql("INSERT INTO zones (id) VALUES (1)")
        conn.exec_driver_sql(
            "INSERT INTO racks (id, zone) VALUES (1, 1), (2, 7), (3, NULL)"
        )

    def add() -> None:
        with engine.connect() as conn, in_revision(conn):
            ddl.add_foreign_key("racks_zone", "racks", ["zone"], "zones", ["id"])

    if engine.dialect.name == "sqlite":
        with pytest.raises(MigrationError, match="without rebuilding it"):
            add()
        return
    with pytest.raises(MigrationError, match="racks has rows whose zone match no"):
        add()
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE racks SET zone = 1 WHERE id = 2")
    add()
    [key] = sa.inspect(engine).get_foreign_keys("racks")
    assert (key["name"], key["constrained_columns"], key["referred_table"]) == (
        "racks_zone",
        ["zone"],
        "zones",
    )
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO racks (id, zone) VALUES (4, 9)")
