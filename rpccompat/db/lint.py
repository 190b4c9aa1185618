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

A relaxation is not a drop: ``ALTER COLUMN ... DROP NOT NULL`` takes nothing
from old nodes, and a table rebuilt by copying (Alembic's batch mode on
SQLite) drops only the columns the copy leaves out.  The lint follows each
table's columns through the tree's revisions in order, so a rebuild that
leaves one out is a drop.

A revision may allow a finding with a reason, in ``lint_exceptions``:
``{"rule": "why"}`` allows the rule for every statement of the revision on
every backend; ``{"rule": Allow("why", dialects=("sqlite",),
statement=r"regex")}`` (or a list of them) only the statements it matches,
so a real drop added beside it later still fails.  Triggers and functions
are left alone: the sync triggers are created in expand and dropped in
contract by design.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import sqlparse

from rpccompat.db.backends import BACKENDS, DIALECTS, REBUILD
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
RELAXATION = re.compile(r"^ALTER TABLE \S+ ALTER COLUMN \S+ DROP NOT NULL$", _I)
ADD_COLUMN = re.compile(rf"^ALTER TABLE {NAME} ADD (?:COLUMN )?{NAME}", _I)
DROP_COLUMN = re.compile(rf"^ALTER TABLE {NAME} DROP (?:COLUMN )?{NAME}", _I)
NOT_A_COLUMN = {"PRIMARY", "UNIQUE", "CONSTRAINT", "FOREIGN", "CHECK", "KEY", "INDEX"}
CREATES = re.compile(
    r"^(CREATE (UNIQUE )?(TABLE|INDEX|VIEW|SEQUENCE)|ALTER TABLE .*\bADD\b)", _I
)
SKIPPED = re.compile(
    r"^(BEGIN|COMMIT|SET |INSERT INTO \w*alembic_version|UPDATE \w*alembic_version"
    r"|DELETE FROM \w*alembic_version|CREATE TABLE \w*alembic_version"
    r"|(CREATE|DROP)( OR REPLACE)? (TRIGGER|FUNCTION))",
    _I,
)


@dataclasses.dataclass(frozen=True)
class Allow:
    """A declared exception: the findings of a rule it matches, with why.

    ``dialects`` limits it to those backends and ``statement`` (a regular
    expression searched in the statement) to those statements; unset, it
    matches every one.
    """

    why: str
    dialects: tuple[str, ...] = ()
    statement: str = ""

    def matches(self, dialect: str, statement: str) -> bool:
        return (not self.dialects or dialect in self.dialects) and bool(
            re.search(self.statement, statement, _I)
        )


def allowed_by(
    exceptions: Mapping[str, object], rule: str, dialect: str, statement: str
) -> str:
    """Why ``exceptions`` allow this finding ('' when they do not): a
    revision's ``lint_exceptions`` maps a rule to a reason, an ``Allow`` or
    a list of them."""
    declared = exceptions.get(rule) or ()
    if isinstance(declared, str):
        return declared
    if isinstance(declared, Allow):
        declared = [declared]
    for allow in cast(Sequence[Allow], declared):
        if allow.matches(dialect, statement):
            return allow.why
    return ""


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
        columns: dict[str, set[str]] = {}  # the tables so far, in run order
        for revision, sql in tree.render(dialect).items():
            branch, exceptions = revisions[revision]
            for rule, why, statement in check(sql, branch, dialect, columns):
                allowed = allowed_by(exceptions, rule, dialect, statement)
                findings.append(
                    Finding(
                        tree.name,
                        revision,
                        branch,
                        dialect,
                        rule,
                        statement,
                        why,
                        allowed or None,
                    )
                )
    return findings


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if not f.allowed]


def check(
    sql: str,
    branch: str,
    dialect: str,
    columns: dict[str, set[str]] | None = None,
) -> list[tuple[str, str, str]]:
    """``(rule, why, statement)`` for each offending statement of one revision.

    ``columns`` holds each table's columns as the revisions before left them
    and is brought up to date; a table it does not know is taken on trust.
    """
    columns = {} if columns is None else columns
    created: set[str] = set()
    rebuilt: set[str] = set()  # tables whose copy replaces them
    found = []
    for statement in statements(sql):
        if SKIPPED.match(statement):
            continue
        new_table = CREATE_TABLE.match(statement)
        rebuild = new_table and _rebuilt_table(new_table.group(1))
        if rebuild:
            rebuilt.add(rebuild)
            kept = _columns_of(statement)
            left_out = sorted(columns.get(rebuild, kept) - kept)
            columns[rebuild] = kept
            if branch == EXPAND and left_out:
                why = f"table rebuilt without {', '.join(left_out)}"
                found.append((DROP_IN_EXPAND, why, statement))
            new_table = None  # a copy of an existing table, not a new one
        elif new_table:
            created.add(new_table.group(1).lower())
            columns[new_table.group(1).lower()] = _columns_of(statement)
        _follow_columns(statement, columns)
        if branch == EXPAND and _drops(statement, rebuilt):
            found.append((DROP_IN_EXPAND, "expand must only add", statement))
        if branch == CONTRACT and CREATES.match(statement) and not rebuild:
            found.append((CREATE_IN_CONTRACT, "contract must only remove", statement))
        table = TABLE_OF.match(statement)
        on_new_table = table and (table.group(1) or table.group(2)).lower() in created
        if on_new_table or new_table:
            continue
        for pattern, why in BACKENDS[dialect].blocking_ddl:
            if re.match(pattern, statement, _I):
                found.append((BLOCKING_DDL, why, statement))
                break
    return found


def _drops(statement: str, rebuilt: set[str]) -> bool:
    """Whether ``statement`` takes something from old nodes.

    Not a relaxation, and not the ``DROP TABLE t`` / ``ALTER TABLE
    _alembic_tmp_t RENAME TO t`` that swap in a rebuilt table (what the
    rebuild left out is found at its ``CREATE TABLE``).
    """
    if not DROPS.match(statement) or RELAXATION.match(statement):
        return False
    words = statement.replace('"', "").replace("`", "").lower().split()
    swaps_in = words[:2] == ["alter", "table"] and _rebuilt_table(words[2])
    drops_original = words[:2] == ["drop", "table"] and words[-1] in rebuilt
    return not (swaps_in in rebuilt or drops_original)


def _rebuilt_table(name: str) -> str:
    """The table a batch-mode copy named ``name`` replaces ('' for none)."""
    name = name.lower()
    return name[len(REBUILD) :] if name.startswith(REBUILD) else ""


def _columns_of(create_table: str) -> set[str]:
    """The column names of a ``CREATE TABLE`` statement."""
    body = create_table[create_table.index("(") + 1 : create_table.rindex(")")]
    names, depth, item = set(), 0, ""
    for char in body + ",":
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            first = item.split()[0].strip('`"') if item.split() else ""
            if first and first.upper() not in NOT_A_COLUMN:
                names.add(first.lower())
            item = ""
        else:
            item += char
    return names


def _follow_columns(statement: str, columns: dict[str, set[str]]) -> None:
    """Bring ``columns`` up to date with an ``ALTER TABLE`` that adds or
    drops a column of a table it knows."""
    for pattern, change in ((ADD_COLUMN, set.add), (DROP_COLUMN, set.discard)):
        match = pattern.match(statement)
        if (
            match
            and match.group(1).lower() in columns
            and match.group(2).upper() not in NOT_A_COLUMN
        ):
            change(columns[match.group(1).lower()], match.group(2).lower())


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
