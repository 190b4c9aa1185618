"""Expand / migrate / contract: the database half of a rolling upgrade.

What a service project touches::

    from rpccompat.db import MigrationTree, DataMigrations, ColumnSync, Backfill
    from rpccompat.db import MovedColumns  # columns moved to a new table
    from rpccompat.db import ddl      # in revision scripts
    from rpccompat.db import Database # expand, migrate, contract, status

and ``rpccompat.db.lint`` / ``rpccompat.testing.check_migrations`` in tests.
"""

from rpccompat.db.data import (
    Backfill,
    DataContext,
    DataMigrations,
    Throttle,
    Totals,
)
from rpccompat.db.database import Blocker, Check, Database, Status, TreeVersion
from rpccompat.db.moved import MovedColumns
from rpccompat.db.sync import ColumnSync
from rpccompat.db.tree import FRAMEWORK, MigrationTree

__all__ = [
    "FRAMEWORK",
    "Backfill",
    "Blocker",
    "Check",
    "ColumnSync",
    "DataContext",
    "DataMigrations",
    "Database",
    "MigrationTree",
    "MovedColumns",
    "Status",
    "Throttle",
    "Totals",
    "TreeVersion",
]
