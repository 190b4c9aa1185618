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
import multiprocessing
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import common  # first: it silences eventlet's import-time warning
import sqlalchemy as sa
from sqlalchemy.engine import URL

from rpccompat.db import data
from rpccompat.db.data import (
    Backfill,
    DataMigration,
    DataMigrations,
    Throttle,
)
from rpccompat.db.database import Database
from rpccompat.db.sync import ColumnSync
from rpccompat.db.tree import MigrationTree
from rpccompat.engine import create_engine

BACKENDS = ("mysql", "postgresql")
# The writer-stall aim: no write waits longer than this.
STALL_AIM = 0.100
# Chosen by measuring (see benchmarks/README.md): a batch aims at 40 ms so
# that a writer queued behind its row locks stays inside STALL_AIM even when
# the server stalls a batch for a checkpoint, and starts at 1,000 rows since
# on MariaDB a first batch of 5,000 already took 100-190 ms.
DEFAULT_TARGET_TIME = 0.040
DEFAULT_BATCH_SIZE = 1_000
BASELINE_SECONDS = 2.0
WRITER_START_LIMIT = 60.0
TAIL_SECONDS = 0.5


# -- settling and progress ----------------------------------------------------


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
    common.log(f"  InnoDB purge still behind after {limit:.0f} s; timing anyway")


class Heartbeat:
    """A line every few seconds while one long statement runs."""

    def __init__(self, label: str, every: float = 5.0) -> None:
        self.label, self.every = label, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.every):
            common.log(
                f"  {self.label}: running for {time.monotonic() - started:.0f} s"
            )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- 1. online migration against one UPDATE ------------------------------------


def time_single_update(engine: sa.Engine, table: str) -> float:
    with Heartbeat(f"single UPDATE {table}"):
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {table} SET name = display_name")
        return time.perf_counter() - started


def time_online(
    engine: sa.Engine, tree: str, sync: ColumnSync, throttle: Throttle
) -> tuple[float, data.Totals]:
    backfill = Backfill(sync)
    migration = DataMigration("beta", backfill.__name__, backfill)
    progress = data.ProgressLines(every=2.0)
    started = time.perf_counter()
    (totals,) = data.run(
        engine, tree, [migration], throttle=throttle, progress=progress
    )
    elapsed = time.perf_counter() - started
    if totals.error or not totals.complete:
        raise common.BenchError(
            f"online migration failed: {totals.error or 'incomplete'}"
        )
    return elapsed, totals


def online_migration(
    engine: sa.Engine, backend: str, rows: int, throttle: Throttle
) -> None:
    tables = ("bench_single", "bench_online")
    syncs = [ColumnSync.rename(t, "id", old="display_name", new="name") for t in tables]
    for table, sync in zip(tables, syncs, strict=True):
        # No autovacuum: one table's dead rows must not be vacuumed during
        # the other's timing.
        common.create_table(engine, table, with_name=True, autovacuum=False)
        common.fill(engine, table, rows)
        common.install_sync(engine, sync)
    settle(engine)
    common.log(f"{backend}: single UPDATE of {rows:,} rows")
    single = time_single_update(engine, tables[0])
    settle(engine)
    common.log(f"{backend}: online backfill of {rows:,} rows")
    online, totals = time_online(engine, "bench", syncs[1], throttle)
    left = common.count_unconverted(engine, tables[1])
    if totals.done != rows or left:
        raise common.BenchError(
            f"backfill converted {totals.done:,} rows, {left:,} left"
        )
    report_online(backend, rows, single, online, totals, throttle)
    with engine.begin() as conn:
        for table in tables:
            conn.exec_driver_sql(f"DROP TABLE {table}")


def report_online(
    backend: str,
    rows: int,
    single: float,
    online: float,
    totals: data.Totals,
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
        "max_batch_ms": round(1000 * totals.longest, 1),
    }
    common.emit(
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
    connected: Any,
    results: Any,
) -> None:
    """Short single-row transactions until told to stop: (start, end, error).

    ``connected`` is set once the connection is open, so that no phase starts
    while this process still imports or connects.
    """
    engine = create_engine(url, pool_size=1)
    writer = common.RowWriter(table, rows)
    writes: list[tuple[float, float, bool]] = []
    with engine.connect() as conn:
        connected.set()
        while not stop.is_set():
            started = time.monotonic()
            failed = False
            try:
                writer.write(conn, mode.value)
            except sa.exc.DBAPIError:
                conn.rollback()
                failed = True
            writes.append((started, time.monotonic(), failed))
    engine.dispose()
    results.put(writes)


class Writer:
    """The concurrent writer as its own process, and the phases it lived through."""

    def __init__(self, url: URL, table: str, rows: int) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.mode = spawn.Value("i", common.OLD)
        self.stop = spawn.Event()
        self.connected = spawn.Event()
        self.results = spawn.Queue()
        url_text = url.render_as_string(hide_password=False)
        self.process = spawn.Process(
            target=writer_main,
            args=(
                url_text,
                table,
                rows,
                self.mode,
                self.stop,
                self.connected,
                self.results,
            ),
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
        common.log(f"  phase {name}")
        yield
        self.phases.append((name, started, time.monotonic()))

    def finish(self) -> list[tuple[float, float, bool]]:
        self.stop.set()
        try:
            writes = self.results.get(timeout=60)
        except queue.Empty:
            raise common.BenchError(
                "the writer process died; its timings are lost"
            ) from None
        self.process.join(10)
        return writes


def wait_until_connected(writer: Writer) -> None:
    """On a busy machine the writer's imports take seconds: a baseline begun
    before it connects would time nothing."""
    deadline = time.monotonic() + WRITER_START_LIMIT
    while not writer.connected.wait(0.1):
        if not writer.process.is_alive() or time.monotonic() > deadline:
            raise common.BenchError("the writer process did not connect")


def writer_stalls(
    engine: sa.Engine, url: URL, backend: str, rows: int, throttle: Throttle
) -> None:
    common.create_table(engine, STALL_TABLE, with_name=False)
    common.fill(engine, STALL_TABLE, rows)
    settle(engine)
    with tempfile.TemporaryDirectory() as directory:
        database = Database(engine, [write_tree(Path(directory), STALL_TABLE)])
        with Writer(url, STALL_TABLE, rows) as writer:
            wait_until_connected(writer)
            with writer.phase("baseline", common.OLD):
                time.sleep(BASELINE_SECONDS)
            run_phases(database, writer, throttle)
            time.sleep(TAIL_SECONDS)
            writes = writer.finish()
    for name, started, ended in writer.phases:
        report_phase(backend, rows, name, started, ended, writes)


def run_phases(database: Database, writer: Writer, throttle: Throttle) -> None:
    steps: list[tuple[str, int, Callable[[], Any]]] = [
        ("expand", common.OLD, database.expand),
        (
            "migrate",
            common.MIXED,
            lambda: check_migrated(
                database.migrate(
                    throttle=throttle, progress=data.ProgressLines(every=2.0)
                )
            ),
        ),
        ("contract", common.NEW, database.contract),
    ]
    for name, mode, step in steps:
        with writer.phase(name, mode):
            step()


def check_migrated(results: list[data.Totals]) -> None:
    for totals in results:
        if totals.error or not totals.complete:
            raise common.BenchError(f"{totals.name}: {totals.error or 'incomplete'}")


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
    common.emit(
        record,
        f"{backend}: {name}: longest write {record['max_write_ms']} ms "
        f"(p99 {record['p99_write_ms']} ms) over {len(inside):,} writes, "
        f"{errors} errors, in {ended - started:.1f} s - {verdict}",
    )


# -- driver ------------------------------------------------------------------


def run_backend(backend: str, url: str, rows: int, throttle: Throttle) -> None:
    started = time.monotonic()
    with common.scratch_database(url) as scratch:
        engine = create_engine(scratch)
        try:
            Database(engine).expand()  # rpccompat_data_migrations
            online_migration(engine, backend, rows, throttle)
            writer_stalls(engine, scratch, backend, rows, throttle)
        finally:
            engine.dispose()
    common.log(f"{backend}: done in {time.monotonic() - started:.0f} s")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    common.add_backend_args(parser, BACKENDS)
    parser.add_argument(
        "--target-time",
        type=float,
        default=DEFAULT_TARGET_TIME,
        help="seconds per backfill batch (0: fixed --batch-size)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    return args, common.backend_urls(parser, args, BACKENDS)


def run(args: argparse.Namespace, urls: dict[str, str]) -> None:
    throttle = Throttle(
        batch_size=args.batch_size, target_time=args.target_time or None
    )
    common.check_reachable(urls)
    for backend, url in urls.items():
        run_backend(backend, url, args.rows, throttle)


def main(argv: list[str] | None = None) -> int:
    args, urls = parse_args(argv)
    return common.run_main("db_migration", lambda: run(args, urls))


if __name__ == "__main__":
    sys.exit(main())
