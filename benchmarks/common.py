"""What every benchmark shares: output, scratch backends, tables, writes, rounds.

Import it before any oslo module: it silences eventlet's deprecation warning,
which oslo.service prints on import, so that stderr carries only progress.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from rpccompat import testing  # noqa: E402
from rpccompat.db.sync import ColumnSync  # noqa: E402
from rpccompat.scrub import scrub  # noqa: E402

if TYPE_CHECKING:
    from rpccompat_demo import beta

T = TypeVar("T")

SERVER_URLS = {
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
    "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
}
# SQLite needs no server: its scratch database is a file in a scratch directory.
SQLITE_URL = "sqlite://"
DEFAULT_RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672"
FILL_CHUNK = 100_000


class BenchError(Exception):
    """A failure worth one line to the operator, not a traceback."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(record: dict[str, Any], human: str) -> None:
    """One JSON line for machines, one line for people, on stdout."""
    print(json.dumps(record), flush=True)
    print(human, flush=True)


# -- running a benchmark -----------------------------------------------------


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like an error, so scratch databases and vhosts go."""
    raise SystemExit(128 + signum)


def run_main(prog: str, body: Callable[[], None]) -> int:
    """Run ``body``; a :class:`BenchError` is one line on stderr and exit 1."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        body()
    except BenchError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


def interleaved(
    rounds: int, variants: Mapping[str, Callable[[], T]]
) -> dict[str, list[T]]:
    """Each variant once per round, the order reversed every other round (ABBA).

    Other load on the machine comes and goes; measured side by side, the
    variants share it, and neither always runs first on a cold cache.
    """
    results: dict[str, list[T]] = {name: [] for name in variants}
    names = list(variants)
    for number in range(rounds):
        for name in names if number % 2 == 0 else reversed(names):
            results[name].append(variants[name]())
    return results


def paired_ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Each round's ratio: the two variants ran next to each other, under the
    same load from the rest of the machine, so the ratio cancels most of it."""
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """First quartile, median, third quartile: the median and how far the
    rounds scattered around it."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, middle, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, middle, high


def sample_volume() -> beta.Volume:
    """The payload of the RPC and object figures: beta's Volume with a child."""
    from rpccompat_demo import beta  # only these figures need the sample service

    return beta.Volume(
        id=str(uuid.uuid4()),
        name="volume-1",
        size=10,
        status="in-use",
        description="a benchmark volume",
        attachment=beta.Attachment(host="compute-1", mountpoint="/dev/vdb", mode="ro"),
    )


# -- backends: arguments and reachability ------------------------------------


def add_backend_args(
    parser: argparse.ArgumentParser, backends: tuple[str, ...]
) -> None:
    parser.add_argument(
        "--backends",
        default=",".join(backends),
        help=f"comma-separated, from {', '.join(backends)} (default: all)",
    )
    for backend in backends:
        if backend in SERVER_URLS:
            parser.add_argument(
                f"--{backend}-url",
                default=SERVER_URLS[backend],
                help="the server to make the scratch database on",
            )


def backend_urls(
    parser: argparse.ArgumentParser, args: argparse.Namespace, backends: tuple[str, ...]
) -> dict[str, str]:
    """The chosen backends' URLs, in the order given; a usage error otherwise."""
    chosen = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not chosen or set(chosen) - set(backends):
        parser.error(f"--backends: choose from {', '.join(backends)}")
    return {b: getattr(args, f"{b}_url", SQLITE_URL) for b in chosen}


def admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def check_reachable(urls: Mapping[str, str]) -> None:
    """Fail in a second, not after another backend's minutes of work."""
    for backend, url in urls.items():
        engine = admin_engine(url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa.exc.DBAPIError as e:
            reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
            raise BenchError(
                f"{backend}: cannot reach {scrub(str(url))}: {reason}"
            ) from e
        finally:
            engine.dispose()


@contextlib.contextmanager
def scratch_database(url: str) -> Iterator[URL]:
    """A database of its own, dropped afterwards whatever happened."""
    with testing.scratch_database(url, prefix="rpccompat_bench") as made:
        log(f"using database {made.database}")
        yield made
    log(f"dropped database {made.database}")


@contextlib.contextmanager
def scratch_vhost(rabbit_url: str) -> Iterator[str]:
    """A RabbitMQ vhost of its own, deleted afterwards whatever happened.

    ``rabbitmqctl`` manages the local broker, so ``rabbit_url`` must point at
    it; the URL yielded is ``rabbit_url`` with the vhost appended.
    """
    try:
        with testing.scratch_vhost(rabbit_url, prefix="rpccompat-bench") as url:
            log(f"created vhost {url.rsplit('/', 1)[1]}")
            check_broker(url)
            yield url
    except testing.RabbitMQError as e:  # making or deleting the vhost
        raise BenchError(f"RabbitMQ: {e}") from None
    log(f"deleted vhost {url.rsplit('/', 1)[1]}")


def check_broker(url: str) -> None:
    """Connect once: a wrong port or password is an error now, not a hang."""
    import kombu  # only the RabbitMQ figures need it

    connection = kombu.Connection(url.replace("rabbit://", "amqp://", 1))
    try:
        connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as e:  # kombu wraps every transport error differently
        raise BenchError(f"RabbitMQ: cannot reach {scrub(str(url))}: {e}") from e
    finally:
        connection.release()


# -- tables and single-row writes --------------------------------------------

OLD, MIXED, NEW = 0, 1, 2  # which release(s) a writer plays


def create_table(
    engine: sa.Engine, table: str, *, with_name: bool, autovacuum: bool = True
) -> None:
    """The demo's ``volumes`` rename, reduced to the columns that matter."""
    name = ", name VARCHAR(255) NULL" if with_name else ""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id INTEGER NOT NULL PRIMARY KEY, "
            f"display_name VARCHAR(255), size INTEGER{name})"
        )
        if engine.dialect.name == "postgresql" and not autovacuum:
            conn.exec_driver_sql(
                f"ALTER TABLE {table} SET (autovacuum_enabled = false)"
            )


def fill_sql(dialect: str, table: str, first: int, last: int) -> str:
    """One set-based INSERT: the server makes the rows, nothing crosses the wire."""
    columns = f"INSERT INTO {table} (id, display_name, size)"
    if dialect == "postgresql":
        return (
            f"{columns} SELECT g, 'volume-' || g, mod(g, 1000) "
            f"FROM generate_series({first}, {last}) AS g"
        )
    if dialect == "sqlite":
        return (
            f"WITH RECURSIVE seq(g) AS (SELECT {first} UNION ALL SELECT g + 1 "
            f"FROM seq WHERE g < {last}) {columns} "
            "SELECT g, 'volume-' || g, g % 1000 FROM seq"
        )
    return (
        f"{columns} SELECT seq, CONCAT('volume-', seq), MOD(seq, 1000) "
        f"FROM seq_{first}_to_{last}"
    )


def fill(engine: sa.Engine, table: str, rows: int) -> None:
    started = last_line = time.monotonic()
    for first in range(1, rows + 1, FILL_CHUNK):
        last = min(rows, first + FILL_CHUNK - 1)
        with engine.begin() as conn:
            conn.exec_driver_sql(fill_sql(engine.dialect.name, table, first, last))
        now = time.monotonic()
        if now - last_line >= 2.0 or last == rows:
            last_line = now
            log(f"  fill {table}: {last:,}/{rows:,} rows ({now - started:.1f} s)")
    analyze(engine, table)


ANALYZE = {
    "postgresql": "VACUUM ANALYZE {table}",
    "mysql": "ANALYZE TABLE {table}",
    "sqlite": "ANALYZE {table}",
}


def analyze(engine: sa.Engine, table: str) -> None:
    """Statistics (and on PostgreSQL hint bits) as a live table would have them."""
    statement = ANALYZE[engine.dialect.name].format(table=table)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(statement).close()


def install_sync(engine: sa.Engine, sync: ColumnSync) -> None:
    with engine.begin() as conn:
        for statement in sync.create_triggers(engine.dialect.name):
            conn.exec_driver_sql(statement)


def count_unconverted(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            f"SELECT count(*) FROM {table} WHERE name IS NULL OR name <> display_name"
        ).scalar_one()


def writer_column(mode: int, turn: int) -> str:
    """Alpha writes display_name, beta name; while both run, they alternate."""
    if mode == OLD or (mode == MIXED and turn % 4 < 2):
        return "display_name"
    return "name"


def update_one(table: str, column: str, rows: int, turn: int) -> tuple[Any, ...]:
    statement = sa.text(f"UPDATE {table} SET {column} = :value WHERE id = :id")
    return statement, {"value": f"renamed-{turn}", "id": random.randint(1, rows)}


def insert_one(table: str, column: str, key: int) -> tuple[Any, ...]:
    statement = sa.text(
        f"INSERT INTO {table} (id, {column}, size) VALUES (:id, :value, 1)"
    )
    return statement, {"id": key, "value": f"volume-{key}"}


class RowWriter:
    """A service's writes: single-row UPDATEs and INSERTs in turn, each committed.

    UPDATEs hit the ``rows`` rows the table was filled with; INSERTs add rows
    after them.
    """

    def __init__(self, table: str, rows: int) -> None:
        self.table, self.rows = table, rows
        self.turn, self.next_id = 0, rows + 1

    def write(self, conn: sa.Connection, mode: int) -> None:
        """One write as ``mode`` would make it; the caller rolls back on error."""
        self.turn += 1
        column = writer_column(mode, self.turn)
        if self.turn % 2:
            conn.execute(*update_one(self.table, column, self.rows, self.turn))
        else:
            conn.execute(*insert_one(self.table, column, self.next_id))
            self.next_id += 1
        conn.commit()
