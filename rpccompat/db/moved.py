"""Columns moved into a table of their own, kept in step both ways.

Heat's case: a resource's properties leave the ``resource`` table for a
``resource_properties`` table, one row per resource.  While release N-1
writes the old columns and release N the new table, triggers on both
tables copy each write across; the backfill and migrate-on-load create the
new table's rows for the rows written before expand.

The mixed-period rule of :mod:`rpccompat.db.sync`, for a move: a row of
the old table is *in step* when its row in the new table holds the same
values, a missing row counting as all NULL.  Only rows out of step are
written:

- an INSERT or UPDATE that writes the old columns writes (inserts or
  updates) the row of the new table;
- an INSERT of the new table's row that sets a value, or an UPDATE that
  changes one, writes the old columns; its DELETE sets them NULL;
- a transaction of the new release that writes both is two statements: the
  later one wins;
- the backfill and migrate-on-load insert the missing rows of the new table
  for rows whose old columns hold a value.

The new table's key is a foreign key to the old table's, ``ON DELETE
CASCADE``: deleting a row deletes its moved columns on every backend.  On
MySQL/MariaDB, where a trigger may not write the table whose statement
fired it, a cascade fires no trigger, and each trigger writes the other
table only when the rows disagree, which a write a trigger made never
leaves them doing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from rpccompat.db.backends import Backend, backend
from rpccompat.db.sync import table_clause

# The triggers, by what fires them: a write of the old or of the new shape.
TRIGGERS = ("old_ins", "old_upd", "new_ins", "new_upd", "new_del")
_EVENTS = {"ins": "INSERT", "upd": "UPDATE", "del": "DELETE"}


@dataclasses.dataclass(frozen=True)
class MovedColumns:
    """Columns of ``table`` moved to ``to_table``, whose ``to_key`` holds
    the row's ``key``; ``columns`` maps each old column to its new name.
    Values move as they are."""

    table: str
    key: str
    columns: Mapping[str, str] = dataclasses.field(hash=False)
    to_table: str
    to_key: str
    name: str = ""

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError(f"{self.table} to {self.to_table}: no columns to move")
        if not self.name:
            object.__setattr__(self, "name", f"{self.table}_{self.to_table}_sync")

    @property
    def old(self) -> tuple[str, ...]:
        return tuple(self.columns)

    @property
    def new(self) -> tuple[str, ...]:
        return tuple(self.columns.values())

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Each old column and its new name."""
        return list(self.columns.items())

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.table, self.to_table)

    @property
    def table_clause(self) -> sa.TableClause:
        """The old table: the backfill walks its keys."""
        return table_clause(self.table, (self.key, *self.old))

    @property
    def to_table_clause(self) -> sa.TableClause:
        return table_clause(self.to_table, (self.to_key, *self.new))

    def typed(self, conn: sa.Connection) -> MovedColumns:
        """Itself: values move to columns of their own type, uncast."""
        return self

    # -- rows: the backfill and migrate-on-load ------------------------------------

    def migrate(self, conn: sa.Connection, where: ColumnElement[bool]) -> int:
        """Bring the rows of ``where`` whose shapes disagree in step, from
        the old columns; returns how many needed it.

        Those written before expand have no new row: it is inserted from
        the old row as it is once no writer holds it (a locking read waits
        for them; a row a writer emptied or deleted meanwhile is skipped),
        unless a trigger inserted it meanwhile (the conflict is ignored).  A
        new row the new release inserted empty, which wrote nothing, is
        updated.
        """
        old, new = self.table_clause, self.to_table_clause
        of_where = sa.select(old.c[self.key]).where(where)
        return self._migrate(conn, where, new.c[self.to_key].in_(of_where))

    def _migrate(
        self,
        conn: sa.Connection,
        where: ColumnElement[bool],
        new_where: ColumnElement[bool],
    ) -> int:
        """``migrate`` of the old rows of ``where``, whose new rows are those
        of ``new_where``."""
        if not backend(conn).triggers_write_tables_in_use:
            return self._migrate_by_value(conn, where)
        old, new = self.table_clause, self.to_table_clause
        mine = new.c[self.to_key] == old.c[self.key]
        missing = sa.select(old.c[self.key], *(old.c[c] for c in self.old)).where(
            where,
            sa.or_(*(old.c[c].is_not(None) for c in self.old)),
            ~sa.exists().where(mine),
        )
        # In key order, as every converter locks rows, and as a writer of
        # the new table, whose trigger writes the old row, holds it: for an
        # update of it (SQLite: no need).
        missing = missing.order_by(old.c[self.key]).with_for_update(
            of=old, key_share=True
        )
        insert = (
            backend(conn)
            .insert_ignoring(new, self.to_key)
            .from_select([self.to_key, *self.new], missing)
        )
        in_step = sa.exists().where(
            mine, *(old.c[o].is_not_distinct_from(new.c[n]) for o, n in self.pairs)
        )
        update = (
            new.update()
            .where(new_where, ~in_step)
            .values(
                {
                    n: sa.select(old.c[o]).where(mine).scalar_subquery()
                    for o, n in self.pairs
                }
            )
        )
        return conn.execute(insert).rowcount + conn.execute(update).rowcount

    def _migrate_by_value(self, conn: sa.Connection, where: ColumnElement[bool]) -> int:
        """``_migrate`` by statements that do not read the old table, so
        that its triggers may write it back: the old rows are held and read
        first, in key order, and their values sent as parameters.  Missing
        rows are inserted before the new rows are read, so that a row a
        concurrent transaction was inserting empty is read once committed."""
        old, new = self.table_clause, self.to_table_clause
        held = {
            row[0]: tuple(row[1:])
            for row in conn.execute(
                sa.select(old.c[self.key], *(old.c[c] for c in self.old))
                .where(where)
                .order_by(old.c[self.key])
                .with_for_update()
            )
        }
        if not held:
            return 0
        new_key = new.c[self.to_key]
        missing = [
            {self.to_key: key, **dict(zip(self.new, values, strict=True))}
            for key, values in held.items()
            if any(v is not None for v in values)
        ]
        done = 0
        if missing:
            insert = backend(conn).insert_ignoring(new, self.to_key)
            done = conn.execute(insert, missing).rowcount
        stored = conn.execute(
            sa.select(new_key, *(new.c[c] for c in self.new)).where(
                new_key.in_(list(held))
            )
        )
        apart = [
            {"_key": row[0], **dict(zip(self.new, held[row[0]], strict=True))}
            for row in stored
            if tuple(row[1:]) != held[row[0]]
        ]
        if apart:
            update = new.update().where(new_key == sa.bindparam("_key"))
            done += conn.execute(update, apart).rowcount
        return done

    def migrate_rows(self, conn: sa.Connection, keys: Iterable[Any]) -> int:
        """Bring these rows in step now; returns how many needed it.  The
        new rows are found by their own key, so that no backend scans (and,
        under MySQL's REPEATABLE READ, locks) the whole new table."""
        keys = sorted(keys)
        if not keys:
            return 0
        old, new = self.table_clause.c[self.key], self.to_table_clause.c[self.to_key]
        return self._migrate(conn, old.in_(keys), new.in_(keys))

    def read(
        self, conn: sa.Connection, keys: Iterable[Any], *, for_update: bool = False
    ) -> dict[Any, tuple]:
        """The moved columns of each row of ``keys`` that exists: migrate on
        load.  New code reads them here, naming only the old table's key.

        A row with no new row yet (written before expand, not reached by
        the backfill) gets one first, then all such rows are read again with
        a locking read, which sees what a concurrent writer committed since
        (REPEATABLE READ would show this transaction's snapshot again).

        ``for_update`` holds the old rows first: a transaction that will
        write the moved columns loads them so, as it would load an object it
        will save.  The new table's trigger writes the old row back, and
        every converter takes the old row before the new one.
        """
        keys = list(keys)
        if for_update:
            self._hold(conn, keys)
        old, new = self.table_clause, self.to_table_clause
        query = (
            sa.select(old.c[self.key], *(new.c[c] for c in self.new))
            .select_from(old.outerjoin(new, new.c[self.to_key] == old.c[self.key]))
            .where(old.c[self.key].in_(keys))
        )
        found = {row[0]: tuple(row[1:]) for row in conn.execute(query)}
        empty = [k for k, values in found.items() if all(v is None for v in values)]
        if not empty:
            return found
        if not for_update:
            self._hold(conn, empty)
        self.migrate_rows(conn, empty)
        again = (
            query.where(old.c[self.key].in_(empty))
            .order_by(old.c[self.key])
            .with_for_update(read=True, of=old)
        )
        fresh = {row[0]: tuple(row[1:]) for row in conn.execute(again)}
        for key in empty:  # a row deleted meanwhile is gone
            if key in fresh:
                found[key] = fresh[key]
            else:
                del found[key]
        return found

    def _hold(self, conn: sa.Connection, keys: list[Any]) -> None:
        """Lock the old rows of ``keys``, in key order, as a writer of the
        new table holds them (its trigger writes the old row back)."""
        old = self.table_clause
        conn.execute(
            sa.select(old.c[self.key])
            .where(old.c[self.key].in_(keys))
            .order_by(old.c[self.key])
            .with_for_update(of=old, key_share=True)
        ).all()

    # -- triggers ------------------------------------------------------------------

    def trigger_names(self, dialect: str) -> list[str]:
        """On PostgreSQL, each the name of a trigger and of its function."""
        return [backend(dialect).fit(f"{self.name}_{t}") for t in TRIGGERS]

    def create_triggers(
        self, dialect: str, names: Collection[str] | None = None
    ) -> list[str]:
        """The DDL that installs this sync: the triggers of ``names`` (None:
        all), each AFTER the row is written, since the new table's row
        refers to the old one's."""
        render = _Renderer(self, backend(dialect))
        statements = {}
        for logical, name in zip(TRIGGERS, self.trigger_names(dialect), strict=True):
            if names is None or name in names:
                statements[name] = render.trigger(logical, name)
        return [s for rendered in statements.values() for s in rendered]

    def drop_triggers(self, dialect: str) -> list[str]:
        db, names = backend(dialect), self.trigger_names(dialect)
        return [
            statement
            for logical, name in zip(TRIGGERS, names, strict=True)
            for statement in db.drop_triggers([name], self.table_of(logical))
        ]

    def table_of(self, trigger: str) -> str:
        """The table a trigger of TRIGGERS is on."""
        return self.table if trigger.startswith("old") else self.to_table


class _Renderer:
    """The five triggers of a move, as one dialect's SQL."""

    def __init__(self, sync: MovedColumns, db: Backend) -> None:
        self.sync, self.db = sync, db
        self.q, self.same = db.quote, db.is_not_distinct

    def trigger(self, logical: str, name: str) -> list[str]:
        when, action = getattr(self, logical)()
        event = _EVENTS[logical.split("_")[1]]
        return self.db.after_trigger(
            name, event, self.sync.table_of(logical), when, action
        )

    # -- the five: (when, what) ----------------------------------------------------

    def old_ins(self) -> tuple[str, str]:
        return f"NOT {self.old_in_step()}", self.upsert_new()

    def old_upd(self) -> tuple[str, str]:
        changed = self.changed(self.sync.old)
        return f"{changed} AND NOT {self.old_in_step()}", self.upsert_new()

    def new_ins(self) -> tuple[str, str]:
        q = self.q
        named = " OR ".join(f"NEW.{q(c)} IS NOT NULL" for c in self.sync.new)
        return f"({named}) AND NOT {self.new_in_step()}", self.update_old()

    def new_upd(self) -> tuple[str, str]:
        changed = self.changed(self.sync.new)
        return f"{changed} AND NOT {self.new_in_step()}", self.update_old()

    def new_del(self) -> tuple[str, str]:
        s, q = self.sync, self.q
        held = " OR ".join(f"{q(c)} IS NOT NULL" for c in s.old)
        where = f"{q(s.key)} = OLD.{q(s.to_key)}"
        clear = ", ".join(f"{q(c)} = NULL" for c in s.old)
        return (
            f"EXISTS (SELECT 1 FROM {q(s.table)} WHERE {where} AND ({held}))",
            f"UPDATE {q(s.table)} SET {clear} WHERE {where}",
        )

    # -- parts ---------------------------------------------------------------------

    def old_in_step(self) -> str:
        """Whether the new table's row holds what the old row in NEW holds;
        no row and old columns all NULL count as in step."""
        s, q = self.sync, self.q
        to, mine = f"{q(s.to_table)}.{q(s.to_key)} = NEW.{q(s.key)}", q(s.to_table)
        equal = " AND ".join(
            f"{mine}.{q(n)} {self.same} NEW.{q(o)}" for o, n in s.columns.items()
        )
        none = " AND ".join(f"NEW.{q(o)} IS NULL" for o in s.old)
        return (
            f"(EXISTS (SELECT 1 FROM {mine} WHERE {to} AND {equal}) OR "
            f"({none} AND NOT EXISTS (SELECT 1 FROM {mine} WHERE {to})))"
        )

    def new_in_step(self) -> str:
        s, q = self.sync, self.q
        mine = q(s.table)
        equal = " AND ".join(
            f"{mine}.{q(o)} {self.same} NEW.{q(n)}" for o, n in s.columns.items()
        )
        return (
            f"EXISTS (SELECT 1 FROM {mine} WHERE {mine}.{q(s.key)} = "
            f"NEW.{q(s.to_key)} AND {equal})"
        )

    def changed(self, columns: tuple[str, ...]) -> str:
        q = self.q
        equal = " AND ".join(f"NEW.{q(c)} {self.same} OLD.{q(c)}" for c in columns)
        return f"NOT ({equal})"

    def upsert_new(self) -> str:
        s, q = self.sync, self.q
        names = ", ".join(q(c) for c in (s.to_key, *s.new))
        values = ", ".join(f"NEW.{q(c)}" for c in (s.key, *s.old))
        insert = f"INSERT INTO {q(s.to_table)} ({names}) VALUES ({values})"
        return self.db.upsert(
            insert, s.to_key, [(n, f"NEW.{q(o)}") for o, n in s.pairs]
        )

    def update_old(self) -> str:
        s, q = self.sync, self.q
        sets = ", ".join(f"{q(o)} = NEW.{q(n)}" for o, n in s.columns.items())
        return f"UPDATE {q(s.table)} SET {sets} WHERE {q(s.key)} = NEW.{q(s.to_key)}"
