"""gamma: volumes.size_gib (size widened), bootable, attach_device_type.

Older nodes keep writing size while gamma nodes write size_gib; the sync
triggers copy each write across until contract.  Gamma inserts name only
size_gib, so size must accept NULL until its trigger fills it (on SQLite,
whose triggers run after the insert, always): relaxed before the sync.

Revision ID: gamma_expand
Revises: beta_expand
"""

import sqlalchemy as sa

from rpccompat.db import ddl
from rpccompat_demo.gamma import SIZE_SYNC

revision = "gamma_expand"
down_revision = "beta_expand"
branch_labels = None
depends_on = None
serves_release = "gamma"


def upgrade() -> None:
    ddl.add_column("volumes", sa.Column("size_gib", sa.BigInteger))
    ddl.add_column("volumes", sa.Column("attach_device_type", sa.String(16)))
    ddl.add_column(
        "volumes",
        sa.Column("bootable", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    ddl.drop_not_null("volumes", "size")
    ddl.install_sync(SIZE_SYNC)
