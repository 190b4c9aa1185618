"""One declaration keeps the old and the new shape of some columns equal.

While release N-1 writes the old column(s) and release N the new, triggers
copy each write across; the backfill and migrate-on-load run the very same
conversion, so a row converted by a trigger, by the backfill or on load is
converted alike.  Which side a statement wrote is decided with null-safe
comparisons (``IS DISTINCT FROM``, ``<=>``, ``IS NOT``): on INSERT the side
left NULL is filled, on UPDATE the side that changed wins.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import dialects
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement

Conversion = Callable[[Any], dict[str, ColumnElement[Any]]]
DIALECTS = ("sqlite", "mysql", "postgresql")


def dialect_named(name: str) -> Dialect:
    return dialects.registry.load(name)()


@dataclasses.dataclass(frozen=True)
class ColumnSync:
    """Old columns ``old`` of ``table`` become ``new``.

    ``to_new`` receives the old columns as attributes and returns the value
    of each new column as a SQLAlchemy expression; ``to_old`` the reverse.
    ``key`` is the primary key: triggers and the backfill address rows by it.
    """

    table: str
    key: str
    old: tuple[str, ...]
    new: tuple[str, ...]
    to_new: Conversion
    to_old: Conversion
    name: str = ""

    @classmethod
    def rename(cls, table: str, key: str, old: str, new: str) -> ColumnSync:
        """The common case: a column renamed, its values unchanged."""
        return cls(
            table,
            key,
            (old,),
            (new,),
            to_new=lambda cols: {new: getattr(cols, old)},
            to_old=lambda cols: {old: getattr(cols, new)},
        )

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"{self.table}_{'_'.join(self.new)}_sync")

    # -- conversions, as expressions over any source of columns ------------

    def new_values(self, source: Any) -> dict[str, ColumnElement[Any]]:
        return self._checked(self.to_new(source), self.new, "to_new")

    def old_values(self, source: Any) -> dict[str, ColumnElement[Any]]:
        return self._checked(self.to_old(source), self.old, "to_old")

    def _checked(
        self, values: dict[str, ColumnElement[Any]], columns: tuple[str, ...], what: str
    ) -> dict[str, ColumnElement[Any]]:
        if set(values) != set(columns):
            raise ValueError(
                f"{self.name}: {what} must give exactly {list(columns)}, "
                f"it gave {sorted(values)}"
            )
        return values

    @functools.cached_property
    def table_clause(self) -> sa.TableClause:
        """The table as the conversion sees it: one object, so every clause
        built on it names one table."""
        columns = (self.key, *self.old, *self.new)
        return sa.table(self.table, *(sa.column(c) for c in columns))

    # -- rows: the backfill and migrate-on-load ----------------------------

    def convert(self, where: ColumnElement[bool]) -> sa.Update:
        """UPDATE setting the new columns from the old where they differ."""
        table = self.table_clause
        values = self.new_values(table.c)
        differs = sa.or_(*(table.c[c].is_distinct_from(v) for c, v in values.items()))
        return table.update().where(where, differs).values(values)

    def migrate_rows(self, conn: sa.Connection, keys: Iterable[Any]) -> int:
        """Convert these rows now; returns how many needed it (see read)."""
        keys = list(keys)
        if not keys:
            return 0
        return conn.execute(
            self.convert(self.table_clause.c[self.key].in_(keys))
        ).rowcount

    def read(self, conn: sa.Connection, query: sa.Select) -> list[sa.Row]:
        """Rows of ``query`` with the new columns filled: migrate on load.

        ``query`` selects the key and the new columns.  Rows whose new
        columns are all NULL (written by the old release before expand, not
        reached by the backfill yet) are converted first, then read again.
        New code reads and writes only the new columns; it never names the
        old ones, so it keeps working after contract drops them.
        """
        rows = conn.execute(query).all()
        stale = {
            row._mapping[self.key]
            for row in rows
            if all(row._mapping[c] is None for c in self.new)
        }
        if not stale:
            return rows
        self.migrate_rows(conn, stale)
        # Read them again even if this converted nothing: a concurrent reader
        # or the backfill may have converted them meanwhile.  A locking read,
        # since under REPEATABLE READ (MySQL's default) a plain one would see
        # this transaction's snapshot again, from before that conversion.
        again = query.where(query.selected_columns[self.key].in_(stale))
        fresh = {
            row._mapping[self.key]: row
            for row in conn.execute(again.with_for_update(read=True))
        }
        return [  # in the query's order; rows deleted meanwhile are gone
            fresh[key] if key in stale else row
            for row in rows
            if (key := row._mapping[self.key]) not in stale or key in fresh
        ]

    # -- triggers -----------------------------------------------------------

    def create_triggers(
        self, dialect: str, names: Collection[str] | None = None
    ) -> list[str]:
        """The DDL that installs this sync on ``dialect``: only the triggers
        in ``names`` (of ``trigger_names``; None: all), so an install that
        was interrupted can be completed without a moment with none."""
        render = _Renderer(dialect_named(dialect))
        triggers = {
            "postgresql": self._postgresql,
            "mysql": self._mysql,
            "sqlite": self._sqlite,
        }[dialect](render)
        wanted = triggers.keys() if names is None else names
        return [statement for name in wanted for statement in triggers[name]]

    def drop_triggers(self, dialect: str) -> list[str]:
        q = dialect_named(dialect).identifier_preparer.quote
        if dialect == "postgresql":
            return [
                f"DROP TRIGGER IF EXISTS {q(self.name)} ON {q(self.table)}",
                f"DROP FUNCTION IF EXISTS {q(self.name)}()",
            ]
        return [f"DROP TRIGGER IF EXISTS {q(t)}" for t in self.trigger_names(dialect)]

    def trigger_names(self, dialect: str) -> list[str]:
        if dialect == "postgresql":
            return [self.name]
        if dialect == "mysql":
            return [f"{self.name}_ins", f"{self.name}_upd"]
        return [
            f"{self.name}_{n}" for n in ("ins_new", "ins_old", "upd_new", "upd_old")
        ]

    def _postgresql(self, r: _Renderer) -> dict[str, list[str]]:
        body = f"""
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF {r.all_null("NEW", self.new)} AND NOT {r.all_null("NEW", self.old)} THEN
      {r.assign("NEW.", self.new_values, ":=", "; ")};
    ELSIF {r.all_null("NEW", self.old)} AND NOT {r.all_null("NEW", self.new)} THEN
      {r.assign("NEW.", self.old_values, ":=", "; ")};
    END IF;
  ELSE
    IF {r.changed(self.old)} AND NOT {r.changed(self.new)} THEN
      {r.assign("NEW.", self.new_values, ":=", "; ")};
    ELSIF {r.changed(self.new)} AND NOT {r.changed(self.old)} THEN
      {r.assign("NEW.", self.old_values, ":=", "; ")};
    END IF;
  END IF;
  RETURN NEW;
END"""
        name, table = r.q(self.name), r.q(self.table)
        return {
            self.name: [
                f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger "
                f"LANGUAGE plpgsql AS $rpccompat${body}\n$rpccompat$",
                f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {name}()",
            ]
        }

    def _mysql(self, r: _Renderer) -> dict[str, list[str]]:
        insert_name, update_name = self.trigger_names("mysql")
        insert, update = r.q(insert_name), r.q(update_name)
        table = r.q(self.table)
        set_new = "SET " + r.assign("NEW.", self.new_values, "=", ", ")
        set_old = "SET " + r.assign("NEW.", self.old_values, "=", ", ")
        return {
            insert_name: [
                f"CREATE TRIGGER {insert} BEFORE INSERT ON {table} FOR EACH ROW "
                f"BEGIN\n  IF {r.all_null('NEW', self.new)} AND NOT "
                f"{r.all_null('NEW', self.old)} THEN {set_new};\n"
                f"  ELSEIF {r.all_null('NEW', self.old)} AND NOT "
                f"{r.all_null('NEW', self.new)} THEN {set_old};\n"
                "  END IF;\nEND"
            ],
            update_name: [
                f"CREATE TRIGGER {update} BEFORE UPDATE ON {table} FOR EACH ROW "
                f"BEGIN\n  IF {r.changed(self.old)} AND NOT {r.changed(self.new)} "
                f"THEN {set_new};\n"
                f"  ELSEIF {r.changed(self.new)} AND NOT {r.changed(self.old)} "
                f"THEN {set_old};\n"
                "  END IF;\nEND"
            ],
        }

    def _sqlite(self, r: _Renderer) -> dict[str, list[str]]:
        # SQLite cannot assign NEW in a trigger: AFTER triggers update the
        # row again.  recursive_triggers is off by default, so that second
        # UPDATE fires nothing; were it on, it would find nothing changed.
        table, key = r.q(self.table), r.q(self.key)
        where = f"WHERE {key} = NEW.{key}"
        set_new = f"UPDATE {table} SET {r.assign('', self.new_values, '=', ', ')}"
        set_old = f"UPDATE {table} SET {r.assign('', self.old_values, '=', ', ')}"
        when = {
            "ins_new": ("INSERT", r.all_null("NEW", self.new), self.old, set_new),
            "ins_old": ("INSERT", r.all_null("NEW", self.old), self.new, set_old),
            "upd_new": ("UPDATE", r.changed(self.old), self.new, set_new),
            "upd_old": ("UPDATE", r.changed(self.new), self.old, set_old),
        }
        statements = {}
        for name, (event, condition, other, action) in when.items():
            unless = r.all_null("NEW", other) if event == "INSERT" else r.changed(other)
            trigger = f"{self.name}_{name}"
            statements[trigger] = [
                f"CREATE TRIGGER {r.q(trigger)} AFTER {event} ON "
                f"{table} FOR EACH ROW WHEN {condition} AND NOT {unless}\n"
                f"BEGIN {action} {where}; END"
            ]
        return statements


class _Renderer:
    """Renders conversions and comparisons as one dialect's trigger SQL."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.q = dialect.identifier_preparer.quote

    def sql(self, expression: ColumnElement[Any]) -> str:
        return str(
            expression.compile(
                dialect=self.dialect, compile_kwargs={"literal_binds": True}
            )
        )

    def assign(
        self, target: str, conversion: Conversion, operator: str, separator: str
    ) -> str:
        """``target`` + each converted column ``operator`` its value from NEW."""
        return separator.join(
            f"{target}{self.q(column)} {operator} {self.sql(value)}"
            for column, value in conversion(_AnyColumn(self, "NEW")).items()
        )

    def all_null(self, prefix: str, names: Sequence[str]) -> str:
        return "(" + " AND ".join(f"{prefix}.{self.q(n)} IS NULL" for n in names) + ")"

    def changed(self, names: Sequence[str]) -> str:
        def differs(n: str) -> str:
            new, old = (
                sa.literal_column(f"NEW.{self.q(n)}"),
                sa.literal_column(f"OLD.{self.q(n)}"),
            )
            return self.sql(new.is_distinct_from(old))

        return "(" + " OR ".join(differs(n) for n in names) + ")"


class _AnyColumn:
    """``prefix.column`` for whichever column a conversion asks for."""

    def __init__(self, renderer: _Renderer, prefix: str) -> None:
        self._renderer, self._prefix = renderer, prefix

    def __getattr__(self, name: str) -> ColumnElement[Any]:
        return sa.literal_column(f"{self._prefix}.{self._renderer.q(name)}")

    def __getitem__(self, name: str) -> ColumnElement[Any]:
        return getattr(self, name)


TRIGGERS_ON = {
    "postgresql": "SELECT t.tgname FROM pg_trigger t "
    "JOIN pg_class c ON c.oid = t.tgrelid "
    "WHERE c.relname = :table AND pg_table_is_visible(c.oid) AND NOT t.tgisinternal",
    "mysql": "SELECT trigger_name FROM information_schema.triggers "
    "WHERE event_object_schema = DATABASE() AND event_object_table = :table",
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger' "
    "AND tbl_name = :table",
}


def installed_triggers(conn: sa.Connection, table: str) -> set[str]:
    """The names of the triggers on ``table``, from the backend's catalog
    (SQLAlchemy's inspector does not list triggers)."""
    query = sa.text(TRIGGERS_ON[conn.dialect.name])
    return set(conn.execute(query, {"table": table}).scalars())
