"""The lint of a migration tree: what each revision would do to a live service.

Every revision is rendered offline for each backend (Alembic's ``--sql``
mode, no database needed) and each statement is read against three rules:

``drop-in-expand``
    expand must be additive: old nodes still use everything that exists and
    the rows in it (a ``TRUNCATE`` is a drop of data).
``create-in-contract``
    contract only removes: new nodes rely on the schema before it runs.
``blocking-ddl``
    a statement that would lock writers out for as long as the table is big
    on that backend (MySQL/MariaDB: ``ALTER`` without ``ALGORITHM=INSTANT``
    or ``INPLACE, LOCK=NONE``; PostgreSQL: index builds without
    ``CONCURRENTLY``, constraints without ``NOT VALID``, column type
    changes, ``SET NOT NULL``, volatile defaults; SQLite: a table rebuilt by
    copying).  Statements on a table created in the same revision are
    exempt: it is empty and nothing uses it yet.

A revision may allow a rule with a reason, in ``lint_exceptions = {"rule":
"why"}``; the finding is then reported as allowed, with the reason.
Triggers and functions are left alone: the sync triggers are created in
expand and dropped in contract by design.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

import sqlparse

from rpccompat.db.sync import DIALECTS
from rpccompat.db.tree import CONTRACT, EXPAND, MigrationTree

DROP_IN_EXPAND = "drop-in-expand"
CREATE_IN_CONTRACT = "create-in-contract"
BLOCKING_DDL = "blocking-ddl"

_I = re.IGNORECASE | re.DOTALL
NAME = r"[`\"]?(\w+)[`\"]?"
CREATE_TABLE = re.compile(rf"^CREATE TABLE (?:IF NOT EXISTS )?{NAME}", _I)
TABLE_OF = re.compile(
    rf"^(?:ALTER TABLE (?:ONLY )?{NAME}|CREATE (?:UNIQUE )?INDEX .*? ON {NAME})", _I
)
DROPS = re.compile(
    r"^(DROP (TABLE|INDEX|VIEW|SEQUENCE)|ALTER TABLE .*\b(DROP|RENAME)\b"
    r"|RENAME TABLE|TRUNCATE\b)",
    _I,
)
CREATES = re.compile(
    r"^(CREATE (UNIQUE )?(TABLE|INDEX|VIEW|SEQUENCE)|ALTER TABLE .*\bADD\b)", _I
)
SKIPPED = re.compile(
    r"^(BEGIN|COMMIT|SET |INSERT INTO \w*alembic_version|UPDATE \w*alembic_version"
    r"|DELETE FROM \w*alembic_version|CREATE TABLE \w*alembic_version"
    r"|(CREATE|DROP)( OR REPLACE)? (TRIGGER|FUNCTION))",
    _I,
)
REBUILD = "_alembic_tmp_"  # Alembic's batch mode copies a table into this
VOLATILE = r"(now|random|clock_timestamp|gen_random_uuid|uuid_generate_\w+|nextval)"
BLOCKING = {
    "postgresql": [
        (
            r"^CREATE (UNIQUE )?INDEX (?!CONCURRENTLY)",
            "index built without CONCURRENTLY",
        ),
        (r"^DROP INDEX (?!CONCURRENTLY)", "index dropped without CONCURRENTLY"),
        (
            r"^ALTER TABLE .*ADD CONSTRAINT .*(FOREIGN KEY|CHECK)(?!.*NOT VALID)",
            "constraint added without NOT VALID",
        ),
        (
            r"^ALTER TABLE .*ALTER COLUMN .* TYPE ",
            "column type change rewrites the table",
        ),
        (r"^ALTER TABLE .*SET NOT NULL", "SET NOT NULL scans the table under lock"),
        (rf"^ALTER TABLE .*ADD COLUMN .*DEFAULT .*{VOLATILE}\s*\(", "volatile default"),
        (
            r"^ALTER TABLE .*ADD (CONSTRAINT \S+ )?(UNIQUE|PRIMARY KEY)",
            "index built under lock",
        ),
    ],
    "mysql": [
        (
            r"^ALTER TABLE (?!.*ALGORITHM\s*=\s*INSTANT)"
            r"(?!.*ALGORITHM\s*=\s*INPLACE.*LOCK\s*=\s*NONE)",
            "ALTER without ALGORITHM=INSTANT or INPLACE, LOCK=NONE",
        ),
        (
            r"^(CREATE|DROP) (UNIQUE )?INDEX (?!.*LOCK\s*=\s*NONE)",
            "index change without LOCK=NONE",
        ),
    ],
    "sqlite": [
        (rf"^CREATE TABLE {REBUILD}", "table rebuilt by copying (batch mode)"),
    ],
}


@dataclasses.dataclass(frozen=True)
class Finding:
    tree: str
    revision: str
    branch: str
    dialect: str
    rule: str
    statement: str
    why: str
    allowed: str | None = None

    def __str__(self) -> str:
        verdict = f"allowed: {self.allowed}" if self.allowed else "error"
        return (
            f"{self.tree}/{self.revision} ({self.branch}, {self.dialect}) "
            f"{self.rule}: {self.why}: {self.statement[:120]} [{verdict}]"
        )


def lint(tree: MigrationTree, dialects: Sequence[str] = DIALECTS) -> list[Finding]:
    """Every finding of every revision of ``tree`` on each of ``dialects``."""
    revisions = {
        r.revision: (branch, tree.lint_exceptions(r))
        for branch in (EXPAND, CONTRACT)
        for r in tree.revisions(branch)
    }
    findings = []
    for dialect in dialects:
        for revision, sql in tree.render(dialect).items():
            branch, exceptions = revisions[revision]
            for rule, why, statement in check(sql, branch, dialect):
                findings.append(
                    Finding(
                        tree.name,
                        revision,
                        branch,
                        dialect,
                        rule,
                        statement,
                        why,
                        exceptions.get(rule) or None,
                    )
                )
    return findings


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if not f.allowed]


def check(sql: str, branch: str, dialect: str) -> list[tuple[str, str, str]]:
    """``(rule, why, statement)`` for each offending statement of one revision."""
    created: set[str] = set()
    found = []
    for statement in statements(sql):
        if SKIPPED.match(statement):
            continue
        new_table = CREATE_TABLE.match(statement)
        if new_table and new_table.group(1).lower().startswith(REBUILD):
            new_table = None  # a copy of an existing table, not a new one
        if new_table:
            created.add(new_table.group(1).lower())
        if branch == EXPAND and DROPS.match(statement):
            found.append((DROP_IN_EXPAND, "expand must only add", statement))
        if branch == CONTRACT and CREATES.match(statement):
            found.append((CREATE_IN_CONTRACT, "contract must only remove", statement))
        table = TABLE_OF.match(statement)
        on_new_table = table and (table.group(1) or table.group(2)).lower() in created
        if on_new_table or new_table:
            continue
        for pattern, why in BLOCKING.get(dialect, []):
            if re.match(pattern, statement, _I):
                found.append((BLOCKING_DDL, why, statement))
                break
    return found


def statements(sql: str) -> list[str]:
    """The statements of rendered SQL, each on one line, without comments.

    Read with a SQL tokenizer, not by lines: a comment before a statement,
    several statements on one line and any spacing or case read as the
    statement they are; a PostgreSQL function body (dollar-quoted) and a
    MySQL or SQLite trigger body (``BEGIN`` ... ``END``) stay whole.
    """
    found = []
    for statement in sqlparse.split(sql):
        text = sqlparse.format(statement, strip_comments=True)
        text = " ".join(text.split()).rstrip(";").strip()
        if text:
            found.append(text)
    return found
