"""An expand, contract or sync stopped at any statement completes when run again.

MariaDB commits each DDL statement on its own and PostgreSQL's concurrent
index builds commit the revision's transaction, so a run interrupted part-way
leaves some changes made and the revision not recorded.  Here each command is
interrupted (Ctrl-C, as a KeyboardInterrupt raised before the Nth statement
that changes something) for every N until it runs through, on rpccompat's own
tree and the sample's; each time it must exit 130 with one line, and the same
command run again must leave the schema an uninterrupted run leaves.
"""

from __future__ import annotations

import contextlib
import random
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat.db import FRAMEWORK
from rpccompat.db.sync import installed_triggers
from rpccompat.manage import Manage
from rpccompat.manage.cli import INTERRUPTED
from rpccompat.testing import scratch_database
from rpccompat_demo import schema
from tests.conftest import write_config
from tests.db import insert_alpha_volumes
from tests.db.test_lint import make_tree

# Statements that change the schema or the recorded versions: the boundaries
# where an interruption leaves something different behind.  Reads between
# them are no new boundary.
CHANGES = re.compile(r"^\s*(CREATE|ALTER|DROP|INSERT|UPDATE|DELETE)\b", re.I)


def expanded_and_migrated(engine: sa.Engine) -> None:
    database = schema.install_mixed_period(engine)
    insert_alpha_volumes(engine, {"v1": "one", "v2": None})
    database.migrate()


def empty(engine: sa.Engine) -> None:
    pass


# Between them, every revision of rpccompat's tree and the sample's.
STARTS: dict[str, Callable[[sa.Engine], Any]] = {
    "expand": empty,  # both trees' expand branches, triggers included
    "contract": expanded_and_migrated,
}


class Interrupt:
    """Ctrl-C before the ``after``+1-th changing statement of the main thread."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.seen = 0
        self.fired = False

    def __call__(self, conn, cursor, statement: str, *args: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # a watcher of index builds, not the migration
        if self.fired or not CHANGES.match(statement):
            return
        self.seen += 1
        if self.seen > self.after:
            self.fired = True
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupting(after: int) -> Iterator[Interrupt]:
    hook = Interrupt(after)
    sa.event.listen(sa.Engine, "before_cursor_execute", hook)
    try:
        yield hook
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", hook)


def manage(config: Path, command: str, capsys, trees=None) -> tuple[int, str]:
    capsys.readouterr()
    code = Manage(trees=trees).main(["--config-file", str(config), "db", command])
    return code, capsys.readouterr().err


def snapshot(engine: sa.Engine) -> dict[str, Any]:
    """Every table's columns (type, nullability), keys, indexes, foreign keys
    and triggers, the recorded versions, and PostgreSQL's invalid indexes."""
    inspector = sa.inspect(engine)
    dialect = engine.dialect
    tables: dict[str, Any] = {}
    with engine.connect() as conn:
        for table in sorted(inspector.get_table_names()):
            tables[table] = {
                "columns": [
                    (c["name"], str(c["type"].compile(dialect)), c["nullable"])
                    for c in inspector.get_columns(table)
                ],
                "primary_key": inspector.get_pk_constraint(table)[
                    "constrained_columns"
                ],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(table)
                ),
                "unique": sorted(
                    (u["name"], tuple(u["column_names"]))
                    for u in inspector.get_unique_constraints(table)
                ),
                "foreign_keys": sorted(
                    (fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"])
                    for fk in inspector.get_foreign_keys(table)
                ),
                "triggers": sorted(installed_triggers(conn, table)),
            }
            if table.endswith("alembic_version"):
                rows = conn.execute(sa.text(f"SELECT version_num FROM {table}"))
                tables[table]["versions"] = sorted(rows.scalars())
        if dialect.name == "postgresql":
            invalid = "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
            tables["(invalid indexes)"] = conn.exec_driver_sql(invalid).scalar()
    return tables


@contextlib.contextmanager
def fresh(db_url: str, tmp_path: Path, start: Callable[[sa.Engine], Any]):
    """A new database on db_url's server, set up by ``start``; its config file."""
    with scratch_database(db_url) as url:
        engine = dbengine.create_engine(url)
        try:
            start(engine)
            rendered = url.render_as_string(hide_password=False)
            yield engine, write_config(tmp_path / "volumes.conf", rendered)
        finally:
            engine.dispose()


def reference(
    db_url: str, tmp_path: Path, command: str, start, capsys, trees=None
) -> tuple[dict, int]:
    """The schema ``command`` leaves when nothing interrupts it, and how many
    changing statements it ran."""
    with fresh(db_url, tmp_path, start) as (engine, config):
        with interrupting(sys.maxsize) as counter:
            assert manage(config, command, capsys, trees)[0] == 0
        return snapshot(engine), counter.seen


def interrupted_then_run_again(
    db_url: str, tmp_path: Path, command: str, start, after: int, capsys, trees=None
) -> dict | None:
    """The schema after ``command`` was interrupted before its ``after``+1-th
    changing statement and run again; None if it has no such statement."""
    with fresh(db_url, tmp_path, start) as (engine, config):
        with interrupting(after) as hook:
            code, err = manage(config, command, capsys, trees)
        if not hook.fired:
            assert code == 0, err
            return None
        assert code == INTERRUPTED, f"after {after} statements: {err}"
        assert err == (
            f"rpccompat-manage: db {command} interrupted before it finished; run "
            f"rpccompat-manage db {command} again to complete it\n"
        )
        code, err = manage(config, command, capsys, trees)
        assert code == 0, f"re-run after {after} statements: {err}"
        return snapshot(engine)


def interrupt_at_every_statement(
    db_url: str, tmp_path: Path, command: str, start, capsys, trees=None
) -> None:
    expected, _ = reference(db_url, tmp_path, command, start, capsys, trees)
    after = 0
    while (
        schema_then := interrupted_then_run_again(
            db_url, tmp_path, command, start, after, capsys, trees
        )
    ) is not None:
        assert schema_then == expected, f"interrupted after {after} statements"
        after += 1
    assert after > 2, "the command changed almost nothing: is the hook seen?"


@pytest.mark.parametrize("command", sorted(STARTS))
def test_a_command_interrupted_at_any_statement_completes_when_run_again(
    command, db_url, tmp_path, capsys
):
    interrupt_at_every_statement(db_url, tmp_path, command, STARTS[command], capsys)


# Every operation of rpccompat.db.ddl the sample does not use.  SQLite cannot
# add a foreign key to a table that exists.
EVERY_OPERATION = {
    "expand": """
        def upgrade():
            ddl.create_table(  # a key declared apart: NOT NULL all the same
                "parent", sa.Column("id", sa.Integer), sa.PrimaryKeyConstraint("id")
            )
            ddl.add_column("t", sa.Column("parent_id", sa.Integer))
            ddl.create_index("ix_t_parent", "t", ["parent_id"])
            ddl.create_index("ix_t_c", "t", ["c"], unique=True)
            ddl.add_foreign_key("fk_t_parent", "t", ["parent_id"], "parent", ["id"])
        """,
    "contract": """
        def upgrade():
            ddl.drop_index("ix_t_c", "t")
            ddl.drop_column("t", "c")
        """,
}


@pytest.mark.parametrize("db_url", ["mysql", "postgresql"], indirect=True)
def test_every_ddl_operation_interrupted_at_any_statement_completes_when_run_again(
    db_url, tmp_path, capsys
):
    (tmp_path / "tree").mkdir()
    tree = make_tree(tmp_path / "tree", **EVERY_OPERATION)

    def base(engine: sa.Engine) -> None:
        with engine.connect() as conn:
            FRAMEWORK.upgrade(conn, "heads")
            tree.upgrade(conn, "base_contract")

    interrupt_at_every_statement(db_url, tmp_path, "sync", base, capsys, [tree])


def test_sync_interrupted_at_a_random_statement_completes_when_run_again(
    db_url, tmp_path, capsys
):
    """``db sync`` runs the same operations without triggers, and the data
    migrations; one boundary of it, chosen by a seed printed on failure."""
    expected, statements = reference(db_url, tmp_path, "sync", empty, capsys)
    seed = random.randrange(2**32)
    after = random.Random(seed).randrange(statements)
    got = interrupted_then_run_again(db_url, tmp_path, "sync", empty, after, capsys)
    assert got == expected, f"seed {seed}: interrupted after {after} statements"


def test_an_index_left_invalid_by_an_interrupted_build_is_built_again(
    postgresql_url, tmp_path, capsys
):
    with fresh(postgresql_url, tmp_path, schema.install_alpha) as (engine, config):
        insert_alpha_volumes(engine, {"v1": "same", "v2": "same"})
        assert manage(config, "expand", capsys)[0] == 0
        expected = snapshot(engine)
    with fresh(postgresql_url, tmp_path, schema.install_alpha) as (engine, config):
        insert_alpha_volumes(engine, {"v1": "same", "v2": "same"})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ALTER TABLE volumes ADD COLUMN name VARCHAR(255)")
            conn.exec_driver_sql("UPDATE volumes SET name = display_name")
            # Fails on the duplicates and leaves ix_volumes_name INVALID, as a
            # build cancelled by Ctrl-C or by its budget does.
            with pytest.raises(sa.exc.IntegrityError):
                conn.exec_driver_sql(
                    "CREATE UNIQUE INDEX CONCURRENTLY ix_volumes_name ON volumes (name)"
                )
        assert manage(config, "expand", capsys)[0] == 0
        assert snapshot(engine) == expected


def test_a_column_there_with_another_type_is_an_error_not_accepted(
    db_url, tmp_path, capsys
):
    with fresh(db_url, tmp_path, schema.install_alpha) as (engine, config):
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE volumes ADD COLUMN name INTEGER")
        code, err = manage(config, "expand", capsys)
    assert code == 1
    assert err.count("\n") == 1, err
    assert "volumes.name exists as INTEGER" in err
    assert "this revision declares VARCHAR(255)" in err
