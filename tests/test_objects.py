from __future__ import annotations

import pytest

from rpccompat.demo import alpha, beta
from rpccompat.exceptions import IncompatibleObject, UnknownVersion
from rpccompat.objects import backport


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
