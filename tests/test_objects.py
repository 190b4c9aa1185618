from __future__ import annotations

import random

import pytest
from oslo_versionedobjects import fields as ovo_fields

from rpccompat.exceptions import IncompatibleObject, UnknownVersion
from rpccompat.objects import ObjectRegistry, VersionedObject, backport
from rpccompat_demo import alpha, beta


def _beta_volume():
    return beta.Volume(
        id="0" * 32,
        name="v",
        size=1,
        status="in-use",
        description="d",
        attachment=beta.Attachment(host="h", mountpoint="m", mode="ro"),
    )


def test_backport_to_a_manifest_backports_children_too():
    primitive = backport(_beta_volume(), alpha.HISTORY.current.objects)
    data = primitive["versioned_object.data"]
    assert primitive["versioned_object.version"] == "1.0"
    assert "description" not in data
    child = data["attachment"]
    assert child["versioned_object.version"] == "1.0"
    assert "mode" not in child["versioned_object.data"]
    rebuilt = alpha.Volume.obj_from_primitive(primitive)
    assert isinstance(rebuilt.attachment, alpha.Attachment)


def test_an_object_at_the_manifest_is_sent_as_the_compat_pass_would_send_it():
    volume, manifest = _beta_volume(), dict(beta.HISTORY.current.objects)
    assert backport(volume, manifest) == volume.obj_to_primitive(
        target_version="1.1", version_manifest=manifest
    )


def test_a_child_behind_the_manifest_is_backported_under_a_parent_at_it():
    primitive = backport(_beta_volume(), {"Volume": "1.1", "Attachment": "1.0"})
    assert "description" in primitive["versioned_object.data"]
    child = primitive["versioned_object.data"]["attachment"]
    assert child["versioned_object.version"] == "1.0"
    assert "mode" not in child["versioned_object.data"]


def test_a_release_registry_lists_its_own_classes_and_refuses_global_hooks():
    """The base class's obj_classes() read oslo.versionedobjects' global
    registry ({}), and its register_if failed with a TypeError of its own."""
    classes = beta.OBJECTS.obj_classes()
    assert [c.VERSION for c in classes["Volume"]] == ["1.1"]
    assert set(classes) == {"Volume", "Attachment"}
    for hook in (beta.OBJECTS.register_if, beta.OBJECTS.objectify):
        with pytest.raises(TypeError, match="decorate the classes"):
            hook(True)


def test_object_missing_from_the_manifest_is_refused_before_sending():
    with pytest.raises(IncompatibleObject, match="cannot send a Volume"):
        backport(_beta_volume(), {"Attachment": "1.0"})


def test_each_release_registry_knows_only_its_own_classes():
    assert alpha.OBJECTS.classes()["Volume"] is alpha.Volume
    assert beta.OBJECTS.classes()["Volume"] is beta.Volume
    with pytest.raises(Exception, match=r"Version 1\.1 of Volume is not supported"):
        alpha.OBJECTS.class_for("Volume", "1.1")


@pytest.mark.parametrize("objver", ["1." + "1" * 30000, ["1", "0"], "\u0661.\u0660"])
def test_an_object_version_that_is_not_a_version_is_refused_in_one_short_line(objver):
    with pytest.raises(UnknownVersion, match="is not a version") as err:
        beta.OBJECTS.class_for("Volume", objver)
    assert len(str(err.value)) < 100


# -- objects that arrived old, over three releases of a project of their own ------

#: The fields each version of each class has: a Tag gains fields in 1.1 and
#: 1.2, a Box a label in 1.1 and a list of tags in 1.2.
FIELDS = {
    "Tag": {
        "1.0": ("name",),
        "1.1": ("name", "color"),
        "1.2": ("name", "color", "size"),
    },
    "Box": {"1.0": ("name", "tag"), "1.1": ("name", "tag", "label")},
}
FIELDS["Box"]["1.2"] = (*FIELDS["Box"]["1.1"], "tags")
KINDS = {
    "name": lambda: ovo_fields.StringField(),
    "color": lambda: ovo_fields.StringField(),
    "size": lambda: ovo_fields.IntegerField(),
    "label": lambda: ovo_fields.StringField(nullable=True),
    "tag": lambda: ovo_fields.ObjectField("Tag", nullable=True),
    "tags": lambda: ovo_fields.ListOfObjectsField("Tag"),
}
RELEASES = ("1.0", "1.1", "1.2")  # release i has every class at RELEASES[i]


def _release(version: str) -> ObjectRegistry:
    """A code base with both classes at ``version``."""
    registry = ObjectRegistry()

    class Base(VersionedObject):
        OBJ_PROJECT_NAMESPACE = "boxes"
        OBJ_REGISTRY = registry

        def obj_make_compatible(self, primitive: dict, target_version: str) -> None:
            super().obj_make_compatible(primitive, target_version)
            for name in set(primitive) - set(FIELDS[self.obj_name()][target_version]):
                del primitive[name]

    for name in ("Tag", "Box"):
        fields = {f: KINDS[f]() for f in FIELDS[name][version]}
        registry.register(type(name, (Base,), {"VERSION": version, "fields": fields}))
    return registry


REGISTRIES = [_release(version) for version in RELEASES]


def _tree(rng: random.Random) -> VersionedObject:
    """A Box at the newest release whose objects were each built by a random
    release and read by the newest, as when an old peer sent them (a child
    by no newer a release than its parent)."""
    newest = REGISTRIES[-1].classes()

    def built(release: int, objname: str, /, **values: object) -> VersionedObject:
        cls = REGISTRIES[release].classes()[objname]
        return cls(**{k: v for k, v in values.items() if k in cls.fields})

    def arrived(obj: VersionedObject) -> VersionedObject:
        return newest[obj.obj_name()].obj_from_primitive(obj.obj_to_primitive())

    def tag(up_to: int) -> VersionedObject:
        size = rng.randrange(9)
        return built(rng.randrange(up_to + 1), "Tag", name="t", color="c", size=size)

    release = rng.randrange(len(REGISTRIES))
    box = arrived(
        built(
            release,
            "Box",
            name="b",
            label=rng.choice([None, "l"]),
            tag=rng.choice([None, tag(release)]),
            tags=[tag(release) for _ in range(rng.randrange(3))],
        )
    )
    if rng.random() < 0.3:
        box.tag = arrived(tag(len(REGISTRIES) - 1))  # set by the newest code
    return box


def _expected(obj: VersionedObject, manifest: dict) -> tuple:
    """What a peer of ``manifest`` must get for ``obj``: each object at its
    own version or the manifest's, whichever is lower, with the fields set
    that this version has."""
    name = obj.obj_name()
    version = min(obj.VERSION, manifest[name])
    data = {}
    for field in FIELDS[name][version]:
        if obj.obj_attr_is_set(field):
            value = getattr(obj, field)
            if isinstance(value, list):
                value = [_expected(v, manifest) for v in value]
            elif isinstance(value, VersionedObject):
                value = _expected(value, manifest)
            data[field] = value
    return name, version, data


def _sent(primitive: dict) -> tuple:
    data = {
        k: [_sent(v) for v in value]
        if isinstance(value, list)
        else _sent(value)
        if isinstance(value, dict)
        else value
        for k, value in primitive["versioned_object.data"].items()
    }
    return (
        primitive["versioned_object.name"],
        primitive["versioned_object.version"],
        data,
    )


@pytest.mark.parametrize("seed", range(200))
def test_an_object_tree_that_arrived_old_is_sent_on_at_no_version_above_its_own(seed):
    """Sent to a peer of every release, each object is at the lower of its
    own version and the peer's, with its fields, and the peer reads it."""
    rng = random.Random(seed)
    box = _tree(rng)
    for peer in REGISTRIES:
        manifest = {n: c.VERSION for n, c in peer.classes().items()}
        primitive = backport(box, manifest)
        assert _sent(primitive) == _expected(box, manifest), f"seed {seed}"
        peer.classes()["Box"].obj_from_primitive(primitive)


def _fresh_tree(rng: random.Random) -> VersionedObject:
    """A Box the newest release built, some fields (and children's) unset."""
    newest = REGISTRIES[-1].classes()

    def some(**values: object) -> dict:
        return {k: v for k, v in values.items() if rng.random() < 0.8}

    def tag() -> VersionedObject:
        return newest["Tag"](**some(name="t", color="c", size=rng.randrange(9)))

    return newest["Box"](
        **some(
            name="b",
            label=rng.choice([None, "l"]),
            tag=rng.choice([None, tag()]),
            tags=[tag() for _ in range(rng.randrange(3))],
        )
    )


@pytest.mark.parametrize("seed", range(100))
def test_a_tree_of_this_release_goes_out_as_oslo_versionedobjects_sends_it(seed):
    """For objects at this release's versions, rpccompat's backport is
    oslo.versionedobjects' own (obj_to_primitive with a version manifest,
    obj_make_compatible per object), for a peer of every release."""
    box = _fresh_tree(random.Random(seed))
    for peer in REGISTRIES:
        manifest = {n: c.VERSION for n, c in peer.classes().items()}
        own = box.obj_to_primitive(
            target_version=manifest["Box"], version_manifest=manifest
        )
        assert backport(box, manifest) == own, f"seed {seed}, peer {manifest}"


def test_an_object_from_an_older_peer_is_sent_on_as_it_came():
    """The issue's case: a beta node returns a Volume an alpha caller sent."""
    got = beta.VolumesObject.obj_from_primitive(
        alpha.Volume(id="0" * 32, name="v", size=1, status="new").obj_to_primitive()
    )
    primitive = backport(got, beta.HISTORY.current.objects)
    assert primitive["versioned_object.version"] == "1.0"
    assert alpha.Volume.obj_from_primitive(primitive).name == "v"
