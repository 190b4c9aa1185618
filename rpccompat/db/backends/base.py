"""What every backend is asked, and the answers of standard SQL.

A subclass per backend (``mysql``, ``postgresql``, ``sqlite``) overrides
what its database does its own way, as Alembic's ``ddl/<dialect>.py``
does.  The modules that run DDL, render triggers, lint revisions or watch
locks ask :func:`rpccompat.db.backends.backend` instead of testing the
dialect's name themselves.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import dialects
from sqlalchemy.engine import Dialect

from rpccompat.exceptions import MigrationError

if TYPE_CHECKING:
    from rpccompat.db.sync import ColumnSync, Renderer

#: Alembic's batch mode copies a table into one named so.
REBUILD = "_alembic_tmp_"
HASH_LENGTH = 8


class Backend:
    """One database backend, as SQLAlchemy's dialect ``name`` calls it."""

    name = ""
    #: The longest identifier it keeps whole (None: no limit that matters).
    identifier_limit: int | None = None
    #: Null-safe equality in hand-written trigger SQL.
    is_not_distinct = "IS NOT DISTINCT FROM"
    #: A name for a server session in a progress line.
    session = "session"
    #: SQL listing the oldest open transactions but this session's, as
    #: (id, state, age) rows, or None when it has no such view.
    oldest_transactions: str | None = None
    #: SQL listing the names of the triggers on the table ``:table``.
    triggers_on = ""
    #: (regex, why) of each statement that locks writers out for as long as
    #: the table is big: the lint's ``blocking-ddl`` rule.
    blocking_ddl: Sequence[tuple[str, str]] = ()
    #: Whether a revision's statements run as one transaction, retried as one.
    transactional_ddl = False
    #: Whether a converted value is cast to its column's type: PostgreSQL
    #: neither stores nor compares text as an enum without one.
    casts_conversions = False
    #: Whether index DDL runs concurrently, outside any transaction.
    concurrent_indexes = False
    #: SQL finding the index ``:name`` a failed concurrent build left
    #: invalid, where a build can leave one.
    invalid_index: str | None = None
    #: Whether ALTER TABLE can change a column (else the table is rebuilt).
    alters_columns = True
    #: The isolation level a backfill's connection runs at, if not the default.
    backfill_isolation: str | None = None
    #: Whether an UPDATE of a list of keys locks those rows only.
    updates_only_its_rows = True
    #: Whether a trigger may write a table the statement that fired it
    #: reads (an INSERT ... SELECT from it, a subquery of it).
    triggers_write_tables_in_use = True

    def losable_commits(
        self, conn: sa.Connection
    ) -> contextlib.AbstractContextManager[None]:
        """Commits of ``conn`` that a server crash may lose, for work that is
        done again when lost: a backfill batch commits with its cursor, so a
        lost one is a batch to run again.  A later durable commit makes every
        earlier one durable.  Here commits stay durable: no session setting
        trades it (MySQL's innodb_flush_log_at_trx_commit is global).
        """
        return contextlib.nullcontext()

    def in_key_order(self, conn: sa.Connection) -> contextlib.AbstractContextManager:
        """Where the UPDATEs run inside lock rows in key order, as every
        converter does so that two never wait on each other.  Here already:
        InnoDB walks its clustered index, SQLite has one writer at a time.
        """
        return contextlib.nullcontext()

    @functools.cached_property
    def dialect(self) -> Dialect:
        return dialects.registry.load(self.name)()

    def quote(self, name: str) -> str:
        return self.dialect.identifier_preparer.quote(name)

    def fit(self, name: str) -> str:
        """``name``, or when this backend would not keep it whole, a
        readable prefix of it and a hash of all of it.

        Two names that differ only past the limit would otherwise become
        one: on PostgreSQL the second sync's function silently replaces the
        first's, and every INSERT into the first table fails.
        """
        limit, encoded = self.identifier_limit, name.encode()
        if limit is None or len(encoded) <= limit:
            return name
        digest = hashlib.sha1(encoded).hexdigest()[:HASH_LENGTH]
        prefix = encoded[: limit - HASH_LENGTH - 1].decode(errors="ignore")
        return f"{prefix}_{digest}"

    # -- waiting for locks ----------------------------------------------------------

    def lock_timeout(self, seconds: float) -> str | None:
        """The SET that makes a statement wait at most ``seconds`` for its
        lock, or None where there is none."""
        return None

    def is_lock_timeout(self, error: sa.exc.DBAPIError) -> bool:
        return False

    def attempt(
        self, conn: sa.Connection, statements: Sequence[str], lock_timeout: float
    ) -> None:
        """Run ``statements`` once, each waiting at most ``lock_timeout``."""
        for statement in statements:
            conn.exec_driver_sql(statement)

    # -- DDL ------------------------------------------------------------------------

    def online_alters(self, statement: str) -> list[str]:
        """``statement`` (an ALTER TABLE) as it runs without locking writers
        out, in the order to try: the next when the one before is refused
        (:meth:`is_unsupported_plan`)."""
        return [statement]

    def is_unsupported_plan(self, error: sa.exc.DBAPIError) -> bool:
        return False

    def relax_not_null(self, table: str, column: str, existing: Any) -> str:
        """The statement that lets ``column`` hold NULL; ``existing`` is its
        reflection (None offline)."""
        q = self.quote
        return f"ALTER TABLE {q(table)} ALTER COLUMN {q(column)} DROP NOT NULL"

    def types_of(self, type_: sa.types.TypeEngine[Any]) -> list[Any]:
        """The types of their own (``sa.types.SchemaType``) a column of
        ``type_`` needs created first."""
        return []

    def create_index(
        self, name: str, table: str, columns: Sequence[str], unique: bool
    ) -> str:
        kind = "UNIQUE INDEX" if unique else "INDEX"
        cols = ", ".join(self.quote(c) for c in columns)
        return f"CREATE {kind} {self.quote(name)} ON {self.quote(table)} ({cols})"

    def drop_index(self, name: str, table: str) -> str:
        return f"DROP INDEX IF EXISTS {self.quote(name)}"

    def unchecked_foreign_key(
        self, name: str, constraint: str
    ) -> tuple[list[str], str, list[str]]:
        """``constraint`` (ALTER TABLE ... ADD CONSTRAINT ... FOREIGN KEY)
        added without checking the rows under a lock: the settings to make
        before it, the statement, the settings to restore after it."""
        raise MigrationError(
            f"{self.name} cannot add foreign key {name} to an existing table "
            "without rebuilding it; declare it when the table is created"
        )

    def validate_constraint(self, table: str, name: str) -> str | None:
        """The statement checking the rows of a constraint added unchecked
        while writers go on, or None: the rows are checked by a query."""
        return None

    # -- triggers -------------------------------------------------------------------

    def column_sync_suffixes(self) -> tuple[str, ...]:
        """The triggers of one :class:`ColumnSync`, by the suffix of each
        name ("" for the sync's own name)."""
        raise NotImplementedError

    def column_sync(self, sync: ColumnSync, r: Renderer) -> dict[str, list[str]]:
        """The DDL of each trigger of ``sync``, by name."""
        raise NotImplementedError

    def drop_triggers(self, names: Sequence[str], table: str) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {self.quote(n)}" for n in names]

    def legacy_names(self, name: str) -> list[str]:
        """Names an older rpccompat may have installed a trigger under."""
        return []

    def after_trigger(
        self, name: str, event: str, table: str, when: str, action: str
    ) -> list[str]:
        """A trigger doing ``action`` after ``event`` on each row of
        ``table`` for which ``when`` holds (both may name NEW and OLD)."""
        raise NotImplementedError

    def upsert(self, insert: str, key: str, sets: Sequence[tuple[str, str]]) -> str:
        """``insert`` (one row), or where a row with its ``key`` exists, an
        update of it setting each (column, SQL value) of ``sets``."""
        assignments = ", ".join(f"{self.quote(c)} = {v}" for c, v in sets)
        return f"{insert} ON CONFLICT ({self.quote(key)}) DO UPDATE SET {assignments}"

    def insert_ignoring(self, table: sa.TableClause, key: str) -> Any:
        """An INSERT that skips a row whose ``key`` is there already."""
        raise NotImplementedError

    def trigger_refusal(self, conn: sa.Connection) -> str | None:
        """Why creating a trigger here would be refused, or None."""
        return None
