"""Change shapes beyond a rename, each one :class:`ColumnSync` declaration.

Each function returns the declaration a service's expand revision installs
(``ddl.install_sync``), its backfill converts with (``Backfill``) and its
new code reads through (``ColumnSync.read``); contract drops it.  The
conversions are plain SQLAlchemy expressions, so the same declaration
renders for MariaDB/MySQL, PostgreSQL and SQLite.  Each maps NULL to NULL,
so a row with neither shape set is in step.  Their keyword ``options``
(``name``, ``types``, ``defaults``) go to :class:`ColumnSync` as they are.

The mixed-period rule (see :mod:`rpccompat.db.sync`) is what makes the
lossy ones safe: a value one shape cannot hold survives writes to the other
shape that leave the other shape as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from rpccompat.db.sync import ColumnSync

#: Strings ``integer_from_string`` parses: 1 to 9 decimal digits, which
#: every backend's INTEGER holds.  Anything else becomes NULL.
MAX_DIGITS = 9


def value_map(
    table: str,
    key: str,
    old: str,
    new: str,
    to_new: Mapping[Any, Any],
    to_old: Mapping[Any, Any],
    *,
    new_default: Any = None,
    old_default: Any = None,
    **options: Any,
) -> ColumnSync:
    """Values mapped one by one, possibly many to one (a lossy mapping).

    Glance's ``is_public`` -> ``visibility``::

        value_map("images", "id", "is_public", "visibility",
                  {True: "public", False: "shared"}, {"public": True},
                  old_default=False)

    A value missing from a mapping becomes its default.  A new value the old
    shape cannot tell apart (``'private'`` and ``'shared'`` are both
    ``False``) stays as the new release wrote it until an old-shape write
    changes ``is_public``.
    """
    return ColumnSync(
        table,
        key,
        (old,),
        (new,),
        to_new=lambda c: {new: _mapped(getattr(c, old), to_new, new_default)},
        to_old=lambda c: {old: _mapped(getattr(c, new), to_old, old_default)},
        **options,
    )


def split(
    table: str,
    key: str,
    old: str,
    new: tuple[str, str],
    separator: str,
    **options: Any,
) -> ColumnSync:
    """One string column split into two at the first ``separator``.

    ``"host:port"`` -> ``host``, ``port``; a value without the separator is
    all ``host`` (``port`` NULL), and joining gives it back, so every old
    value round-trips.  A new row whose first part is NULL and second is
    not has no old value (NULL).
    """
    first, second = new
    return ColumnSync(
        table,
        key,
        (old,),
        new,
        to_new=lambda c: dict(
            zip(new, _split(getattr(c, old), separator), strict=True)
        ),
        to_old=lambda c: {old: _join(getattr(c, first), getattr(c, second), separator)},
        **options,
    )


def merge(
    table: str,
    key: str,
    old: tuple[str, str],
    new: str,
    separator: str,
    **options: Any,
) -> ColumnSync:
    """Two string columns merged into one: :func:`split` the other way.

    ``first_name``, ``last_name`` -> ``full_name`` with ``" "``.  An old
    pair whose first part holds the separator (``"Mary Ann"``, ``"Lee"``)
    does not come back from the merged value (``"Mary"``, ``"Ann Lee"``):
    it stays as the old release wrote it until a new-shape write changes
    ``full_name``.
    """
    first, second = old
    return ColumnSync(
        table,
        key,
        old,
        (new,),
        to_new=lambda c: {new: _join(getattr(c, first), getattr(c, second), separator)},
        to_old=lambda c: dict(
            zip(old, _split(getattr(c, new), separator), strict=True)
        ),
        **options,
    )


def integer_from_string(
    table: str, key: str, old: str, new: str, **options: Any
) -> ColumnSync:
    """A string column holding numbers becomes an INTEGER column.

    A string of 1 to :data:`MAX_DIGITS` decimal digits converts to its
    number; anything else (a sign, spaces, letters, more digits) to NULL,
    and the old column keeps the string as written: it is not refused, since
    the old release that wrote it cannot be told.  ``"007"`` converts to 7
    and stays ``"007"`` until a new-shape write changes the number.
    """
    return ColumnSync(
        table,
        key,
        (old,),
        (new,),
        to_new=lambda c: {new: _parsed_integer(getattr(c, old))},
        to_old=lambda c: {old: sa.cast(getattr(c, new), sa.String)},
        **options,
    )


def widened_integer(
    table: str, key: str, old: str, new: str, *, old_bits: int = 32, **options: Any
) -> ColumnSync:
    """An integer column moved to a wider one: INTEGER to BIGINT.

    Every old value converts as it is.  A new value the old column cannot
    hold (beyond ``old_bits``, signed) gives the old release NULL instead of
    an overflow that would refuse the new release's write; it stays in the
    new column until an old-shape write changes the old one.
    """
    low, high = -(2 ** (old_bits - 1)), 2 ** (old_bits - 1) - 1

    def fitting(value: ColumnElement[Any]) -> ColumnElement[Any]:
        return sa.case((value.between(low, high), value), else_=sa.null())

    return ColumnSync(
        table,
        key,
        (old,),
        (new,),
        to_new=lambda c: {new: getattr(c, old)},
        to_old=lambda c: {old: fitting(getattr(c, new))},
        **options,
    )


# -- expressions ----------------------------------------------------------------


def _mapped(value: ColumnElement[Any], mapping: Mapping[Any, Any], default: Any) -> Any:
    whens: list[tuple[ColumnElement[bool], Any]] = [(value.is_(None), sa.null())]
    whens += [(value == sa.literal(k), sa.literal(v)) for k, v in mapping.items()]
    return sa.case(*whens, else_=sa.literal(default) if default is not None else None)


def _split(
    value: ColumnElement[Any], separator: str
) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    at = position(value, sa.literal(separator))
    first = sa.case((at == 0, value), else_=sa.func.substr(value, 1, at - 1))
    second = sa.case((at == 0, sa.null()), else_=sa.func.substr(value, at + 1))
    return first, second


def _join(
    first: ColumnElement[Any], second: ColumnElement[Any], separator: str
) -> ColumnElement[Any]:
    text = sa.type_coerce(first, sa.String)
    return sa.case(
        (second.is_(None), first),
        else_=text + sa.literal(separator) + sa.type_coerce(second, sa.String),
    )


def _parsed_integer(value: ColumnElement[Any]) -> ColumnElement[Any]:
    return sa.case((all_digits(value), sa.cast(value, sa.Integer)), else_=sa.null())


class position(FunctionElement[int]):
    """Where ``substring`` first starts in ``string`` (1-based; 0 if absent).

    SQLite and MariaDB/MySQL call it ``instr``, PostgreSQL ``strpos``.
    """

    type = sa.Integer()
    inherit_cache = True


@compiles(position)
def _position(element: position, compiler: Any, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


@compiles(position, "postgresql")
def _position_postgresql(element: position, compiler: Any, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


class all_digits(FunctionElement[bool]):
    """Whether ``string`` is 1 to MAX_DIGITS decimal digits.

    Written per backend because there is no portable pattern match: SQLite's
    REGEXP needs a function each client registers (a trigger would fail in
    a client without it), so SQLite uses GLOB.
    """

    type = sa.Boolean()
    inherit_cache = True


@compiles(all_digits)
def _all_digits(element: all_digits, compiler: Any, **kw: Any) -> str:
    value = compiler.process(element.clauses, **kw)
    return f"({value} REGEXP '^[0-9]{{1,{MAX_DIGITS}}}$')"


@compiles(all_digits, "postgresql")
def _all_digits_postgresql(element: all_digits, compiler: Any, **kw: Any) -> str:
    value = compiler.process(element.clauses, **kw)
    return f"({value} ~ '^[0-9]{{1,{MAX_DIGITS}}}$')"


@compiles(all_digits, "sqlite")
def _all_digits_sqlite(element: all_digits, compiler: Any, **kw: Any) -> str:
    value = compiler.process(element.clauses, **kw)
    return (
        f"(length({value}) BETWEEN 1 AND {MAX_DIGITS} AND {value} NOT GLOB '*[^0-9]*')"
    )
