"""The catalogue's change shapes on tables of their own, for the database tests.

Each :class:`Shape` is one recipe of :mod:`rpccompat.db.recipes` declared
once on a test table, with the values the tests write in each shape and the
conversions again in plain Python: the reference the triggers, the backfill
and migrate-on-load are checked against.  The values avoid what MariaDB's
default collation compares as equal (case, trailing spaces), which no
conversion is meant to care about.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext

from rpccompat.db import ColumnSync, MovedColumns, ddl, recipes

Values = tuple  # one value per column of a shape, in declaration order


@dataclasses.dataclass(frozen=True)
class Shape:
    """A change of one table's columns (a :class:`ColumnSync`), and how the
    model test writes and reads each of its shapes."""

    sync: Any  # ColumnSync here, MovedColumns in MovedShape
    types: dict[str, str]  # SQL type of each column of the old table, its default
    old_values: list[Values]
    new_values: list[Values]
    to_new: Callable[[Values], Values]
    to_old: Callable[[Values], Values]
    relaxed: tuple[str, ...] = ()  # old columns NOT NULL until expand
    #: A write of both shapes is one statement (refused if they disagree),
    #: or, across two tables, two: the old shape's, then the new one's.
    both_in_turn = False

    @property
    def table(self) -> str:
        return self.sync.table

    @property
    def tables(self) -> tuple[str, ...]:
        """Dropped in this order before a run."""
        return (self.table,)

    def create_table(self, conn: sa.Connection) -> None:
        """The table, before expand: no triggers yet."""
        columns = ", ".join(
            f"{c} {t}{' NOT NULL' if c in self.relaxed else ''}"
            for c, t in self.types.items()
        )
        conn.exec_driver_sql(
            f"CREATE TABLE {self.table} (id VARCHAR(36) PRIMARY KEY, {columns}, "
            "note VARCHAR(20))"
        )

    def expand(self, conn: sa.Connection) -> None:
        """The recipe's expand revision: relax, then install the sync."""
        with in_revision(conn):
            for column in self.relaxed:
                ddl.drop_not_null(self.table, column)
            ddl.install_sync(self.sync)

    @property
    def column_defaults(self) -> Mapping[str, Any]:
        """The server defaults: a move declares none."""
        return getattr(self.sync, "defaults", {})

    def defaults(self, columns: tuple[str, ...]) -> Values:
        """What an INSERT that names none of ``columns`` leaves in them."""
        return tuple(self.column_defaults.get(c) for c in columns)

    def agree(self, old: Values, new: Values) -> bool:
        """The rule's "agree", in Python."""
        return same(old, self.to_old(new)) or same(new, self.to_new(old))

    # -- rows, as each release writes and reads them ------------------------------

    def write(
        self,
        conn: sa.Connection,
        verb: str,
        key: str,
        old: Values | None,
        new: Values | None,
    ) -> None:
        """INSERT or UPDATE the row ``key``, with the shapes given."""
        values = {}
        for names, written in ((self.sync.old, old), (self.sync.new, new)):
            if written is not None:
                values |= dict(zip(names, written, strict=True))
        _write(conn, self.table, verb, key, values)

    def select(
        self, conn: sa.Connection, key: str | None = None
    ) -> dict[str, tuple[Values, Values]]:
        """Each row's two shapes, as stored."""
        old, new = self.sync.old, self.sync.new
        where = "" if key is None else " WHERE id = :id"
        rows = conn.execute(
            sa.text(f"SELECT id, {', '.join((*old, *new))} FROM {self.table}{where}"),
            {"id": key},
        )
        return {
            r[0]: (tuple(r[1 : 1 + len(old)]), tuple(r[1 + len(old) :])) for r in rows
        }

    def read(self, conn: sa.Connection, keys: tuple[str, ...]) -> list[tuple]:
        """The new release's read: migrate on load."""
        table = sa.table(self.table, *(sa.column(c) for c in ["id", *self.sync.new]))
        query = (
            sa.select(table.c.id, *(table.c[c] for c in self.sync.new))
            .where(table.c.id.in_(keys))
            .order_by(table.c.id)
        )
        return [tuple(row) for row in self.sync.read(conn, query)]


@dataclasses.dataclass(frozen=True)
class MovedShape(Shape):
    """Columns moved into a new table (:class:`MovedColumns`), which expand
    creates with ``to_columns``."""

    to_columns: tuple[Callable[[], sa.Column], ...] = ()
    both_in_turn = True

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.sync.to_table, self.table)

    def expand(self, conn: sa.Connection) -> None:
        with in_revision(conn):
            ddl.create_table(
                self.sync.to_table,
                sa.Column(
                    self.sync.to_key,
                    sa.String(36),
                    sa.ForeignKey(f"{self.table}.id", ondelete="CASCADE"),
                    primary_key=True,
                ),
                *(column() for column in self.to_columns),
            )
            ddl.install_sync(self.sync)

    def write(
        self,
        conn: sa.Connection,
        verb: str,
        key: str,
        old: Values | None,
        new: Values | None,
    ) -> None:
        """The old table's row, then the new table's: as the new release
        writes its row (it names no old column), an update of the new
        table's row or, when it has none, an insert."""
        sync = self.sync
        if verb == "INSERT" or old is not None:
            values = {} if old is None else dict(zip(sync.old, old, strict=True))
            _write(conn, self.table, verb, key, values)
        if new is None:
            return
        values = dict(zip(sync.new, new, strict=True))
        to = sa.table(sync.to_table, *(sa.column(c) for c in (sync.to_key, *values)))
        updated = conn.execute(
            to.update().where(to.c[sync.to_key] == key).values(values)
        ).rowcount
        if not updated:
            conn.execute(to.insert().values({sync.to_key: key, **values}))

    def select(
        self, conn: sa.Connection, key: str | None = None
    ) -> dict[str, tuple[Values, Values]]:
        s = self.sync
        where = "" if key is None else " WHERE o.id = :id"
        columns = [f"o.{c}" for c in s.old] + [f"n.{c}" for c in s.new]
        rows = conn.execute(
            sa.text(
                f"SELECT o.id, {', '.join(columns)} FROM {self.table} o "
                f"LEFT JOIN {s.to_table} n ON n.{s.to_key} = o.id{where}"
            ),
            {"id": key},
        )
        n = len(s.old)
        return {r[0]: (tuple(r[1 : 1 + n]), tuple(r[1 + n :])) for r in rows}

    def read(self, conn: sa.Connection, keys: tuple[str, ...]) -> list[tuple]:
        return [(k, *v) for k, v in sorted(self.sync.read(conn, keys).items())]


def _write(
    conn: sa.Connection, table: str, verb: str, key: str, values: dict[str, Any]
) -> None:
    if verb == "INSERT":
        names = ["id", *values]
        statement = (
            f"INSERT INTO {table} ({', '.join(names)}) "
            f"VALUES ({', '.join(':' + n for n in names)})"
        )
    elif not values:
        return
    else:
        sets = ", ".join(f"{n} = :{n}" for n in values)
        statement = f"UPDATE {table} SET {sets} WHERE id = :id"
    conn.execute(sa.text(statement), {"id": key, **values})


@contextlib.contextmanager
def in_revision(conn: sa.Connection) -> Iterator[None]:
    """``rpccompat.db.ddl`` operations on ``conn``, as a revision runs them:
    in a transaction of Alembic's when ``conn`` has none (a PostgreSQL index
    build commits it to run outside), else in ``conn``'s."""
    with EnvironmentContext(Config(), None) as environment:
        environment.configure(connection=conn)
        with (
            environment.begin_transaction(),
            Operations.context(environment.get_context()),
        ):
            yield


def same(a: Values, b: Values) -> bool:
    """Null-safe equality, booleans read back as 0/1 included."""
    return all(
        (x is None) == (y is None) and (x is None or x == y)
        for x, y in zip(a, b, strict=True)
    )


def _split(value: str | None, separator: str) -> Values:
    if value is None:
        return (None, None)
    first, found, second = value.partition(separator)
    return (first, second) if found else (value, None)


def _join(first: str | None, second: str | None, separator: str) -> Values:
    if second is None:
        return (first,)
    return (None,) if first is None else (f"{first}{separator}{second}",)


def _integer(value: str | None) -> Values:
    digits = value is not None and re.fullmatch(r"[0-9]{1,9}", value)
    return (int(value) if digits else None,)


# recipe: rename
RENAMES = ColumnSync.rename("renames", "id", old="display_name", new="name")
# end of recipe

RENAME = Shape(
    RENAMES,
    {"display_name": "VARCHAR(64)", "name": "VARCHAR(64)"},
    old_values=[(None,), ("alpha",), ("beta",), ("gamma delta",)],
    new_values=[(None,), ("alpha",), ("beta",), ("epsilon",)],
    to_new=lambda old: old,
    to_old=lambda new: new,
)

# recipe: lossy
IMAGES = recipes.value_map(
    "images",
    "id",
    "is_public",
    "visibility",
    {True: "public", False: "shared"},
    {"public": True},
    old_default=False,
)
# end of recipe

VISIBILITY = Shape(
    IMAGES,
    {"is_public": "BOOLEAN", "visibility": "VARCHAR(9)"},
    old_values=[(None,), (True,), (False,)],
    new_values=[(None,), ("public",), ("private",), ("shared",), ("community",)],
    to_new=lambda old: ({None: None, True: "public", False: "shared"}[old[0]],),
    to_old=lambda new: (None if new[0] is None else new[0] == "public",),
)

# recipe: split
ENDPOINTS = recipes.split("endpoints", "id", "endpoint", ("host", "port"), ":")
# end of recipe

ENDPOINT = Shape(
    ENDPOINTS,
    {"endpoint": "VARCHAR(64)", "host": "VARCHAR(64)", "port": "VARCHAR(16)"},
    old_values=[(None,), ("db",), ("db:3306",), ("web:",), ("::1",), (":80",)],
    new_values=[
        (None, None),
        ("db", None),
        ("db", "3306"),
        ("web", "80"),
        (None, "80"),
        ("", "5432"),
    ],
    to_new=lambda old: _split(old[0], ":"),
    to_old=lambda new: _join(*new, ":"),
)

# recipe: merge
PEOPLE = recipes.merge("people", "id", ("first_name", "last_name"), "full_name", " ")
# end of recipe

FULL_NAME = Shape(
    PEOPLE,
    {
        "first_name": "VARCHAR(32)",
        "last_name": "VARCHAR(32)",
        "full_name": "VARCHAR(64)",
    },
    old_values=[
        (None, None),
        ("Ada", "Lovelace"),
        ("Mary Ann", "Lee"),
        ("Ada", None),
        (None, "Lee"),
    ],
    new_values=[(None,), ("Ada",), ("Ada Lovelace",), ("Mary Ann Lee",), ("Grace",)],
    to_new=lambda old: _join(*old, " "),
    to_old=lambda new: _split(new[0], " "),
)

# recipe: integer
QUOTAS = recipes.integer_from_string("quotas", "id", "quota", "quota_int")
# end of recipe

QUOTA = Shape(
    QUOTAS,
    {"quota": "VARCHAR(16)", "quota_int": "INTEGER"},
    old_values=[(None,), ("0",), ("7",), ("007",), ("42",), ("abc",), ("-3",)],
    new_values=[(None,), (0,), (7,), (42,), (-3,), (1234567890,)],
    to_new=lambda old: _integer(old[0]),
    to_old=lambda new: (None if new[0] is None else str(new[0]),),
)

# recipe: widened
COUNTERS = recipes.widened_integer("counters", "id", "hits", "hits_big")
# end of recipe

COUNTER = Shape(
    COUNTERS,
    {"hits": "INTEGER", "hits_big": "BIGINT"},
    old_values=[(None,), (0,), (-5,), (2**31 - 1,), (-(2**31),)],
    new_values=[(None,), (7,), (2**31 - 1,), (2**31,), (2**40,), (-(2**40),)],
    to_new=lambda old: old,
    to_old=lambda new: (_fits_32_bits(new[0]),),
)

# The old column NOT NULL with no default: a new-shape INSERT would leave it
# NULL (on SQLite before the AFTER trigger fills it), so expand relaxes it.
# recipe: relaxed
HOSTS = ColumnSync.rename("hosts", "id", "hostname", "host_name")
# end of recipe

HOSTNAME = Shape(
    HOSTS,
    {"hostname": "VARCHAR(64)", "host_name": "VARCHAR(64)"},
    old_values=[("alpha",), ("beta",), ("gamma delta",)],
    new_values=[(None,), ("alpha",), ("epsilon",)],
    to_new=lambda old: old,
    to_old=lambda new: new,
    relaxed=("hostname",),
)

# A new NOT NULL column with a default, from an old one with a default: an
# INSERT that names one shape leaves the other at its default.
# recipe: defaults
SWITCHES = recipes.value_map(
    "switches",
    "id",
    "enabled",
    "state",
    {True: "enabled", False: "disabled"},
    {"enabled": True},
    old_default=False,
    defaults={"enabled": True, "state": "enabled"},
)
# end of recipe

STATE = Shape(
    SWITCHES,
    {
        "enabled": "BOOLEAN DEFAULT TRUE",
        "state": "VARCHAR(8) NOT NULL DEFAULT 'enabled'",
    },
    old_values=[(True,), (False,)],
    new_values=[("enabled",), ("disabled",), ("standby",)],
    to_new=lambda old: ({None: None, True: "enabled", False: "disabled"}[old[0]],),
    to_old=lambda new: (None if new[0] is None else new[0] == "enabled",),
    relaxed=("enabled",),
)


def _fits_32_bits(value: int | None) -> int | None:
    return value if value is not None and -(2**31) <= value < 2**31 else None


# Heat's case: a resource's properties moved into a table of their own.
# recipe: moved
RESOURCES = MovedColumns(
    "resources",
    "id",
    {"properties": "data", "template": "template_name"},
    "resource_properties",
    "resource_id",
)
# end of recipe

PROPERTIES = MovedShape(
    RESOURCES,
    {"properties": "VARCHAR(64)", "template": "VARCHAR(32)"},
    old_values=[(None, None), ("{}", None), ('{"a": 1}', "t1"), (None, "t2")],
    new_values=[(None, None), ("{}", "t1"), ('{"b": 2}', None), (None, "t3")],
    to_new=lambda old: old,
    to_old=lambda new: new,
    to_columns=(
        lambda: sa.Column("data", sa.String(64)),
        lambda: sa.Column("template_name", sa.String(32)),
    ),
)

SHAPES = {
    "rename": RENAME,
    "lossy": VISIBILITY,
    "split": ENDPOINT,
    "merge": FULL_NAME,
    "integer": QUOTA,
    "widened": COUNTER,
    "relaxed": HOSTNAME,
    "defaults": STATE,
    "moved": PROPERTIES,
}
