"""Each database backend's own ways, in one module per backend.

Alembic's ``ddl/<dialect>.py`` shape: :mod:`.base` asks the questions and
answers them in standard SQL; :mod:`.mysql` (MariaDB too), :mod:`.postgresql`
and :mod:`.sqlite` answer them their own way - lock timeouts and their
errors, online ALTER clauses, index DDL, trigger rendering, the lint's
blocking-DDL rules, the trigger-privilege probe and the view of open
transactions.
"""

from __future__ import annotations

import sqlalchemy as sa

from rpccompat.db.backends.base import REBUILD, Backend
from rpccompat.db.backends.mysql import MySQL
from rpccompat.db.backends.postgresql import PostgreSQL
from rpccompat.db.backends.sqlite import SQLite

BACKENDS: dict[str, Backend] = {b.name: b for b in (SQLite(), MySQL(), PostgreSQL())}
#: The dialect names rpccompat supports, as SQLAlchemy spells them.
DIALECTS = tuple(BACKENDS)


def backend(dialect: str | sa.Connection | sa.Engine) -> Backend:
    """The backend of a dialect name, or of a connection's or engine's."""
    name = dialect if isinstance(dialect, str) else dialect.dialect.name
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"rpccompat does not support the {name} database; use one of "
            f"{', '.join(DIALECTS)}"
        ) from None


__all__ = ["BACKENDS", "DIALECTS", "REBUILD", "Backend", "backend"]
