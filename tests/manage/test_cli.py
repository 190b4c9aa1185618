"""Bad input, unreachable servers, and passwords: what an operator sees."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from rpccompat.manage import BAD_INPUT, ERROR, Manage
from rpccompat.manage.cli import CLOSED_PIPE
from rpccompat.testing import rabbitmqctl
from tests.conftest import write_config
from tests.manage.conftest import Operator, report


def manage(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real command, in its own process: what a terminal shows."""
    return subprocess.run(
        [sys.executable, "-c", "import sys; from rpccompat.manage import main; "
         "sys.exit(main())", *argv],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def console(*argv: str, cwd: Path) -> subprocess.Popen[str]:
    """``rpccompat-manage`` as its console script starts it."""
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; from rpccompat.console import manage; "
         "sys.exit(manage())", *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
    )  # fmt: skip


def test_a_command_that_succeeds_prints_nothing_on_stderr(tmp_path):
    """Not even eventlet's notice, which oslo.messaging's import printed."""
    out, err = console("db", "lint", cwd=tmp_path).communicate(timeout=120)
    assert (out.startswith("0 error(s)"), err) == (True, "")


def test_version_is_the_installed_one_or_the_mounting_tool_s(tmp_path, capsys):
    out, err = console("--version", cwd=tmp_path).communicate(timeout=120)
    assert (out.strip(), err) == (importlib.metadata.version("rpccompat"), "")
    assert Manage(prog="volumes-manage", version="7.1.0").main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "7.1.0"


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["db", "migrate", "--help"], ["db", "contract", "--help"],
     ["db", "revision", "--help"], ["service", "remove", "--help"]],
)  # fmt: skip
def test_help_names_what_to_type_not_internal_names(argv, capsys):
    assert Manage().main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rpccompat-manage")
    assert "ARG_" not in out and "CLI_" not in out, out


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path):
    """``rpccompat-manage ... | head``: no traceback, no 'report it'."""
    with console("db", "lint", cwd=tmp_path) as run:
        run.stdout.close()
        assert (run.stderr.read(), run.wait(timeout=120)) == ("", CLOSED_PIPE)


def error_line(stderr: str) -> str:
    """The last line of stderr, after asserting nothing else but warnings came."""
    lines = [
        line for line in stderr.splitlines() if line.startswith("rpccompat-manage")
    ]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["db", "frobnicate"], "invalid choice: 'frobnicate'"),
        (["service", "remove", "volume"], "the following arguments are required"),
        (["--db-url", "not a url", "db", "check"], "cannot use database URL"),
        (["--db-url", "mysql+nodriver://u:pw@h/db", "db", "check"], "driver"),
    ],
)
def test_bad_input_exits_127_with_one_line(argv, says, tmp_path, capsys):
    operator = Operator(write_config(tmp_path / "c.conf", "sqlite://"), capsys)
    run = operator(*argv)
    assert run.code == BAD_INPUT
    assert says in run.err.splitlines()[-1]
    assert "Traceback" not in run.err and "pw" not in run.err


def test_a_missing_config_file_or_tree_is_bad_input(tmp_path):
    missing = manage("--config-file", str(tmp_path / "nope.conf"), "db", "check")
    assert missing.returncode == BAD_INPUT
    assert "nope.conf" in error_line(missing.stderr)

    config = tmp_path / "c.conf"
    config.write_text("[database]\nconnection = sqlite://\nmigration_trees = nosuch\n")
    unknown = manage("--config-file", str(config), "db", "check")
    assert unknown.returncode == BAD_INPUT
    assert "no migration tree named 'nosuch'" in error_line(unknown.stderr)


@pytest.mark.parametrize("kind", ["directory", "binary"])
def test_a_config_file_that_is_no_text_file_is_bad_input(kind, tmp_path):
    path = tmp_path / "c.conf"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(bytes(range(256)) * 4)
    run = manage("--config-file", str(path), "db", "check", cwd=tmp_path)
    assert run.returncode == BAD_INPUT
    line = error_line(run.stderr)
    assert line.startswith("rpccompat-manage: bad configuration: ")
    assert line.endswith("check the --config-file paths and what they hold")


@pytest.mark.parametrize(
    "argv",
    [["db", "sync"], ["db", "check"], ["service", "list"], ["upgrade", "check"]],
)
def test_without_a_configured_database_a_command_is_bad_input_and_touches_nothing(
    argv, tmp_path
):
    """No implicit ./rpccompat.sqlite: ``db sync`` then ``db check`` used to
    report an up-to-date database that was not the operator's."""
    run = manage(*argv, cwd=tmp_path)
    assert run.returncode == BAD_INPUT
    line = error_line(run.stderr)
    assert "no database configured: [database] connection is not set" in line
    assert "--config-file" in line and "--db-url" in line
    assert list(tmp_path.iterdir()) == []  # no database file made here


def test_lint_needs_no_database(tmp_path):
    run = manage("db", "lint", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1].startswith("0 error(s)")


SECRET = "s3cr3t-7f3a9c"  # fixed: xdist workers must collect the same ids


@pytest.mark.parametrize(
    "url",
    [
        f"mysql+pymysql://root:{SECRET}@127.0.0.1:3306/test",  # wrong password
        f"mysql+pymysql://root:{SECRET}@127.0.0.1:1/test",  # nobody listens
        f"postgresql+psycopg2://postgres:{SECRET}@127.0.0.1:1/test",
    ],
)
def test_an_unreachable_database_is_one_line_without_its_password(url):
    run = manage("--db-url", url, "service", "list")
    assert run.returncode == ERROR
    line = error_line(run.stderr)
    assert line.startswith("rpccompat-manage: cannot use the database at ")
    assert ":***@127.0.0.1" in line and "check that the server runs" in line
    assert SECRET not in run.stdout + run.stderr


def test_an_unreachable_broker_does_not_undo_the_change_nor_show_its_password(
    sqlite_url, tmp_path
):
    config = write_config(tmp_path / "c.conf", sqlite_url)
    assert manage("--config-file", str(config), "db", "sync").returncode == 0
    from rpccompat import engine as dbengine

    engine = dbengine.create_engine(sqlite_url)
    report(engine, "node-1", "alpha")
    engine.dispose()
    run = manage(
        "--config-file", str(config),
        "--transport-url", f"rabbit://guest:{SECRET}@127.0.0.1:1/",
        "service", "force-down", "volume", "node-1",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "volume@node-1 forced down; running processes see it within" in run.stdout
    assert SECRET not in run.stdout + run.stderr


@pytest.mark.parametrize("argv", [["remove"], ["force-down"]])
def test_a_transport_url_that_cannot_work_is_bad_input_and_changes_nothing(
    argv, sqlite_url, tmp_path, capsys
):
    """The row used to be removed and then the command exited 1 "report it"."""
    config = write_config(tmp_path / "c.conf", sqlite_url)
    operator = Operator(config, capsys)
    assert operator("db", "sync").code == 0
    from rpccompat import engine as dbengine

    engine = dbengine.create_engine(sqlite_url)
    report(engine, "node-1", "beta")
    engine.dispose()
    run = operator(
        "--transport-url", f"foo://guest:{SECRET}@127.0.0.1/", "service", *argv,
        "volume", "node-1",
    )  # fmt: skip
    assert run.code == BAD_INPUT, run.err
    line = run.err.splitlines()[-1]
    assert line.startswith("rpccompat-manage: cannot use transport URL "), line
    assert "--transport-url" in line and "report it" not in line
    assert SECRET not in run.out + run.err
    (service,) = operator("service", "list", "--json").json()["services"]
    assert (service["host"], service["forced_down"]) == ("node-1", False)


@pytest.fixture
def rabbit_user(rabbit_url: str) -> str:
    """The test's vhost, reached as a user of its own with a password."""
    user = f"rpccompat-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_user", user, SECRET)
    vhost = rabbit_url.rsplit("/", 1)[1]
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    yield f"rabbit://{user}:{SECRET}@127.0.0.1:5672/{vhost}"
    rabbitmqctl("delete_user", user)


def test_no_command_prints_a_password(postgresql_url, rabbit_user, tmp_path, capsys):
    """Every command, on success, with a password in both URLs (PostgreSQL
    here trusts local connections, so any password gets in)."""
    db_url = postgresql_url.replace("postgres@", f"postgres:{SECRET}@")
    config = write_config(tmp_path / "c.conf", db_url, transport_url=rabbit_user)
    operator = Operator(config, capsys)
    commands = [
        ["db", "lint"], ["db", "check"], ["db", "version", "--json"],
        ["db", "expand"], ["upgrade", "check"], ["db", "migrate"],
        ["db", "online_data_migrations", "--max-count", "5"],
        ["service", "list"], ["service", "list", "--json"],
        ["upgrade", "check", "--json"], ["db", "contract"], ["db", "sync"],
    ]  # fmt: skip
    from rpccompat import engine as dbengine
    from rpccompat_demo import schema

    engine = dbengine.create_engine(db_url)
    schema.install_alpha(engine)
    report(engine, "node-1", "alpha")
    engine.dispose()
    outputs = {}
    commands += [
        ["service", "force-down", "volume", "node-1"],
        ["service", "remove", "volume", "node-1"],
        ["db", "contract"],
    ]
    for argv in commands:
        run = operator(*argv)
        outputs[" ".join(argv)] = run
        assert SECRET not in run.out + run.err, argv
    assert outputs["db contract"].code == 0  # the last one: every step really ran
    announced = outputs["service force-down volume node-1"]
    assert "announced on the control fanout" in announced.out


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["upgrade", "check"], 255),  # oslo.upgradecheck's: 1 is a warning
        (["db", "migrate"], 2),  # 1 is "more to do"
        (["db", "online_data_migrations", "--max-count", "5"], 2),
        (["db", "check"], ERROR),
    ],
)
def test_an_unreachable_server_never_exits_with_a_code_that_means_a_result(argv, code):
    run = manage("--db-url", "postgresql+psycopg2://postgres@127.0.0.1:1/x", *argv)
    assert run.returncode == code
    assert "cannot use the database at" in error_line(run.stderr)


@pytest.mark.parametrize(
    "argv",
    [
        ["--db_url", f"mysql+pymysql://root:{SECRET}@127.0.0.1/db", "db", "check"],
        ["db", "check", "--db-url", f"mysql+pymysql://root:{SECRET}@127.0.0.1/db"],
        [f"mysql+pymysql://root:{SECRET}@127.0.0.1/db", "db", "check"],
        ["--db-url", f"mysql+pymysql:/root:{SECRET}@127.0.0.1/db", "db", "check"],
        ["--db-url", f"root:{SECRET}@127.0.0.1/db", "db", "check"],
        ["--db-url", f"mysql+pymysql://root@127.0.0.1:1/db?password={SECRET}",
         "db", "check"],
        ["--db-url", f"mysql+pymysql://root:p@{SECRET}@127.0.0.1/db", "db", "check"],
        ["--db-url", f"postgresql+psycopg2://postgres:{SECRET}@127.0.0.1:1/x?"
         f"sslmode=nonsense&token={SECRET}", "service", "list"],
        ["--transport-url", f"rabbit://a:{SECRET}@127.0.0.1:1,b:{SECRET}@h:1/",
         "--db-url", "sqlite:///nowhere/at/all.db", "service", "list"],
        ["--config-file", f"rabbit://guest:{SECRET}@127.0.0.1/", "db", "check"],
    ],
)  # fmt: skip
def test_a_mistyped_command_line_is_one_line_without_its_password(argv):
    run = manage(*argv)
    assert run.returncode not in (0, None)
    error_line(run.stderr)
    assert SECRET not in run.stdout + run.stderr
