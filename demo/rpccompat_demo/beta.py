"""Release beta (N) of the sample volumes service."""

from __future__ import annotations

import random
import uuid
from typing import Any

import sqlalchemy as sa
from oslo_utils import versionutils
from oslo_versionedobjects import fields

from rpccompat import (
    Endpoint,
    History,
    ObjectRegistry,
    Release,
    VersionedObject,
    method,
    retry_on_disconnect,
)
from rpccompat.db import ColumnSync
from rpccompat_demo.load import Ledger, expect

HISTORY = History(
    "volumes",
    [
        Release(
            "alpha",
            rpc={"volume": "1.0"},
            objects={"Volume": "1.0", "Attachment": "1.0"},
        ),
        Release(
            "beta",
            rpc={"volume": "1.1"},
            objects={"Volume": "1.1", "Attachment": "1.1"},
        ),
    ],
)
OBJECTS = ObjectRegistry()

metadata = sa.MetaData()
volumes = sa.Table(
    "volumes",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(255)),  # alpha's display_name, renamed
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("attach_host", sa.String(255)),
    sa.Column("attach_mountpoint", sa.String(255)),
    sa.Column("description", sa.String(255)),  # new in beta
    sa.Column("attach_mode", sa.String(2)),  # new in beta
)
# The rename, declared once: the expand's triggers, the backfill and the
# migrate-on-load below all convert with it.
NAME_SYNC = ColumnSync.rename("volumes", "id", old="display_name", new="name")


class VolumesObject(VersionedObject):
    OBJ_PROJECT_NAMESPACE = "volumes"
    OBJ_REGISTRY = OBJECTS


@OBJECTS.register
class Attachment(VolumesObject):
    # 1.1: mode
    VERSION = "1.1"
    fields = {
        "host": fields.StringField(),
        "mountpoint": fields.StringField(),
        "mode": fields.StringField(default="rw"),
    }

    def obj_make_compatible(self, primitive: dict, target_version: str) -> None:
        super().obj_make_compatible(primitive, target_version)
        if versionutils.convert_version_to_tuple(target_version) < (1, 1):
            primitive.pop("mode", None)


@OBJECTS.register
class Volume(VolumesObject):
    # 1.1: description; Attachment 1.1
    VERSION = "1.1"
    fields = {
        "id": fields.UUIDField(),
        "name": fields.StringField(),
        "size": fields.IntegerField(),
        "status": fields.StringField(),
        "description": fields.StringField(nullable=True),
        "attachment": fields.ObjectField("Attachment", nullable=True),
    }
    # The fields as oslo.versionedobjects makes them attributes, for type checkers.
    id: str
    name: str
    size: int
    status: str
    description: str | None
    attachment: Attachment | None

    def obj_make_compatible(self, primitive: dict, target_version: str) -> None:
        super().obj_make_compatible(primitive, target_version)
        if versionutils.convert_version_to_tuple(target_version) < (1, 1):
            primitive.pop("description", None)

    @classmethod
    def from_row(cls, row: Any) -> Volume:
        attachment = None
        if row.attach_host is not None:
            attachment = Attachment(
                host=row.attach_host,
                mountpoint=row.attach_mountpoint,
                mode=row.attach_mode or "rw",
            )
        return cls(
            id=row.id,
            name=row.name,
            size=row.size,
            status=row.status,
            description=row.description,
            attachment=attachment,
        )


def _extend_on_alpha(client: Any, context: dict, volume_id: str, new_size: int) -> Any:
    """Alpha peers have no extend_volume: update the size instead."""
    volume = client.call(context, "get_volume", volume_id=volume_id)
    volume.size = new_size
    return client.call(context, "update_volume", volume=volume)


class VolumeManager(Endpoint):
    BINARY = "volume"
    RPC_API_VERSION = "1.1"

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _read(self, conn: sa.Connection, *where: Any) -> list[Volume]:
        """Rows alpha wrote before expand are converted here if the backfill
        has not reached them yet (migrate on load)."""
        rows = NAME_SYNC.read(conn, sa.select(volumes).where(*where))
        return [Volume.from_row(row) for row in rows]

    def _load(self, conn: sa.Connection, volume_id: str) -> Volume:
        (volume,) = self._read(conn, volumes.c.id == volume_id)
        return volume

    @method(since="1.0", args={"description": "1.1"})
    def create_volume(
        self, context: dict, name: str, size: int, description: str | None = None
    ) -> Volume:
        return self._create(
            str(uuid.uuid4()), name=name, size=size, description=description
        )

    @retry_on_disconnect
    def _create(self, volume_id: str, **values: Any) -> Volume:
        """Idempotent by key: a retry after a lost commit finds its row."""
        with self.engine.begin() as conn:
            if not conn.scalar(
                sa.select(volumes.c.id).where(volumes.c.id == volume_id)
            ):
                conn.execute(
                    volumes.insert().values(id=volume_id, status="available", **values)
                )
            return self._load(conn, volume_id)

    @method(since="1.0")
    @retry_on_disconnect
    def get_volume(self, context: dict, volume_id: str) -> Volume:
        with self.engine.begin() as conn:
            return self._load(conn, volume_id)

    @method(since="1.0")
    @retry_on_disconnect
    def list_volumes(self, context: dict) -> list[Volume]:
        with self.engine.begin() as conn:
            return self._read(conn)

    @method(since="1.0", args={"mode": "1.1"})
    @retry_on_disconnect
    def attach_volume(
        self,
        context: dict,
        volume_id: str,
        host: str,
        mountpoint: str,
        mode: str = "rw",
    ) -> Volume:
        with self.engine.begin() as conn:
            conn.execute(
                volumes.update()
                .where(volumes.c.id == volume_id)
                .values(
                    attach_host=host,
                    attach_mountpoint=mountpoint,
                    attach_mode=mode,
                    status="in-use",
                )
            )
            return self._load(conn, volume_id)

    @method(since="1.0")
    @retry_on_disconnect
    def update_volume(self, context: dict, volume: Volume) -> Volume:
        changes = volume.obj_get_changes()
        values = {
            column: changes[field]
            for field, column in (
                ("name", "name"),
                ("size", "size"),
                ("description", "description"),
            )
            if field in changes
        }
        with self.engine.begin() as conn:
            if values:
                conn.execute(
                    volumes.update().where(volumes.c.id == volume.id).values(**values)
                )
            return self._load(conn, volume.id)

    @method(since="1.1", fallback=_extend_on_alpha)
    @retry_on_disconnect
    def extend_volume(self, context: dict, volume_id: str, new_size: int) -> Volume:
        with self.engine.begin() as conn:
            current = self._load(conn, volume_id)
            if new_size < current.size:
                raise ValueError(f"cannot shrink {volume_id} to {new_size}")
            conn.execute(
                volumes.update().where(volumes.c.id == volume_id).values(size=new_size)
            )
            return self._load(conn, volume_id)

    @method(since="1.0")
    @retry_on_disconnect
    def delete_volume(self, context: dict, volume_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(volumes.delete().where(volumes.c.id == volume_id))


def exercise(client: Any, context: dict, rng: random.Random, ledger: Ledger) -> int:
    """One round of every method, as a beta API node would; returns calls.

    Half the volumes are kept, so the rows written by this release can be
    checked once the upgrade is over.
    """
    name, size = f"vol-{rng.randrange(10**6)}", rng.randrange(1, 100)
    peers_are_beta = client.can_send("extend_volume")
    volume = client.call(
        context, "create_volume", name=name, size=size, description="from beta"
    )
    expect(volume.name == name and volume.size == size, "create_volume", volume)
    ledger.wrote(volume.id, name=name, size=size)
    got = client.call(context, "get_volume", volume_id=volume.id)
    expect(got.id == volume.id, "get_volume", got)
    if peers_are_beta:
        expect(got.description == "from beta", "get_volume (description)", got)
    attached = client.call(
        context,
        "attach_volume",
        volume_id=volume.id,
        host="h2",
        mountpoint="/dev/vdc",
        mode="ro",
    )
    expect(attached.attachment.host == "h2", "attach_volume", attached)
    ledger.writing(volume.id)
    extended = client.call(
        context, "extend_volume", volume_id=volume.id, new_size=size + 1
    )
    expect(extended.size == size + 1, "extend_volume", extended)
    ledger.wrote(volume.id, name=name, size=size + 1)
    extended.name = name + "-renamed"
    ledger.writing(volume.id)
    updated = client.call(context, "update_volume", volume=extended)
    expect(updated.name == name + "-renamed", "update_volume", updated)
    ledger.wrote(volume.id, name=name + "-renamed", size=size + 1)
    listed = client.call(context, "list_volumes")
    expect(any(v.id == volume.id for v in listed), "list_volumes", volume.id)
    if rng.random() < 0.5:
        return 6
    ledger.writing(volume.id)
    client.call(context, "delete_volume", volume_id=volume.id)
    ledger.deleted(volume.id)
    return 7
