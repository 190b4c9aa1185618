"""alpha: the root of the contract branch, nothing to remove.

Revision ID: alpha_contract
Revises:
"""

revision = "alpha_contract"
down_revision = None
branch_labels = ("contract",)
depends_on = "alpha_expand"
requires_release = "alpha"


def upgrade() -> None:
    pass
