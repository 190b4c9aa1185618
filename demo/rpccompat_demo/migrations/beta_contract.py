"""beta: drop display_name and its sync triggers, once no alpha node is left.

Revision ID: beta_contract
Revises: alpha_contract
"""

from rpccompat.db import ddl
from rpccompat_demo.beta import NAME_SYNC

revision = "beta_contract"
down_revision = "alpha_contract"
branch_labels = None
depends_on = "beta_expand"
requires_release = "beta"


def upgrade() -> None:
    ddl.drop_sync(NAME_SYNC)
    ddl.drop_column("volumes", "display_name")
