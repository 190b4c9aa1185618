"""The mixed-period rule, model-checked on every change shape and backend.

Seeded random sequences of old-shape and new-shape inserts, updates and
deletes from two writer connections with transactions of their own, between
backfill batches (some killed before their commit and resumed) and
migrate-on-load reads, run against the real triggers; after each step the
database is compared with :class:`Model`, the rule written in Python.  A
backfill batch or a read runs in a thread of its own while the writers'
open transactions commit, so it meets rows they hold locked.

On a divergence the failure names the seed and the shortest sequence that
still diverges (found by dropping steps one at a time).

``make soak`` (``RPCCOMPAT_SOAK=N``) runs N seeds per shape and backend
instead of the fast profile's few and prints how many sequences and steps
it checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from rpccompat.db import Backfill, Database, data
from rpccompat.db.data import DataMigration, Throttle
from tests.db.shapes import SHAPES, Shape, Values, same

SOAK = int(os.environ.get("RPCCOMPAT_SOAK", "0"))
SEEDS = SOAK or 2
STEPS = 30
LEGACY_ROWS = 8  # written before expand: the backfill's and the reads' work
WRITERS = (0, 1)
SOLO = 2  # writes both shapes, each in a transaction of its own
TREE, MIGRATION = "model", "backfill"
JOIN_TIMEOUT = 60  # only to detect a hang
LOCK_WAIT = 0.02  # how long a backfill batch or a read may run before writers commit
CHECKED: dict[str, list[int]] = {}  # backend: [sequences, steps, divergences]


@dataclasses.dataclass(frozen=True)
class Step:
    """One thing a release, the backfill or a reader does."""

    kind: str
    conn: int = 0
    key: str = ""
    old: Values | None = None  # what it writes to the old columns, if any
    new: Values | None = None
    keys: tuple[str, ...] = ()
    size: int = 0

    def __str__(self) -> str:
        fields = [f"conn={self.conn}"] if self.kind in WRITES + ENDS else []
        fields += [f"{k}={v!r}" for k, v in (("key", self.key),) if v]
        fields += [f"old={self.old}"] if self.old is not None else []
        fields += [f"new={self.new}"] if self.new is not None else []
        fields += [f"keys={list(self.keys)}"] if self.keys else []
        fields += [f"size={self.size}"] if self.size else []
        return f"{self.kind}({', '.join(fields)})"


WRITES = ("insert", "update", "touch", "delete")
ENDS = ("commit", "rollback")


class Refused(Exception):
    """The rule refuses the write: both shapes written, and they disagree."""


class Model:
    """The rows as the rule says they must be, and who holds which."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.rows: dict[str, tuple[Values, Values]] = {}
        # per open transaction: each key it wrote, as it was before
        self.open: dict[int, dict[str, tuple[Values, Values] | None]] = {}

    # -- the rule -------------------------------------------------------------

    def written(self, step: Step) -> tuple[Values, Values]:
        """The row a write leaves, or Refused."""
        if self.shape.both_in_turn and step.old is not None and step.new is not None:
            return self.in_turn(step)
        return self.written_at_once(step)

    def in_turn(self, step: Step) -> tuple[Values, Values]:
        """Both shapes written by two statements: the old one's, then the
        new one's, which finds the row as the first left it."""
        first = self.written_at_once(dataclasses.replace(step, new=None))
        before = self.rows.get(step.key)
        self.rows[step.key] = first
        try:
            then = dataclasses.replace(step, kind="update", old=None)
            return self.written_at_once(then)
        finally:
            if before is None:
                del self.rows[step.key]
            else:
                self.rows[step.key] = before

    def written_at_once(self, step: Step) -> tuple[Values, Values]:
        sync = self.shape.sync
        before = self.rows.get(step.key) if step.kind == "update" else None
        current_old, current_new = before or self.inserted()
        old = current_old if step.old is None else step.old
        new = current_new if step.new is None else step.new
        if before is None:  # an insert writes what it sets, but for defaults
            old_written = self.named(sync.old, old)
            new_written = self.named(sync.new, new)
        else:  # an update what it changes
            old_written = not same(old, current_old)
            new_written = not same(new, current_new)
        if self.shape.agree(old, new):
            return old, new
        if old_written and new_written:
            raise Refused
        if before is None and not (old_written or new_written):
            old_written = any(v is not None for v in old)  # whichever is set
            new_written = any(v is not None for v in new)
        if old_written:
            return old, self.shape.to_new(old)
        if new_written:
            return self.shape.to_old(new), new
        return old, new

    def inserted(self) -> tuple[Values, Values]:
        """A row as an INSERT that names neither shape leaves it."""
        sync = self.shape.sync
        return self.shape.defaults(sync.old), self.shape.defaults(sync.new)

    def named(self, columns: tuple[str, ...], values: Values) -> bool:
        """Whether an INSERT set one of ``columns``: non-NULL, not its default."""
        defaults = self.shape.column_defaults
        return any(
            v is not None and (c not in defaults or not same((v,), (defaults[c],)))
            for c, v in zip(columns, values, strict=True)
        )

    def unconverted(self, key: str) -> bool:
        """Whether the row's new shape is as expand left it (see read())."""
        defaults = self.shape.column_defaults
        return all(
            v is None or (c in defaults and same((v,), (defaults[c],)))
            for c, v in zip(self.shape.sync.new, self.rows[key][1], strict=True)
        )

    def convert(self, key: str) -> None:
        """The backfill's and migrate-on-load's conversion of one row."""
        old, new = self.rows[key]
        if not self.shape.agree(old, new):
            self.rows[key] = (old, self.shape.to_new(old))

    # -- transactions ---------------------------------------------------------

    def hold(self, conn: int, key: str) -> None:
        self.open.setdefault(conn, {}).setdefault(key, self.rows.get(key))

    def held_by_another(self, conn: int, key: str) -> bool:
        return any(key in keys for c, keys in self.open.items() if c != conn)

    def end(self, conn: int, commit: bool) -> None:
        for key, before in self.open.pop(conn, {}).items():
            if commit:
                continue
            if before is None:
                self.rows.pop(key, None)
            else:
                self.rows[key] = before

    def committed(self) -> dict[str, tuple[Values, Values]]:
        """What a connection outside the open transactions sees."""
        rows = dict(self.rows)
        for held in self.open.values():
            for key, before in held.items():
                if before is None:
                    rows.pop(key, None)
                else:
                    rows[key] = before
        return rows


# -- generating a sequence ------------------------------------------------------


def generate(shape: Shape, seed: int, one_writer_at_once: bool) -> list[Step]:
    rng = random.Random(seed)
    legacy = sorted(f"{rng.getrandbits(32):08x}" for _ in range(LEGACY_ROWS))
    steps = [Step("legacy", key=k, old=rng.choice(shape.old_values)) for k in legacy]
    model = Model(shape)
    for step in steps:
        model.rows[step.key] = (step.old, shape.defaults(shape.sync.new))
    while len(steps) < LEGACY_ROWS + STEPS:
        steps.append(_next_step(rng, shape, model, one_writer_at_once))
        _apply(model, steps[-1])
    return steps


def _next_step(
    rng: random.Random, shape: Shape, model: Model, one_writer_at_once: bool
) -> Step:
    roll = rng.random()
    if roll < 0.08:
        return Step("backfill", size=rng.randint(1, 5))
    if roll < 0.12:
        return Step("killed_backfill", size=rng.randint(1, 5))
    if roll < 0.2:
        keys = [*model.rows, f"{rng.getrandbits(32):08x}"]
        return Step("read", keys=tuple(sorted(rng.sample(keys, min(3, len(keys))))))
    if roll < 0.28 and model.open:
        return Step(
            rng.choice(["commit"] * 3 + ["rollback"]), rng.choice(list(model.open))
        )
    conn = SOLO if roll < 0.4 else rng.choice(WRITERS)
    if one_writer_at_once and conn != SOLO and any(c != conn for c in model.open):
        return Step("commit", next(c for c in model.open if c != conn))
    free = [k for k in model.rows if not model.held_by_another(conn, k)]
    if conn == SOLO:
        if one_writer_at_once and model.open:
            return Step("commit", next(iter(model.open)))
        return _both(rng, shape, free)
    kind = rng.choice(
        ["insert", "insert", "update", "update", "update", "touch", "delete"]
    )
    if kind == "insert" or not free:
        key = f"{rng.getrandbits(32):08x}"
        side = rng.choice(["old", "new"])
        value = rng.choice(getattr(shape, f"{side}_values"))
        return Step("insert", conn, key, **{side: value})
    key = rng.choice(free)
    if kind != "update":
        return Step(kind, conn, key)
    side = rng.choice(["old", "new"])
    return Step(
        "update", conn, key, **{side: rng.choice(getattr(shape, f"{side}_values"))}
    )


def _both(rng: random.Random, shape: Shape, free: list[str]) -> Step:
    """A write of both shapes: in step half the time."""
    new = rng.choice(shape.new_values)
    old = shape.to_old(new) if rng.random() < 0.5 else rng.choice(shape.old_values)
    if free and rng.random() < 0.6:
        return Step("update", SOLO, rng.choice(free), old, new)
    return Step("insert", SOLO, f"{rng.getrandbits(32):08x}", old, new)


def _apply(model: Model, step: Step) -> None:
    """The model's side of a step, for generating the next ones (the backfill
    and reads are left to the run, which knows the backfill's cursor)."""
    if step.kind in ENDS:
        model.end(step.conn, step.kind == "commit")
    elif step.kind in ("backfill", "killed_backfill", "read"):
        for conn in list(model.open):
            model.end(conn, commit=True)
    elif step.kind in WRITES:
        if step.conn != SOLO:
            model.hold(step.conn, step.key)
        if step.kind == "delete":
            model.rows.pop(step.key, None)
        elif step.kind in ("insert", "update"):
            with contextlib.suppress(Refused):
                model.rows[step.key] = model.written(step)


# -- running one against a database ---------------------------------------------


class Divergence(AssertionError):
    pass


class Run:
    """A sequence of steps on a fresh table, compared with the model."""

    def __init__(self, engine: sa.Engine, shape: Shape) -> None:
        self.engine, self.shape = engine, shape
        self.model = Model(shape)
        self.conns: dict[int, sa.Connection] = {}
        self.transactions: dict[int, sa.Transaction] = {}
        self.expanded = False

    def __enter__(self) -> Run:
        with self.engine.begin() as conn:
            for table in self.shape.tables:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            self.shape.create_table(conn)
            progress = data.progress_table
            conn.execute(progress.delete().where(progress.c.tree == TREE))
        return self

    def __exit__(self, *exc: Any) -> None:
        for conn in self.conns.values():
            conn.close()

    def connection(self, number: int) -> sa.Connection:
        if number not in self.conns:
            conn = self.engine.connect()
            if conn.dialect.name == "mysql":
                conn = conn.execution_options(isolation_level="READ COMMITTED")
            self.conns[number] = conn
        return self.conns[number]

    def run(self, steps: list[Step]) -> None:
        for index, step in enumerate(steps):
            try:
                self.step(step)
            except Divergence as e:
                raise Divergence(f"step {index}: {step}: {e}") from None
        try:
            self.finish()
        except Divergence as e:
            raise Divergence(
                f"after the last step, the backfill to its end: {e}"
            ) from None

    def step(self, step: Step) -> None:
        if step.kind == "legacy":
            self.legacy(step)
            return
        if not self.expanded:
            with self.engine.begin() as conn:
                self.shape.expand(conn)
            self.expanded = True
        if step.kind in ENDS:
            self.end(step.conn, step.kind == "commit")
        elif step.kind in WRITES:
            self.write(step)
        elif step.kind == "read":
            self.concurrently(self.read, step)
        else:
            self.concurrently(self.backfill, step)
        self.compare()

    def legacy(self, step: Step) -> None:
        """A row the old release wrote before expand: no new value, no trigger."""
        if self.expanded or step.key in self.model.rows:
            return
        self.model.rows[step.key] = (step.old, self.shape.defaults(self.shape.sync.new))
        with self.engine.begin() as conn:
            self.shape.write(conn, "INSERT", step.key, step.old, None)

    # -- writes --------------------------------------------------------------------

    def write(self, step: Step) -> None:
        model = self.model
        exists = step.key in model.rows
        if (
            model.held_by_another(step.conn, step.key)
            or (step.kind == "insert") == exists
        ):
            return  # not possible here (a shrunk sequence): skipped
        conn = self.connection(step.conn)
        if step.conn == SOLO:
            self.write_alone(conn, step)
            return
        if step.conn not in self.transactions:
            self.transactions[step.conn] = conn.begin()
        model.hold(step.conn, step.key)
        if step.kind == "delete":
            model.rows.pop(step.key)
            conn.execute(
                sa.text(f"DELETE FROM {self.shape.table} WHERE id = :id"),
                {"id": step.key},
            )
            return
        if step.kind == "touch":
            conn.execute(
                sa.text(
                    f"UPDATE {self.shape.table} SET note = 'touched' WHERE id = :id"
                ),
                {"id": step.key},
            )
        else:
            model.rows[step.key] = model.written(step)
            self.shape.write(conn, step.kind.upper(), step.key, step.old, step.new)
        self.compare_row(conn, step.key)

    def write_alone(self, conn: sa.Connection, step: Step) -> None:
        try:
            expected = self.model.written(step)
        except Refused:
            expected = None
        try:
            with conn.begin():
                self.shape.write(conn, step.kind.upper(), step.key, step.old, step.new)
        except sa.exc.DBAPIError as e:
            if expected is not None:
                raise Divergence(f"refused, the rule accepts it: {e.orig}") from None
            return
        if expected is None:
            raise Divergence("accepted, the rule refuses it")
        self.model.rows[step.key] = expected

    def end(self, number: int, commit: bool) -> None:
        transaction = self.transactions.pop(number, None)
        if transaction is None:
            return
        transaction.commit() if commit else transaction.rollback()
        self.model.end(number, commit)

    # -- the backfill and reads, each in a thread of its own ---------------------

    def concurrently(self, action: Any, step: Step) -> None:
        """``action`` in a thread while the writers commit: it may wait for
        their row locks; either way, it acts on their committed rows."""
        before = self.model.committed()
        held = {key for keys in self.model.open.values() for key in keys}
        outcome: list[Any] = []
        thread = threading.Thread(target=lambda: outcome.append(_caught(action, step)))
        thread.start()
        if self.transactions:
            thread.join(LOCK_WAIT)  # time to reach a row the writers hold
        for number in list(self.transactions):
            self.end(number, commit=True)
        thread.join(JOIN_TIMEOUT)
        if thread.is_alive():
            raise Divergence("hung")
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        if step.kind == "read":
            self.check_read(step, result, before, held)
        else:
            self.check_backfill(step, result)

    def backfill(self, step: Step) -> tuple[data.Totals, dict | None]:
        killed = step.kind == "killed_backfill"
        me = threading.current_thread()

        def kill(conn, cursor, statement, *args) -> None:
            """After the batch's last statement, which moves its cursor."""
            sets = statement.partition(" WHERE ")[0]
            moves = sets.startswith(f"UPDATE {data.progress_table.name}")
            if threading.current_thread() is me and moves and "cursor" in sets:
                raise RuntimeError("killed before its commit")

        migration = DataMigration("model", MIGRATION, Backfill(self.shape.sync))
        if killed:
            sa.event.listen(self.engine, "after_cursor_execute", kill)
        try:
            [totals] = data.run(
                self.engine,
                TREE,
                [migration],
                max_count=step.size,
                # Two batches where it can: the second starts from the
                # cursor the first left in memory.
                throttle=Throttle(batch_size=-(-step.size // 2)),
            )
        finally:
            if killed:
                sa.event.remove(self.engine, "after_cursor_execute", kill)
        with self.engine.connect() as conn:
            cursor = conn.execute(
                sa.select(data.progress_table.c.cursor).where(
                    data.progress_table.c.tree == TREE
                )
            ).scalar()
        return totals, cursor

    def check_backfill(self, step: Step, result: tuple[data.Totals, Any]) -> None:
        totals, cursor = result
        if step.kind == "killed_backfill":
            if totals.found and totals.error is None:
                raise Divergence("the killed batch committed")
        elif totals.error:
            raise Divergence(f"backfill failed: {totals.error}")
        if cursor is not None:
            after = json.loads(cursor).get("after")
            for key in self.model.rows:
                if after is not None and key <= after:
                    self.model.convert(key)

    def read(self, step: Step) -> list[tuple]:
        with self.engine.begin() as conn:
            return self.shape.read(conn, step.keys)

    def check_read(
        self, step: Step, rows: list[tuple], before: dict, held: set[str]
    ) -> None:
        """What read() returned: the rows as the rule says, converted; a row
        a writer held may come as it was before that writer committed."""
        for key in step.keys:
            if key in self.model.rows and self.model.unconverted(key):
                self.model.convert(key)
        returned = {row[0]: tuple(row[1:]) for row in rows}
        for key in step.keys:
            after = self.model.rows.get(key)
            allowed = [after[1] if after else None]
            if key in held:
                allowed.append(before[key][1] if key in before else None)
            got = returned.get(key)
            if not any(
                (got is None) == (a is None) and (got is None or same(got, a))
                for a in allowed
            ):
                raise Divergence(f"read {key} gave {got}, the rule says {allowed[0]}")

    # -- comparing -----------------------------------------------------------------

    def select(
        self, conn: sa.Connection, key: str | None = None
    ) -> dict[str, tuple[Values, Values]]:
        return self.shape.select(conn, key)

    def compare_row(self, conn: sa.Connection, key: str) -> None:
        """The row as its writer sees it, right after the write."""
        self.expect(self.select(conn, key), {key: self.model.rows[key]})

    def compare(self) -> None:
        with self.engine.connect() as conn:
            self.expect(self.select(conn), self.model.committed())

    def expect(self, found: dict, expected: dict) -> None:
        if found.keys() != expected.keys():
            raise Divergence(f"keys {sorted(found)}, the rule says {sorted(expected)}")
        for key, (old, new) in expected.items():
            got_old, got_new = found[key]
            if not (same(got_old, old) and same(got_new, new)):
                raise Divergence(
                    f"row {key} is {found[key]}, the rule says {(old, new)}"
                )

    def finish(self) -> None:
        """The backfill run to its end leaves every row's shapes agreeing."""
        for number in list(self.transactions):
            self.end(number, commit=True)
        if not self.expanded:
            return
        while True:
            step = Step("backfill", size=50)
            totals, _ = self.backfill(step)
            self.check_backfill(step, (totals, _))
            if totals.complete:
                break
        self.compare()
        for key, (old, new) in self.model.rows.items():
            if not self.shape.agree(old, new):
                raise Divergence(
                    f"row {key} disagrees after the backfill: {(old, new)}"
                )


def _caught(action: Any, step: Step) -> Any:
    try:
        return action(step)
    except BaseException as e:  # re-raised in the main thread
        return e


# -- the test -------------------------------------------------------------------


def check(engine: sa.Engine, shape: Shape, steps: list[Step]) -> Divergence | None:
    with Run(engine, shape) as run:
        try:
            run.run(steps)
        except Divergence as e:
            return e
    return None


def shortest(
    engine: sa.Engine, shape: Shape, steps: list[Step]
) -> tuple[list[Step], Divergence]:
    """The steps without each one that is not needed to diverge."""
    failure = check(engine, shape, steps)
    assert failure is not None
    index = len(steps) - 1
    while index >= 0:
        fewer = steps[:index] + steps[index + 1 :]
        if (found := check(engine, shape, fewer)) is not None:
            steps, failure = fewer, found
        index -= 1
    return steps, failure


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    yield
    if SOAK:
        for backend, (sequences, steps, divergences) in sorted(CHECKED.items()):
            print(
                f"\n{backend}: {sequences} sequences, {steps} steps checked, "
                f"{divergences} divergences"
            )


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_row_follows_the_mixed_period_rule(engine, name):
    shape = SHAPES[name]
    Database(engine).expand()  # rpccompat's own tables: the backfill's progress
    one_writer = engine.dialect.name == "sqlite"
    for seed in range(SEEDS):
        steps = generate(shape, seed, one_writer)
        failure = check(engine, shape, steps)
        counts = CHECKED.setdefault(engine.dialect.name, [0, 0, 0])
        counts[0] += 1
        counts[1] += len(steps)
        if failure is None:
            continue
        counts[2] += 1
        steps, failure = shortest(engine, shape, steps)
        listing = "\n".join(f"  {step}" for step in steps)
        pytest.fail(
            f"{name} on {engine.dialect.name}, seed {seed}: {failure}\n"
            f"shortest sequence that diverges:\n{listing}",
            pytrace=False,
        )
