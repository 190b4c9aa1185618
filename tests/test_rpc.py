"""The client and server rules of DESIGN section 5, on memory and RabbitMQ."""

from __future__ import annotations

import oslo_messaging as messaging
import pytest

from rpccompat.exceptions import (
    HistoryError,
    IncompatibleCall,
    IncompatibleObject,
    InvalidFutureArgs,
)
from rpccompat.rpc import RPCClient, make_transport
from rpccompat_demo import alpha, beta

CTXT = {"request_id": "req-test"}
VERSION = "versioned_object.version"


def test_future_args_reach_a_beta_server_while_pinned_to_alpha(cluster):
    cluster.node("beta")
    client = cluster.client("beta", level="alpha")
    volume = client.call(CTXT, "create_volume", name="v", size=1, description="kept")
    assert client.pins.get("volume").rpc_version == "1.0"
    got = cluster.client("beta").call(CTXT, "get_volume", volume_id=volume.id)
    assert got.description == "kept"


def test_future_args_are_ignored_by_an_alpha_server(cluster):
    cluster.node("alpha")
    client = cluster.client("beta")  # pinned to alpha by the alpha row
    volume = client.call(CTXT, "create_volume", name="v", size=2, description="lost")
    assert volume.name == "v" and volume.size == 2
    assert isinstance(volume, beta.Volume) and volume.VERSION == "1.0"
    assert not volume.obj_attr_is_set("description")


def test_argument_sent_at_its_version_when_the_pin_allows(cluster):
    cluster.node("beta")
    volume = cluster.client("beta").call(
        CTXT, "create_volume", name="v", size=1, description="direct"
    )
    assert volume.description == "direct"


def test_required_argument_that_would_be_lost_raises_naming_everything(cluster):
    cluster.node("alpha", host="old-host")
    client = cluster.client("beta")
    spec = beta.VolumeManager.rpc_methods["attach_volume"]
    object.__setattr__(spec, "required", frozenset({"mode"}))
    try:
        with pytest.raises(IncompatibleCall) as err:
            client.call(
                CTXT,
                "attach_volume",
                volume_id="x",
                host="h",
                mountpoint="m",
                mode="ro",
            )
    finally:
        object.__setattr__(spec, "required", frozenset())
    message = str(err.value)
    for part in ("attach_volume", "mode", "1.1", "pinned to 1.0", "volume@old-host"):
        assert part in message


def test_default_valued_new_argument_is_not_sent_to_old_peers(cluster):
    cluster.node("alpha")
    client = cluster.client("beta")
    volume = client.call(CTXT, "create_volume", name="v", size=1)
    attached = client.call(
        CTXT, "attach_volume", volume_id=volume.id, host="h", mountpoint="m", mode="rw"
    )
    assert attached.attachment.host == "h"


def _extend_refused(client) -> str:
    """The error of extend_volume under an alpha pin, its fallback taken away."""
    spec = beta.VolumeManager.rpc_methods["extend_volume"]
    object.__setattr__(spec, "fallback", None)
    try:
        with pytest.raises(IncompatibleCall) as err:
            client.call(CTXT, "extend_volume", volume_id="x", new_size=3)
    finally:
        object.__setattr__(spec, "fallback", beta._extend_on_alpha)
    return str(err.value)


def test_method_too_new_raises_before_sending(cluster):
    cluster.node("alpha", host="old-host")
    client = cluster.client("beta")
    message = _extend_refused(client)
    assert "extend_volume" in message and "volume@old-host" in message
    assert not client.can_send("extend_volume")


def test_a_pin_from_the_configuration_is_named_as_what_to_change(cluster):
    """Nobody holds it: the fix is ``[upgrade_levels]``, not an upgrade."""
    cluster.node("beta")
    message = _extend_refused(cluster.client("beta", level="alpha"))
    assert "[upgrade_levels] volume in the configuration" in message
    assert "held by" not in message and "upgrade those services" not in message


def test_an_endpoint_of_a_binary_the_history_does_not_name_is_refused_at_once(
    cluster,
):
    """It failed with a bare KeyError at its first call."""

    class Backups(beta.VolumeManager):
        BINARY = "backup"

    client = cluster.client("beta")
    with pytest.raises(HistoryError, match=r"no binary 'backup'.*rpc map"):
        RPCClient(client.transport, Backups, client.pins, beta.VolumesObject)
    with pytest.raises(HistoryError, match="no binary 'backup'"):
        client.pins.get("backup")


def test_can_send_tells_whether_the_pinned_peers_take_an_argument(cluster):
    cluster.node("alpha")
    client = cluster.client("beta")
    assert client.can_send("attach_volume", "host")
    assert not client.can_send("attach_volume", "mode")  # 1.1: future_args
    with pytest.raises(TypeError, match="has no 'colour'"):
        client.can_send("attach_volume", "colour")
    assert cluster.client("beta", level="beta").can_send("attach_volume", "mode")


def test_method_too_new_uses_its_declared_fallback(cluster):
    cluster.node("alpha")
    client = cluster.client("beta")
    volume = client.call(CTXT, "create_volume", name="v", size=1)
    extended = client.call(CTXT, "extend_volume", volume_id=volume.id, new_size=5)
    assert extended.size == 5


def _raw_client(cluster, version: str = "1.0") -> messaging.RPCClient:
    from rpccompat_demo.node import make_conf

    transport = make_transport(make_conf(cluster.settings, "raw"))
    cluster._stoppable.append(transport)
    return messaging.get_rpc_client(
        transport, messaging.Target(topic="volume", version=version), timeout=10
    )


@pytest.mark.parametrize("release", ["alpha", "beta"])
def test_malformed_future_args_is_a_clear_error_and_the_server_keeps_serving(
    cluster, release
):
    cluster.node(release)
    raw = _raw_client(cluster)
    with pytest.raises(InvalidFutureArgs, match="future_args must be a dict"):
        raw.call(CTXT, "create_volume", name="v", size=1, future_args=["oops"])
    volume = cluster.client(release).call(CTXT, "create_volume", name="ok", size=1)
    assert volume.name == "ok"


@pytest.mark.parametrize(
    ("name", "version"), [("Snapshot", "1.0"), ("Volume", "2.0"), ("Volume", "1.1")]
)
def test_unknown_object_name_or_version_is_a_clear_error_and_serving_goes_on(
    cluster, name, version
):
    cluster.node("alpha")
    raw = _raw_client(cluster)
    primitive = {
        "versioned_object.namespace": "volumes",
        "versioned_object.name": name,
        "versioned_object.version": version,
        "versioned_object.data": {"id": "0" * 32},
    }
    with pytest.raises(
        IncompatibleObject, match="release alpha of volumes cannot read"
    ):
        raw.call(CTXT, "update_volume", volume=primitive)
    assert cluster.client("alpha").call(CTXT, "list_volumes") == []


def test_object_arguments_and_children_are_backported_to_the_pin(cluster):
    cluster.node("alpha")
    client = cluster.client("beta")
    volume = client.call(CTXT, "create_volume", name="v", size=1)
    volume = client.call(
        CTXT, "attach_volume", volume_id=volume.id, host="h", mountpoint="m"
    )
    volume.attachment.mode = "ro"  # a beta-only child field
    volume.description = "beta-only"
    volume.size = 9
    updated = client.call(CTXT, "update_volume", volume=volume)
    assert updated.size == 9


def test_replies_are_backported_to_an_alpha_caller(cluster):
    cluster.node("beta")
    beta_client = cluster.client("beta")
    made = beta_client.call(CTXT, "create_volume", name="v", size=1, description="d")
    beta_client.call(
        CTXT, "attach_volume", volume_id=made.id, host="h", mountpoint="m", mode="ro"
    )
    got = cluster.client("alpha").call(CTXT, "get_volume", volume_id=made.id)
    assert isinstance(got, alpha.Volume)
    assert got.VERSION == "1.0" and got.attachment.VERSION == "1.0"
    assert got.attachment.host == "h"


def test_a_caller_naming_no_objects_version_gets_what_every_node_reads(cluster):
    """A plain oslo.messaging client sends no objects version: while an
    alpha node counts, a beta node replies at alpha's objects."""
    new = cluster.node("beta", host="new-host")
    made = cluster.client("beta").call(CTXT, "create_volume", name="v", size=1)
    plain = _raw_client(cluster).prepare(server="new-host")
    assert plain.call(CTXT, "get_volume", volume_id=made.id)[VERSION] == "1.1"
    cluster.node("alpha", host="old-host")
    new.service.pins.refresh()  # as the old node's start announces
    got = plain.call(CTXT, "get_volume", volume_id=made.id)
    assert got[VERSION] == "1.0"
    assert alpha.Volume.obj_from_primitive(got).name == "v"


def test_alpha_node_rejects_a_beta_only_object_as_it_would_alone(cluster):
    """Beta classes are loaded in this process, yet alpha refuses Volume 1.1."""
    assert beta.Volume.VERSION == "1.1"
    cluster.node("alpha")
    volume = beta.Volume(id="0" * 32, name="v", size=1, status="x", description="d")
    raw = _raw_client(cluster)
    with pytest.raises(IncompatibleObject) as err:
        raw.call(CTXT, "update_volume", volume=volume.obj_to_primitive())
    assert "Version 1.1 of Volume is not supported" in str(err.value)
