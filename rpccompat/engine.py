"""One SQLAlchemy engine per process, tuned for many short concurrent writers.

Every node of a cluster writes heartbeats into the same database; on SQLite,
several nodes of the embedded demo share one file, so they need WAL and a busy
timeout instead of failing on ``database is locked``.
"""

from __future__ import annotations

import functools
import logging
import select
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from rpccompat.exceptions import first_line

LOG = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def create_engine(url: str | URL, **kwargs: Any) -> sa.Engine:
    url = parse_url(url)
    if url.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = sa.create_engine(url, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


def parse_url(url: str | URL) -> URL:
    """SQLAlchemy's ``make_url``, refusing a password with an unencoded ``@``.

    SQLAlchemy ends the password at its first ``@`` and takes the rest for
    the host name, which the driver then quotes in its error: part of the
    password on screen, and a connection that can never work.
    """
    url = make_url(url)
    if "@" in (url.host or ""):
        raise sa.exc.ArgumentError(
            "the password holds an unencoded '@': write it as %40"
        )
    return url


def cancel_on_interrupt() -> None:
    """Let Ctrl-C stop a statement PostgreSQL is running, for a command-line tool.

    psycopg2 waits for a result inside libpq, where Python's SIGINT handler
    cannot run: Ctrl-C would wait for the statement to end, and a concurrent
    index build waiting for an old transaction may never end.  With a wait
    callback psycopg2 waits in Python instead; there Ctrl-C cancels the
    statement on the server and is raised once the server has stopped it.
    The callback is process-wide, so it is for a tool's ``main``.
    """
    try:
        from psycopg2 import extensions
    except ImportError:  # no PostgreSQL driver, nothing to wait in
        return
    extensions.set_wait_callback(_wait_cancelling_on_interrupt)


def _wait_cancelling_on_interrupt(conn: Any) -> None:
    """psycopg2's ``extras.wait_select``, raising KeyboardInterrupt after the
    cancel instead of the server's "canceling statement due to user request"."""
    from psycopg2 import extensions

    interrupted = None
    while True:
        try:
            state = conn.poll()
            if state == extensions.POLL_OK:
                break
            readable = [conn.fileno()] if state == extensions.POLL_READ else []
            writable = [conn.fileno()] if state == extensions.POLL_WRITE else []
            select.select(readable, writable, [])
        except KeyboardInterrupt as e:
            interrupted = e
            conn.cancel()  # the server's error ends the loop
        except extensions.QueryCanceledError:
            if interrupted is None:
                raise
            break
    if interrupted is not None:
        raise interrupted


def retry_on_disconnect(
    fn: F | None = None, *, attempts: int = 3, delay: float = 0.1
) -> Any:
    """Run ``fn`` again when the database dropped its connection under it.

    A failover, a proxy restart or an idle timeout kills connections in the
    middle of a transaction; the pool's pre-ping only catches idle ones.  An
    RPC method would fail its caller for a fault the caller cannot see, so
    the method runs again on a fresh connection.  ``fn`` must be idempotent
    (the lost transaction may have committed before the connection went):
    take generated keys as arguments or create them before the first try.
    """
    if fn is None:
        return functools.partial(retry_on_disconnect, attempts=attempts, delay=delay)

    @functools.wraps(fn)
    def retrying(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(1, attempts):
            try:
                return fn(*args, **kwargs)
            except sa.exc.DBAPIError as e:
                if not e.connection_invalidated:
                    raise
                LOG.warning(
                    "%s: database connection lost (%s); try %d of %d",
                    fn.__qualname__,
                    first_line(e.orig),
                    attempt + 1,
                    attempts,
                )
                time.sleep(delay)
        return fn(*args, **kwargs)

    return retrying


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
