"""The lint reads each revision as each backend would run it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rpccompat.db import lint
from rpccompat.db.tree import FRAMEWORK, MigrationTree
from rpccompat.testing import check_migrations
from rpccompat_demo import schema

BASE = """
import sqlalchemy as sa
from alembic import op
revision = "base_expand"
down_revision = None
branch_labels = ("expand",)
depends_on = None
def upgrade():
    op.create_table("t", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("c", sa.String(10)))
"""
IMPORTS = (
    "import sqlalchemy as sa\nfrom alembic import op\nfrom rpccompat.db import ddl\n"
)
CONTRACT_ROOT = """
revision = "base_contract"
down_revision = None
branch_labels = ("contract",)
depends_on = "base_expand"
def upgrade():
    pass
"""


def make_tree(tmp_path: Path, expand: str = "", contract: str = "") -> MigrationTree:
    """A tree with one table, plus one expand and one contract revision."""
    (tmp_path / "base_expand.py").write_text(BASE)
    (tmp_path / "base_contract.py").write_text(CONTRACT_ROOT)
    heads = {"EXPAND_HEAD": "base_expand", "CONTRACT_HEAD": "base_contract"}
    if expand:
        (tmp_path / "next_expand.py").write_text(
            IMPORTS + 'revision = "next_expand"\ndown_revision = "base_expand"\n'
            "branch_labels = None\ndepends_on = None\n" + textwrap.dedent(expand)
        )
        heads["EXPAND_HEAD"] = "next_expand"
    if contract:
        (tmp_path / "next_contract.py").write_text(
            IMPORTS + 'revision = "next_contract"\ndown_revision = "base_contract"\n'
            'branch_labels = None\ndepends_on = "next_expand"\n'
            + textwrap.dedent(contract)
        )
        heads["CONTRACT_HEAD"] = "next_contract"
    for name, head in heads.items():
        (tmp_path / name).write_text(head + "\n")
    return MigrationTree("linted", tmp_path)


def rules(findings, dialect=None, allowed=False):
    return sorted(
        {
            (f.revision, f.rule)
            for f in findings
            if (dialect is None or f.dialect == dialect) and bool(f.allowed) == allowed
        }
    )


def test_the_shipped_trees_are_clean():
    assert check_migrations(schema.GAMMA_TREE) == []
    assert check_migrations(schema.TREE) == []
    assert check_migrations(FRAMEWORK) == []


def test_a_drop_in_expand_fails_on_every_backend(tmp_path):
    tree = make_tree(
        tmp_path,
        expand="""
        def upgrade():
            op.drop_column("t", "c")
        """,
    )
    findings = lint.lint(tree)
    for dialect in ("sqlite", "mysql", "postgresql"):
        assert ("next_expand", "drop-in-expand") in rules(findings, dialect)


def test_relaxing_a_column_in_expand_is_no_finding_on_any_backend(tmp_path):
    tree = make_tree(
        tmp_path,
        expand="""
        def upgrade():
            ddl.drop_not_null("t", "c")
        """,
    )
    assert lint.lint(tree) == []


@pytest.mark.parametrize(
    "sql",
    [
        "/* why */ ALTER TABLE t DROP COLUMN c",
        "-- why\nALTER TABLE t DROP COLUMN c",
        "SET lock_timeout = 0; DROP TABLE t",
        "TRUNCATE t",
        "truncate table t",
        "alter   table\n  t\tdrop column c",
    ],
)
def test_a_drop_is_read_as_one_however_it_is_written(tmp_path, sql):
    tree = make_tree(tmp_path, expand=f"def upgrade():\n    op.execute({sql!r})\n")
    findings = lint.lint(tree)
    for dialect in ("sqlite", "mysql", "postgresql"):
        assert ("next_expand", "drop-in-expand") in rules(findings, dialect)


def test_a_create_in_contract_fails(tmp_path):
    tree = make_tree(
        tmp_path,
        expand="def upgrade():\n    pass\n",
        contract="""
        def upgrade():
            op.create_table("u", sa.Column("id", sa.Integer, primary_key=True))
        """,
    )
    assert ("next_contract", "create-in-contract") in rules(lint.lint(tree))


@pytest.mark.parametrize(
    "dialect, upgrade",
    [
        ("postgresql", 'op.create_index("ix_t_c", "t", ["c"])'),
        ("postgresql", 'op.alter_column("t", "c", type_=sa.String(20))'),
        (
            "postgresql",
            'op.add_column("t", sa.Column("at", sa.DateTime, '
            'server_default=sa.text("now()")))',
        ),
        ("mysql", 'op.create_index("ix_t_c", "t", ["c"])'),
        ("mysql", 'op.add_column("t", sa.Column("d", sa.String(5)))'),
        (
            "sqlite",
            'with op.batch_alter_table("t", recreate="always", copy_from=sa.Table('
            '"t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), '
            'sa.Column("c", sa.String(10)))) as b:\n'
            '        b.alter_column("c", type_=sa.String(20))',
        ),
    ],
)
def test_blocking_ddl_is_flagged_per_backend(tmp_path, dialect, upgrade):
    tree = make_tree(tmp_path, expand=f"def upgrade():\n    {upgrade}\n")
    assert ("next_expand", "blocking-ddl") in rules(lint.lint(tree, [dialect]))


def test_the_online_ddl_helpers_pass_where_plain_alembic_is_flagged(tmp_path):
    tree = make_tree(
        tmp_path,
        expand="""
        def upgrade():
            ddl.add_column("t", sa.Column("d", sa.String(5)))
            ddl.create_index("ix_t_c", "t", ["c"])
        """,
    )
    assert lint.errors(lint.lint(tree)) == []


def test_a_declared_exception_is_allowed_with_its_reason(tmp_path):
    tree = make_tree(
        tmp_path,
        expand="""
        lint_exceptions = {"drop-in-expand": "c was never read by any release"}
        def upgrade():
            ddl.drop_column("t", "c")
        """,
    )
    findings = lint.lint(tree)
    assert lint.errors(findings) == []
    allowed = [f for f in findings if f.allowed]
    assert allowed and all("never read" in f.allowed for f in allowed)
    assert "allowed: c was never read" in str(allowed[0])


def test_check_migrations_reports_stale_head_files_and_missing_releases(tmp_path):
    make_tree(
        tmp_path,
        expand="def upgrade():\n    pass\n",
        contract="def upgrade():\n    pass\n",
    )
    (tmp_path / "EXPAND_HEAD").write_text("base_expand\n")
    with_history = MigrationTree("linted", tmp_path, history=schema.beta.HISTORY)
    problems = check_migrations(with_history)
    assert any("EXPAND_HEAD says base_expand" in p for p in problems), problems
    assert any("next_contract declares no requires_release" in p for p in problems)
    assert any("next_expand declares no serves_release" in p for p in problems)


COPY_OF_T = (
    'copy_from=sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer, '
    'primary_key=True), sa.Column("c", sa.String(10), nullable=False))'
)


def test_relaxing_not_null_is_not_a_drop_on_any_backend(tmp_path):
    """PostgreSQL's DROP NOT NULL, MySQL's MODIFY ... NULL and SQLite's
    rebuild by copying take nothing from old nodes."""
    tree = make_tree(
        tmp_path,
        expand=f"""
        def upgrade():
            if op.get_context().dialect.name == "sqlite":
                with op.batch_alter_table("t", {COPY_OF_T}) as batch:
                    batch.alter_column("c", existing_type=sa.String(10), nullable=True)
            else:
                op.alter_column("t", "c", existing_type=sa.String(10), nullable=True)
        """,
    )
    findings = lint.lint(tree)
    assert {f.dialect for f in findings if f.rule == "blocking-ddl"} >= {"sqlite"}
    assert [f for f in findings if f.rule == "drop-in-expand"] == []


def test_a_rebuild_that_leaves_a_column_out_is_a_drop(tmp_path):
    tree = make_tree(
        tmp_path,
        expand=f"""
        def upgrade():
            with op.batch_alter_table("t", {COPY_OF_T}) as batch:
                batch.drop_column("c")
        """,
    )
    drops = [f for f in lint.lint(tree, ["sqlite"]) if f.rule == "drop-in-expand"]
    assert [f.why for f in drops] == ["table rebuilt without c"]


def test_an_exception_for_one_statement_still_fails_a_drop_beside_it(tmp_path):
    tree = make_tree(
        tmp_path,
        expand="""
        from rpccompat.db.lint import Allow
        lint_exceptions = {
            "drop-in-expand": Allow("x was never released", statement=r"\\bx\\b"),
            "blocking-ddl": Allow("t is tiny on SQLite", dialects=("sqlite",)),
        }
        def upgrade():
            ddl.add_column("t", sa.Column("x", sa.Integer))
            op.drop_column("t", "x")
            op.drop_column("t", "c")
        """,
    )
    findings = lint.lint(tree)
    errors = {(f.dialect, f.rule, f.statement) for f in lint.errors(findings)}
    for dialect in ("sqlite", "mysql", "postgresql"):
        drops = {
            s for d, rule, s in errors if d == dialect and rule == "drop-in-expand"
        }
        assert drops and all(s.endswith("DROP COLUMN c") for s in drops), errors
    assert not any(d == "sqlite" and r == "blocking-ddl" for d, r, _ in errors)
    assert any(d == "mysql" and r == "blocking-ddl" for d, r, _ in errors)
    allowed = [f for f in findings if f.allowed and f.rule == "drop-in-expand"]
    assert allowed and all(f.statement.endswith("DROP COLUMN x") for f in allowed)
