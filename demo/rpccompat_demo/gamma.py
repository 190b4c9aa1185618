"""Release gamma (N+1) of the sample volumes service."""

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
from rpccompat.db import read_through, recipes
from rpccompat_demo.beta import NAME_SYNC
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
        Release(
            "gamma",
            rpc={"volume": "1.2"},
            objects={"Volume": "1.2", "Attachment": "1.2"},
        ),
    ],
)
OBJECTS = ObjectRegistry()

metadata = sa.MetaData()
volumes = sa.Table(
    "volumes",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(255)),
    sa.Column("size_gib", sa.BigInteger),  # beta's size, widened
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("attach_host", sa.String(255)),
    sa.Column("attach_mountpoint", sa.String(255)),
    sa.Column("description", sa.String(255)),
    sa.Column("attach_mode", sa.String(2)),
    sa.Column("attach_device_type", sa.String(16)),  # new in gamma
    sa.Column(  # new in gamma; older releases' inserts leave it false
        "bootable", sa.Boolean, nullable=False, server_default=sa.false()
    ),
)
# Gamma widens the size, declared once like beta's rename.  A skip-level
# upgrade (alpha to gamma) has both in flight on this table, so gamma reads
# through both (``read_through``) until the backfills are done.
SIZE_SYNC = recipes.widened_integer("volumes", "id", old="size", new="size_gib")
SYNCS = (NAME_SYNC, SIZE_SYNC)


class VolumesObject(VersionedObject):
    OBJ_PROJECT_NAMESPACE = "volumes"
    OBJ_REGISTRY = OBJECTS


@OBJECTS.register
class Attachment(VolumesObject):
    # 1.1: mode; 1.2: device_type
    VERSION = "1.2"
    fields = {
        "host": fields.StringField(),
        "mountpoint": fields.StringField(),
        "mode": fields.StringField(default="rw"),
        "device_type": fields.StringField(default="disk"),
    }

    def obj_make_compatible(self, primitive: dict, target_version: str) -> None:
        super().obj_make_compatible(primitive, target_version)
        target = versionutils.convert_version_to_tuple(target_version)
        if target < (1, 2):
            primitive.pop("device_type", None)
        if target < (1, 1):
            primitive.pop("mode", None)


@OBJECTS.register
class Volume(VolumesObject):
    # 1.1: description, Attachment 1.1; 1.2: bootable, Attachment 1.2
    VERSION = "1.2"
    fields = {
        "id": fields.UUIDField(),
        "name": fields.StringField(),
        "size": fields.IntegerField(),
        "status": fields.StringField(),
        "description": fields.StringField(nullable=True),
        "bootable": fields.BooleanField(default=False),
        "attachment": fields.ObjectField("Attachment", nullable=True),
    }
    # The fields as oslo.versionedobjects makes them attributes, for type checkers.
    id: str
    name: str
    size: int
    status: str
    description: str | None
    bootable: bool
    attachment: Attachment | None

    def obj_make_compatible(self, primitive: dict, target_version: str) -> None:
        super().obj_make_compatible(primitive, target_version)
        target = versionutils.convert_version_to_tuple(target_version)
        if target < (1, 2):
            primitive.pop("bootable", None)
        if target < (1, 1):
            primitive.pop("description", None)

    @classmethod
    def from_row(cls, row: Any) -> Volume:
        attachment = None
        if row.attach_host is not None:
            attachment = Attachment(
                host=row.attach_host,
                mountpoint=row.attach_mountpoint,
                mode=row.attach_mode or "rw",
                device_type=row.attach_device_type or "disk",
            )
        return cls(
            id=row.id,
            name=row.name,
            size=row.size_gib,
            status=row.status,
            description=row.description,
            bootable=row.bootable,
            attachment=attachment,
        )


def _extend_on_alpha(client: Any, context: dict, volume_id: str, new_size: int) -> Any:
    """Alpha peers have no extend_volume: update the size instead."""
    volume = client.call(context, "get_volume", volume_id=volume_id)
    volume.size = new_size
    return client.call(context, "update_volume", volume=volume)


class VolumeManager(Endpoint):
    BINARY = "volume"
    RPC_API_VERSION = "1.2"

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _read(self, conn: sa.Connection, *where: Any) -> list[Volume]:
        """Rows older releases wrote before expand are converted here if the
        backfills have not reached them yet (migrate on load)."""
        rows = read_through(conn, sa.select(volumes).where(*where), SYNCS)
        return [Volume.from_row(row) for row in rows]

    def _load(self, conn: sa.Connection, volume_id: str) -> Volume:
        (volume,) = self._read(conn, volumes.c.id == volume_id)
        return volume

    # An older node would create a volume that does not boot: ``bootable``
    # is refused, not dropped, while such nodes serve.
    @method(
        since="1.0",
        args={"description": "1.1", "bootable": "1.2"},
        required=("bootable",),
    )
    def create_volume(
        self,
        context: dict,
        name: str,
        size: int,
        description: str | None = None,
        bootable: bool = False,
    ) -> Volume:
        return self._create(
            str(uuid.uuid4()),
            name=name,
            size_gib=size,
            description=description,
            bootable=bootable,
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

    # An older node ignores the device type: the default, a disk, is as good.
    @method(since="1.0", args={"mode": "1.1", "device_type": "1.2"})
    @retry_on_disconnect
    def attach_volume(
        self,
        context: dict,
        volume_id: str,
        host: str,
        mountpoint: str,
        mode: str = "rw",
        device_type: str = "disk",
    ) -> Volume:
        with self.engine.begin() as conn:
            conn.execute(
                volumes.update()
                .where(volumes.c.id == volume_id)
                .values(
                    attach_host=host,
                    attach_mountpoint=mountpoint,
                    attach_mode=mode,
                    attach_device_type=device_type,
                    status="in-use",
                )
            )
            return self._load(conn, volume_id)

    @method(since="1.0")
    def update_volume(self, context: dict, volume: Volume) -> Volume:
        """Saves the changes and returns the caller's own object, as Nova's
        ``save()`` does: it goes back at the version it came in, which may
        be older than this node's."""
        changes = volume.obj_get_changes()
        values = {
            column: changes[field]
            for field, column in (
                ("name", "name"),
                ("size", "size_gib"),
                ("description", "description"),
                ("bootable", "bootable"),
            )
            if field in changes
        }
        if values:
            self._update(volume.id, values)
        volume.obj_reset_changes()
        return volume

    @retry_on_disconnect
    def _update(self, volume_id: str, values: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                volumes.update().where(volumes.c.id == volume_id).values(**values)
            )

    @method(since="1.1", fallback=_extend_on_alpha)
    @retry_on_disconnect
    def extend_volume(self, context: dict, volume_id: str, new_size: int) -> Volume:
        with self.engine.begin() as conn:
            current = self._load(conn, volume_id)
            if new_size < current.size:
                raise ValueError(f"cannot shrink {volume_id} to {new_size}")
            conn.execute(
                volumes.update()
                .where(volumes.c.id == volume_id)
                .values(size_gib=new_size)
            )
            return self._load(conn, volume_id)

    @method(since="1.0")
    @retry_on_disconnect
    def delete_volume(self, context: dict, volume_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(volumes.delete().where(volumes.c.id == volume_id))


def exercise(client: Any, context: dict, rng: random.Random, ledger: Ledger) -> int:
    """One round of every method, as a gamma API node would; returns calls.

    What the pinned peers lack is asked first: a bootable volume only when
    they can all make one, the description checked only when they keep it.
    The volume the server returned is sent back to it (``update_volume``),
    so an object that arrived at an older version is passed on too.
    """
    name, size = f"vol-{rng.randrange(10**6)}", rng.randrange(1, 100)
    bootable = client.can_send("create_volume", "bootable")
    keeps_description = client.can_send("create_volume", "description")
    volume = client.call(
        context,
        "create_volume",
        name=name,
        size=size,
        description="from gamma",
        bootable=bootable,
    )
    expect(volume.name == name and volume.size == size, "create_volume", volume)
    ledger.wrote(volume.id, name=name, size=size)
    got = client.call(context, "get_volume", volume_id=volume.id)
    expect(got.id == volume.id, "get_volume", got)
    if keeps_description:
        expect(got.description == "from gamma", "get_volume (description)", got)
    if bootable:
        expect(got.bootable, "get_volume (bootable)", got)
    attached = client.call(
        context,
        "attach_volume",
        volume_id=volume.id,
        host="h3",
        mountpoint="/dev/vdd",
        mode="ro",
        device_type="cdrom",
    )
    expect(attached.attachment.host == "h3", "attach_volume", attached)
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
