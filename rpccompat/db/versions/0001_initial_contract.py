"""The root of rpccompat's contract branch: nothing to remove yet.

Revision ID: 0001_initial_contract
Revises:
"""

revision = "0001_initial_contract"
down_revision = None
branch_labels = ("contract",)
depends_on = "0001_initial_expand"


def upgrade() -> None:
    pass
