"""What a DDL statement waits for, said while it waits.

An operator watching ``db expand`` sit still cannot tell a big table from a
transaction left open somewhere; every PROGRESS_EVERY seconds of waiting a
line names the transactions in the way, so the operator can end them or
stop (Ctrl-C) and come back later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from types import TracebackType

import sqlalchemy as sa

from rpccompat.db.backends import backend

LOG = logging.getLogger(__name__)

PROGRESS_EVERY = 5.0  # seconds of waiting between two progress lines
POLL = 0.25  # seconds between two looks at a watched statement
BLOCKERS = (
    "SELECT b.pid, b.state, now() - b.xact_start FROM pg_stat_activity w "
    "CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS h(pid) "
    "JOIN pg_stat_activity b ON b.pid = h.pid "
    "WHERE w.pid = :pid AND w.wait_event_type = 'Lock' ORDER BY b.xact_start"
)


def describe(rows: Sequence[sa.Row], session: str = "pid") -> str:
    """``pid 123 (idle in transaction for 0:00:42)``, ... for (id, state, age)."""
    return ", ".join(f"{session} {id_} ({state} for {age})" for id_, state, age in rows)


def oldest_transactions(conn: sa.Connection) -> str:
    """The oldest transactions open on the server besides ``conn``'s own: the
    likely holders of a lock a statement of ``conn`` could not get."""
    db = backend(conn)
    if db.oldest_transactions is None:
        return "another connection"
    try:
        rows = conn.exec_driver_sql(db.oldest_transactions).all()
    except sa.exc.DBAPIError:  # MySQL shows them only with PROCESS
        return "unknown (this user may not see other transactions)"
    return describe(rows, db.session) or "none open now"


class Watch:
    """Watches a PostgreSQL statement run on ``conn`` from a connection of its own.

    Every PROGRESS_EVERY seconds it spends waiting for a lock (a concurrent
    index build waits for every transaction older than it), a line names the
    backends it waits for; once it has waited ``budget`` seconds in all it is
    cancelled and ``gave_up`` is set.  Time spent working is not counted:
    building a big index takes as long as it takes.
    """

    def __init__(self, conn: sa.Connection, what: str, budget: float) -> None:
        self.engine = conn.engine
        self.pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        self.what = what
        self.budget = budget
        self.gave_up = False
        self.holders = ""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            # Autocommit: a snapshot of the watcher's would be one more old
            # transaction for an index build to wait for.
            with self.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as conn:
                self._watch(conn)
        except sa.exc.DBAPIError as e:  # unwatched, the statement goes on
            LOG.debug("cannot watch %s: %s", self.what, e)

    def _watch(self, conn: sa.Connection) -> None:
        waited, said = 0.0, 0.0
        while not self._stopping.wait(POLL):
            blockers = conn.execute(sa.text(BLOCKERS), {"pid": self.pid}).all()
            if not blockers:
                continue
            waited += POLL
            self.holders = describe(blockers)
            if waited >= self.budget:
                self.gave_up = True
                cancel = sa.text("SELECT pg_cancel_backend(:pid)")
                conn.execute(cancel, {"pid": self.pid})
                return
            if waited - said >= PROGRESS_EVERY:
                said = waited
                LOG.warning(
                    "%s: waited %.0fs of %gs for %s to end; end them, or stop "
                    "with Ctrl-C and run the same command again later",
                    self.what,
                    waited,
                    self.budget,
                    self.holders,
                )
