"""Expand / migrate / contract: the database half of a rolling upgrade.

What a service project touches::

    from rpccompat.db import MigrationTree, DataMigrations, ColumnSync, Backfill
    from rpccompat.db import MovedColumns  # columns moved to a new table
    from rpccompat.db import read_through  # several syncs of one table
    from rpccompat.db import ddl      # in revision scripts
    from rpccompat.db import Database # expand, migrate, contract, status

and ``rpccompat.db.lint`` / ``rpccompat.testing.check_migrations`` in tests;
the errors a step raises, ``MigrationError`` and its ``LockNotGranted`` and
``ContractRefused``, are here too.
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
from rpccompat.db.sync import ColumnSync, read_through
from rpccompat.db.tree import FRAMEWORK, MigrationTree
from rpccompat.exceptions import ContractRefused, LockNotGranted, MigrationError

__all__ = [
    "FRAMEWORK",
    "Backfill",
    "Blocker",
    "Check",
    "ColumnSync",
    "ContractRefused",
    "DataContext",
    "DataMigrations",
    "Database",
    "LockNotGranted",
    "MigrationError",
    "MigrationTree",
    "MovedColumns",
    "Status",
    "Throttle",
    "Totals",
    "TreeVersion",
    "read_through",
]
