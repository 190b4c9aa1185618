"""Expand, migrate and contract one database, and say where it stands.

The steps an operator (or ``rpccompat-manage``) takes, over rpccompat's own
tree and a service project's trees.  Contract is the step that destroys what
the old release needs, so it is gated: refused unless the expand head is
applied, every data migration is complete, and no service row that counts or
is not yet removed runs a release older than each pending contract revision
declares it needs.  Each blocker comes with the command that clears it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from rpccompat import guard
from rpccompat.db import data
from rpccompat.db.backends import backend
from rpccompat.db.tree import (
    CONTRACT,
    EXPAND,
    FRAMEWORK,
    MigrationTree,
    installed_version_tables,
)
from rpccompat.exceptions import (
    MANAGE,
    ContractRefused,
    MigrationError,
    UnknownRelease,
)
from rpccompat.registry import ServiceInfo, ServiceRecord, ServiceRegistry


class Check(enum.IntEnum):
    """``db check`` exit codes (Glance's 3/4/5, plus 6)."""

    UP_TO_DATE = 0
    EXPAND_NEEDED = 3
    MIGRATIONS_PENDING = 4
    CONTRACT_NEEDED = 5
    CONTRACT_BLOCKED = 6


@dataclasses.dataclass(frozen=True)
class Blocker:
    """One reason contract is refused, what clears it, and its ``db check`` code.

    What clears it is a command of the operator's tool, as its words after
    the tool's name (``("db", "migrate")``): the tool the commands are
    mounted in renders it under its own name.  ``unless`` is what to do
    first when it can (upgrade a service, rather than remove it).
    """

    reason: str
    command: tuple[str, ...]
    code: Check = Check.CONTRACT_BLOCKED
    unless: str = ""

    def render(self, prog: str = MANAGE) -> str:
        """The reason and how to clear it, with ``prog`` as the tool's name."""
        first = f"{self.unless}, or if it is gone: " if self.unless else ""
        return f"{self.reason}; to clear: {first}{self.command_line(prog)}"

    def command_line(self, prog: str = MANAGE) -> str:
        return " ".join((prog, *self.command))

    def __str__(self) -> str:
        return self.render()


@dataclasses.dataclass(frozen=True)
class TreeVersion:
    """The composite version of one tree: (expand, contract)."""

    tree: str
    expand: str | None
    expand_head: str
    contract: str | None
    contract_head: str

    @property
    def composite(self) -> str:
        return f"({self.expand or 'base'}, {self.contract or 'base'})"

    def behind(self, branch: str) -> bool:
        return getattr(self, branch) != getattr(self, f"{branch}_head")


@dataclasses.dataclass(frozen=True)
class Status:
    """Where the database stands; ``phase`` is the next step (None: none)."""

    versions: list[TreeVersion]
    pending_migrations: list[str]
    blockers: list[Blocker]
    code: Check

    @property
    def phase(self) -> str | None:
        return {
            Check.EXPAND_NEEDED: "E",
            Check.MIGRATIONS_PENDING: "M",
            Check.CONTRACT_NEEDED: "C",
            Check.CONTRACT_BLOCKED: "C",
        }.get(self.code)


class Database:
    """rpccompat's tree plus ``trees``, in the database behind ``engine``."""

    def __init__(
        self,
        engine: sa.Engine,
        trees: Sequence[MigrationTree] = (),
        *,
        service_down_time: float = 60.0,
    ) -> None:
        self.engine = engine
        self.trees = [FRAMEWORK, *trees]
        self.service_down_time = service_down_time

    # -- where it stands -----------------------------------------------------

    def versions(self) -> list[TreeVersion]:
        with self.engine.connect() as conn:
            self._check_trees(conn)
            return [self._version(conn, tree) for tree in self.trees]

    def _check_trees(self, conn: sa.Connection) -> None:
        """Raise unless every tree the database has revisions of is one of
        ours: with one missing, status would call a half-upgraded database
        up to date and contract would skip what it never saw."""
        unnamed = self.unnamed_trees(conn)
        if not unnamed:
            return
        trees = ", ".join(f"{name!r} (table {table})" for name, table in unnamed)
        raise MigrationError(
            f"the database has revisions of migration tree(s) {trees} that "
            "[database] migration_trees does not name: add them there, or "
            "every status and step sees only part of the schema"
        )

    def unnamed_trees(self, conn: sa.Connection) -> list[tuple[str, str]]:
        """``(tree name, version table)`` of each tree with revisions in the
        database that is not one of ``trees``.  A version table is known by
        an installed tree, or by Alembic's name (``*alembic_version``); a
        tree nothing installed names is called by its table."""
        ours = {tree.version_table for tree in self.trees}
        installed = installed_version_tables()
        return [
            (installed.get(table, table), table)
            for table in sorted(sa.inspect(conn).get_table_names())
            if table not in ours
            and (table in installed or table.endswith("alembic_version"))
            and conn.execute(
                sa.select(sa.literal(1)).select_from(sa.table(table))
            ).first()
        ]

    @staticmethod
    def _version(conn: sa.Connection, tree: MigrationTree) -> TreeVersion:
        current = tree.current(conn)
        return TreeVersion(
            tree.name,
            current[EXPAND],
            tree.head(EXPAND),
            current[CONTRACT],
            tree.head(CONTRACT),
        )

    def pending_migrations(self) -> list[str]:
        """``tree/name`` of each data migration not complete, of every release."""
        with self.engine.connect() as conn:
            framework_ready = sa.inspect(conn).has_table(data.progress_table.name)
            pending = []
            for tree in self.trees:
                done = data.completed(conn, tree.name) if framework_ready else set()
                pending += [
                    f"{tree.name}/{m.name}"
                    for m in self._ordered(tree)
                    if m.name not in done
                ]
            return pending

    def status(self, *, offline: bool = False) -> Status:
        versions = self.versions()
        pending = self.pending_migrations()
        blockers = self.blockers(versions, pending, offline=offline)
        if any(v.behind(EXPAND) for v in versions):
            code = Check.EXPAND_NEEDED
        elif pending:
            code = Check.MIGRATIONS_PENDING
        elif not any(v.behind(CONTRACT) for v in versions):
            code = Check.UP_TO_DATE
        else:
            code = Check.CONTRACT_BLOCKED if blockers else Check.CONTRACT_NEEDED
        return Status(versions, pending, blockers, code)

    def blockers(
        self,
        versions: list[TreeVersion] | None = None,
        pending: list[str] | None = None,
        *,
        offline: bool = False,
    ) -> list[Blocker]:
        """Every reason contract would be refused now.

        ``offline`` (``db sync``, all services stopped by the operator) lets
        rows of services that are not up through; the expand and data
        migration rules still hold.
        """
        versions = self.versions() if versions is None else versions
        pending = self.pending_migrations() if pending is None else pending
        blockers = [
            Blocker(
                f"{v.tree}: expand head {v.expand_head} is not applied "
                f"(at {v.expand or 'base'})",
                ("db", "expand"),
                Check.EXPAND_NEEDED,
            )
            for v in versions
            if v.behind(EXPAND)
        ]
        blockers += [
            Blocker(
                f"data migration {name} has rows left",
                ("db", "migrate"),
                Check.MIGRATIONS_PENDING,
            )
            for name in pending
        ]
        if not any(v.behind(EXPAND) for v in versions):
            blockers += self._service_blockers(offline)
        return blockers

    def _service_blockers(self, offline: bool) -> list[Blocker]:
        with self.engine.connect() as conn:
            needs = [
                (tree, revision.revision, needed)
                for tree in self.trees
                if tree.history is not None
                for revision in tree.pending(conn, CONTRACT)
                if (needed := tree.requires_release(revision))
            ]
            installed = sa.inspect(conn).has_table(ServiceRecord.__tablename__)
        if not needs or not installed:  # nothing to contract, or nobody yet
            return []
        services = ServiceRegistry(self.engine).services()
        if offline:
            services = [s for s in services if s.is_up(self.service_down_time)]
        return [
            Blocker(
                f"{service.name} {reason}; contract {revision} needs {needed}",
                ("service", "remove", service.binary, service.host),
                unless=f"upgrade it to {needed}",
            )
            for tree, revision, needed in needs
            for service in services
            if (reason := self._too_old(tree, service, needed))
        ]

    def _too_old(
        self, tree: MigrationTree, service: ServiceInfo, needed: str
    ) -> str | None:
        assert tree.history is not None
        state = service.state(self.service_down_time)
        try:
            if tree.history.index(service.release) >= tree.history.index(needed):
                return None
        except UnknownRelease:
            return f"runs {service.release!r}, unknown to {tree.name} ({state})"
        return f"runs {service.release} ({state})"

    # -- the steps -------------------------------------------------------------

    def expand(self, **settings: Any) -> None:
        """Apply every tree's expand branch; additive, safe while all serve.

        ``settings`` reach the revision scripts' DDL: ``lock_timeout`` and
        ``retry_budget`` in seconds (see rpccompat.db.ddl).
        """
        with self.engine.connect() as conn:
            self._check_trees(conn)  # before any tree changes
        refusal = self.expand_refusal()
        if refusal is not None:
            raise MigrationError(refusal)
        for tree in self.trees:
            self._upgrade(tree, EXPAND, **settings)

    def migrate(
        self,
        *,
        max_count: int | None = None,
        throttle: data.Throttle = data.DEFAULT_THROTTLE,
        progress: Callable[[data.Totals], None] = lambda totals: None,
    ) -> list[data.Totals]:
        """Run the data migrations of every tree and every release.

        ``max_count`` bounds the rows looked at in this run (one pass of
        ``online_data_migrations``); None runs until all are complete.
        Refused before expand: a migration finding nothing to do on the old
        shape would be recorded complete, and rows the old release writes
        before the triggers exist would never be converted.
        """
        behind = [v.tree for v in self.versions() if v.behind(EXPAND)]
        if behind:
            raise MigrationError(
                f"data migrations need the expanded schema, and {', '.join(behind)} "
                "is not expanded yet: run {command} first",
                command=("db", "expand"),
            )
        results: list[data.Totals] = []
        for tree in self.trees:
            budget = (
                None if max_count is None else max_count - sum(t.found for t in results)
            )
            results += data.run(
                self.engine,
                tree.name,
                self._ordered(tree),
                max_count=budget,
                throttle=throttle,
                progress=progress,
            )
        return results

    def contract(self, *, offline: bool = False, **settings: Any) -> None:
        """Apply every tree's contract branch, or raise ContractRefused.

        The gate is checked, then the contracting state is taken (committed:
        from then on a node below the new floor refuses to start) and the
        services are checked again, so a node that started between the first
        check and the state blocks the contract instead of losing its
        columns.  The trees record the new floor; a contract that fails
        part-way keeps its state, so older nodes keep refusing until a
        contract runs through (see ``guard.contracting``).
        """
        _refuse(self.blockers(offline=offline))
        projects = [tree.history.project for tree in self.trees if tree.history]
        with guard.contracting(self.engine, self._new_floors(), projects):
            _refuse(self._service_blockers(offline))
            for tree in self.trees:
                self._upgrade(tree, CONTRACT, **settings)

    def _new_floors(self) -> dict[str, guard.Mark]:
        """The floor of each project whose tree has contract revisions
        pending: the one it has once all are applied."""
        floors = {}
        with self.engine.connect() as conn:
            for tree in self.trees:
                if tree.history is None or not tree.pending(conn, CONTRACT):
                    continue
                every = {r.revision for r in tree.revisions(CONTRACT)}
                if floor := guard.Mark.of(tree.floor(every)):
                    floors[tree.history.project] = floor
        return floors

    def sync(self, **settings: Any) -> list[data.Totals]:
        """The offline path: expand, migrate, contract, with every service stopped.

        No sync triggers are installed: nothing writes the old shape meanwhile.
        A service still up on an older release refuses it before any change.
        A data migration that fails stops it before contract, which would only
        be refused for the rows it left: its totals carry the error.
        """
        _refuse(self._service_blockers(offline=True))
        self.expand(sync_triggers=False, **settings)
        results = self.migrate()
        if not any(t.error for t in results):
            self.contract(offline=True, sync_triggers=False, **settings)
        return results

    def _upgrade(self, tree: MigrationTree, branch: str, **settings: Any) -> None:
        """Apply ``branch`` up to the tree's head; with nothing to apply,
        record what the schema serves again (a run interrupted after its
        last revision, before its record, left the guard behind).

        A tree as_of an older release may find newer releases' revisions
        applied past its head: it leaves them as they are.
        """
        with self.engine.connect() as conn:
            pending = tree.pending(conn, branch)
            conn.rollback()  # each revision runs in a transaction of its own
            if pending:
                tree.upgrade(conn, tree.head(branch), **settings)
            else:
                tree.record_served(conn)

    def expand_refusal(self) -> str | None:
        """Why the server would refuse a trigger that a pending expand
        revision creates (MySQL/MariaDB's privileges), or None: found before
        expand changes anything."""
        db = backend(self.engine)
        with self.engine.connect() as conn:
            refusal = db.trigger_refusal(conn)
            if refusal is None:
                return None
            pending = {t.name: t.pending(conn, EXPAND) for t in self.trees}
        for tree in self.trees:
            rendered = tree.render(db.name) if pending[tree.name] else {}
            if any(
                "CREATE TRIGGER" in rendered.get(r.revision, "")
                for r in pending[tree.name]
            ):
                return refusal
        return None

    @staticmethod
    def _ordered(tree: MigrationTree) -> list[data.DataMigration]:
        migrations = list(tree.data_migrations)
        history = tree.history
        if history is not None:
            migrations.sort(key=lambda m: history.index(m.release))
        return migrations


def _refuse(blockers: list[Blocker]) -> None:
    if blockers:
        raise ContractRefused(
            f"contract refused: {len(blockers)} blocker(s): "
            + "; ".join(str(b) for b in blockers),
            tuple(blockers),
        )
