"""The schema guard: which releases the database serves, and who may start.

For each service project the database records, in ``rpccompat_schema_guard``,
the range of releases its schema serves: the *ceiling*, the newest release
whose expand revisions are all applied, and the *floor*, the oldest release
left once contract revisions have removed what older ones need; and, while a
contract runs, the floor it is about to set.  Every migration of a tree
rewrites ceiling and floor from what is applied; ``Database.contract`` sets
and clears the contracting state.

A node reads its project's row once before it writes its services row, and
refuses to start when its release is outside the range or below a running
contract's floor; its heartbeat reads the floor again, and a node the floor
has left behind stops counting.  Releases are compared by their
``objects_version``, which rises with every release of a history, so a node
compares itself with releases its own (older) history does not know.

A node below a running contract's floor refuses rather than waits: the
contract may take long or have died half-way, a supervisor restarts the node
anyway, and its one line says what to do.  A project with no row (no tree of
it migrated since the guard exists, or a tree that declares no history) is
not guarded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import Iterable, Iterator, Mapping

import sqlalchemy as sa
from sqlalchemy import orm

from rpccompat.exceptions import MANAGE, ContractRefused, SchemaRefused
from rpccompat.history import History, Release, version_tuple
from rpccompat.registry import NAMING_CONVENTION, utcnow

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
state_table = sa.Table(
    "rpccompat_schema_guard",
    metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("ceiling_release", sa.String(64)),
    sa.Column("ceiling_version", sa.String(36)),
    sa.Column("floor_release", sa.String(64)),
    sa.Column("floor_version", sa.String(36)),
    sa.Column("contracting_release", sa.String(64)),
    sa.Column("contracting_version", sa.String(36)),
    sa.Column("contracting_since", sa.DateTime),
    sa.Column("updated_at", sa.DateTime),
)


@dataclasses.dataclass(frozen=True)
class Mark:
    """A release as the database records it: its name and objects version."""

    release: str
    version: str

    @classmethod
    def of(cls, release: Release | None) -> Mark | None:
        if release is None:
            return None
        assert release.objects_version is not None  # History numbers them all
        return cls(release.name, release.objects_version)

    @property
    def key(self) -> tuple[int, ...]:
        """What releases are ordered by, across histories."""
        return version_tuple(self.version)


def _key(release: Release) -> tuple[int, ...]:
    assert release.objects_version is not None
    return version_tuple(release.objects_version)


@dataclasses.dataclass(frozen=True)
class SchemaState:
    """One project's row: what its schema serves, and any contract running."""

    project: str
    ceiling: Mark | None
    floor: Mark | None
    contracting: Mark | None
    contracting_since: datetime.datetime | None

    def gone(self, release: Release) -> str | None:
        """Why the contracted schema no longer serves ``release`` (None: it does)."""
        if self.floor is None or self.floor.key <= _key(release):
            return None
        return (
            f"contract removed what {release.name} needs (the oldest release "
            f"allowed is {self.floor.release}); upgrade this node to "
            f"{self.floor.release} or newer"
        )

    def refusal(self, release: Release) -> str | None:
        """Why a node of ``release`` may not start now (None: it may)."""
        if gone := self.gone(release):
            return gone
        if self.contracting is not None and self.contracting.key > _key(release):
            since = self.contracting_since or utcnow()
            return (
                f"a contract to {self.contracting.release} has been running since "
                f"{since:%Y-%m-%d %H:%M:%S} UTC and removes what "
                f"{release.name} needs; upgrade this node to "
                f"{self.contracting.release} or newer (if no contract runs any "
                f"more, run {MANAGE} db contract again to finish it)"
            )
        if self.ceiling is None or self.ceiling.key < _key(release):
            served = self.ceiling.release if self.ceiling else "no release"
            return (
                f"the schema is not expanded for {release.name} yet (it serves "
                f"up to {served}); run {MANAGE} db expand with {release.name}'s "
                "code first"
            )
        return None


def _mark(row: sa.Row, column: str) -> Mark | None:
    release = getattr(row, f"{column}_release")
    version = getattr(row, f"{column}_version")
    return None if release is None else Mark(release, version)


def read(
    executor: sa.Connection | orm.Session, project: str, *, lock: bool = False
) -> SchemaState | None:
    """``project``'s row (None: no tree of the project has been migrated
    since the guard exists).

    ``lock`` holds the row until the transaction ends, so a contract cannot
    take its state between this read and the node's row: by a write that
    changes nothing, as SQLite has no ``SELECT ... FOR SHARE`` and begins a
    transaction only at a write (until then, another writer may commit
    between two of its reads).
    """
    where = state_table.c.project == project
    if lock:
        executor.execute(
            state_table.update().where(where).values(project=state_table.c.project)
        )
    row = executor.execute(sa.select(state_table).where(where)).one_or_none()
    if row is None:
        return None
    return SchemaState(
        project,
        ceiling=_mark(row, "ceiling"),
        floor=_mark(row, "floor"),
        contracting=_mark(row, "contracting"),
        contracting_since=row.contracting_since,
    )


def admit(session: orm.Session, history: History, node: str) -> None:
    """Raise SchemaRefused unless a node of ``history``'s newest release may
    start; called in the transaction that then writes the node's row."""
    try:
        state = read(session, history.project, lock=True)
    except sa.exc.DBAPIError:  # looked at anew: the transaction is aborted
        if sa.inspect(session.get_bind()).has_table(state_table.name):
            raise
        raise SchemaRefused(
            f"{node} refused to start: rpccompat's own tables are not expanded "
            f"(no {state_table.name}); run {MANAGE} db expand first"
        ) from None
    refusal = state and state.refusal(history.current)
    if refusal:
        raise SchemaRefused(f"{node} refused to start: {refusal}")


def still_served(session: orm.Session, history: History, node: str) -> None:
    """Raise SchemaRefused when a contract removed what this running node
    needs: read on every heartbeat, by primary key, without a lock."""
    state = read(session, history.project)
    gone = state and state.gone(history.current)
    if gone:
        raise SchemaRefused(f"{node} stops counting: {gone}")


# -- the writers: migrations and contract -------------------------------------


def record(conn: sa.Connection, project: str, **values: object) -> None:
    """Update ``project``'s row, creating it the first time."""
    values = {**values, "updated_at": utcnow()}
    where = state_table.c.project == project
    if not conn.execute(state_table.update().where(where).values(values)).rowcount:
        conn.execute(state_table.insert().values(project=project, **values))


def record_served(
    conn: sa.Connection, project: str, ceiling: Mark | None, floor: Mark | None
) -> None:
    """What the schema serves after a migration, committed on ``conn``."""
    if not sa.inspect(conn).has_table(state_table.name):
        return  # rpccompat's own tree is not expanded yet: nobody reads it
    record(conn, project, **_columns("ceiling", ceiling), **_columns("floor", floor))
    conn.commit()


def _columns(column: str, mark: Mark | None) -> dict[str, str | None]:
    return {
        f"{column}_release": mark.release if mark else None,
        f"{column}_version": mark.version if mark else None,
    }


@contextlib.contextmanager
def contracting(
    engine: sa.Engine, floors: Mapping[str, Mark], projects: Iterable[str] = ()
) -> Iterator[None]:
    """Hold the contracting state of each project (its new floor) while the
    body runs, committed before it starts: a node below it refuses to start
    from then on, and a node that started before is in the services table
    when the body looks.

    Cleared, for ``projects`` too (a contract interrupted while it cleared
    its state has nothing pending when run again), when the body ends or
    refuses before changing anything; kept
    when it fails part-way (an error, Ctrl-C): its DDL may have removed what
    older nodes need already (MySQL/MariaDB commit each statement), so they
    keep refusing until a contract runs through.
    """
    with engine.begin() as conn:
        for project, floor in floors.items():
            record(
                conn,
                project,
                **_columns("contracting", floor),
                contracting_since=utcnow(),
            )
    every = {*floors, *projects}
    try:
        yield
    except ContractRefused:
        _clear_contracting(engine, every)
        raise
    _clear_contracting(engine, every)


def _clear_contracting(engine: sa.Engine, projects: Iterable[str]) -> None:
    """Clear the contracting state of those of ``projects`` that have a row
    (a project with none stays unguarded)."""
    with engine.begin() as conn:
        conn.execute(
            state_table.update()
            .where(state_table.c.project.in_(list(projects)))
            .values(
                **_columns("contracting", None),
                contracting_since=None,
                updated_at=utcnow(),
            )
        )
