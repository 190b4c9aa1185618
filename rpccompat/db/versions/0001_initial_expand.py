"""rpccompat's own tables: services, and the progress of data migrations.

Revision ID: 0001_initial_expand
Revises:
"""

import sqlalchemy as sa

from rpccompat.db import ddl

revision = "0001_initial_expand"
down_revision = None
branch_labels = ("expand",)
depends_on = None


def upgrade() -> None:
    ddl.create_table(
        "services",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("binary", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255)),
        sa.Column("availability_zone", sa.String(255)),
        sa.Column("release", sa.String(64), nullable=False),
        sa.Column("rpc_current_version", sa.String(36)),
        sa.Column("object_current_version", sa.String(36), nullable=False),
        sa.Column("report_count", sa.Integer, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("disabled_reason", sa.String(255)),
        sa.Column("forced_down", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("stopped_at", sa.DateTime),
        sa.Column("deleted_at", sa.DateTime),
        sa.Column("deleted", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_services"),
        sa.UniqueConstraint("uuid", name="uq_services_uuid"),
        sa.UniqueConstraint(
            "host", "binary", "deleted", name="uq_services_host_binary_deleted"
        ),
    )
    ddl.create_table(
        "rpccompat_data_migrations",
        sa.Column("tree", sa.String(64), nullable=False),
        sa.Column("name", sa.String(191), nullable=False),
        sa.Column("cursor", sa.String(255)),
        sa.Column("found", sa.BigInteger, nullable=False),
        sa.Column("done", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("completed_at", sa.DateTime),
        sa.PrimaryKeyConstraint("tree", "name", name="pk_rpccompat_data_migrations"),
    )
