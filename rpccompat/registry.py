"""The ``services`` table: which node runs which release, and is it alive.

Each running service keeps one row (host + binary) up to date: its release,
RPC and object versions on every heartbeat, not only at start, so that pins
follow what really runs.  Rows are soft-deleted; a deleted row never counts.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid as uuidlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import orm

from rpccompat.exceptions import ServiceNotFound

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime.datetime:
    """Naive UTC, as every backend stores it alike."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class Base(orm.DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class ServiceRecord(Base):
    __tablename__ = "services"
    # ``deleted`` is 0 for a live row and the row's id once soft-deleted, so
    # host+binary stay unique among live rows (Nova's convention).
    __table_args__ = (sa.UniqueConstraint("host", "binary", "deleted"),)

    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    uuid: orm.Mapped[str] = orm.mapped_column(sa.String(36), unique=True)
    host: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    binary: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    topic: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    availability_zone: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    release: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    rpc_current_version: orm.Mapped[str | None] = orm.mapped_column(sa.String(36))
    object_current_version: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    report_count: orm.Mapped[int] = orm.mapped_column(default=0)
    disabled: orm.Mapped[bool] = orm.mapped_column(default=False)
    disabled_reason: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    forced_down: orm.Mapped[bool] = orm.mapped_column(default=False)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
    updated_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column()
    stopped_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column()
    deleted_at: orm.Mapped[datetime.datetime | None] = orm.mapped_column()
    deleted: orm.Mapped[int] = orm.mapped_column(default=0)


@dataclasses.dataclass(frozen=True)
class ServiceInfo:
    """A snapshot of one row, safe to keep after its session is gone."""

    id: int
    uuid: str
    host: str
    binary: str
    topic: str | None
    availability_zone: str | None
    release: str
    rpc_current_version: str | None
    object_current_version: str
    report_count: int
    disabled: bool
    disabled_reason: str | None
    forced_down: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime | None
    stopped_at: datetime.datetime | None
    deleted_at: datetime.datetime | None

    @classmethod
    def of(cls, record: ServiceRecord) -> ServiceInfo:
        return cls(**{f.name: getattr(record, f.name) for f in dataclasses.fields(cls)})

    @property
    def name(self) -> str:
        return f"{self.binary}@{self.host}"

    def is_up(self, down_time: float, now: datetime.datetime | None = None) -> bool:
        """Heartbeat fresh, not stopped, not forced down: the node answers."""
        if self.forced_down or self.stopped_at or self.updated_at is None:
            return False
        age = ((now or utcnow()) - self.updated_at).total_seconds()
        return age < down_time

    def state(self, down_time: float, now: datetime.datetime | None = None) -> str:
        if self.deleted_at:
            return "deleted"
        if self.stopped_at:
            return "stopped"
        if self.forced_down:
            return "forced down"
        return "up" if self.is_up(down_time, now) else "down"


class ServiceRegistry:
    """Reads and writes the services table through one engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._sessions = orm.sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _session(self) -> Iterator[orm.Session]:
        with self._sessions.begin() as session:
            yield session

    @staticmethod
    def _live(session: orm.Session, binary: str, host: str) -> ServiceRecord | None:
        return session.scalars(
            sa.select(ServiceRecord).where(
                ServiceRecord.binary == binary,
                ServiceRecord.host == host,
                ServiceRecord.deleted == 0,
            )
        ).one_or_none()

    def _get_live(self, session: orm.Session, binary: str, host: str) -> ServiceRecord:
        record = self._live(session, binary, host)
        if record is None:
            raise ServiceNotFound(
                f"no service {binary!r} on host {host!r}: see 'rpccompat-manage "
                "service list' for the services that exist"
            )
        return record

    def report(
        self,
        *,
        host: str,
        binary: str,
        release: str,
        rpc_version: str | None,
        objects_version: str,
        topic: str | None = None,
        availability_zone: str | None = None,
        check: Callable[[orm.Session], None] | None = None,
    ) -> ServiceInfo:
        """Create or refresh this node's row: start-up and every heartbeat.

        A row an operator removed while the node still runs comes back, as in
        Nova: a live node must never be invisible to the pins.  ``check``
        runs first in the same transaction (the schema guard); what it raises
        leaves the row as it was.
        """
        now = utcnow()
        with self._session() as session:
            if check is not None:
                check(session)
            record = self._live(session, binary, host)
            if record is None:
                record = ServiceRecord(
                    uuid=str(uuidlib.uuid4()), host=host, binary=binary, created_at=now
                )
                session.add(record)
            record.topic = topic
            record.availability_zone = availability_zone
            record.release = release
            record.rpc_current_version = rpc_version
            record.object_current_version = objects_version
            record.report_count = (record.report_count or 0) + 1
            record.updated_at = now
            record.stopped_at = None
            session.flush()
            return ServiceInfo.of(record)

    def mark_stopped(self, binary: str, host: str) -> None:
        """A graceful stop: the row stays for operators but stops counting."""
        with self._session() as session:
            record = self._live(session, binary, host)
            if record is not None:
                record.stopped_at = utcnow()

    def services(
        self, binary: str | None = None, *, include_deleted: bool = False
    ) -> list[ServiceInfo]:
        query = sa.select(ServiceRecord).order_by(
            ServiceRecord.binary, ServiceRecord.host, ServiceRecord.id
        )
        if binary is not None:
            query = query.where(ServiceRecord.binary == binary)
        if not include_deleted:
            query = query.where(ServiceRecord.deleted == 0)
        with self._session() as session:
            return [ServiceInfo.of(r) for r in session.scalars(query)]

    def get(self, binary: str, host: str) -> ServiceInfo:
        with self._session() as session:
            return ServiceInfo.of(self._get_live(session, binary, host))

    def remove(self, binary: str, host: str) -> ServiceInfo:
        """Soft-delete a row, e.g. of a node that is gone for good."""
        with self._session() as session:
            record = self._get_live(session, binary, host)
            record.deleted = record.id
            record.deleted_at = utcnow()
            return ServiceInfo.of(record)

    def set_disabled(
        self, binary: str, host: str, disabled: bool, reason: str | None = None
    ) -> ServiceInfo:
        with self._session() as session:
            record = self._get_live(session, binary, host)
            record.disabled = disabled
            record.disabled_reason = reason if disabled else None
            return ServiceInfo.of(record)

    def set_forced_down(self, binary: str, host: str, forced_down: bool) -> ServiceInfo:
        with self._session() as session:
            record = self._get_live(session, binary, host)
            record.forced_down = forced_down
            return ServiceInfo.of(record)
