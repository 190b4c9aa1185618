"""PostgreSQL: transactional DDL, ``lock_timeout``, concurrent index builds,
plpgsql trigger functions."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from rpccompat.db.backends.base import Backend

if TYPE_CHECKING:
    from rpccompat.db.sync import ColumnSync, Renderer

LOCK_NOT_AVAILABLE = "55P03"
VOLATILE = r"(now|random|clock_timestamp|gen_random_uuid|uuid_generate_\w+|nextval)"


_PLANNER_SETTINGS = sa.text(
    "SELECT current_setting('enable_seqscan'), current_setting('enable_bitmapscan')"
)
_SYNCHRONOUS_COMMIT = sa.text("SELECT current_setting('synchronous_commit')")
_SET_SYNCHRONOUS_COMMIT = sa.text(
    "SELECT set_config('synchronous_commit', :value, false)"
)
_SET_PLANNER = sa.text(
    "SELECT set_config('enable_seqscan', :seqscan, true), "
    "set_config('enable_bitmapscan', :bitmapscan, true)"
)


class PostgreSQL(Backend):
    name = "postgresql"
    identifier_limit = 63  # longer names are cut, silently
    session = "pid"
    oldest_transactions = (
        "SELECT pid, state, now() - xact_start FROM pg_stat_activity "
        "WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() "
        "AND datname = current_database() ORDER BY xact_start LIMIT 5"
    )
    triggers_on = (
        "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE c.relname = :table AND pg_table_is_visible(c.oid) "
        "AND NOT t.tgisinternal"
    )
    blocking_ddl = (
        (
            r"^CREATE (UNIQUE )?INDEX (?!CONCURRENTLY)",
            "index built without CONCURRENTLY",
        ),
        (r"^DROP INDEX (?!CONCURRENTLY)", "index dropped without CONCURRENTLY"),
        (
            r"^ALTER TABLE .*ADD CONSTRAINT .*(FOREIGN KEY|CHECK)(?!.*NOT VALID)",
            "constraint added without NOT VALID",
        ),
        (
            r"^ALTER TABLE .*ALTER COLUMN .* TYPE ",
            "column type change rewrites the table",
        ),
        (r"^ALTER TABLE .*SET NOT NULL", "SET NOT NULL scans the table under lock"),
        (rf"^ALTER TABLE .*ADD COLUMN .*DEFAULT .*{VOLATILE}\s*\(", "volatile default"),
        (
            r"^ALTER TABLE .*ADD (CONSTRAINT \S+ )?(UNIQUE|PRIMARY KEY)",
            "index built under lock",
        ),
    )
    transactional_ddl = True
    casts_conversions = True
    concurrent_indexes = True
    invalid_index = (
        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = :name AND NOT i.indisvalid AND pg_table_is_visible(c.oid)"
    )

    def lock_timeout(self, seconds: float) -> str | None:
        # Milliseconds, at least 1: 0 would mean "wait forever".
        return f"SET LOCAL lock_timeout = '{max(1, math.floor(seconds * 1000))}ms'"

    def is_lock_timeout(self, error: sa.exc.DBAPIError) -> bool:
        return getattr(error.orig, "pgcode", None) == LOCK_NOT_AVAILABLE

    def attempt(
        self, conn: sa.Connection, statements: Sequence[str], lock_timeout: float
    ) -> None:
        """In a savepoint, so a timed-out attempt leaves the revision's
        transaction usable, and SET LOCAL ends with it."""
        with conn.begin_nested():
            conn.exec_driver_sql(self.lock_timeout(lock_timeout) or "")
            for statement in statements:
                conn.exec_driver_sql(statement)

    @contextlib.contextmanager
    def losable_commits(self, conn: sa.Connection) -> Iterator[None]:
        """``synchronous_commit`` off for the session: a commit does not wait
        for its WAL flush, which cost a backfill batch of 40 ms about 3 ms.
        The setting goes back before the connection returns to the pool; a
        connection it cannot be put back on is discarded.
        """
        before = conn.execute(_SYNCHRONOUS_COMMIT).scalar()
        conn.execute(_SET_SYNCHRONOUS_COMMIT, {"value": "off"})
        conn.commit()
        try:
            yield
        finally:
            try:
                conn.rollback()
                conn.execute(_SET_SYNCHRONOUS_COMMIT, {"value": before})
                conn.commit()
            except sa.exc.DBAPIError:
                conn.invalidate()

    @contextlib.contextmanager
    def in_key_order(self, conn: sa.Connection) -> Iterator[None]:
        """PostgreSQL locks rows in the order its plan reads them, which for
        a sequential or bitmap scan is heap order, and every update moves a
        row in the heap; a plan that reads the key's index reads them in key
        order.  Set for the statements inside only: the caller's transaction
        gets its own settings back (after an error, its rollback does).
        """
        before = conn.execute(_PLANNER_SETTINGS).one()
        conn.execute(_SET_PLANNER, {"seqscan": "off", "bitmapscan": "off"})
        yield
        conn.execute(_SET_PLANNER, {"seqscan": before[0], "bitmapscan": before[1]})

    def types_of(self, type_: sa.types.TypeEngine[Any]) -> list[Any]:
        """A named native enum is a type of its own here."""
        if isinstance(type_, sa.Enum) and type_.native_enum and type_.name:
            return [postgresql.ENUM(*type_.enums, name=type_.name, schema=type_.schema)]
        return []

    def create_index(
        self, name: str, table: str, columns: Sequence[str], unique: bool
    ) -> str:
        kind = "UNIQUE INDEX" if unique else "INDEX"
        cols = ", ".join(self.quote(c) for c in columns)
        return (
            f"CREATE {kind} CONCURRENTLY IF NOT EXISTS {self.quote(name)} "
            f"ON {self.quote(table)} ({cols})"
        )

    def drop_index(self, name: str, table: str) -> str:
        return f"DROP INDEX CONCURRENTLY IF EXISTS {self.quote(name)}"

    def unchecked_foreign_key(
        self, name: str, constraint: str
    ) -> tuple[list[str], str, list[str]]:
        return [], f"{constraint} NOT VALID", []  # a brief lock, no scan

    def validate_constraint(self, table: str, name: str) -> str | None:
        # Scans under a lock that lets writes through.
        return f"ALTER TABLE {self.quote(table)} VALIDATE CONSTRAINT {self.quote(name)}"

    # -- triggers: a BEFORE trigger assigns NEW --------------------------------------

    def column_sync_suffixes(self) -> tuple[str, ...]:
        return ("",)  # one function and its trigger, for INSERT and UPDATE

    def column_sync(self, sync: ColumnSync, r: Renderer) -> dict[str, list[str]]:
        refuse = (
            "RAISE EXCEPTION USING ERRCODE = 'check_violation', "
            f"MESSAGE = {r.text(sync.refusal())}"
        )

        def branches(event: str) -> str:
            both, old, new = sync.conditions(r, event)
            return f"""
      IF {both} THEN
        {refuse};
      ELSIF {old} THEN
        {r.assign("NEW.", sync.new_values, ":=", "; ")};
      ELSIF {new} THEN
        {r.assign("NEW.", sync.old_values, ":=", "; ")};
      END IF;"""

        body = f"""
BEGIN
  IF NOT {r.agree(sync)} THEN
    IF TG_OP = 'INSERT' THEN{branches("INSERT")}
    ELSE{branches("UPDATE")}
    END IF;
  END IF;
  RETURN NEW;
END"""
        (name,) = sync.trigger_names(self.name)
        return {name: self._function(name, "BEFORE INSERT OR UPDATE", sync.table, body)}

    def drop_triggers(self, names: Sequence[str], table: str) -> list[str]:
        q = self.quote
        return [
            statement
            for name in names
            for statement in (
                f"DROP TRIGGER IF EXISTS {q(name)} ON {q(table)}",
                f"DROP FUNCTION IF EXISTS {q(name)}()",
            )
        ]

    def legacy_names(self, name: str) -> list[str]:
        # Before names were fitted, PostgreSQL cut a long one at 63 bytes.
        assert self.identifier_limit is not None
        return [name.encode()[: self.identifier_limit].decode(errors="ignore")]

    def after_trigger(
        self, name: str, event: str, table: str, when: str, action: str
    ) -> list[str]:
        # A trigger's own WHEN may not hold subqueries here: the function's IF.
        body = f"BEGIN\n  IF {when} THEN\n    {action};\n  END IF;\n  RETURN NULL;\nEND"
        return self._function(name, f"AFTER {event}", table, body)

    def _function(self, name: str, timing: str, table: str, body: str) -> list[str]:
        q = self.quote
        return [
            f"CREATE OR REPLACE FUNCTION {q(name)}() RETURNS trigger "
            f"LANGUAGE plpgsql AS $rpccompat${body}\n$rpccompat$",
            f"CREATE TRIGGER {q(name)} {timing} ON {q(table)} "
            f"FOR EACH ROW EXECUTE FUNCTION {q(name)}()",
        ]

    def insert_ignoring(self, table: sa.TableClause, key: str) -> Any:
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=[key])
