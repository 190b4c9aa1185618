"""The catalogue's change shapes on tables of their own, for the database tests.

Each :class:`Shape` is one recipe of :mod:`rpccompat.db.recipes` declared
once on a test table, with the values the tests write in each shape and the
conversions again in plain Python: the reference the triggers, the backfill
and migrate-on-load are checked against.  The values avoid what MariaDB's
default collation compares as equal (case, trailing spaces), which no
conversion is meant to care about.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import sqlalchemy as sa

from rpccompat.db import ColumnSync, recipes

Values = tuple  # one value per column of a shape, in declaration order


@dataclasses.dataclass(frozen=True)
class Shape:
    sync: ColumnSync
    types: dict[str, str]  # SQL type of each old and new column
    old_values: list[Values]
    new_values: list[Values]
    to_new: Callable[[Values], Values]
    to_old: Callable[[Values], Values]

    @property
    def table(self) -> str:
        return self.sync.table

    def create_table(self, conn: sa.Connection) -> None:
        """The table, before expand: no triggers yet."""
        columns = ", ".join(f"{c} {t}" for c, t in self.types.items())
        conn.exec_driver_sql(
            f"CREATE TABLE {self.table} (id VARCHAR(36) PRIMARY KEY, {columns}, "
            "note VARCHAR(20))"
        )

    def install_triggers(self, conn: sa.Connection) -> None:
        for statement in self.sync.create_triggers(conn.dialect.name):
            conn.exec_driver_sql(statement)

    def agree(self, old: Values, new: Values) -> bool:
        """The rule's "agree", in Python."""
        return same(old, self.to_old(new)) or same(new, self.to_new(old))


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


RENAME = Shape(
    ColumnSync.rename("renames", "id", old="display_name", new="name"),
    {"display_name": "VARCHAR(64)", "name": "VARCHAR(64)"},
    old_values=[(None,), ("alpha",), ("beta",), ("gamma delta",)],
    new_values=[(None,), ("alpha",), ("beta",), ("epsilon",)],
    to_new=lambda old: old,
    to_old=lambda new: new,
)

VISIBILITY = Shape(
    recipes.value_map(
        "images",
        "id",
        "is_public",
        "visibility",
        {True: "public", False: "shared"},
        {"public": True},
        old_default=False,
    ),
    {"is_public": "BOOLEAN", "visibility": "VARCHAR(9)"},
    old_values=[(None,), (True,), (False,)],
    new_values=[(None,), ("public",), ("private",), ("shared",), ("community",)],
    to_new=lambda old: ({None: None, True: "public", False: "shared"}[old[0]],),
    to_old=lambda new: (None if new[0] is None else new[0] == "public",),
)

ENDPOINT = Shape(
    recipes.split("endpoints", "id", "endpoint", ("host", "port"), ":"),
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

FULL_NAME = Shape(
    recipes.merge("people", "id", ("first_name", "last_name"), "full_name", " "),
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

QUOTA = Shape(
    recipes.integer_from_string("quotas", "id", "quota", "quota_int"),
    {"quota": "VARCHAR(16)", "quota_int": "INTEGER"},
    old_values=[(None,), ("0",), ("7",), ("007",), ("42",), ("abc",), ("-3",)],
    new_values=[(None,), (0,), (7,), (42,), (-3,), (1234567890,)],
    to_new=lambda old: _integer(old[0]),
    to_old=lambda new: (None if new[0] is None else str(new[0]),),
)

SHAPES = {
    "rename": RENAME,
    "lossy": VISIBILITY,
    "split": ENDPOINT,
    "merge": FULL_NAME,
    "integer": QUOTA,
}
