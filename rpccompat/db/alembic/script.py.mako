"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

from alembic import op

from rpccompat.db import ddl

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}
% if release:
${release_attribute} = ${repr(release)}
% else:
# An expand revision names the release it adds structures for:
# serves_release = "..."
# A contract revision names the oldest release every service must run first:
# requires_release = "..."
% endif
# Lint findings this revision is allowed, each with why:
# lint_exceptions = {"drop-in-expand": "why"}  # or rpccompat.db.lint.Allow(...)


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
