"""``db ...`` on each backend: the output, the JSON and every exit code."""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from rpccompat.db import Check, MigrationTree, data
from rpccompat.manage import BAD_INPUT, ERROR, Manage
from rpccompat.manage.db import totals_table
from rpccompat_demo import schema
from tests.db import insert_alpha_volumes
from tests.db.test_lint import make_tree
from tests.manage.conftest import Operator, report


def test_a_tool_the_commands_are_mounted_in_is_the_one_every_blocker_names(
    engine, operator
):
    """The operator of ``volumes-manage`` has no ``rpccompat-manage``."""
    report(engine, "node-1", "alpha")
    mounted = Manage(prog="volumes-manage", project="volumes")
    assert operator("db", "expand", manage=mounted).code == 0
    run = operator("db", "check", "--json", manage=mounted)
    commands = [b["command"] for b in run.json()["blockers"]]
    assert commands == [
        "volumes-manage db migrate",
        "volumes-manage service remove volume node-1",
    ]
    refused = operator("db", "contract", manage=mounted)
    assert "to clear: volumes-manage db migrate" in refused.err
    assert "rpccompat-manage" not in refused.err
    assert operator("db", "migrate", manage=mounted).code == 0
    run = operator("db", "check", manage=mounted)
    assert run.code == Check.CONTRACT_BLOCKED
    assert (
        "upgrade it to beta, or if it is gone: volumes-manage service remove "
        "volume node-1" in run.out
    )
    checked = operator("upgrade", "check", manage=mounted)
    assert "volumes-manage upgrade check" in checked.out
    assert "rpccompat-manage" not in run.out + checked.out


def copied_tree(tmp_path) -> MigrationTree:
    """The sample's whole tree, its revisions in a folder of the test's own."""
    versions = tmp_path / "versions"
    shutil.copytree(
        schema.GAMMA_TREE.versions,
        versions,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return dataclasses.replace(schema.GAMMA_TREE, versions=versions)


def test_a_scaffolded_revision_pair_follows_the_heads_and_applies(
    engine, operator, tmp_path
):
    """The next expand and contract revisions of the sample's own tree, as a
    developer starts them, then applied by the operator's steps."""
    tree = copied_tree(tmp_path)
    mounted = Manage(prog="volumes-manage", trees=[tree])

    run = operator(
        "db", "revision", "--expand", "-m", "add a tag", "--json", manage=mounted
    )
    assert run.code == 0, run.err
    expand = run.json()["path"]
    run = operator(
        "db", "revision", "--contract", "-m", "drop the old tag", manage=mounted
    )
    assert run.code == 0, run.err
    contract = run.out.split(" written to ")[1].strip()

    new_expand, new_contract = (
        tree.revisions(branch)[-1] for branch in ("expand", "contract")
    )
    assert (new_expand.path, new_contract.path) == (expand, contract)
    assert new_expand.down_revision == "gamma_expand"
    assert tree.serves_release(new_expand) == "gamma"
    assert new_contract.down_revision == "gamma_contract"
    assert new_contract.dependencies == new_expand.revision
    assert tree.requires_release(new_contract) == "gamma"
    assert tree.problems() == []  # head files name the new heads
    assert "add a tag" in (tree.versions / expand).read_text()

    assert operator("db", "expand", manage=mounted).code == 0
    assert operator("db", "migrate", manage=mounted).code == 0
    assert operator("db", "contract", manage=mounted).code == 0
    assert versions_of(operator, mounted)["volumes"] == (
        new_expand.revision,
        new_contract.revision,
    )


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--expand", "--contract"], "give one of --expand and --contract"),
        ([], "give one of --expand and --contract"),
        (["--expand", "--release", "omega"], "no release 'omega'"),
    ],
)
def test_a_revision_that_cannot_be_scaffolded_is_one_line_and_writes_nothing(
    operator, tmp_path, argv, says
):
    tree = copied_tree(tmp_path)
    mounted = Manage(trees=[tree])
    before = sorted(p.name for p in tree.versions.iterdir())
    run = operator("db", "revision", "-m", "x", *argv, manage=mounted)
    assert run.code == BAD_INPUT and says in run.err, run.err
    assert run.err.count("\n") == 1
    assert sorted(p.name for p in tree.versions.iterdir()) == before


def cells(table: str) -> list[list[str]]:
    """The rows of a printed table, as their cells."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("|")
    ]


def test_the_totals_table_shows_each_migration_and_its_state():
    running = data.Totals("volumes", "beta", "backfill_x", found=2000, done=1500)
    running.seconds = 0.5
    failed = data.Totals("volumes", "alpha", "cleanup", error="RuntimeError: boom")
    header, *rows = cells(totals_table([running, failed]).get_string())
    assert header == [
        "Migration", "Release", "Found", "Done", "Batches", "Rows/s", "State"
    ]  # fmt: skip
    assert rows == [
        ["volumes/backfill_x", "beta", "2000", "1500", "0", "4,000", "more to do"],
        ["volumes/cleanup", "alpha", "0", "0", "0", "0", "error: RuntimeError: boom"],
    ]


def versions_of(operator, manage=None) -> dict[str, tuple[str, str]]:
    status = operator("db", "version", "--json", manage=manage).json()
    return {v["tree"]: (v["expand"], v["contract"]) for v in status["versions"]}


def test_a_rolling_upgrade_step_by_step(engine, operator):
    insert_alpha_volumes(engine, {f"v{i}": f"name-{i}" for i in range(30)})
    report(engine, "node-1", "alpha")

    run = operator("db", "check")
    assert run.code == Check.EXPAND_NEEDED
    assert run.out.startswith("expand needed: rpccompat-manage db expand")
    status = operator("db", "version", "--json").json()
    assert (status["phase"], status["code"]) == ("E", 3)
    assert versions_of(operator)["volumes"] == ("alpha_expand", "alpha_contract")
    assert operator("db", "contract").code == Check.EXPAND_NEEDED

    run = operator("db", "expand")
    assert run.code == 0, run.err
    assert versions_of(operator)["volumes"] == ("beta_expand", "alpha_contract")
    run = operator("db", "check", "--json")
    assert run.code == Check.MIGRATIONS_PENDING
    assert run.json()["pending_migrations"] == ["volumes/backfill_volumes_name_sync"]
    refused = operator("db", "contract")
    assert refused.code == Check.MIGRATIONS_PENDING
    assert "to clear: rpccompat-manage db migrate" in refused.err

    run = operator("db", "migrate", "--batch-size", "7")
    assert run.code == 0, run.err
    header, row = cells(run.out)
    assert header[:3] == ["Migration", "Release", "Found"]
    assert row[:3] == ["volumes/backfill_volumes_name_sync", "beta", "30"]
    assert row[-1] == "complete"

    run = operator("db", "check")
    assert run.code == Check.CONTRACT_BLOCKED
    assert "volume@node-1 runs alpha (up)" in run.out
    refused = operator("db", "contract")
    assert refused.code == Check.CONTRACT_BLOCKED
    assert refused.err.startswith("contract refused: 1 blocker(s):")
    assert "rpccompat-manage service remove volume node-1" in refused.err
    assert versions_of(operator)["volumes"] == ("beta_expand", "alpha_contract")

    assert operator("service", "remove", "volume", "node-1").code == 0
    run = operator("db", "check")
    assert run.code == Check.CONTRACT_NEEDED
    assert run.out == "contract needed and allowed: rpccompat-manage db contract\n"
    run = operator("db", "contract")
    assert run.code == 0, run.err
    assert versions_of(operator)["volumes"] == ("beta_expand", "beta_contract")
    assert operator("db", "check").code == Check.UP_TO_DATE
    assert operator("db", "version", "--json").json()["phase"] is None


def test_online_data_migrations_in_passes(engine, operator):
    assert operator("db", "expand").code == 0
    insert_alpha_volumes(engine, {f"v{i:02}": f"name-{i}" for i in range(25)})
    codes = []
    for _ in range(5):
        run = operator("db", "online_data_migrations", "--max-count", "10", "--json")
        codes.append(run.code)
        if run.code == 0:
            break
    assert codes == [1, 1, 0]  # 10 rows, 10 rows, then the last 5 and the end
    assert operator("db", "online-data-migrations", "--max-count", "0").code == (
        BAD_INPUT
    )
    assert operator("db", "migrate", "--batch-size", "0").code == BAD_INPUT


@pytest.mark.parametrize("db_url", ["sqlite", "mysql", "postgresql"], indirect=True)
def test_sync_is_the_offline_path(db_url, operator):
    run = operator("db", "sync")
    assert run.code == 0, run.err
    assert versions_of(operator)["volumes"] == ("beta_expand", "beta_contract")
    assert operator("db", "check").code == Check.UP_TO_DATE


def test_sync_stops_before_contract_and_says_which_data_migration_failed(
    engine, operator
):
    """Contract would only be refused for the rows the migration left; the
    error is what the operator needs."""

    def broken(context: data.DataContext, max_count: int) -> tuple[int, int]:
        raise RuntimeError("boom: no such column")

    migrations = data.DataMigrations()
    migrations.add("beta", broken)
    tree = dataclasses.replace(schema.TREE, data_migrations=migrations)
    mounted = Manage(trees=[tree])
    run = operator("db", "sync", manage=mounted)
    assert run.code == ERROR, run.err
    assert "volumes/broken" in run.out
    assert "error: RuntimeError: boom: no such column" in run.out
    assert versions_of(operator, mounted)["volumes"] == (
        "beta_expand",
        "alpha_contract",
    )


def test_sync_is_refused_while_an_old_node_is_up(engine, operator):
    report(engine, "node-1", "alpha")
    before = versions_of(operator)
    refused = operator("db", "sync")
    assert refused.code == Check.CONTRACT_BLOCKED
    assert "volume@node-1 runs alpha (up)" in refused.err
    assert versions_of(operator) == before  # nothing half-done


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_lint_passes_the_sample_and_fails_a_drop_in_expand(operator, tmp_path):
    run = operator("db", "lint")
    assert run.code == 0, run.out
    assert run.out.splitlines()[-1].startswith("0 error(s)")

    (tmp_path / "bad").mkdir()
    bad = make_tree(
        tmp_path / "bad", expand='def upgrade():\n    op.drop_column("t", "c")\n'
    )
    mounted = Manage(prog="linted-manage", trees=[bad])
    run = operator("db", "lint", "--dialect", "postgresql", "--json", manage=mounted)
    assert run.code == ERROR
    rules = {(f["rule"], f["dialect"]) for f in run.json()["findings"]}
    assert ("drop-in-expand", "postgresql") in rules
    assert {f["dialect"] for f in run.json()["findings"]} == {"postgresql"}


def test_migrations_are_refused_before_expand(engine, operator):
    """Finding nothing on the old shape must not mark a backfill complete:
    rows the old release wrote before the triggers would never be converted."""
    for argv in (["db", "migrate"], ["db", "online_data_migrations"]):
        run = operator(*argv)
        assert run.code == 2
        assert "volumes is not expanded yet: run rpccompat-manage db expand" in run.err
    # Mounted in a service's own tool, the command is that tool's.
    run = operator("db", "migrate", manage=Manage(prog="volumes-manage"))
    assert "volumes is not expanded yet: run volumes-manage db expand" in run.err
    assert operator("db", "check", "--json").json()["pending_migrations"] == [
        "volumes/backfill_volumes_name_sync"
    ]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_empty_database_is_told_to_sync(db_url, operator):
    run = operator("db", "check")
    assert run.code == Check.EXPAND_NEEDED
    assert run.out.startswith("empty database: rpccompat-manage db sync installs it")
    assert operator("upgrade", "check").code == 255  # no services table to read


def test_a_config_without_the_projects_tree_is_an_error_not_up_to_date(
    engine, operator, tmp_path, capsys
):
    """Half way through an upgrade of ``volumes``, with a config that names no
    tree: each command says which tree and which option, and changes nothing."""
    assert operator("db", "expand").code == 0
    config = tmp_path / "no-trees.conf"
    config.write_text(operator.config.read_text().replace("migration_trees", "#"))
    partial = Operator(config, capsys)
    for argv, code in [
        (["db", "check"], ERROR),
        (["db", "version"], ERROR),
        (["db", "contract"], ERROR),
        (["db", "expand"], ERROR),
        (["db", "migrate"], 2),
        (["db", "online_data_migrations", "--max-count", "5"], 2),
        (["db", "sync"], ERROR),
    ]:
        run = partial(*argv)
        assert run.code == code, (argv, run.out, run.err)
        assert run.err.count("\n") == 1, run.err
        assert "migration tree(s) 'volumes' (table volumes_alembic_version)" in run.err
        assert "[database] migration_trees" in run.err
        assert "contracted" not in run.out and "up to date" not in run.out
    checked = partial("upgrade", "check", "--json")
    assert checked.code == 2
    details = {c["check"]: c["details"] for c in checked.json()["checks"]}
    assert "'volumes' (table volumes_alembic_version)" in details["Contract readiness"]
    assert versions_of(operator)["volumes"] == ("beta_expand", "alpha_contract")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "3601"])
def test_a_lock_timeout_out_of_range_is_bad_input_before_any_change(
    db_url, operator, value
):
    """0 meant "wait forever" on PostgreSQL and "do not wait" on MariaDB."""
    for command in ("expand", "contract", "sync"):
        run = operator("db", command, "--lock-timeout", value)
        assert run.code == BAD_INPUT, (command, run.err)
        assert run.err == (
            "rpccompat-manage: --lock-timeout must be more than 0 and at most "
            f"3600 seconds, not {float(value):g}\n"
        )
    assert versions_of(operator)["volumes"] == (None, None)
    assert operator("db", "expand", "--lock-timeout", "0.25").code == 0


# An open transaction the expand must wait for: on PostgreSQL a snapshot older
# than the index build, which waits for every such transaction to end; on
# MariaDB a read of volumes, whose metadata lock keeps ALTER TABLE waiting.
HOLDERS = {
    "postgresql": ("SELECT 1", "SELECT pg_backend_pid()", "pid"),
    "mysql": ("SELECT * FROM volumes", "SELECT CONNECTION_ID()", "thread"),
}


class StderrLines(threading.Thread):
    """The lines a process writes to stderr, as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.start()

    def run(self) -> None:
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for(self, fragment: str) -> None:
        deadline = time.monotonic() + 60  # only to detect a hang
        while fragment not in "".join(self.seen):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line naming {fragment!r}: {self.seen}"
            with contextlib.suppress(queue.Empty):
                self.seen.append(self.lines.get(timeout=remaining))

    def all(self) -> str:
        self.join(timeout=60)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "".join(self.seen)


@pytest.mark.parametrize("db_url", ["mysql", "postgresql"], indirect=True)
def test_ctrl_c_while_expand_waits_ends_in_one_line_and_running_it_again_completes(
    engine, operator
):
    hold, session_id, session = HOLDERS[engine.dialect.name]
    holder = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    try:
        holder.exec_driver_sql(hold).all()
        holder_id = holder.exec_driver_sql(session_id).scalar()
        expand = subprocess.Popen(
            [sys.executable, "-c", "import sys; from rpccompat.manage import main; "
             "sys.exit(main())", "--config-file", str(operator.config), "db",
             "expand"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        stderr = StderrLines(expand)
        try:
            # Waiting, it says every few seconds for what.
            stderr.wait_for(f"{session} {holder_id} ")
            expand.send_signal(signal.SIGINT)
            code = expand.wait(timeout=60)
        finally:
            expand.kill()
            expand.wait()
    finally:
        holder.close()
    said = stderr.all()
    assert code == 130, said
    assert "Traceback" not in said
    assert said.splitlines()[-1] == (
        "rpccompat-manage: db expand interrupted before it finished; run "
        "rpccompat-manage db expand again to complete it"
    )
    run = operator("db", "expand")
    assert run.code == 0, run.err
    assert versions_of(operator)["volumes"] == ("beta_expand", "alpha_contract")
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("volumes")}
    assert "ix_volumes_name" in indexes
