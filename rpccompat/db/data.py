"""Online data migrations: move rows to the new shape while every release serves.

Each migration is ``(found, done) = fn(context, max_count)`` (Nova's and
Cinder's contract): it looks at up to ``max_count`` rows, converts those that
need it, and returns how many it looked at and how many it changed; ``found
== 0`` means nothing is left.  Each call is one short transaction, so it can
be killed at any moment and run again.  The runner calls every migration of
every release, in release order, until each reports nothing left, then
records it as complete in ``rpccompat_data_migrations`` - which the contract
gate and ``db check`` read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import sqlalchemy as sa

from rpccompat.db.backends import backend
from rpccompat.db.sync import Sync
from rpccompat.exceptions import first_line
from rpccompat.registry import NAMING_CONVENTION, utcnow

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
progress_table = sa.Table(
    "rpccompat_data_migrations",
    metadata,
    sa.Column("tree", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(191), primary_key=True),
    sa.Column("cursor", sa.String(255)),
    sa.Column("found", sa.BigInteger, nullable=False, default=0),
    sa.Column("done", sa.BigInteger, nullable=False, default=0),
    sa.Column("updated_at", sa.DateTime),
    sa.Column("completed_at", sa.DateTime),
)

MIN_BATCH, MAX_BATCH = 10, 200_000


def _progress_row(tree: str, name: str) -> sa.ColumnElement[bool]:
    return sa.and_(progress_table.c.tree == tree, progress_table.c.name == name)


@dataclasses.dataclass(frozen=True)
class DataContext:
    """What a migration gets: a connection, and a cursor kept across crashes.

    ``connection`` is held for the whole run of one migration, outside any
    transaction: each call begins and commits its own, so batches pay no
    pool checkout (nor, on MySQL, isolation changes).  It runs at READ
    COMMITTED on MySQL/MariaDB, so batches take no gap locks and writers may
    insert into a batch's key range meanwhile.
    """

    connection: sa.Connection
    tree: str
    migration: str

    def cursor(self) -> Any:
        """Where this migration got to, locked until the batch commits."""
        stored = self.connection.execute(
            sa.select(progress_table.c.cursor)
            .where(_progress_row(self.tree, self.migration))
            .with_for_update()
        ).scalar()
        return None if stored is None else json.loads(stored)

    def save_cursor(self, value: Any) -> None:
        """Keep ``value`` in the same transaction as the batch it ends."""
        self.connection.execute(
            progress_table.update()
            .where(_progress_row(self.tree, self.migration))
            .values(cursor=json.dumps(value), updated_at=utcnow())
        )


Migration = Callable[[DataContext, int], tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class DataMigration:
    release: str
    name: str
    fn: Migration


class DataMigrations:
    """The data migrations of one tree, each under the release that needs it."""

    def __init__(self) -> None:
        self._items: dict[str, DataMigration] = {}

    def add(self, release: str, fn: Migration, name: str | None = None) -> Migration:
        name = name or fn.__name__
        if name in self._items:
            raise ValueError(f"data migration {name!r} is registered twice")
        self._items[name] = DataMigration(release, name, fn)
        return fn

    def register(
        self, release: str, name: str | None = None
    ) -> Callable[[Migration], Migration]:
        """Decorator form of :meth:`add`."""
        return lambda fn: self.add(release, fn, name)

    def __iter__(self) -> Iterator[DataMigration]:
        return iter(self._items.values())


@dataclasses.dataclass(frozen=True)
class Window:
    """One batch of a backfill: the keys after ``after`` up to ``last``,
    ``found`` of them, below the backfill's end ``until``."""

    after: Any
    last: Any
    until: Any
    found: int

    @property
    def cursor(self) -> dict[str, Any]:
        """The cursor saved with the batch: where the next one starts."""
        return {"after": self.last, "until": self.until}


class Backfill:
    """The data migration of a sync (a :class:`ColumnSync` or a
    :class:`MovedColumns`): keyset batches by key.

    Each batch converts the next ``max_count`` keys after the stored cursor
    and moves the cursor in the same transaction.  The first batch notes the
    highest key: expand installed the sync triggers before migrate starts,
    so rows written since, whatever their key, are converted already and the
    backfill ends there instead of chasing new inserts.  Within its keys it
    converts only rows whose shapes disagree (``sync.migrate``),
    so a row either release wrote since expand - a random key below the
    highest included - is kept as written, and a batch run twice changes
    nothing the second time.  Unlike ``WHERE new IS NULL LIMIT n`` it never
    rescans converted rows, so the last batch costs what the first did.

    :func:`run` drives its batches itself (:meth:`window`, :meth:`convert`),
    keeping the cursor between them; called, it runs one batch as every
    :data:`Migration` does.
    """

    def __init__(self, sync: Sync) -> None:
        self.sync = sync
        self.__name__ = f"backfill_{sync.name}"

    def __call__(self, context: DataContext, max_count: int) -> tuple[int, int]:
        conn = context.connection
        with conn.begin():
            window = self.window(conn, context.cursor() or {}, max_count)
            if window is None:
                return 0, 0
            done = self.convert(conn, window)
            context.save_cursor(window.cursor)
            return window.found, done

    @property
    def _key(self) -> sa.ColumnClause[Any]:
        return self.sync.table_clause.c[self.sync.key]

    def window(
        self, conn: sa.Connection, cursor: dict[str, Any], max_count: int
    ) -> Window | None:
        """The next batch after ``cursor`` (a saved one, or ``{}`` at the
        start), or None when no key is left."""
        key = self._key
        if "until" in cursor:
            until = cursor["until"]
        else:
            # Rows written from now on pass through the triggers:
            # only keys up to today's highest can need converting.
            until = conn.execute(sa.select(sa.func.max(key))).scalar()
        if until is None:
            return None
        after = cursor.get("after")
        found, last = self._ends(conn, self._span(after, until), max_count)
        return Window(after, last, until, found) if found else None

    def convert(self, conn: sa.Connection, window: Window) -> int:
        """Convert the rows of ``window`` that need it; returns how many did."""
        span = self._span(window.after, window.last)
        return self.sync.migrate(conn, sa.and_(*span))

    def _span(self, after: Any, last: Any) -> list[sa.ColumnElement[bool]]:
        key = self._key
        span = [key <= last]
        if after is not None:
            span.append(key > after)
        return span

    def _ends(
        self, conn: sa.Connection, span: list[sa.ColumnElement[bool]], max_count: int
    ) -> tuple[int, Any]:
        """How many keys the next batch holds, and its last: the key
        ``max_count`` keys on (a third cheaper than counting them), else,
        near the end, the count and the highest of those left."""
        ordered = sa.select(self._key).where(*span).order_by(self._key)
        last = conn.execute(ordered.offset(max_count - 1).limit(1)).scalar()
        if last is not None:
            return max_count, last
        left = ordered.subquery()
        found, last = conn.execute(
            sa.select(sa.func.count(), sa.func.max(left.c[0]))
        ).one()
        return found, last


@dataclasses.dataclass
class Totals:
    """One migration's figures for one run."""

    tree: str
    release: str
    name: str
    found: int = 0
    done: int = 0
    batches: int = 0
    seconds: float = 0.0
    #: The longest batch in seconds; a backfill's, from its UPDATE to its
    #: commit: how long a writer may have waited for its row locks.
    longest: float = 0.0
    complete: bool = False
    error: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.found / self.seconds if self.seconds else 0.0

    def add(self, found: int, done: int, seconds: float) -> None:
        """Count one committed batch of ``seconds``."""
        self.found += found
        self.done += done
        self.batches += 1
        self.longest = max(self.longest, seconds)


@dataclasses.dataclass(frozen=True)
class Throttle:
    """How hard a run may push: rows per batch, or a target time per batch.

    With ``target_time`` the batch size follows the measured time of each
    batch (at most doubling or halving at a time), so a batch holds its row
    locks about that long whatever the table and the load.
    """

    batch_size: int = 1000
    pause: float = 0.0
    target_time: float | None = None

    def next_size(self, size: int, elapsed: float) -> int:
        if self.target_time is None or elapsed <= 0:
            return size
        scaled = size * min(2.0, max(0.5, self.target_time / elapsed))
        return int(min(MAX_BATCH, max(MIN_BATCH, scaled)))


DEFAULT_THROTTLE = Throttle()


def completed(conn: sa.Connection, tree: str) -> set[str]:
    return set(
        conn.scalars(
            sa.select(progress_table.c.name).where(
                progress_table.c.tree == tree,
                progress_table.c.completed_at.is_not(None),
            )
        )
    )


def _ensure_row(engine: sa.Engine, tree: str, name: str) -> None:
    with engine.begin() as conn:
        exists = conn.execute(
            sa.select(progress_table.c.name).where(_progress_row(tree, name))
        ).first()
        if exists is None:
            conn.execute(
                progress_table.insert().values(tree=tree, name=name, found=0, done=0)
            )


def _record(engine: sa.Engine, totals: Totals) -> None:
    """Add this run's figures; mark the migration complete if this run saw
    it end.  A run that did not never clears ``completed_at``: another runner
    may have completed it meanwhile, and contract reads that mark."""
    figures = {
        "found": progress_table.c.found + totals.found,
        "done": progress_table.c.done + totals.done,
        "updated_at": utcnow(),
    }
    if totals.complete:
        figures["completed_at"] = utcnow()
    with engine.begin() as conn:
        conn.execute(
            progress_table.update()
            .where(_progress_row(totals.tree, totals.name))
            .values(**figures)
        )


def run(
    engine: sa.Engine,
    tree: str,
    migrations: list[DataMigration],
    *,
    max_count: int | None = None,
    throttle: Throttle = DEFAULT_THROTTLE,
    progress: Callable[[Totals], None] = lambda totals: None,
) -> list[Totals]:
    """Run ``migrations`` until each is complete or ``max_count`` rows were seen.

    A migration that raises is reported in its totals and the others still
    run: one bad migration must not hold back the rest.
    """
    with engine.connect() as conn:
        already = completed(conn, tree)
    budget = max_count
    results = []
    for migration in migrations:
        totals = Totals(tree, migration.release, migration.name)
        results.append(totals)
        if migration.name in already:
            totals.complete = True
            continue
        if budget is not None and budget <= 0:
            continue
        _ensure_row(engine, tree, migration.name)
        try:
            budget = _run_one(engine, migration, totals, budget, throttle, progress)
        except Exception as e:  # reported per migration, see the docstring
            totals.error = f"{type(e).__name__}: {first_line(e)}"
        _record(engine, totals)
    return results


def _run_one(
    engine: sa.Engine,
    migration: DataMigration,
    totals: Totals,
    budget: int | None,
    throttle: Throttle,
    progress: Callable[[Totals], None],
) -> int | None:
    """Run one migration's batches; returns the budget left."""
    with _connect(engine) as conn:
        if isinstance(migration.fn, Backfill):
            backfilling = _Backfilling(migration.fn, conn, throttle, totals)
            return backfilling.run(budget, progress)
        context = DataContext(conn, totals.tree, migration.name)
        return _batches(migration, context, totals, budget, throttle, progress)


@contextlib.contextmanager
def _connect(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as conn:
        db = backend(conn)
        if db.backfill_isolation is not None:
            conn = conn.execution_options(isolation_level=db.backfill_isolation)
        with db.losable_commits(conn):
            yield conn


def _batches(
    migration: DataMigration,
    context: DataContext,
    totals: Totals,
    budget: int | None,
    throttle: Throttle,
    progress: Callable[[Totals], None],
) -> int | None:
    """Call ``migration`` batch after batch; returns the budget left."""
    size = throttle.batch_size
    while budget is None or budget > 0:
        count = size if budget is None else min(size, budget)
        started = time.monotonic()
        found, done = migration.fn(context, count)
        elapsed = time.monotonic() - started
        totals.add(found, done, elapsed)
        totals.seconds += elapsed
        if found == 0:
            totals.complete = True
            break
        if budget is not None:
            budget -= found
        progress(totals)
        size = throttle.next_size(size, elapsed)
        if throttle.pause:
            time.sleep(throttle.pause)
    return budget


class _Cursor:
    """A backfill's stored cursor, as this run last read or moved it.

    A batch moves it only from that text (a compare and set, in the batch's
    transaction), so a run reads it once instead of locking it in every
    batch; a batch that finds another text there - another runner moved it
    - is rolled back, and the run goes on from the other's cursor.
    """

    def __init__(self, conn: sa.Connection, tree: str, name: str) -> None:
        self.row = _progress_row(tree, name)
        self.text: str | None = None
        self.reload(conn)

    @property
    def value(self) -> dict[str, Any]:
        return {} if self.text is None else json.loads(self.text)

    def reload(self, conn: sa.Connection) -> None:
        with conn.begin():
            self.text = conn.execute(
                sa.select(progress_table.c.cursor).where(self.row)
            ).scalar()

    def move(self, conn: sa.Connection, value: dict[str, Any]) -> bool:
        """Whether the stored cursor was this run's and is now ``value``."""
        stored = progress_table.c.cursor
        text = json.dumps(value)
        moved = conn.execute(
            progress_table.update()
            .where(
                self.row, stored.is_(None) if self.text is None else stored == self.text
            )
            .values(cursor=text, updated_at=utcnow())
        ).rowcount
        if moved:
            self.text = text
        return bool(moved)


class _Backfilling:
    """A backfill's batches, each one transaction of three statements: find
    its window (which locks nothing), convert it, move the cursor from where
    this run left it (see :class:`_Cursor`), then commit.

    The throttle measures each batch from its UPDATE to its commit: the time
    it holds row locks that writers may wait for.
    """

    def __init__(
        self,
        backfill: Backfill,
        conn: sa.Connection,
        throttle: Throttle,
        totals: Totals,
    ) -> None:
        self.backfill, self.conn, self.throttle = backfill, conn, throttle
        self.totals = totals
        self.cursor = _Cursor(conn, totals.tree, totals.name)

    def run(self, budget: int | None, progress: Callable[[Totals], None]) -> int | None:
        """Batches until none is left or ``budget`` rows were looked at;
        returns the budget left."""
        started = time.monotonic()
        size = self.throttle.batch_size
        while budget is None or budget > 0:
            window, done, held = self._batch(
                size if budget is None else min(size, budget)
            )
            if window is None:
                self.totals.complete = True
                break
            self.totals.add(window.found, done, held)
            self.totals.seconds = time.monotonic() - started
            if budget is not None:
                budget -= window.found
            progress(self.totals)
            size = self.throttle.next_size(size, held)
            if self.throttle.pause:
                time.sleep(self.throttle.pause)
        return budget

    def _batch(self, count: int) -> tuple[Window | None, int, float]:
        """The next batch, committed: its window (None when no key is left),
        how many rows it converted and how long it held their locks."""
        conn = self.conn
        while True:
            with conn.begin() as transaction:
                window = self.backfill.window(conn, self.cursor.value, count)
                if window is None:
                    return None, 0, 0.0
                started = time.monotonic()
                done = self.backfill.convert(conn, window)
                if self.cursor.move(conn, window.cursor):
                    transaction.commit()
                    return window, done, time.monotonic() - started
                transaction.rollback()
            self.cursor.reload(conn)  # another runner moved it: go on from there


# Exit codes of ``db online_data_migrations`` (Nova and Cinder use the same).
DONE, MORE_TO_DO, ERRORS = 0, 1, 2


def exit_code(results: list[Totals], *, limited: bool = False) -> int:
    """0 all done; 1 progress made, more to do; 2 errors.

    As in nova-manage and cinder-manage: a run without a limit that met an
    error ends in 2 even if other migrations progressed; with ``--max-count``
    (``limited``) an error next to progress is 1, since running again helps.
    """
    errors = any(t.error for t in results)
    progressed = any(t.done or t.found for t in results)
    if errors and (not limited or not progressed):
        return ERRORS
    if all(t.complete for t in results):
        return DONE
    return MORE_TO_DO


class ProgressLines:
    """Progress as a line every ``every`` seconds, for a terminal or a log."""

    def __init__(self, stream: TextIO = sys.stderr, every: float = 1.0) -> None:
        self.stream, self.every = stream, every
        self._last = 0.0

    def __call__(self, totals: Totals) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            print(
                f"{totals.tree}/{totals.name}: {totals.found} rows looked at, "
                f"{totals.done} converted, {totals.rows_per_second:,.0f} rows/s",
                file=self.stream,
                flush=True,
            )
