"""gamma: drop size and its sync triggers, once no beta (or alpha) node is left.

Revision ID: gamma_contract
Revises: beta_contract
"""

from rpccompat.db import ddl
from rpccompat_demo.gamma import SIZE_SYNC

revision = "gamma_contract"
down_revision = "beta_contract"
branch_labels = None
depends_on = "gamma_expand"
requires_release = "gamma"


def upgrade() -> None:
    ddl.drop_sync(SIZE_SYNC)
    ddl.drop_column("volumes", "size")
