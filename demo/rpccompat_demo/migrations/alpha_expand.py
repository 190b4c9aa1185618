"""alpha: the volumes table.

Revision ID: alpha_expand
Revises:
"""

import sqlalchemy as sa

from rpccompat.db import ddl

revision = "alpha_expand"
down_revision = None
branch_labels = ("expand",)
depends_on = None
serves_release = "alpha"


def upgrade() -> None:
    ddl.create_table(
        "volumes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("display_name", sa.String(255)),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attach_host", sa.String(255)),
        sa.Column("attach_mountpoint", sa.String(255)),
    )
