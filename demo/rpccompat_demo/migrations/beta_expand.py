"""beta: volumes.name (display_name renamed), description, attach_mode.

Alpha nodes keep writing display_name while beta nodes write name; the sync
triggers copy each write across until contract.

Revision ID: beta_expand
Revises: alpha_expand
"""

import sqlalchemy as sa

from rpccompat.db import ddl
from rpccompat_demo.beta import NAME_SYNC

revision = "beta_expand"
down_revision = "alpha_expand"
branch_labels = None
depends_on = None
serves_release = "beta"


def upgrade() -> None:
    ddl.add_column("volumes", sa.Column("name", sa.String(255)))
    ddl.add_column("volumes", sa.Column("description", sa.String(255)))
    ddl.add_column("volumes", sa.Column("attach_mode", sa.String(2)))
    ddl.install_sync(NAME_SYNC)
    ddl.create_index("ix_volumes_name", "volumes", ["name"])
