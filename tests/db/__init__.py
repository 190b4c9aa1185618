"""Shared by the database tests: a sync that converts, not just renames."""

from rpccompat.db import ColumnSync

SIZES = ColumnSync(
    "disks",
    "id",
    ("size_gb",),
    ("size_mb",),
    to_new=lambda c: {"size_mb": c.size_gb * 1024},
    to_old=lambda c: {"size_gb": c.size_mb / 1024},
)
