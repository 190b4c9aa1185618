"""One declaration keeps the old and the new shape of some columns equal.

While release N-1 writes the old column(s) and release N the new, triggers
copy each write across; the backfill and migrate-on-load run the very same
conversion, so a row converted by a trigger, by the backfill or on load is
converted alike.

The mixed-period rule: each row's two shapes agree with the latest write,
in whichever shape it came.  They *agree* when the old columns are what the
new ones convert to (the row is *in step*: ``old IS NOT DISTINCT FROM
to_old(new)``) or the new columns are what the old ones convert to (``new IS
NOT DISTINCT FROM to_new(old)``, the same rule seen from the other side: an
old value the new shape cannot hold exactly, ``'007'`` for 7, is kept).
Only rows whose shapes disagree are ever converted:

- a statement that writes one shape (on INSERT: sets it non-NULL, other
  than its server default; on UPDATE: changes it, compared null-safely)
  converts the other from it; an INSERT that writes neither but leaves one
  shape non-NULL (at its defaults) converts the other from that one, the
  old shape first, as the backfill would;
- a statement that writes neither converts nothing: a value one shape cannot
  represent (``visibility = 'private'`` under a boolean ``is_public``)
  survives every write that leaves the other shape as it was;
- a statement that writes both shapes so that they disagree is refused with
  :data:`REFUSED` in the error, on every backend (as Glance's trigger did):
  no rule could say which of the two it meant;
- the backfill and migrate-on-load convert the old shape to the new, only in
  rows that disagree, which only rows written before the triggers can do.

Each conversion must map NULL to NULL and give its own input back where the
other shape can hold it (``to_old(to_new(old)) == old``), or the triggers
would rewrite what a release just wrote.  On SQLite, whose triggers update
the row again and so fire each other, the same "only if they disagree" guard
is what stops a trigger's UPDATE from firing the reverse trigger.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.sql.visitors import InternalTraversal

from rpccompat.db.backends import backend

Conversion = Callable[[Any], dict[str, ColumnElement[Any]]]
#: In the error of a write refused because it set both shapes apart.
REFUSED = "wrote the old and the new columns with values that disagree"


class Sync(Protocol):
    """What installing, dropping and backfilling need of a declaration:
    :class:`ColumnSync`, or :class:`rpccompat.db.moved.MovedColumns`."""

    @property
    def name(self) -> str: ...
    @property
    def table(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def tables(self) -> tuple[str, ...]: ...
    @property
    def table_clause(self) -> sa.TableClause: ...
    def trigger_names(self, dialect: str) -> list[str]: ...
    def create_triggers(
        self, dialect: str, names: Collection[str] | None = None
    ) -> list[str]: ...
    def drop_triggers(self, dialect: str) -> list[str]: ...
    def migrate(self, conn: sa.Connection, where: ColumnElement[bool]) -> int: ...
    def typed(self, conn: sa.Connection) -> Sync: ...


@dataclasses.dataclass(frozen=True)
class ColumnSync:
    """Old columns ``old`` of ``table`` become ``new``.

    ``to_new`` receives the old columns as attributes and returns the value
    of each new column as a SQLAlchemy expression; ``to_old`` the reverse.
    ``key`` is the primary key: triggers and the backfill address rows by it.
    On PostgreSQL, which neither stores nor compares text as an enum (nor
    an integer from a text expression) without a cast, each converted value
    is cast to its column's type as the database has it (:meth:`typed`);
    ``types`` gives it instead, where there is no database to ask (the
    offline SQL of the lint).
    ``defaults`` gives the server default of each column that has one: an
    INSERT that leaves a column at its default did not name it, so the other
    shape, if the INSERT set it, is the one converted from.
    """

    table: str
    key: str
    old: tuple[str, ...]
    new: tuple[str, ...]
    to_new: Conversion
    to_old: Conversion
    name: str = ""
    types: Mapping[str, TypeEngine[Any]] = dataclasses.field(
        default_factory=dict, hash=False
    )
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    @classmethod
    def rename(
        cls, table: str, key: str, old: str, new: str, **options: Any
    ) -> ColumnSync:
        """The common case: a column renamed, its values unchanged (a wider
        type included: INTEGER to BIGINT)."""
        return cls(
            table,
            key,
            (old,),
            (new,),
            to_new=lambda cols: {new: getattr(cols, old)},
            to_old=lambda cols: {old: getattr(cols, new)},
            **options,
        )

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"{self.table}_{'_'.join(self.new)}_sync")
        unknown = set(self.defaults) - {*self.old, *self.new}
        if unknown:
            raise ValueError(
                f"{self.name}: defaults names {sorted(unknown)}, which are not "
                f"among its columns {[*self.old, *self.new]}"
            )

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
        return {
            column: _Target(value, self.types[column])
            if column in self.types
            else value
            for column, value in values.items()
        }

    def agree(self, source: Any) -> ColumnElement[bool]:
        """Whether the two shapes of the row in ``source`` agree (see the
        module's docstring): old in step with new, or new with old."""
        return sa.or_(
            _equal(source, self.old_values(source)),
            _equal(source, self.new_values(source)),
        )

    @property
    def table_clause(self) -> sa.TableClause:
        """The table as the conversion sees it."""
        return table_clause(self.table, (self.key, *self.old, *self.new))

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables its triggers are on."""
        return (self.table,)

    # -- rows: the backfill and migrate-on-load ----------------------------

    def convert(self, where: ColumnElement[bool]) -> sa.Update:
        """UPDATE setting the new columns from the old in the rows of
        ``where`` whose shapes disagree.

        The condition is checked again on the row as it is when the UPDATE
        gets its lock, so a write committed meanwhile by either release is
        kept: the triggers made that row agree.
        """
        table = self.table_clause
        return (
            table.update()
            .where(where, sa.not_(self.agree(table.c)))
            .values(self.new_values(table.c))
        )

    def migrate(self, conn: sa.Connection, where: ColumnElement[bool]) -> int:
        """Convert the rows of ``where`` that need it; returns how many did.

        Every converter (the backfill, each reader) locks the rows it
        converts in key order, so two of them never each hold a row the
        other waits for.
        """
        typed = self.typed(conn)
        with backend(conn).in_key_order(conn):
            return conn.execute(typed.convert(where)).rowcount

    def migrate_rows(self, conn: sa.Connection, keys: Iterable[Any]) -> int:
        """Convert these rows now, in key order; returns how many needed it
        (see read).  Where an UPDATE of a list of keys may lock other rows
        too (MySQL's scan under REPEATABLE READ), one row at a time."""
        keys = sorted(keys)
        if not keys:
            return 0
        key = self.table_clause.c[self.key]
        if backend(conn).updates_only_its_rows:
            return self.migrate(conn, key.in_(keys))
        one = self.typed(conn).convert(key == sa.bindparam("_key"))
        return conn.execute(one, [{"_key": k} for k in keys]).rowcount

    def typed(self, conn: sa.Connection) -> ColumnSync:
        """This sync, its conversions cast to their columns' types on
        PostgreSQL as ``conn``'s database has them.

        Read once per engine: a column's type does not change during the
        mixed period.  String columns are left out: a value cast to
        ``VARCHAR(n)`` would be cut to ``n`` where storing it is refused.
        """
        if not backend(conn).casts_conversions:
            return self
        known = _TYPED.setdefault(conn.engine, {})
        if self not in known:
            reflected = {
                c["name"]: c["type"] for c in sa.inspect(conn).get_columns(self.table)
            }
            columns = (*self.old, *self.new)
            types = {
                c: reflected[c]
                for c in columns
                if c in reflected and not _is_text(reflected[c])
            }
            typed = dataclasses.replace(self, types={**types, **self.types})
            if not set(columns) <= reflected.keys():
                return typed  # expand has yet to add them: asked again
            known[self] = typed
        return known[self]

    def read(self, conn: sa.Connection, query: sa.Select) -> Sequence[sa.Row]:
        """Rows of ``query`` with the new columns filled: migrate on load.

        ``query`` selects the key and the new columns.  Rows whose new
        columns are all NULL or at their defaults (as expand left the rows
        the old release wrote before it, until the backfill reaches them)
        are read again with a lock, in key order as every converter locks
        them, and those still unconverted are converted and read back.
        The locking read sees what another reader, the backfill or a
        new-shape write committed since the first read (a plain one would
        see REPEATABLE READ's snapshot again, MySQL's default), and the
        conversion skips a row whose shapes agree, so such a write is kept.
        New code reads and writes only the new columns; it never names the
        old ones, so it keeps working after contract drops them.
        """
        return read_through(conn, query, [self])

    def unconverted(self, row: sa.Row) -> bool:
        """Whether the new columns of ``row`` are as expand left them."""
        values = row._mapping
        return all(
            values[c] is None or (c in self.defaults and values[c] == self.defaults[c])
            for c in self.new
        )

    # -- triggers -----------------------------------------------------------

    def create_triggers(
        self, dialect: str, names: Collection[str] | None = None
    ) -> list[str]:
        """The DDL that installs this sync on ``dialect``: only the triggers
        in ``names`` (of ``trigger_names``; None: all), so an install that
        was interrupted can be completed without a moment with none."""
        db = backend(dialect)
        triggers = db.column_sync(self, Renderer(db.dialect))
        wanted = triggers.keys() if names is None else names
        return [statement for name in wanted for statement in triggers[name]]

    def drop_triggers(self, dialect: str) -> list[str]:
        db = backend(dialect)
        names = [*self.trigger_names(dialect), *db.legacy_names(self.name)]
        return db.drop_triggers(list(dict.fromkeys(names)), self.table)

    def trigger_names(self, dialect: str) -> list[str]:
        """The names of the triggers (on PostgreSQL, of the trigger and its
        function), each fitted to what ``dialect`` keeps."""
        db = backend(dialect)
        return [db.fit(f"{self.name}{s}") for s in db.column_sync_suffixes()]

    def conditions(self, r: Renderer, event: str) -> tuple[str, str, str]:
        """When a row's shapes disagree after ``event``: whether the
        statement wrote both shapes (refused), else whether the new shape is
        converted from the old, else whether the old from the new."""
        old = r.written(event, self.old, self.defaults)
        new = r.written(event, self.new, self.defaults)
        both = f"{old} AND {new}"
        if event == "INSERT":  # neither named: whichever shape is set
            old = f"({old} OR (NOT {r.all_null('NEW', self.old)} AND NOT {new}))"
            new = f"NOT {r.all_null('NEW', self.new)}"
        return both, old, new

    def refusal(self) -> str:
        """The message of a refused write: one line, within MySQL's 128."""
        return f"{REFUSED} ({self.name}); write one shape, or both in step"[:128]


def read_through(
    conn: sa.Connection, query: sa.Select, syncs: Sequence[ColumnSync]
) -> Sequence[sa.Row]:
    """Rows of ``query`` with the new columns of every sync in ``syncs``
    filled (see :meth:`ColumnSync.read`).

    Several syncs of one table are in flight at once when an upgrade skips
    a release (N-2 to N) and both releases changed the table: the new code
    reads through all of them, and a row any of them finds unconverted is
    locked once and converted by each that needs it, in ``syncs``' order.
    """
    key = _common_key(syncs)
    rows = conn.execute(query).all()
    stale = {row._mapping[key] for row in rows if _unconverted(syncs, row)}
    if not stale:
        return rows
    by_key = query.selected_columns[key]
    again = query.where(by_key.in_(stale)).order_by(None).order_by(by_key)
    fresh = _by_key(key, conn.execute(again.with_for_update()))
    unconverted = [k for k, row in fresh.items() if _unconverted(syncs, row)]
    if unconverted:
        for sync in syncs:  # rows this holds: no wait
            sync.migrate_rows(
                conn, [k for k in unconverted if sync.unconverted(fresh[k])]
            )
        # Read back even if this converted nothing: SQLite (pysqlite)
        # reads outside the transaction its UPDATE begins, so another
        # writer may have converted them since.
        converted = again.where(by_key.in_(unconverted)).with_for_update()
        fresh.update(_by_key(key, conn.execute(converted)))
    return [  # in the query's order; rows deleted meanwhile are gone
        fresh[k] if k in stale else row
        for row in rows
        if (k := row._mapping[key]) not in stale or k in fresh
    ]


def _common_key(syncs: Sequence[ColumnSync]) -> str:
    if not syncs or len({(s.table, s.key) for s in syncs}) != 1:
        raise ValueError(
            "read_through needs one or more syncs of one table and key, not "
            f"{[(s.name, s.table, s.key) for s in syncs]}"
        )
    return syncs[0].key


def _unconverted(syncs: Sequence[ColumnSync], row: sa.Row) -> bool:
    return any(sync.unconverted(row) for sync in syncs)


def _by_key(key: str, rows: Iterable[sa.Row]) -> dict[Any, sa.Row]:
    return {row._mapping[key]: row for row in rows}


@functools.cache
def table_clause(table: str, columns: tuple[str, ...]) -> sa.TableClause:
    """One object per table and columns, so that every clause built for a
    sync, or for its typed copy, names one table."""
    return sa.table(table, *(sa.column(c) for c in columns))


_TYPED: weakref.WeakKeyDictionary[sa.Engine, dict[ColumnSync, ColumnSync]] = (
    weakref.WeakKeyDictionary()
)


def _is_text(type_: TypeEngine[Any]) -> bool:
    return isinstance(type_, sa.String) and not isinstance(type_, sa.Enum)


def _equal(source: Any, values: dict[str, ColumnElement[Any]]) -> ColumnElement[bool]:
    """Whether each column of ``source`` named in ``values`` is its value."""
    return sa.and_(*(source[c].is_not_distinct_from(v) for c, v in values.items()))


class _Target(ColumnElement[Any]):
    """A converted value, cast to its column's type where PostgreSQL needs it.

    PostgreSQL neither stores nor compares text as an enum without a cast;
    MariaDB/MySQL and SQLite convert on assignment, and MySQL cannot CAST to
    most column types at all, so elsewhere the value is left as it is.
    """

    inherit_cache = True
    _traverse_internals = [
        ("value", InternalTraversal.dp_clauseelement),
        ("type", InternalTraversal.dp_type),
    ]

    def __init__(self, value: ColumnElement[Any], type_: TypeEngine[Any]) -> None:
        self.value, self.type = value, type_


@compiles(_Target)
def _as_it_is(element: _Target, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.value, **kw)


@compiles(_Target, "postgresql")
def _cast(element: _Target, compiler: Any, **kw: Any) -> str:
    return compiler.process(sa.cast(element.value, element.type), **kw)


class Renderer:
    """Renders conversions and comparisons as one dialect's trigger SQL."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.q = dialect.identifier_preparer.quote

    def sql(self, expression: ColumnElement[Any]) -> str:
        # Each value rendered on its own first: SQLAlchemy's SQLite and MySQL
        # compilers drop literal_binds inside IS [NOT] DISTINCT FROM.
        options: dict[str, Any] = {}
        inlined = visitors.replacement_traverse(expression, options, self._inline)
        return self._compile(inlined)

    def _compile(self, expression: ColumnElement[Any]) -> str:
        return str(
            expression.compile(
                dialect=self.dialect, compile_kwargs={"literal_binds": True}
            )
        )

    def _inline(self, element: Any, **kw: Any) -> ColumnElement[Any] | None:
        if isinstance(element, sa.BindParameter):
            return sa.literal_column(self._compile(element), element.type)
        return None

    def assign(
        self, target: str, conversion: Conversion, operator: str, separator: str
    ) -> str:
        """``target`` + each converted column ``operator`` its value from NEW."""
        return separator.join(
            f"{target}{self.q(column)} {operator} {self.sql(value)}"
            for column, value in conversion(_AnyColumn(self, "NEW")).items()
        )

    def text(self, value: str) -> str:
        """``value`` as a string literal."""
        return self.sql(sa.literal(value, sa.String))

    def agree(self, sync: ColumnSync) -> str:
        """Whether the shapes of the row in NEW agree."""
        return "(" + self.sql(sync.agree(_AnyColumn(self, "NEW"))) + ")"

    def written(
        self, event: str, names: Sequence[str], defaults: Mapping[str, Any]
    ) -> str:
        """Whether the statement wrote any of ``names``: changed one
        (UPDATE), or set one non-NULL and, if it has a default, other than
        it (INSERT: a column left at its default was not named)."""
        if event != "INSERT":
            return self.changed(names)

        def named(n: str) -> str:
            column: ColumnElement[Any] = sa.literal_column(f"NEW.{self.q(n)}")
            if n not in defaults:
                return self.sql(column.is_not(None))
            return self.sql(
                sa.and_(column.is_not(None), column.is_distinct_from(defaults[n]))
            )

        return "(" + " OR ".join(named(n) for n in names) + ")"

    def all_null(self, prefix: str, names: Sequence[str]) -> str:
        return "(" + " AND ".join(f"{prefix}.{self.q(n)} IS NULL" for n in names) + ")"

    def changed(self, names: Sequence[str]) -> str:
        def differs(n: str) -> str:
            new: ColumnElement[Any] = sa.literal_column(f"NEW.{self.q(n)}")
            old: ColumnElement[Any] = sa.literal_column(f"OLD.{self.q(n)}")
            return self.sql(new.is_distinct_from(old))

        return "(" + " OR ".join(differs(n) for n in names) + ")"


class _AnyColumn:
    """``prefix.column`` for whichever column a conversion asks for."""

    def __init__(self, renderer: Renderer, prefix: str) -> None:
        self._renderer, self._prefix = renderer, prefix

    def __getattr__(self, name: str) -> ColumnElement[Any]:
        return sa.literal_column(f"{self._prefix}.{self._renderer.q(name)}")

    def __getitem__(self, name: str) -> ColumnElement[Any]:
        return getattr(self, name)


def installed_triggers(conn: sa.Connection, table: str) -> set[str]:
    """The names of the triggers on ``table``, from the backend's catalog
    (SQLAlchemy's inspector does not list triggers)."""
    query = sa.text(backend(conn).triggers_on)
    return set(conn.execute(query, {"table": table}).scalars())
