"""What do the sync triggers cost a service's writes during an upgrade?

``triggered_writes``: single-row writes, each its own transaction (UPDATEs of
existing rows and INSERTs in turn, half naming alpha's ``display_name`` and
half beta's ``name``, as while both releases run), on a table with the
rename's sync triggers installed against an identical table without, side by
side in alternating rounds, on MariaDB, PostgreSQL and SQLite, each in a
scratch database dropped at the end even on error.  The ratio is the
triggered table's writes/s over the plain one's.

One JSON line and one human line per backend on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

import common  # first: it silences eventlet's import-time warning
import sqlalchemy as sa

from rpccompat.db.sync import ColumnSync
from rpccompat.engine import create_engine

BACKENDS = ("mysql", "postgresql", "sqlite")
# The aim: with triggers, at least this share of the plain table's writes/s.
AIM = 0.75
TABLES = {"plain": "bench_plain", "triggered": "bench_triggered"}


def prepare(engine: sa.Engine, rows: int) -> None:
    """Both tables filled alike; the triggers go in first, so that every
    row of the triggered table has ``name`` set as the checks expect."""
    for variant, table in TABLES.items():
        common.create_table(engine, table, with_name=True)
        if variant == "triggered":
            sync = ColumnSync.rename(table, "id", old="display_name", new="name")
            common.install_sync(engine, sync)
        common.fill(engine, table, rows)


def timed_writes(conn: sa.Connection, writer: common.RowWriter, count: int) -> float:
    """Writes per second over ``count`` writes."""
    started = time.perf_counter()
    for _ in range(count):
        writer.write(conn, common.MIXED)
    return count / (time.perf_counter() - started)


def measure(
    engine: sa.Engine, rows: int, rounds: int, writes: int
) -> dict[str, list[float]]:
    """Per table, its writes/s per round, each table on its own connection."""
    with engine.connect() as plain, engine.connect() as triggered:
        connections = {"plain": plain, "triggered": triggered}
        return common.interleaved(
            rounds,
            {
                variant: functools.partial(
                    timed_writes,
                    connections[variant],
                    common.RowWriter(table, rows),
                    writes,
                )
                for variant, table in TABLES.items()
            },
        )


def check_synced(engine: sa.Engine) -> None:
    """The triggers really ran: every row has both columns equal."""
    left = common.count_unconverted(engine, TABLES["triggered"])
    if left:
        raise common.BenchError(f"{left:,} rows of the triggered table differ")


def report(backend: str, rows: int, results: dict[str, list[float]]) -> None:
    rate = {variant: statistics.median(rates) for variant, rates in results.items()}
    low, ratio, high = common.quartiles(
        common.paired_ratios(results["triggered"], results["plain"])
    )
    record = {
        "benchmark": "triggered_writes",
        "backend": backend,
        "rows": rows,
        "rounds": len(results["plain"]),
        "plain_writes_per_s": round(rate["plain"], 1),
        "triggered_writes_per_s": round(rate["triggered"], 1),
        "ratio": round(ratio, 3),
        "ratio_quartiles": [round(low, 3), round(high, 3)],
        "aim": AIM,
        "within_aim": ratio >= AIM,
    }
    verdict = "ok" if ratio >= AIM else "UNDER"
    common.emit(
        record,
        f"{backend}: with sync triggers {rate['triggered']:,.0f} writes/s = "
        f"{ratio:.2f} x without ({rate['plain']:,.0f} writes/s); median of "
        f"{record['rounds']} paired rounds, quartiles {low:.2f}-{high:.2f} - "
        f"{verdict} the {AIM:.2f} aim",
    )


def run_backend(backend: str, url: str, args: argparse.Namespace) -> None:
    with common.scratch_database(url) as scratch:
        engine = create_engine(scratch)
        try:
            prepare(engine, args.rows)
            common.log(
                f"{backend}: {args.rounds} rounds of {args.writes} writes per table"
            )
            results = measure(engine, args.rows, args.rounds, args.writes)
            check_synced(engine)
        finally:
            engine.dispose()
    report(backend, args.rows, results)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_backend_args(parser, BACKENDS)
    parser.add_argument("--rows", type=int, default=10_000, help="rows per table")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--writes", type=int, default=200, help="per table and round")
    args = parser.parse_args(argv)
    if min(args.rows, args.rounds, args.writes) < 1:
        parser.error("--rows, --rounds and --writes must be at least 1")
    return args, common.backend_urls(parser, args, BACKENDS)


def run(args: argparse.Namespace, urls: dict[str, str]) -> None:
    common.check_reachable(urls)
    for backend, url in urls.items():
        run_backend(backend, url, args)


def main(argv: list[str] | None = None) -> int:
    args, urls = parse_args(argv)
    return common.run_main("triggered_writes", lambda: run(args, urls))


if __name__ == "__main__":
    sys.exit(main())
