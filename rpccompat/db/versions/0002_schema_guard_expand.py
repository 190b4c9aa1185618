"""The schema guard: which releases each project's schema serves.

One row per project: the newest release its expand revisions serve
(ceiling), the oldest its contract revisions left (floor), and the floor a
running contract is about to set; see rpccompat.guard.

Revision ID: 0002_schema_guard_expand
Revises: 0001_initial_expand
"""

import sqlalchemy as sa

from rpccompat.db import ddl

revision = "0002_schema_guard_expand"
down_revision = "0001_initial_expand"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ddl.create_table(
        "rpccompat_schema_guard",
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("ceiling_release", sa.String(64)),
        sa.Column("ceiling_version", sa.String(36)),
        sa.Column("floor_release", sa.String(64)),
        sa.Column("floor_version", sa.String(36)),
        sa.Column("contracting_release", sa.String(64)),
        sa.Column("contracting_version", sa.String(36)),
        sa.Column("contracting_since", sa.DateTime),
        sa.Column("updated_at", sa.DateTime),
        sa.PrimaryKeyConstraint("project", name="pk_rpccompat_schema_guard"),
    )
