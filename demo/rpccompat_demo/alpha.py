"""Release alpha (N-1) of the sample volumes service."""

from __future__ import annotations

import random
import uuid
from typing import Any

import sqlalchemy as sa
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
from rpccompat_demo.load import Ledger, expect

HISTORY = History(
    "volumes",
    [
        Release(
            "alpha",
            rpc={"volume": "1.0"},
            objects={"Volume": "1.0", "Attachment": "1.0"},
        )
    ],
)
OBJECTS = ObjectRegistry()

metadata = sa.MetaData()
volumes = sa.Table(
    "volumes",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("display_name", sa.String(255)),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("attach_host", sa.String(255)),
    sa.Column("attach_mountpoint", sa.String(255)),
)


class VolumesObject(VersionedObject):
    OBJ_PROJECT_NAMESPACE = "volumes"
    OBJ_REGISTRY = OBJECTS


@OBJECTS.register
class Attachment(VolumesObject):
    VERSION = "1.0"
    fields = {"host": fields.StringField(), "mountpoint": fields.StringField()}


@OBJECTS.register
class Volume(VolumesObject):
    VERSION = "1.0"
    fields = {
        "id": fields.UUIDField(),
        "name": fields.StringField(),
        "size": fields.IntegerField(),
        "status": fields.StringField(),
        "attachment": fields.ObjectField("Attachment", nullable=True),
    }
    # The fields as oslo.versionedobjects makes them attributes, for type checkers.
    id: str
    name: str
    size: int
    status: str
    attachment: Attachment | None

    @classmethod
    def from_row(cls, row: Any) -> Volume:
        attachment = None
        if row.attach_host is not None:
            attachment = Attachment(
                host=row.attach_host, mountpoint=row.attach_mountpoint
            )
        return cls(
            id=row.id,
            name=row.display_name,
            size=row.size,
            status=row.status,
            attachment=attachment,
        )


class VolumeManager(Endpoint):
    BINARY = "volume"
    RPC_API_VERSION = "1.0"

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _load(self, conn: sa.Connection, volume_id: str) -> Volume:
        row = conn.execute(sa.select(volumes).where(volumes.c.id == volume_id)).one()
        return Volume.from_row(row)

    @method(since="1.0")
    def create_volume(self, context: dict, name: str, size: int) -> Volume:
        return self._create(str(uuid.uuid4()), display_name=name, size=size)

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
        with self.engine.connect() as conn:
            return self._load(conn, volume_id)

    @method(since="1.0")
    @retry_on_disconnect
    def list_volumes(self, context: dict) -> list[Volume]:
        with self.engine.connect() as conn:
            return [Volume.from_row(r) for r in conn.execute(sa.select(volumes))]

    @method(since="1.0")
    @retry_on_disconnect
    def attach_volume(
        self, context: dict, volume_id: str, host: str, mountpoint: str
    ) -> Volume:
        with self.engine.begin() as conn:
            conn.execute(
                volumes.update()
                .where(volumes.c.id == volume_id)
                .values(attach_host=host, attach_mountpoint=mountpoint, status="in-use")
            )
            return self._load(conn, volume_id)

    @method(since="1.0")
    @retry_on_disconnect
    def update_volume(self, context: dict, volume: Volume) -> Volume:
        changes = volume.obj_get_changes()
        values = {
            column: changes[field]
            for field, column in (("name", "display_name"), ("size", "size"))
            if field in changes
        }
        with self.engine.begin() as conn:
            if values:
                conn.execute(
                    volumes.update().where(volumes.c.id == volume.id).values(**values)
                )
            return self._load(conn, volume.id)

    @method(since="1.0")
    @retry_on_disconnect
    def delete_volume(self, context: dict, volume_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(volumes.delete().where(volumes.c.id == volume_id))


def exercise(client: Any, context: dict, rng: random.Random, ledger: Ledger) -> int:
    """One round of every method, as an alpha API node would; returns calls.

    Half the volumes are kept, so the rows written by this release can be
    checked once the upgrade is over.
    """
    name, size = f"vol-{rng.randrange(10**6)}", rng.randrange(1, 100)
    volume = client.call(context, "create_volume", name=name, size=size)
    expect(volume.name == name and volume.size == size, "create_volume", volume)
    ledger.wrote(volume.id, name=name, size=size)
    got = client.call(context, "get_volume", volume_id=volume.id)
    expect(got.id == volume.id and got.name == name, "get_volume", got)
    attached = client.call(
        context, "attach_volume", volume_id=volume.id, host="h1", mountpoint="/dev/vdb"
    )
    expect(attached.attachment.host == "h1", "attach_volume", attached)
    attached.size = size + 1
    ledger.writing(volume.id)
    updated = client.call(context, "update_volume", volume=attached)
    expect(updated.size == size + 1, "update_volume", updated)
    ledger.wrote(volume.id, name=name, size=size + 1)
    listed = client.call(context, "list_volumes")
    expect(any(v.id == volume.id for v in listed), "list_volumes", volume.id)
    if rng.random() < 0.5:
        return 5
    ledger.writing(volume.id)
    client.call(context, "delete_volume", volume_id=volume.id)
    ledger.deleted(volume.id)
    return 6
