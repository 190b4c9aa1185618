"""Sync triggers keep the old and the new shape of a column equal, on each backend."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat.db import Database, ddl
from rpccompat.db.sync import REFUSED, ColumnSync, read_through
from rpccompat_demo import beta, gamma, schema
from tests.db import SIZES, concurrently, insert_alpha_volumes
from tests.db.shapes import IMAGES, VISIBILITY, in_revision

SYNC = beta.NAME_SYNC
BEFORE_EXPAND = ["alpha-0", "alpha-1", "alpha-2"]  # written before any trigger


@pytest.fixture
def volumes(engine: sa.Engine) -> sa.Engine:
    """The demo database after beta's expand, with three rows alpha wrote."""
    database = schema.install_alpha(engine)
    insert_alpha_volumes(engine, {key: key for key in BEFORE_EXPAND})
    database.expand()
    return engine


def write(engine: sa.Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def columns(engine: sa.Engine, table: str, names: str, key: object) -> tuple:
    """The values of ``names`` (comma-separated) in one row of ``table``."""
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text(f"SELECT {names} FROM {table} WHERE id = :id"), {"id": key}
            ).one()
        )


def volume(engine: sa.Engine, key: str) -> tuple[str | None, str | None]:
    """(display_name, name) of one volume."""
    return columns(engine, "volumes", "display_name, name", key)


def insert_alpha(engine: sa.Engine, key: str, display_name: str | None) -> None:
    insert_alpha_volumes(engine, {key: display_name})


def insert_beta(engine: sa.Engine, key: str, name: str | None) -> None:
    write(
        engine,
        "INSERT INTO volumes (id, name, size, status) "
        "VALUES (:id, :name, 1, 'available')",
        id=key,
        name=name,
    )


def test_alpha_shaped_insert_fills_name(volumes):
    insert_alpha(volumes, "v1", "written by alpha")
    assert volume(volumes, "v1") == ("written by alpha", "written by alpha")


def test_beta_shaped_insert_fills_display_name(volumes):
    insert_beta(volumes, "v1", "written by beta")
    assert volume(volumes, "v1") == ("written by beta", "written by beta")


def test_update_of_display_name_updates_name(volumes):
    insert_alpha(volumes, "v1", "first")
    write(volumes, "UPDATE volumes SET display_name = 'renamed' WHERE id = 'v1'")
    assert volume(volumes, "v1") == ("renamed", "renamed")


def test_update_of_name_updates_display_name(volumes):
    insert_beta(volumes, "v1", "first")
    write(volumes, "UPDATE volumes SET name = 'renamed' WHERE id = 'v1'")
    assert volume(volumes, "v1") == ("renamed", "renamed")


def test_update_of_an_unrelated_column_changes_neither_side(volumes):
    """Not even a row alpha wrote before expand: that one is the backfill's."""
    insert_alpha(volumes, "v1", "first")
    write(volumes, "UPDATE volumes SET status = 'in-use' WHERE id = 'v1'")
    assert volume(volumes, "v1") == ("first", "first")
    write(volumes, "UPDATE volumes SET status = 'in-use' WHERE id = 'alpha-0'")
    assert volume(volumes, "alpha-0") == ("alpha-0", None)


def test_a_write_of_both_shapes_that_disagree_is_refused(volumes):
    """No rule could tell which of the two the statement meant."""
    with pytest.raises(sa.exc.DBAPIError, match=REFUSED):
        write(
            volumes,
            "INSERT INTO volumes (id, display_name, name, size, status) "
            "VALUES ('v1', 'old side', 'new side', 1, 'available')",
        )
    insert_alpha(volumes, "v1", "first")
    with pytest.raises(sa.exc.DBAPIError, match=REFUSED):
        write(
            volumes, "UPDATE volumes SET display_name = 'a', name = 'b' WHERE id = 'v1'"
        )
    assert volume(volumes, "v1") == ("first", "first")
    # Both shapes written alike: nothing to refuse.
    write(volumes, "UPDATE volumes SET display_name = 'c', name = 'c' WHERE id = 'v1'")
    assert volume(volumes, "v1") == ("c", "c")
    write(
        volumes,
        "INSERT INTO volumes (id, display_name, name, size, status) "
        "VALUES ('v2', 'both', 'both', 1, 'available')",
    )
    assert volume(volumes, "v2") == ("both", "both")


def test_null_is_copied_both_ways_and_so_is_a_value_replacing_it(volumes):
    """The comparisons are null-safe: ``<>`` would miss every change to or
    from NULL."""
    insert_alpha(volumes, "v1", "first")
    write(volumes, "UPDATE volumes SET display_name = NULL WHERE id = 'v1'")
    assert volume(volumes, "v1") == (None, None)
    write(volumes, "UPDATE volumes SET display_name = 'back' WHERE id = 'v1'")
    assert volume(volumes, "v1") == ("back", "back")
    write(volumes, "UPDATE volumes SET name = NULL WHERE id = 'v1'")
    assert volume(volumes, "v1") == (None, None)
    write(volumes, "UPDATE volumes SET name = 'again' WHERE id = 'v1'")
    assert volume(volumes, "v1") == ("again", "again")


def test_migrate_rows_converts_only_the_rows_given(volumes):
    assert [volume(volumes, k) for k in BEFORE_EXPAND] == [
        (k, None) for k in BEFORE_EXPAND
    ]
    with volumes.begin() as conn:
        assert SYNC.migrate_rows(conn, ["alpha-0", "alpha-2"]) == 2
    assert [volume(volumes, k) for k in BEFORE_EXPAND] == [
        ("alpha-0", "alpha-0"),
        ("alpha-1", None),
        ("alpha-2", "alpha-2"),
    ]
    with volumes.begin() as conn:
        assert SYNC.migrate_rows(conn, ["alpha-0", "alpha-2"]) == 0  # done already
        assert SYNC.migrate_rows(conn, []) == 0


def test_drop_triggers_stops_the_copying(volumes):
    dialect = volumes.dialect.name
    with volumes.begin() as conn:
        for statement in SYNC.drop_triggers(dialect):
            conn.exec_driver_sql(statement)
    insert_alpha(volumes, "v1", "written by alpha")
    assert volume(volumes, "v1") == ("written by alpha", None)
    write(volumes, "UPDATE volumes SET name = 'by beta' WHERE id = 'v1'")
    assert volume(volumes, "v1") == ("written by alpha", "by beta")


# -- a conversion, not a rename: gigabytes become megabytes ----------------------


@pytest.fixture
def disks(engine: sa.Engine) -> sa.Engine:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE disks (id INT PRIMARY KEY, size_gb INT, size_mb INT, "
            "label VARCHAR(20))"
        )
        for statement in SIZES.create_triggers(engine.dialect.name):
            conn.exec_driver_sql(statement)
    return engine


def disk(engine: sa.Engine, key: int) -> tuple[int | None, int | None]:
    """(size_gb, size_mb) of one disk."""
    return columns(engine, "disks", "size_gb, size_mb", key)


def test_a_converting_sync_computes_each_side_from_the_other(disks):
    write(disks, "INSERT INTO disks (id, size_gb) VALUES (1, 3)")
    assert disk(disks, 1) == (3, 3072)
    write(disks, "INSERT INTO disks (id, size_mb) VALUES (2, 5120)")
    assert disk(disks, 2) == (5, 5120)
    write(disks, "UPDATE disks SET size_gb = 4 WHERE id = 1")
    assert disk(disks, 1) == (4, 4096)
    write(disks, "UPDATE disks SET size_mb = 2048 WHERE id = 2")
    assert disk(disks, 2) == (2, 2048)
    write(disks, "UPDATE disks SET label = 'boot' WHERE id = 2")
    assert disk(disks, 2) == (2, 2048)


def test_a_converting_sync_migrates_rows_written_before_its_triggers(engine):
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE disks (id INT PRIMARY KEY, size_gb INT, size_mb INT, "
            "label VARCHAR(20))"
        )
        conn.exec_driver_sql("INSERT INTO disks (id, size_gb) VALUES (1, 1), (2, 2)")
        assert SIZES.migrate_rows(conn, [2]) == 1
    assert [disk(engine, 1), disk(engine, 2)] == [(1, None), (2, 2048)]


def test_a_converting_sync_dropped_copies_nothing_more(disks):
    write(disks, "INSERT INTO disks (id, size_gb) VALUES (1, 3)")
    with disks.begin() as conn:
        for statement in SIZES.drop_triggers(disks.dialect.name):
            conn.exec_driver_sql(statement)
    write(disks, "UPDATE disks SET size_gb = 4 WHERE id = 1")
    assert disk(disks, 1) == (4, 3072)
    write(disks, "INSERT INTO disks (id, size_mb) VALUES (2, 5120)")
    assert disk(disks, 2) == (None, 5120)


def _stale_disks(engine: sa.Engine, rng: random.Random, count: int) -> None:
    """``count`` disks written before the sync, in a heap order of their own."""
    with engine.begin() as conn:
        for statement in SIZES.drop_triggers(engine.dialect.name):
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql("DELETE FROM disks")
        conn.execute(
            sa.text("INSERT INTO disks (id, size_gb) VALUES (:id, :gb)"),
            [{"id": k, "gb": k} for k in rng.sample(range(count), count)],
        )
        moved = rng.sample(range(count), count // 2)  # PostgreSQL: to the heap's end
        conn.execute(
            sa.text("UPDATE disks SET label = 'moved' WHERE id = :id"),
            [{"id": k} for k in moved],
        )
        for statement in SIZES.create_triggers(engine.dialect.name):
            conn.exec_driver_sql(statement)


@pytest.mark.parametrize("seed", range(8))
def test_readers_and_the_backfill_converting_the_same_rows_never_deadlock(disks, seed):
    """Each reader converts the rows it reads, the backfill the same rows
    in batches, a writer writes the new shape: all at once, none fails,
    and every row ends converted or as the writer left it.

    Every converter locks rows in key order; PostgreSQL's UPDATE alone
    locks them in heap order, which the rows' updates shuffle.
    """
    rng = random.Random(seed)
    count = 200
    _stale_disks(disks, rng, count)
    column = SIZES.table_clause.c
    written = {k: 1024 * (count + k) for k in rng.sample(range(count), 20)}

    def reader(keys: list[int]) -> Callable[[], None]:
        query = sa.select(column.id, column.size_mb).where(column.id.in_(keys))
        query = query.order_by(rng.choice([column.id, column.id.desc()]))

        def read() -> None:
            for _ in range(3):
                with disks.begin() as conn:
                    rows = SIZES.read(conn, query)
                    assert all(row.size_mb is not None for row in rows)

        return read

    def backfill() -> None:
        for low in range(0, count, 40):
            with disks.begin() as conn:
                SIZES.migrate(conn, column.id.between(low, low + 39))

    def writer() -> None:
        for key, mb in written.items():
            write(disks, "UPDATE disks SET size_mb = :mb WHERE id = :id", mb=mb, id=key)

    readers = [reader(rng.sample(range(count), count // 2)) for _ in range(4)]
    errors = concurrently(*readers, backfill, writer)
    assert not errors, f"seed {seed}: {errors[0]!r}"
    for key in range(count):
        assert disk(disks, key) == (
            (count + key, written[key]) if key in written else (key, 1024 * key)
        ), f"seed {seed}, disk {key}"


def test_read_converts_rows_not_yet_migrated_then_returns_them(engine):
    """Migrate on load: new code reads only ``name``, even of old rows."""
    database = schema.install_alpha(engine)
    insert_alpha(engine, "old", "from alpha")
    database.expand()
    with engine.begin() as conn:
        query = sa.select(beta.volumes.c.id, beta.volumes.c.name)
        assert [tuple(r) for r in beta.NAME_SYNC.read(conn, query)] == [
            ("old", "from alpha")
        ]
    assert volume(engine, "old") == ("from alpha", "from alpha")  # written back


def test_read_returns_a_row_converted_by_another_reader_after_its_snapshot(
    volumes,
):
    """On MariaDB's REPEATABLE READ, a second plain read would see the
    snapshot again: the row as alpha left it, ``name`` still NULL."""
    query = sa.select(beta.volumes.c.id, beta.volumes.c.name).where(
        beta.volumes.c.id == "alpha-0"
    )
    with volumes.begin() as conn:
        conn.execute(sa.select(beta.volumes.c.id)).all()  # the snapshot starts
        with volumes.begin() as other:
            SYNC.migrate_rows(other, ["alpha-0"])
        assert [tuple(r) for r in SYNC.read(conn, query)] == [("alpha-0", "alpha-0")]


# -- a skip-level upgrade: two syncs of one table in flight ----------------------


@pytest.fixture
def skipped(engine: sa.Engine) -> sa.Engine:
    """Alpha's database expanded straight for gamma: beta's rename and
    gamma's widened size both in flight, three rows alpha wrote before."""
    schema.install_alpha(engine)
    insert_alpha_volumes(engine, {key: key for key in BEFORE_EXPAND})
    Database(engine, [schema.GAMMA_TREE]).expand()
    return engine


GAMMA_QUERY = sa.select(
    gamma.volumes.c.id, gamma.volumes.c.name, gamma.volumes.c.size_gib
)


def test_read_through_converts_each_sync_a_row_needs_and_writes_it_back(skipped):
    with skipped.begin() as conn:
        beta.NAME_SYNC.migrate_rows(conn, ["alpha-1"])  # one backfill was there
        gamma.SIZE_SYNC.migrate_rows(conn, ["alpha-2"])  # the other there
    with skipped.begin() as conn:
        rows = read_through(conn, GAMMA_QUERY.order_by("id"), gamma.SYNCS)
    assert [tuple(r) for r in rows] == [(k, k, 1) for k in BEFORE_EXPAND]
    for key in BEFORE_EXPAND:
        assert columns(
            skipped, "volumes", "display_name, name, size, size_gib", key
        ) == (
            key,
            key,
            1,
            1,
        )


def test_read_through_returns_what_another_reader_converted_after_its_snapshot(
    skipped,
):
    """Reading through one sync, then the other, would return the second
    read's row: its size was converted before the snapshot, so it looks
    done, with the name of REPEATABLE READ's snapshot, still NULL."""
    query = GAMMA_QUERY.where(gamma.volumes.c.id == "alpha-0")
    with skipped.begin() as conn:
        gamma.SIZE_SYNC.migrate_rows(conn, ["alpha-0"])
    with skipped.begin() as conn:
        conn.execute(sa.select(gamma.volumes.c.id)).all()  # the snapshot starts
        with skipped.begin() as other:
            beta.NAME_SYNC.migrate_rows(other, ["alpha-0"])
        assert [tuple(r) for r in read_through(conn, query, gamma.SYNCS)] == [
            ("alpha-0", "alpha-0", 1)
        ]


def test_read_through_refuses_syncs_of_different_tables():
    with pytest.raises(ValueError, match="one table and key"):
        read_through(None, GAMMA_QUERY, [beta.NAME_SYNC, SIZES])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one table and key"):
        read_through(None, GAMMA_QUERY, [])  # type: ignore[arg-type]


# -- a lossy mapping: is_public becomes visibility, as in Glance's Ocata ---------


@pytest.fixture
def images(engine: sa.Engine) -> sa.Engine:
    """The images table after expand, with image 'before' written before it."""
    with engine.begin() as conn:
        VISIBILITY.create_table(conn)
        conn.exec_driver_sql(
            "INSERT INTO images (id, is_public) VALUES ('before', false)"
        )
        VISIBILITY.expand(conn)
    return engine


def image(engine: sa.Engine, key: str) -> tuple[bool | None, str | None]:
    """(is_public, visibility) of one image."""
    is_public, visibility = columns(engine, "images", "is_public, visibility", key)
    return (None if is_public is None else bool(is_public)), visibility


def test_a_new_shape_value_the_old_shape_cannot_represent_is_kept_on_insert(images):
    """On SQLite the insert trigger's UPDATE used to fire the update trigger,
    which wrote visibility back from is_public: 'private' became 'shared'."""
    for key, visibility in [("i1", "private"), ("i2", "community"), ("i3", "public")]:
        write(
            images,
            "INSERT INTO images (id, visibility) VALUES (:id, :v)",
            id=key,
            v=visibility,
        )
    assert [image(images, k) for k in ("i1", "i2", "i3")] == [
        (False, "private"),
        (False, "community"),
        (True, "public"),
    ]


def test_a_new_shape_value_survives_old_shape_writes_that_leave_the_old_value(images):
    write(images, "INSERT INTO images (id, visibility) VALUES ('i1', 'private')")
    write(images, "UPDATE images SET is_public = false WHERE id = 'i1'")
    write(images, "UPDATE images SET note = 'touched' WHERE id = 'i1'")
    assert image(images, "i1") == (False, "private")
    # An old-shape write that changes the old value wins, both ways.
    write(images, "UPDATE images SET is_public = true WHERE id = 'i1'")
    assert image(images, "i1") == (True, "public")
    write(images, "UPDATE images SET is_public = false WHERE id = 'i1'")
    assert image(images, "i1") == (False, "shared")
    write(images, "UPDATE images SET visibility = 'community' WHERE id = 'i1'")
    assert image(images, "i1") == (False, "community")


def test_migrate_rows_keeps_what_the_new_release_wrote(images):
    write(images, "UPDATE images SET visibility = 'private' WHERE id = 'before'")
    with images.begin() as conn:
        assert IMAGES.migrate_rows(conn, ["before"]) == 0
    assert image(images, "before") == (False, "private")


def test_read_keeps_a_new_shape_write_between_its_select_and_its_conversion(images):
    """The row read had no visibility yet; before read() locks it to convert
    it, the new release sets 'private' (is_public stays false: it agrees)."""
    query = sa.select(sa.column("id"), sa.column("visibility")).select_from(
        sa.table("images")
    )
    reads = 0

    def concurrent_write(conn, cursor, statement, *args) -> None:
        nonlocal reads
        reads += statement.startswith("SELECT")
        if reads == 2 and statement.startswith("SELECT"):  # the locking read
            write(
                images, "UPDATE images SET visibility = 'private' WHERE id = 'before'"
            )

    with images.begin() as conn:
        sa.event.listen(conn, "before_cursor_execute", concurrent_write)
        assert [tuple(r) for r in IMAGES.read(conn, query)] == [("before", "private")]
    assert image(images, "before") == (False, "private")


VISIBILITIES = ("public", "private", "shared", "community")


def test_a_conversion_to_a_postgresql_enum_is_cast_to_it(postgresql_url):
    """PostgreSQL stores and compares no text as an enum without a cast: the
    sync casts to the type the column has, with no declaration, and
    ``ddl.add_column`` creates the enum type first."""
    enum = sa.Enum(*VISIBILITIES, name="image_visibility")
    engine = dbengine.create_engine(postgresql_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE images (id VARCHAR(36) PRIMARY KEY, is_public BOOLEAN)"
            )
            conn.exec_driver_sql("INSERT INTO images VALUES ('before', true)")
            with in_revision(conn):
                for _ in range(2):  # run again, as after an interruption
                    ddl.add_column("images", sa.Column("visibility", enum))
                ddl.install_sync(IMAGES)
        write(engine, "INSERT INTO images (id, is_public) VALUES ('old', false)")
        write(engine, "INSERT INTO images (id, visibility) VALUES ('new', 'private')")
        with engine.begin() as conn:
            assert IMAGES.migrate_rows(conn, ["before", "old", "new"]) == 1
        assert [image(engine, k) for k in ("before", "old", "new")] == [
            (True, "public"),
            (False, "shared"),
            (False, "private"),
        ]
    finally:
        engine.dispose()


# -- names longer than a backend keeps ---------------------------------------------


def test_two_syncs_whose_names_differ_past_the_backends_limit_both_sync(engine):
    """PostgreSQL cut both names to one at 63 bytes (the second function
    replaced the first, and INSERTs into the first table failed) and MariaDB
    refused names over 64 characters."""
    prefix = "sync_for_the_rename_in_release_beta_of_a_column_of_the_storage_table_"
    columns_of = {"shelves": ("label", "title"), "drawers": ("tag", "caption")}
    syncs = [
        dataclasses.replace(
            ColumnSync.rename(table, "id", old, new), name=f"{prefix}{table}_{new}"
        )
        for table, (old, new) in columns_of.items()
    ]
    assert syncs[0].name[:64] == syncs[1].name[:64]
    with engine.begin() as conn:
        for sync in syncs:
            conn.exec_driver_sql(
                f"CREATE TABLE {sync.table} (id INT PRIMARY KEY, "
                f"{sync.old[0]} VARCHAR(20), {sync.new[0]} VARCHAR(20))"
            )
            for statement in sync.create_triggers(engine.dialect.name):
                conn.exec_driver_sql(statement)

    def insert(sync: ColumnSync, key: int) -> tuple:
        old, new = sync.old[0], sync.new[0]
        write(engine, f"INSERT INTO {sync.table} (id, {old}) VALUES ({key}, 'kept')")
        return columns(engine, sync.table, f"{old}, {new}", key)

    assert [insert(sync, 1) for sync in syncs] == [("kept", "kept")] * 2
    with engine.begin() as conn:
        for statement in syncs[0].drop_triggers(engine.dialect.name):
            conn.exec_driver_sql(statement)
    assert [insert(sync, 2) for sync in syncs] == [("kept", None), ("kept", "kept")]


def test_contract_drops_a_long_named_sync_installed_before_names_were_fitted(
    postgresql_url,
):
    """PostgreSQL kept such a name cut at 63 bytes; dropping only the fitted
    name would leave the trigger to fail every INSERT once its column goes."""
    engine = dbengine.create_engine(postgresql_url)
    sync = dataclasses.replace(
        ColumnSync.rename("shelves", "id", "label", "title"), name="s" * 70
    )
    legacy = sync.name[:63]
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE shelves (id INT PRIMARY KEY, label TEXT, title TEXT)"
            )
            for statement in sync.create_triggers("postgresql"):  # as old code did
                conn.exec_driver_sql(
                    statement.replace(sync.trigger_names("postgresql")[0], legacy)
                )
            for statement in sync.drop_triggers("postgresql"):
                conn.exec_driver_sql(statement)
            left = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"
            ).scalar()
        assert left == 0
    finally:
        engine.dispose()
