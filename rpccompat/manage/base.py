"""What every command of ``rpccompat-manage`` is given, and how it answers.

A :class:`Context` holds the parsed configuration and builds what a command
needs from it on first use, so ``db lint`` never connects and ``service
list`` never touches the broker.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import oslo_messaging as messaging
import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy import exc as sa_exc

from rpccompat import engine as dbengine
from rpccompat import opts, pins, rpc
from rpccompat.db import Database, MigrationTree
from rpccompat.db import tree as treelib
from rpccompat.exceptions import (
    ConfigurationError,
    MigrationError,
    RPCCompatError,
    first_line,
)
from rpccompat.history import History
from rpccompat.registry import ServiceInfo, ServiceRecord, ServiceRegistry
from rpccompat.scrub import scrub

# Exit codes every command shares; some commands add their own (see each).
OK, ERROR, NOT_FOUND, BAD_INPUT = 0, 1, 2, 127

F = TypeVar("F", bound=Callable[..., Any])


class CommandError(RPCCompatError):
    """One line for the operator (what, why, what to do) and an exit code
    (None: the command's own failure code, see ``error_exit``)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def args(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """Declare one argparse argument of a command (nova-manage's decorator)."""

    def decorate(fn: F) -> F:
        fn.__dict__.setdefault("arguments", []).insert(0, (names, kwargs))
        return fn

    return decorate


def error_exit(code: int) -> Callable[[F], F]:
    """This command's exit code when it fails, for a command whose 1 already
    means something else (``db migrate``: more to do; ``upgrade check``:
    warnings); bad input is still 127."""

    def decorate(fn: F) -> F:
        fn.__dict__["error_code"] = code
        return fn

    return decorate


def combine(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several ``args`` as one decorator, for flags many commands share."""

    def decorate(fn: F) -> F:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return decorate


json_flag = args("--json", action="store_true", help="print JSON for scripts")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


class Context:
    """One run's configuration, and the engine, trees and history it names.

    ``trees`` and ``history`` are given by a service mounting these commands
    in its own ``<service>-manage``; ``rpccompat-manage`` reads them from
    ``[database] migration_trees`` (the history is the trees' own).
    """

    def __init__(
        self,
        conf: cfg.ConfigOpts,
        *,
        prog: str,
        trees: Sequence[MigrationTree] | None = None,
        history: History | None = None,
    ) -> None:
        self.conf = conf
        self.prog = prog
        self._trees = None if trees is None else list(trees)
        self._history = history

    @functools.cached_property
    def trees(self) -> list[MigrationTree]:
        if self._trees is not None:
            return self._trees
        try:
            return [treelib.load(spec) for spec in self.conf.database.migration_trees]
        except MigrationError as e:
            raise CommandError(f"[database] migration_trees: {e}", BAD_INPUT) from e

    @functools.cached_property
    def history(self) -> History | None:
        """The service project's history, or None if no tree declares one."""
        if self._history is not None:
            return self._history
        histories = {id(t.history): t.history for t in self.trees if t.history}
        if len(histories) > 1:
            raise CommandError(
                "the migration trees declare different histories; list the "
                "trees of one service project per config file",
                BAD_INPUT,
            )
        history = next(iter(histories.values()), None)
        if history is not None:
            self.conf.register_opts(
                opts.upgrade_level_opts(history.binaries), group="upgrade_levels"
            )
        return history

    @functools.cached_property
    def engine(self) -> sa.Engine:
        try:
            url = opts.database_connection(self.conf)
        except ConfigurationError as e:
            raise CommandError(f"{e} (or pass --db-url URL)", BAD_INPUT) from e
        try:
            return dbengine.create_engine(url)
        except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as e:
            raise CommandError(
                f"cannot use database URL {scrub(str(url))}: {e}; give an "
                "SQLAlchemy URL such as mysql+pymysql://user:password@host/db "
                "in [database] connection or --db-url, with its driver installed",
                BAD_INPUT,
            ) from e

    @functools.cached_property
    def database(self) -> Database:
        return Database(
            self.engine, self.trees, service_down_time=self.conf.service_down_time
        )

    @functools.cached_property
    def registry(self) -> ServiceRegistry:
        with self.engine.connect() as conn:
            installed = sa.inspect(conn).has_table(ServiceRecord.__tablename__)
        if not installed:
            raise CommandError(
                f"the database at {scrub(str(self.engine.url))} has no "
                f"services table: install the schema first ({self.prog} db sync "
                f"for a new deployment, {self.prog} db expand for an upgrade)"
            )
        return ServiceRegistry(self.engine)

    def pins(
        self, services: list[ServiceInfo], now: datetime.datetime | None = None
    ) -> dict[str, pins.Pin]:
        """The pins every client computes from ``services``, read at ``now``
        (empty with no history to compute them from)."""
        if self.history is None:
            return {}
        return pins.compute_pins(
            self.history,
            services,
            upgrade_levels=dict(self.conf.upgrade_levels.items()),
            down_time=self.conf.service_down_time,
            now=now,
        )

    @functools.cached_property
    def transport(self) -> messaging.Transport | None:
        """The broker that changes are announced on (None: no history to
        announce with, or no transport URL given).  A command that changes a
        row builds it first, so a URL that cannot work changes nothing."""
        if self.history is None or not opts.transport_configured(self.conf):
            return None
        try:
            return rpc.make_transport(self.conf)
        except (messaging.InvalidTransportURL, messaging.DriverLoadFailure) as e:
            raise CommandError(
                f"cannot use transport URL {scrub(self.conf.transport_url)}"
                f": {first_line(e)}; give an oslo.messaging URL such as "
                "rabbit://user:password@host:5672/ in [DEFAULT] transport_url or "
                "--transport-url",
                BAD_INPUT,
            ) from e

    def announce(self, event: str, binary: str, host: str) -> str:
        """Tell running processes to refresh their pins; say how they will."""
        later = (
            f"running processes see it within pin_refresh_interval "
            f"({self.conf.pin_refresh_interval:g} s)"
        )
        if self.transport is None or self.history is None:
            return later
        sent = pins.announce(self.transport, self.history, event, binary, host)
        return f"announced on the control fanout; {later}" if sent else later

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
        transport = self.__dict__.get("transport")
        if transport is not None:
            transport.cleanup()
