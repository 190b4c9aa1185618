"""How fast, and how gently, does expand / migrate / contract run on a big table?

Two figures per backend (MariaDB, PostgreSQL), each in a scratch database
created for the run and dropped at the end, even on error:

1. ``online_migration``: the online backfill (``rpccompat.db.data.run`` with
   a :class:`Backfill`) against one ``UPDATE`` of the whole table, side by
   side on two identical tables with the same sync triggers.  The ratio says
   what zero downtime costs in throughput.
2. ``writer_stall``: the longest single write of a concurrent writer (its own
   process, so this process's GIL never inflates its timings) during
   expand, migrate and contract, run through ``Database.expand/migrate/
   contract`` over a throw-away Alembic tree whose revisions use the ``ddl``
   helpers - the path a real service takes, revision transactions included.

Each figure is printed as one JSON line and one human line on stdout;
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import queue
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

# rpccompat imports oslo.service, which imports eventlet, which warns on import.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from rpccompat.db import data  # noqa: E402
from rpccompat.db.data import (  # noqa: E402
    Backfill,
    DataMigration,
    DataMigrations,
    Throttle,
)
from rpccompat.db.database import Database  # noqa: E402
from rpccompat.db.sync import ColumnSync  # noqa: E402
from rpccompat.db.tree import MigrationTree  # noqa: E402
from rpccompat.engine import create_engine, safe_url  # noqa: E402

DEFAULT_URLS = {
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
    "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
}
# The writer-stall aim: no write waits longer than this.
STALL_AIM = 0.100
# Chosen by measuring (see benchmarks/README.md): a batch aims at 40 ms so
# that a writer queued behind its row locks stays inside STALL_AIM even when
# the server stalls a batch for a checkpoint, and starts at 1,000 rows since
# on MariaDB a first batch of 5,000 already took 100-190 ms.
DEFAULT_TARGET_TIME = 0.040
DEFAULT_BATCH_SIZE = 1_000
FILL_CHUNK = 100_000
BASELINE_SECONDS = 2.0
TAIL_SECONDS = 0.5


class BenchError(Exception):
    """A failure worth one line to the operator, not a traceback."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(record: dict[str, Any], human: str) -> None:
    """One JSON line for machines, one line for people, on stdout."""
    print(json.dumps(record), flush=True)
    print(human, flush=True)


# -- scratch databases ------------------------------------------------------


def admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def check_reachable(backend: str, url: str) -> None:
    """Fail in a second, not after another backend's minutes of work."""
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise BenchError(f"{backend}: cannot reach {safe_url(url)}: {reason}") from e
    finally:
        engine.dispose()


@contextlib.contextmanager
def scratch_database(url: str) -> Iterator[URL]:
    """A database of its own, dropped afterwards whatever happened."""
    name = f"rpccompat_bench_{uuid.uuid4().hex[:12]}"
    engine = admin_engine(url)
    force = " WITH (FORCE)" if engine.dialect.name == "postgresql" else ""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        log(f"created database {name}")
        try:
            yield make_url(url).set(database=name)
        finally:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
            log(f"dropped database {name}")
    finally:
        engine.dispose()


# -- tables ------------------------------------------------------------------


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
    if dialect == "postgresql":
        return (
            f"INSERT INTO {table} (id, display_name, size) "
            f"SELECT g, 'volume-' || g, mod(g, 1000) FROM generate_series({first}, "
            f"{last}) AS g"
        )
    return (
        f"INSERT INTO {table} (id, display_name, size) "
        f"SELECT seq, CONCAT('volume-', seq), MOD(seq, 1000) FROM seq_{first}_to_{last}"
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


def analyze(engine: sa.Engine, table: str) -> None:
    """Statistics (and on PostgreSQL hint bits) as a live table would have them."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
        else:
            conn.exec_driver_sql(f"ANALYZE TABLE {table}").all()


def settle(engine: sa.Engine) -> None:
    """Write dirty pages out so neither timed run pays for the other's."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("CHECKPOINT")
        else:
            wait_for_purge(conn)


def wait_for_purge(conn: sa.Connection, limit: float = 120.0) -> None:
    """InnoDB purges the old row versions of a big UPDATE in the background."""
    deadline = time.monotonic() + limit
    query = (
        "SELECT count FROM information_schema.INNODB_METRICS "
        "WHERE name = 'trx_rseg_history_len'"
    )
    while time.monotonic() < deadline:
        length = conn.exec_driver_sql(query).scalar() or 0
        if length < 1000:
            return
        time.sleep(0.5)
    log(f"  InnoDB purge still behind after {limit:.0f} s; timing anyway")


def install_sync(engine: sa.Engine, sync: ColumnSync) -> None:
    with engine.begin() as conn:
        for statement in sync.create_triggers(engine.dialect.name):
            conn.exec_driver_sql(statement)


class Heartbeat:
    """A line every few seconds while one long statement runs."""

    def __init__(self, label: str, every: float = 5.0) -> None:
        self.label, self.every = label, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.every):
            log(f"  {self.label}: running for {time.monotonic() - started:.0f} s")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- 1. online migration against one UPDATE ------------------------------------


class TimedBatches:
    """Wraps a migration to keep each batch's time: the evidence they stay short."""

    def __init__(self, fn: data.Migration) -> None:
        self.fn = fn
        self.times: list[float] = []
        self.__name__ = getattr(fn, "__name__", "migration")

    def __call__(self, context: data.DataContext, max_count: int) -> tuple[int, int]:
        started = time.perf_counter()
        try:
            return self.fn(context, max_count)
        finally:
            self.times.append(time.perf_counter() - started)


def time_single_update(engine: sa.Engine, table: str) -> float:
    with Heartbeat(f"single UPDATE {table}"):
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {table} SET name = display_name")
        return time.perf_counter() - started


def time_online(
    engine: sa.Engine, tree: str, sync: ColumnSync, throttle: Throttle
) -> tuple[float, data.Totals, TimedBatches]:
    timed = TimedBatches(Backfill(sync))
    migration = DataMigration("beta", timed.__name__, timed)
    progress = data.ProgressLines(every=2.0)
    started = time.perf_counter()
    (totals,) = data.run(
        engine, tree, [migration], throttle=throttle, progress=progress
    )
    elapsed = time.perf_counter() - started
    if totals.error or not totals.complete:
        raise BenchError(f"online migration failed: {totals.error or 'incomplete'}")
    return elapsed, totals, timed


def count_unconverted(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            f"SELECT count(*) FROM {table} WHERE name IS NULL OR name <> display_name"
        ).scalar_one()


def online_migration(
    engine: sa.Engine, backend: str, rows: int, throttle: Throttle
) -> None:
    tables = ("bench_single", "bench_online")
    syncs = [ColumnSync.rename(t, "id", old="display_name", new="name") for t in tables]
    for table, sync in zip(tables, syncs, strict=True):
        # No autovacuum: one table's dead rows must not be vacuumed during
        # the other's timing.
        create_table(engine, table, with_name=True, autovacuum=False)
        fill(engine, table, rows)
        install_sync(engine, sync)
    settle(engine)
    log(f"{backend}: single UPDATE of {rows:,} rows")
    single = time_single_update(engine, tables[0])
    settle(engine)
    log(f"{backend}: online backfill of {rows:,} rows")
    online, totals, timed = time_online(engine, "bench", syncs[1], throttle)
    left = count_unconverted(engine, tables[1])
    if totals.done != rows or left:
        raise BenchError(f"backfill converted {totals.done:,} rows, {left:,} left")
    report_online(backend, rows, single, online, totals, timed, throttle)
    with engine.begin() as conn:
        for table in tables:
            conn.exec_driver_sql(f"DROP TABLE {table}")


def report_online(
    backend: str,
    rows: int,
    single: float,
    online: float,
    totals: data.Totals,
    timed: TimedBatches,
    throttle: Throttle,
) -> None:
    single_rate, online_rate = rows / single, rows / online
    record = {
        "benchmark": "online_migration",
        "backend": backend,
        "rows": rows,
        "single_update_seconds": round(single, 3),
        "single_update_rows_per_s": round(single_rate),
        "online_seconds": round(online, 3),
        "online_rows_per_s": round(online_rate),
        "ratio": round(online_rate / single_rate, 3),
        "throttle": dataclasses.asdict(throttle),
        "batches": totals.batches,
        "mean_batch_rows": round(rows / max(1, totals.batches)),
        "max_batch_ms": round(1000 * max(timed.times), 1),
    }
    emit(
        record,
        f"{backend}: online migration {online_rate:,.0f} rows/s = "
        f"{record['ratio']:.2f} x single UPDATE ({single_rate:,.0f} rows/s); "
        f"{totals.batches} batches, longest {record['max_batch_ms']} ms "
        f"({describe(throttle)})",
    )


def describe(throttle: Throttle) -> str:
    if throttle.target_time is None:
        return f"fixed batches of {throttle.batch_size:,} rows"
    return (
        f"batches aimed at {1000 * throttle.target_time:.0f} ms, "
        f"starting at {throttle.batch_size:,} rows"
    )


# -- 2. writer stalls during expand, migrate and contract ----------------------

STALL_TABLE = "bench_stalls"
OLD, MIXED, NEW = 0, 1, 2  # which release(s) the writer plays

EXPAND_REVISION = '''\
"""Benchmark expand: {table}.name, kept equal to display_name by triggers."""

import sqlalchemy as sa

from rpccompat.db import ColumnSync, ddl

revision = "bench_expand"
down_revision = None
branch_labels = ("expand",)
depends_on = None
SYNC = ColumnSync.rename("{table}", "id", old="display_name", new="name")


def upgrade() -> None:
    ddl.add_column("{table}", sa.Column("name", sa.String(255)))
    ddl.install_sync(SYNC)
'''

CONTRACT_REVISION = '''\
"""Benchmark contract: the triggers and display_name go."""

from rpccompat.db import ColumnSync, ddl

revision = "bench_contract"
down_revision = None
branch_labels = ("contract",)
depends_on = "bench_expand"
SYNC = ColumnSync.rename("{table}", "id", old="display_name", new="name")


def upgrade() -> None:
    ddl.drop_sync(SYNC)
    ddl.drop_column("{table}", "display_name")
'''


def write_tree(directory: Path, table: str) -> MigrationTree:
    """A two-revision tree, as a service project would ship it."""
    for name, text in (
        ("bench_expand.py", EXPAND_REVISION),
        ("bench_contract.py", CONTRACT_REVISION),
    ):
        (directory / name).write_text(text.format(table=table))
    (directory / "EXPAND_HEAD").write_text("bench_expand\n")
    (directory / "CONTRACT_HEAD").write_text("bench_contract\n")
    migrations = DataMigrations()
    sync = ColumnSync.rename(table, "id", old="display_name", new="name")
    migrations.add("beta", Backfill(sync))
    return MigrationTree(
        "bench_stalls",
        directory,
        data_migrations=migrations,
        version_table="bench_alembic_version",
    )


def writer_main(
    url: str,
    table: str,
    rows: int,
    mode: Any,
    stop: Any,
    results: Any,
) -> None:
    """Short single-row transactions until told to stop: (start, end, error)."""
    engine = create_engine(url, pool_size=1)
    writes: list[tuple[float, float, bool]] = []
    next_id, turn = rows + 1, 0
    with engine.connect() as conn:
        while not stop.is_set():
            turn += 1
            column = writer_column(mode.value, turn)
            started = time.monotonic()
            failed = False
            try:
                if turn % 2:
                    conn.execute(*update_one(table, column, rows, turn))
                else:
                    conn.execute(*insert_one(table, column, next_id))
                    next_id += 1
                conn.commit()
            except sa.exc.DBAPIError:
                conn.rollback()
                failed = True
            writes.append((started, time.monotonic(), failed))
    engine.dispose()
    results.put(writes)


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


class Writer:
    """The concurrent writer as its own process, and the phases it lived through."""

    def __init__(self, url: URL, table: str, rows: int) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.mode = spawn.Value("i", OLD)
        self.stop = spawn.Event()
        self.results = spawn.Queue()
        url_text = url.render_as_string(hide_password=False)
        self.process = spawn.Process(
            target=writer_main,
            args=(url_text, table, rows, self.mode, self.stop, self.results),
            daemon=True,
        )
        self.phases: list[tuple[str, float, float]] = []

    def __enter__(self) -> Writer:
        self.process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.is_alive():
            self.stop.set()
            self.process.join(5)
            if self.process.is_alive():
                self.process.terminate()

    @contextlib.contextmanager
    def phase(self, name: str, mode: int) -> Iterator[None]:
        self.mode.value = mode
        started = time.monotonic()
        log(f"  phase {name}")
        yield
        self.phases.append((name, started, time.monotonic()))

    def finish(self) -> list[tuple[float, float, bool]]:
        self.stop.set()
        try:
            writes = self.results.get(timeout=60)
        except queue.Empty:
            raise BenchError("the writer process died; its timings are lost") from None
        self.process.join(10)
        return writes


def wait_for_writes(writer: Writer, seconds: float) -> None:
    """The writer's baseline: connected and writing before any phase counts."""
    if not writer.process.is_alive():
        raise BenchError("the writer process died at start")
    time.sleep(seconds)


def writer_stalls(
    engine: sa.Engine, url: URL, backend: str, rows: int, throttle: Throttle
) -> None:
    create_table(engine, STALL_TABLE, with_name=False)
    fill(engine, STALL_TABLE, rows)
    settle(engine)
    with tempfile.TemporaryDirectory() as directory:
        database = Database(engine, [write_tree(Path(directory), STALL_TABLE)])
        with Writer(url, STALL_TABLE, rows) as writer:
            time.sleep(1.0)  # the writer's imports and connection, not timed
            with writer.phase("baseline", OLD):
                wait_for_writes(writer, BASELINE_SECONDS)
            run_phases(database, writer, throttle)
            time.sleep(TAIL_SECONDS)
            writes = writer.finish()
    for name, started, ended in writer.phases:
        report_phase(backend, rows, name, started, ended, writes)


def run_phases(database: Database, writer: Writer, throttle: Throttle) -> None:
    steps: list[tuple[str, int, Callable[[], Any]]] = [
        ("expand", OLD, database.expand),
        (
            "migrate",
            MIXED,
            lambda: check_migrated(
                database.migrate(
                    throttle=throttle, progress=data.ProgressLines(every=2.0)
                )
            ),
        ),
        ("contract", NEW, database.contract),
    ]
    for name, mode, step in steps:
        with writer.phase(name, mode):
            step()


def check_migrated(results: list[data.Totals]) -> None:
    for totals in results:
        if totals.error or not totals.complete:
            raise BenchError(f"{totals.name}: {totals.error or 'incomplete'}")


def report_phase(
    backend: str,
    rows: int,
    name: str,
    started: float,
    ended: float,
    writes: list[tuple[float, float, bool]],
) -> None:
    """Every write that overlapped the phase counts in it."""
    inside = [(s, e, f) for s, e, f in writes if s < ended and e > started]
    latencies = sorted(e - s for s, e, _ in inside)
    longest = latencies[-1] if latencies else 0.0
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0
    errors = sum(1 for *_, failed in inside if failed)
    record = {
        "benchmark": "writer_stall",
        "backend": backend,
        "rows": rows,
        "phase": name,
        "phase_seconds": round(ended - started, 3),
        "writes": len(inside),
        "errors": errors,
        "max_write_ms": round(1000 * longest, 1),
        "p99_write_ms": round(1000 * p99, 1),
        "within_aim": longest <= STALL_AIM and not errors,
    }
    verdict = "ok" if record["within_aim"] else "OVER the 100 ms aim"
    emit(
        record,
        f"{backend}: {name}: longest write {record['max_write_ms']} ms "
        f"(p99 {record['p99_write_ms']} ms) over {len(inside):,} writes, "
        f"{errors} errors, in {ended - started:.1f} s - {verdict}",
    )


# -- driver ------------------------------------------------------------------


def run_backend(backend: str, url: str, rows: int, throttle: Throttle) -> None:
    started = time.monotonic()
    with scratch_database(url) as scratch:
        engine = create_engine(scratch)
        try:
            Database(engine).expand()  # rpccompat_data_migrations
            online_migration(engine, backend, rows, throttle)
            writer_stalls(engine, scratch, backend, rows, throttle)
        finally:
            engine.dispose()
    log(f"{backend}: done in {time.monotonic() - started:.0f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backends", default="mysql,postgresql")
    parser.add_argument("--mysql-url", default=DEFAULT_URLS["mysql"])
    parser.add_argument("--postgresql-url", default=DEFAULT_URLS["postgresql"])
    parser.add_argument(
        "--target-time",
        type=float,
        default=DEFAULT_TARGET_TIME,
        help="seconds per backfill batch (0: fixed --batch-size)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - set(DEFAULT_URLS)
    if unknown or not args.backends:
        parser.error(f"--backends: choose from {', '.join(DEFAULT_URLS)}")
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    return args


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like an error, so the scratch databases are dropped."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    throttle = Throttle(
        batch_size=args.batch_size, target_time=args.target_time or None
    )
    urls = {b: getattr(args, f"{b}_url") for b in args.backends}
    try:
        for backend, url in urls.items():
            check_reachable(backend, url)
        for backend, url in urls.items():
            run_backend(backend, url, args.rows, throttle)
    except BenchError as e:
        print(f"db_migration: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
