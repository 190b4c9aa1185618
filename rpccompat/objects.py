"""Versioned objects per release, and the serializer that backports them.

oslo.versionedobjects keeps one registry per process.  rpccompat gives each
release's code base its own :class:`ObjectRegistry`, so that a node knows only
its own release's classes even when several releases share a process (the
demo, tests): an alpha node then rejects a beta-only object exactly as it would
alone.  Objects sent to a peer are backported to the pinned manifest, children
included; replies are backported to the manifest the caller names in the
message context.
"""

from __future__ import annotations

import collections
import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, NoReturn

from oslo_versionedobjects import base as ovo_base
from oslo_versionedobjects import exception as ovo_exc
from oslo_versionedobjects import fields as ovo_fields

from rpccompat import compat
from rpccompat.exceptions import (
    HistoryError,
    IncompatibleObject,
    InvalidRPCInput,
    UnknownVersion,
)
from rpccompat.history import History, version_tuple

CONTEXT_KEY = "rpccompat_objects_version"
CALLER_MANIFESTS = 64  # caller versions remembered, over all servers of a process

# The manifest the caller of the message being served reads.  oslo.messaging
# deserializes the context, runs the method and serializes the reply in one
# worker per message, so the server serializer can find it here.
_caller_manifest: contextvars.ContextVar[Mapping[str, str] | None] = (
    contextvars.ContextVar("rpccompat_caller_manifest", default=None)
)


class ObjectRegistry(ovo_base.VersionedObjectRegistry):
    """The object classes of one release's code base, and no others."""

    def __new__(cls, *args: Any, **kwargs: Any) -> ObjectRegistry:
        # Unlike the base class, instances do not share one global store.
        self = object.__new__(cls)
        self._obj_classes = collections.defaultdict(list)
        return self

    def register(self, obj_cls):  # type: ignore[override]
        """Class decorator: make ``obj_cls`` known to this release only."""
        compat.register_class(self, obj_cls)
        return obj_cls

    def register_if(self, condition: bool) -> NoReturn:  # type: ignore[override]
        """oslo.versionedobjects' conditional registration reaches its one
        global registry; a release's registry has none."""
        raise TypeError(
            f"{type(self).__name__} has no conditional registration (register_if, "
            "objectify): decorate the classes this release has with its "
            "register, and leave the others out"
        )

    def objectify(self, obj_cls: type) -> NoReturn:  # type: ignore[override]
        """As :meth:`register_if`."""
        self.register_if(True)

    def obj_classes(self) -> dict[str, list[type[ovo_base.VersionedObject]]]:  # type: ignore[override]
        """Name -> the classes registered here, newest first (the base
        class's reads its global registry, which holds none of them)."""
        return dict(self._obj_classes)

    def classes(self) -> dict[str, type[ovo_base.VersionedObject]]:
        """Name -> newest registered class."""
        return {name: classes[0] for name, classes in self._obj_classes.items()}

    def class_for(self, objname: str, objver: str) -> type[ovo_base.VersionedObject]:
        """Like ``VersionedObject.obj_class_from_name``, in this registry."""
        if objname not in self._obj_classes:
            raise ovo_exc.UnsupportedObjectError(objtype=objname)
        compatible = None
        for objclass in self._obj_classes[objname]:
            if objver == objclass.VERSION:
                return objclass
            if compatible is None and _is_compatible(objver, objclass.VERSION):
                compatible = objclass
        if compatible is not None:
            return compatible
        raise ovo_exc.IncompatibleObjectVersion(
            objname=objname,
            objver=objver,
            supported=self._obj_classes[objname][0].VERSION,
        )


def _is_compatible(requested: str, implemented: str) -> bool:
    """oslo.utils' ``versionutils.is_compatible`` (same major, not newer), on
    :func:`version_tuple`, which is safe on a version read from the wire."""
    wanted, have = version_tuple(requested), version_tuple(implemented)
    return wanted[0] == have[0] and wanted <= have


class VersionedObject(ovo_base.VersionedObject):
    """Base of a project's objects; set ``OBJ_REGISTRY`` on the project's base.

    Children are rebuilt through their parent's class, so looking classes up
    in ``OBJ_REGISTRY`` keeps every nested object within one release.
    """

    OBJ_REGISTRY: ClassVar[ObjectRegistry]

    @classmethod
    def obj_class_from_name(cls, objname: str, objver: str):  # type: ignore[override]
        return cls.OBJ_REGISTRY.class_for(objname, objver)


class Serializer(ovo_base.VersionedObjectSerializer):
    """Backports objects for the peer and carries the caller's manifest.

    With ``manifest`` (a client's, from its pin) every object sent is
    backported to it.  Without (a server's), replies are backported to the
    manifest of the caller, read from the message context; to a caller that
    names none (a plain oslo.messaging client), to ``unversioned()``'s, as
    Cinder replies at the oldest object version its services run.
    """

    def __init__(
        self,
        base: type[VersionedObject],
        history: History,
        manifest: Mapping[str, str] | None = None,
        *,
        unversioned: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.OBJ_BASE_CLASS = base
        self.history = history
        self.manifest = manifest
        self.unversioned = unversioned or (lambda: history.current.objects)

    def serialize_context(self, context: Any) -> dict[str, Any]:
        ctxt = dict(context.to_dict() if hasattr(context, "to_dict") else context or {})
        ctxt[CONTEXT_KEY] = self.history.current.objects_version
        return ctxt

    def deserialize_context(self, context: dict[str, Any]) -> dict[str, Any]:
        """The caller's context minus rpccompat's key.

        The caller's manifest is resolved here, before the method runs, so a
        bad objects version is refused with nothing done.
        """
        context = dict(context)
        caller = context.pop(CONTEXT_KEY, None)
        _caller_manifest.set(None if caller is None else self._manifest_of(caller))
        return context

    def serialize_entity(self, context: Any, entity: Any) -> Any:
        if isinstance(entity, ovo_base.VersionedObject):
            return backport(entity, self._target_manifest())
        if isinstance(entity, (tuple, list, set, dict)):
            return self._process_iterable(context, self.serialize_entity, entity)
        return entity

    def _target_manifest(self) -> Mapping[str, str]:
        if self.manifest is not None:
            return self.manifest
        caller = _caller_manifest.get()
        return self.unversioned() if caller is None else caller

    def _manifest_of(self, objects_version: object) -> Mapping[str, str]:
        """A caller's manifest from the object version in its message."""
        try:
            version_tuple(objects_version)
        except UnknownVersion as e:
            raise InvalidRPCInput(
                f"{CONTEXT_KEY} in the message context: {e}; the caller must "
                "send the objects version of its release"
            ) from None
        return _manifest_for_version(self.history, objects_version)

    def deserialize_entity(self, context: Any, entity: Any) -> Any:
        try:
            return super().deserialize_entity(context, entity)
        except (ovo_exc.UnsupportedObjectError, ovo_exc.IncompatibleObjectVersion) as e:
            raise IncompatibleObject(
                f"release {self.history.current.name} of {self.history.project} "
                f"cannot read this object: {e}; the sender must backport it to "
                "the manifest it is pinned to"
            ) from e
        except UnknownVersion as e:
            raise InvalidRPCInput(
                "an object in the message has a bad versioned_object.version: "
                f"{e}; the sender must send the version of its class"
            ) from None


@functools.lru_cache(maxsize=CALLER_MANIFESTS)
def _manifest_for_version(history: History, objects_version: str) -> Mapping[str, str]:
    """The manifest of a caller that reads ``objects_version``: the oldest
    release's if it predates them all, this release's if it is newer (it
    reads what this release writes).

    Resolved once per caller version, not once per reply; bounded, as any
    caller may name a new version on every message.
    """
    newest = history.current
    if version_tuple(objects_version) > version_tuple(newest.objects_version):
        return newest.objects
    try:
        return history.release_for_objects(objects_version).objects
    except HistoryError:
        return history.releases[0].objects


def backport(obj: ovo_base.VersionedObject, manifest: Mapping[str, str]) -> dict:
    """``obj`` as a primitive a peer with ``manifest`` reads, children included.

    Each object goes at its own version or the manifest's, whichever is
    lower: one that arrived from an older peer is sent on as it is, never
    "backported" up.  The manifest is always passed: without one,
    oslo.versionedobjects leaves children at their own version.
    """
    name = obj.obj_name()
    if name not in manifest:
        raise IncompatibleObject(
            f"cannot send a {name}: the peer's manifest does not have it "
            f"(it knows {', '.join(sorted(manifest)) or 'no objects'}); wait for "
            "its pin to lift, or do not send this object to it"
        )
    above, below = _against(obj, manifest)
    if not above:
        return obj.obj_to_primitive()  # nothing to backport: skip the compat pass
    target = min(obj.VERSION, manifest[name], key=version_tuple)
    primitive = obj.obj_to_primitive(
        target_version=target, version_manifest=dict(manifest)
    )
    if below:
        _send_older_children_as_they_are(obj, primitive, manifest)
    return primitive


def _against(
    obj: ovo_base.VersionedObject, manifest: Mapping[str, str]
) -> tuple[bool, bool]:
    """Whether any object of ``obj``'s tree is above ``manifest``'s version
    of it, and whether any is below.

    Given a manifest, oslo.versionedobjects runs its compatibility pass over
    the whole tree even when no object differs, serialising every child a
    second time; most objects a pinned client sends are already at the pin,
    and only one that arrived from an older peer is below it.
    """
    version, limit = obj.VERSION, manifest.get(obj.obj_name())
    above = below = False
    if limit is None:  # unknown to the peer: the compatibility pass decides
        above = True
    elif version != limit:
        above = version_tuple(version) > version_tuple(limit)
        below = not above
    for child in _children(obj):
        if child is not None and not (above and below):
            child_above, child_below = _against(child, manifest)
            above, below = above or child_above, below or child_below
    return above, below


def _send_older_children_as_they_are(
    obj: ovo_base.VersionedObject, primitive: dict, manifest: Mapping[str, str]
) -> None:
    """oslo.versionedobjects labels every child of a backported object at the
    manifest's version, even one older than it, whose receiver then takes it
    for having fields it lacks: such a child is sent at its own version."""
    data = primitive[f"{obj.OBJ_SERIAL_NAMESPACE}.data"]
    for name in _object_fields(type(obj)):  # type: ignore[arg-type]  # classes hash
        if name not in data or data[name] is None:
            continue  # not set, None, or dropped for the target version
        value = getattr(obj, name)
        if isinstance(value, list):
            data[name] = [
                _child(c, p, manifest) for c, p in zip(value, data[name], strict=True)
            ]
        else:
            data[name] = _child(value, data[name], manifest)


def _child(
    child: ovo_base.VersionedObject, primitive: dict, manifest: Mapping[str, str]
) -> dict:
    wanted = manifest.get(child.obj_name())
    if wanted is not None and version_tuple(child.VERSION) < version_tuple(wanted):
        return backport(child, manifest)
    _send_older_children_as_they_are(child, primitive, manifest)
    return primitive


def _children(obj: ovo_base.VersionedObject) -> Iterator[Any]:
    for name in _object_fields(type(obj)):  # type: ignore[arg-type]  # classes hash
        if obj.obj_attr_is_set(name):
            value = getattr(obj, name)
            yield from value if isinstance(value, list) else (value,)


@functools.cache
def _object_fields(cls: type[ovo_base.VersionedObject]) -> tuple[str, ...]:
    """The fields of ``cls`` that hold objects, as oslo.versionedobjects'
    compatibility pass finds them."""
    holders = (ovo_fields.ObjectField, ovo_fields.ListOfObjectsField)
    return tuple(n for n, f in cls.fields.items() if isinstance(f, holders))
