"""Schema changes for revision scripts that never stall the running service.

A DDL statement that waits for a table lock makes every later query on that
table wait behind it: one long transaction plus one ``ALTER TABLE`` is an
outage.  So each statement here runs under a short lock timeout
(``lock_timeout`` on PostgreSQL, ``lock_wait_timeout`` on MySQL/MariaDB) and,
when the lock is not granted, gives way and retries with backoff.  MySQL and
MariaDB are asked for ``ALGORITHM=INSTANT`` (else ``INPLACE, LOCK=NONE``) so a
plan that would copy the table fails at once instead of locking it;
PostgreSQL builds indexes ``CONCURRENTLY`` outside the transaction and adds
constraints ``NOT VALID`` before validating them.

Use these from a revision's ``upgrade()``; they also render offline, which is
how ``rpccompat.db.lint`` reads them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.schema import CreateColumn

from rpccompat.db import waiting
from rpccompat.db.backends import BACKENDS, Backend, backend
from rpccompat.db.sync import Sync, installed_triggers
from rpccompat.exceptions import LockNotGranted, MigrationError

LOG = logging.getLogger(__name__)

LOCK_TIMEOUT = 0.1  # seconds a statement may wait for its lock
MAX_LOCK_TIMEOUT = 3600.0  # beyond this, a plain blocking ALTER would do
RETRY_BUDGET = 60.0  # seconds of retries before giving up
MAX_BACKOFF = 2.0


def is_lock_timeout(error: sa.exc.DBAPIError) -> bool:
    return any(b.is_lock_timeout(error) for b in BACKENDS.values())


def check_lock_timeout(seconds: float) -> float:
    """``seconds`` if it is a lock timeout every backend can honour, else
    ValueError: more than 0 (PostgreSQL reads 0 as "wait forever", MariaDB
    as "do not wait") and at most MAX_LOCK_TIMEOUT."""
    if not 0 < seconds <= MAX_LOCK_TIMEOUT:  # NaN fails too
        raise ValueError(
            f"must be more than 0 and at most {MAX_LOCK_TIMEOUT:g} seconds, "
            f"not {seconds:g}"
        )
    return seconds


def lock_timeout_statement(dialect: str, seconds: float) -> str | None:
    """The SET that makes one attempt wait at most ``seconds`` for its lock.

    One meaning on every backend - at most ``seconds`` - in each one's unit:
    PostgreSQL's milliseconds, at least 1 (0 would mean forever);
    MySQL/MariaDB's whole seconds, rounded down, so under one second it does
    not wait at all (NOWAIT) and the retries do the waiting.
    """
    return backend(dialect).lock_timeout(check_lock_timeout(seconds))


def run_ddl(
    conn: sa.Connection,
    statements: Sequence[str],
    *,
    lock_timeout: float = LOCK_TIMEOUT,
    budget: float = RETRY_BUDGET,
) -> int:
    """Run ``statements`` giving way to lock holders; returns the attempts made.

    On PostgreSQL the statements share a savepoint and are retried as one,
    so a timed-out attempt leaves the revision's transaction usable.  MySQL
    and MariaDB commit each DDL statement on its own, so each is retried on
    its own, with a budget of its own; they take ``lock_wait_timeout`` in
    whole seconds, and below one second do not wait at all and rely on the
    retries.
    """
    check_lock_timeout(lock_timeout)
    if backend(conn).transactional_ddl:
        return _retried(conn, statements, lock_timeout, budget)
    return sum(_retried(conn, [s], lock_timeout, budget) for s in statements)


def _retried(
    conn: sa.Connection, statements: Sequence[str], lock_timeout: float, budget: float
) -> int:
    deadline = time.monotonic() + budget
    next_progress = time.monotonic() + waiting.PROGRESS_EVERY
    delay, attempt = 0.05, 0
    while True:
        attempt += 1
        try:
            backend(conn).attempt(conn, statements, lock_timeout)
            return attempt
        except sa.exc.DBAPIError as e:
            if not is_lock_timeout(e):
                raise
            if time.monotonic() + delay > deadline:
                raise LockNotGranted(
                    f"{statements[0][:80]!r}: lock not granted in {attempt} "
                    f"attempts over {budget:g}s; a long transaction holds the "
                    "table (see pg_stat_activity / SHOW PROCESSLIST); end it or "
                    "run again later"
                ) from e
            LOG.info(
                "lock not granted in %.2fs (attempt %d), retrying in %.2fs: %s",
                lock_timeout,
                attempt,
                delay,
                statements[0][:80],
            )
            if time.monotonic() >= next_progress:
                next_progress = time.monotonic() + waiting.PROGRESS_EVERY
                LOG.warning(
                    "%s: lock not granted in %d attempts over %.0fs of %gs; the "
                    "oldest open transactions: %s",
                    statements[0][:80],
                    attempt,
                    budget - (deadline - time.monotonic()),
                    budget,
                    waiting.oldest_transactions(conn),
                )
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)


# -- operations for revision scripts -------------------------------------------


def _dialect() -> str:
    return op.get_context().dialect.name


def _backend() -> Backend:
    return backend(_dialect())


def _q(name: str) -> str:
    return op.get_context().dialect.identifier_preparer.quote(name)


def _settings() -> dict[str, float]:
    attributes = context.config.attributes
    return {
        "lock_timeout": attributes.get("lock_timeout", LOCK_TIMEOUT),
        "budget": attributes.get("retry_budget", RETRY_BUDGET),
    }


# -- what is there already, on the migration's own connection ------------------


def _inspector() -> sa.Inspector:
    """A fresh inspector: it caches, and each operation changes the schema."""
    return sa.inspect(op.get_bind())


def _tables() -> set[str]:
    return set(_inspector().get_table_names())


def _columns(table: str) -> dict[str, Mapping[str, Any]]:
    return {c["name"]: c for c in _inspector().get_columns(table)}


def _indexes(table: str) -> dict[str, Mapping[str, Any]]:
    """Indexes and unique constraints (some backends list a unique index as
    one) by name."""
    inspector = _inspector()
    unique: list[Mapping[str, Any]] = [
        {**u, "unique": True} for u in inspector.get_unique_constraints(table)
    ]
    return {i["name"]: i for i in [*unique, *inspector.get_indexes(table)]}


def _foreign_keys(table: str) -> set[str | None]:
    return {fk["name"] for fk in _inspector().get_foreign_keys(table)}


def _has_column(table: str, column: sa.Column) -> bool:
    """Whether ``table`` has ``column`` already; raise if it has another column
    of that name (another type or nullability)."""
    if context.is_offline_mode():
        return False
    existing = _columns(table).get(column.name)
    if existing is None:
        return False
    reflected = sa.Column(column.name, existing["type"])
    migration = op.get_context()
    if (
        migration.impl.compare_type(reflected, column)
        or existing["nullable"] != column.nullable
    ):
        declared = column.type.compile(dialect=migration.dialect)
        raise MigrationError(
            f"{table}.{column.name} exists as {existing['type']}"
            f"{_null(existing['nullable'])} but this revision declares "
            f"{declared}{_null(column.nullable)}: something other than this "
            "revision made it; rename or drop it, then run again"
        )
    return True


def _null(nullable: bool | None) -> str:
    return " NULL" if nullable else " NOT NULL"


def execute(*statements: str) -> None:
    """Run DDL statements under the lock timeout, retried as run_ddl says."""
    if context.is_offline_mode():
        for statement in statements:
            op.execute(statement)
        return
    run_ddl(op.get_bind(), statements, **_settings())


def _alter_online(statement: str) -> None:
    """An ALTER TABLE as the backend runs it without locking writers out
    (MySQL/MariaDB: INSTANT, else INPLACE without locks, never COPY)."""
    db = _backend()
    *fallbacks, last = db.online_alters(statement)
    for attempt in fallbacks:
        if context.is_offline_mode():
            op.execute(attempt)
            return
        try:
            execute(attempt)
            return
        except sa.exc.DBAPIError as e:
            if not db.is_unsupported_plan(e):
                raise
    execute(last)


def create_table(name: str, *elements: sa.schema.SchemaItem) -> None:
    """Create a table; one that exists already must have the declared columns.

    An interrupted run may have created it (MySQL/MariaDB commit each
    statement of a revision on its own): then each column is checked as
    ``add_column`` checks it, and nothing is created.
    """
    if context.is_offline_mode() or name not in _tables():
        op.create_table(name, *elements)
        return
    # Attached to a table, a column declared only in a PrimaryKeyConstraint
    # is NOT NULL, as the database has it.
    for column in sa.Table(name, sa.MetaData(), *elements).columns:
        if not _has_column(name, column):
            raise MigrationError(
                f"table {name} exists without column {column.name}: something "
                "other than this revision made it; rename or drop it, then run "
                "again"
            )


def add_column(table: str, column: sa.Column) -> None:
    """Add a column; it must be nullable or have a constant default.

    Already there (an interrupted run added it): checked to be the declared
    column, and not added again.  A named ``sa.Enum`` is a type of its own
    on PostgreSQL: created first, unless it exists (another column's, or an
    interrupted run's).
    """
    if _has_column(table, column):
        return
    _create_types(column.type)
    spec = CreateColumn(column).compile(dialect=op.get_context().dialect)
    _alter_online(f"ALTER TABLE {_q(table)} ADD COLUMN {spec}")


def _create_types(type_: sa.types.TypeEngine[Any]) -> None:
    """The types of their own a column's type needs (PostgreSQL's enums):
    each created unless it exists; offline, Alembic's mock connection
    writes the CREATE out."""
    for needed in _backend().types_of(type_):
        needed.create(op.get_bind(), checkfirst=not context.is_offline_mode())


def drop_not_null(table: str, column: str) -> None:
    """Let ``column`` hold NULL: the old column of a change, before its sync.

    The new release writes only the new shape; the sync fills the old
    column, but on SQLite only after the row is in (its triggers run AFTER
    the insert), so an old NOT NULL column without a default refuses every
    new-shape insert.  A relaxation takes nothing from the old release.

    PostgreSQL: ``DROP NOT NULL``, a catalog change under a brief lock.
    MySQL/MariaDB: the column restated as reflected (type, collation,
    default, comment) but NULL, in place without locks.  SQLite cannot alter
    a column: the table is rebuilt by copying (Alembic's batch mode) and its
    triggers are created again.
    Already nullable (an interrupted run relaxed it): nothing is done.
    """
    existing = None if context.is_offline_mode() else _columns(table).get(column)
    if existing is not None and existing["nullable"]:
        return
    db = _backend()
    # Offline (the lint, --sql) SQLite shows the relaxation it means: the
    # statements of batch mode's copy need the live table's columns.
    if db.alters_columns or existing is None:
        _alter_online(db.relax_not_null(table, column, existing))
    else:
        _rebuild_nullable(table, column, existing)


def _rebuild_nullable(table: str, column: str, existing: Mapping[str, Any]) -> None:
    """SQLite: the table copied with ``column`` nullable, triggers kept.

    Dropping the old table drops its triggers; the revision's transaction
    covers the copy and their creation again, so no write sees the table
    without them.
    """
    triggers = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name = :table"
            ),
            {"table": table},
        )
        .scalars()
        .all()
    )
    with op.batch_alter_table(table, recreate="always") as batch:
        batch.alter_column(column, nullable=True, existing_type=existing["type"])
    execute(*triggers)


def drop_column(table: str, column: str) -> None:
    if context.is_offline_mode() or column in _columns(table):
        _alter_online(f"ALTER TABLE {_q(table)} DROP COLUMN {_q(column)}")


def create_index(
    name: str, table: str, columns: Sequence[str], *, unique: bool = False
) -> None:
    """Create an index, or check the one an interrupted run built.

    PostgreSQL: an index an interrupted ``CREATE INDEX CONCURRENTLY`` left
    invalid is dropped and built again.  A unique index on rows that share
    a value is refused with how many values are shared and the query that
    lists them, and leaves nothing behind: removing them is a data
    migration's job, before the index (see the recipes in the documentation).
    """
    _drop_invalid_index(name)
    existing = None if context.is_offline_mode() else _indexes(table).get(name)
    if existing is not None:
        _check_index(name, table, existing, columns, unique)
        return
    try:
        _index_ddl(_backend().create_index(name, table, columns, unique))
    except sa.exc.IntegrityError as e:
        _drop_invalid_index(name)
        raise MigrationError(
            f"unique index {name} on {table} ({', '.join(columns)}): "
            f"{_duplicates(table, columns)} distinct values are each in more "
            "than one row; remove the duplicates (list them with: "
            f"{_duplicates_query(table, columns)}), then run again"
        ) from e


def _duplicates_query(table: str, columns: Sequence[str]) -> str:
    cols = ", ".join(_q(c) for c in columns)
    present = " AND ".join(f"{_q(c)} IS NOT NULL" for c in columns)
    return (
        f"SELECT {cols}, COUNT(*) FROM {_q(table)} WHERE {present} "
        f"GROUP BY {cols} HAVING COUNT(*) > 1"
    )


def _duplicates(table: str, columns: Sequence[str]) -> int:
    query = f"SELECT COUNT(*) FROM ({_duplicates_query(table, columns)}) shared"
    return op.get_bind().exec_driver_sql(query).scalar_one()


def drop_index(name: str, table: str) -> None:
    if not context.is_offline_mode() and name not in _indexes(table):
        return
    _index_ddl(_backend().drop_index(name, table))


def _index_ddl(statement: str) -> None:
    """One index change: CONCURRENTLY, outside the revision's transaction,
    on PostgreSQL; in place without locks on MySQL/MariaDB."""
    if _backend().concurrent_indexes:
        _concurrently(statement)
    else:
        execute(statement)


def _concurrently(statement: str) -> None:
    """A CONCURRENTLY statement, outside the revision's transaction.

    It waits for every transaction older than itself, holding no lock that
    writers need meanwhile, so instead of the short lock timeout it has the
    whole retry budget of waiting, said while it lasts (waiting.Watch).
    """
    with op.get_context().autocommit_block():
        if context.is_offline_mode():
            op.execute(statement)
            return
        conn = op.get_bind()
        budget = _settings()["budget"]
        with waiting.Watch(conn, statement[:80], budget) as watch:
            try:
                conn.exec_driver_sql(statement)
            except sa.exc.DBAPIError as e:
                if not watch.gave_up:
                    raise
                raise LockNotGranted(
                    f"{statement[:80]!r}: waited {budget:g}s for {watch.holders} "
                    "to end; end them, or run the same command again later"
                ) from e


def _drop_invalid_index(name: str) -> None:
    """A CONCURRENTLY build that failed leaves an invalid index: drop it first."""
    query = _backend().invalid_index
    if context.is_offline_mode() or query is None:
        return
    if op.get_bind().execute(sa.text(query), {"name": name}).first():
        _concurrently(f"DROP INDEX CONCURRENTLY IF EXISTS {_q(name)}")


def _check_index(
    name: str,
    table: str,
    existing: Mapping[str, Any],
    columns: Sequence[str],
    unique: bool,
) -> None:
    if list(existing["column_names"]) != list(columns) or bool(
        existing["unique"]
    ) != bool(unique):
        raise MigrationError(
            f"index {name} on {table} exists on {existing['column_names']} "
            f"(unique: {bool(existing['unique'])}), but this revision creates "
            f"it on {list(columns)} (unique: {unique}); drop it, then run again"
        )


def add_foreign_key(
    name: str,
    table: str,
    columns: Sequence[str],
    referent: str,
    referent_columns: Sequence[str],
) -> None:
    """A foreign key checked without blocking writers.

    PostgreSQL: added ``NOT VALID`` (a brief lock), then validated under a
    lock that lets writes through.  MySQL/MariaDB: added in place with
    ``foreign_key_checks`` off, which is the only online way, then checked
    here for orphans.  SQLite cannot add one without rebuilding the table.
    """
    q = _q  # short: the statement names six identifiers
    constraint = (
        f"ALTER TABLE {q(table)} ADD CONSTRAINT {q(name)} FOREIGN KEY "
        f"({', '.join(map(q, columns))}) REFERENCES {q(referent)} "
        f"({', '.join(map(q, referent_columns))})"
    )
    db = _backend()
    # One an interrupted run added is not added again, but still validated
    # (PostgreSQL) or checked for orphans (MySQL/MariaDB).
    if context.is_offline_mode() or name not in _foreign_keys(table):
        before, statement, after = db.unchecked_foreign_key(name, constraint)
        for setting in before:
            op.execute(setting)
        try:
            execute(statement)
        finally:
            for setting in after:
                op.execute(setting)
    validation = db.validate_constraint(table, name)
    if validation is None:
        _check_orphans(table, columns, referent, referent_columns)
        return
    # In a transaction of its own: ADD CONSTRAINT's lock must be gone
    # before the scan, which itself lets writers through.
    with op.get_context().autocommit_block():
        try:
            op.execute(validation)
        except sa.exc.IntegrityError as e:
            raise _orphans(table, columns, referent) from e


def _check_orphans(
    table: str, columns: Sequence[str], referent: str, referent_columns: Sequence[str]
) -> None:
    if context.is_offline_mode():
        return
    join = " AND ".join(
        f"r.{_q(rc)} = t.{_q(c)}"
        for c, rc in zip(columns, referent_columns, strict=True)
    )
    present = " AND ".join(f"t.{_q(c)} IS NOT NULL" for c in columns)
    orphan = op.get_bind().exec_driver_sql(
        f"SELECT 1 FROM {_q(table)} t WHERE {present} AND NOT EXISTS "
        f"(SELECT 1 FROM {_q(referent)} r WHERE {join}) LIMIT 1"
    )
    if orphan.first():
        raise _orphans(table, columns, referent)


def _orphans(table: str, columns: Sequence[str], referent: str) -> MigrationError:
    return MigrationError(
        f"{table} has rows whose {', '.join(columns)} match no {referent}; "
        "fix them with a data migration, then run again (the foreign key "
        "stays unchecked until then)"
    )


def install_sync(sync: Sync) -> None:
    """Install the sync triggers of ``sync`` (skipped by ``db sync``).

    ``db sync`` runs expand, migrate and contract with no service running, so
    nothing writes the old shape and no trigger is needed (nor, on MySQL,
    the privilege to create one).
    """
    if context.config.attributes.get("sync_triggers", True) is False:
        return
    dialect = _dialect()
    names = sync.trigger_names(dialect)
    if not context.is_offline_mode():  # those an interrupted run made stay
        conn = op.get_bind()
        present = set().union(*(installed_triggers(conn, t) for t in sync.tables))
        names = [n for n in names if n not in present]
        sync = sync.typed(op.get_bind())
    if names:
        execute(*sync.create_triggers(dialect, names))


def drop_sync(sync: Sync) -> None:
    execute(*sync.drop_triggers(_dialect()))
