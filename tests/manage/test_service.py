"""``service list|remove|disable|enable|force-down`` on each backend."""

from __future__ import annotations

import datetime
import time

import pytest
from oslo_config import cfg

from rpccompat.manage import NOT_FOUND
from rpccompat.manage.service import COLUMNS
from rpccompat.pins import Pins
from rpccompat.registry import ServiceRegistry, utcnow
from rpccompat.rpc import make_transport
from rpccompat_demo import beta
from tests.manage.conftest import SERVICE_DOWN_TIME, report


def table_rows(out: str) -> list[list[str]]:
    """The cells of a prettytable, header first."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("|")
    ]


def test_list_shows_versions_pins_and_holders(engine, operator):
    report(engine, "node-1", "alpha")
    report(engine, "node-2", "beta")
    run = operator("service", "list")
    assert run.code == 0, run.err
    header, *rows = table_rows(run.out)
    assert header == list(COLUMNS)
    by_host = {row[1]: dict(zip(COLUMNS, row, strict=True)) for row in rows}
    assert by_host["node-1"]["Release"] == "alpha"
    assert by_host["node-1"]["RPC Version"] == "1.0"
    assert by_host["node-2"]["Object Version"] == "1.1"
    assert {r["State"] for r in by_host.values()} == {"up"}
    assert {r["Status"] for r in by_host.values()} == {"enabled"}
    assert (
        "  volume: rpc 1.0, objects 1.0 (alpha), held by volume@node-1 (alpha)"
        in run.out.splitlines()
    )
    assert "warning" not in run.out

    listed = operator("service", "list", "--json").json()
    services = {s["host"]: s for s in listed["services"]}
    assert services["node-1"]["holds_pins"] == ["volume"]
    assert services["node-2"]["holds_pins"] == []
    assert services["node-2"]["rpc_version"] == "1.1"
    assert listed["pins"]["volume"]["holders"] == ["volume@node-1"]
    assert listed["pins"]["volume"]["release"] == "alpha"
    assert listed["warnings"] == []


def test_a_slow_read_of_the_table_shows_live_services_up(engine, operator, monkeypatch):
    """``list`` judges each heartbeat by when its read began: a read longer
    than service_down_time (a big table) aged every row into "down"."""
    report(engine, "node-1", "alpha")
    started = utcnow()
    read = []

    def clock() -> datetime.datetime:
        return started + datetime.timedelta(seconds=2 * SERVICE_DOWN_TIME * len(read))

    def services(self, *args, **kwargs):
        found = original(self, *args, **kwargs)
        read.append(True)
        return found

    original = ServiceRegistry.services
    monkeypatch.setattr(ServiceRegistry, "services", services)
    monkeypatch.setattr("rpccompat.manage.service.utcnow", clock)
    monkeypatch.setattr("rpccompat.pins.utcnow", clock)
    listed = operator("service", "list", "--json").json()
    assert read
    assert [s["state"] for s in listed["services"]] == ["up"]
    assert listed["pins"]["volume"]["holders"] == ["volume@node-1"]
    assert listed["warnings"] == []


def test_a_down_row_that_holds_a_pin_is_shown_with_the_way_out(engine, operator):
    """A node that crashed stops heartbeating but counts until
    service_down_time: list says it is down and how to release its pin."""
    report(engine, "node-1", "beta")
    report(engine, "node-2", "alpha", silent_for=SERVICE_DOWN_TIME / 3)
    run = operator("service", "list")
    states = {row[1]: row[4] for row in table_rows(run.out)[1:]}
    assert states == {"node-1": "up", "node-2": "down"}
    (warning,) = [line for line in run.out.splitlines() if line.startswith("warning")]
    assert "volume@node-2 holds the volume pin (alpha) but is down" in warning
    assert "rpccompat-manage service remove volume node-2" in warning
    assert "rpccompat-manage service force-down volume node-2" in warning

    listed = operator("service", "list", "--json").json()
    node_2 = next(s for s in listed["services"] if s["host"] == "node-2")
    assert (node_2["state"], node_2["counted"]) == ("down", True)
    assert len(listed["warnings"]) == 1


def test_a_row_older_than_every_release_is_a_warning_and_an_upgrade_blocker(
    engine, operator
):
    report(engine, "node-1", "beta")
    ServiceRegistry(engine).report(
        host="ancient", binary="volume", release="zeta", rpc_version="0.9",
        objects_version="0.9",
    )  # fmt: skip
    run = operator("service", "list")
    assert run.code == 0, run.err
    way_out = (
        "volume@ancient (zeta) speaks rpc 0.9, objects 0.9, older than every "
        "release of the history: it is left out of the volume pin and calls to "
        "it fail; upgrade it, or if it is gone: rpccompat-manage service remove "
        "volume ancient"
    )
    assert f"warning: {way_out}" in run.out.splitlines()
    assert "  volume: rpc 1.1, objects 1.1 (beta), held by nobody" in run.out
    assert operator("service", "list", "--json").json()["warnings"] == [way_out]

    checked = operator("upgrade", "check", "--json")
    assert checked.code == 2, checked.err
    consistency = {c["check"]: c for c in checked.json()["checks"]}[
        "History consistency"
    ]
    assert consistency["result"] == 2 and way_out in consistency["details"]


def test_a_row_past_service_down_time_holds_nothing(engine, operator):
    report(engine, "node-1", "beta")
    report(engine, "node-2", "alpha", silent_for=SERVICE_DOWN_TIME * 2)
    listed = operator("service", "list", "--json").json()
    assert listed["pins"]["volume"]["release"] == "beta"
    assert listed["warnings"] == []


def test_commands_change_the_row_and_refuse_an_unknown_service(engine, operator):
    report(engine, "node-1", "alpha")
    registry = ServiceRegistry(engine)

    disabled = operator("service", "disable", "volume", "node-1", "--reason", "disk")
    assert disabled.code == 0
    row = registry.get("volume", "node-1")
    assert (row.disabled, row.disabled_reason) == (True, "disk")
    listed = operator("service", "list", "--json").json()
    assert listed["services"][0]["status"] == "disabled"
    assert operator("service", "enable", "volume", "node-1").code == 0
    assert registry.get("volume", "node-1").disabled is False

    assert operator("service", "force-down", "volume", "node-1").code == 0
    assert registry.get("volume", "node-1").forced_down is True
    assert operator("service", "force-down", "volume", "node-1", "--unset").code == 0
    assert registry.get("volume", "node-1").forced_down is False

    removed = operator("service", "remove", "volume", "node-1")
    assert removed.code == 0 and "removed volume@node-1 (alpha)" in removed.out
    assert registry.services() == []

    for action in ("remove", "enable", "disable", "force-down"):
        run = operator("service", action, "volume", "node-9")
        assert run.code == NOT_FOUND, action
        assert run.err.count("\n") == 1 and "no service 'volume' on host" in run.err


def wait_for_release(pins: Pins, release: str, timeout: float) -> None:
    """Until the client's cached pin is at ``release``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if pins.get("volume").release == release:
            return
        time.sleep(0.05)
    pytest.fail(f"pin not at {release} after {timeout} s: {pins.get('volume')}")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("action", [["remove"], ["force-down"]])
def test_remove_and_force_down_release_the_pin_within_the_refresh_interval(
    engine, operator, action
):
    """No broker configured for the CLI: a running client's timer lifts it."""
    report(engine, "node-1", "beta")
    report(engine, "node-2", "alpha")
    refresh = 1.0
    transport = make_transport(cfg.ConfigOpts(), "kombu+memory:////")
    pins = Pins(beta.HISTORY, ServiceRegistry(engine), refresh_interval=refresh)
    pins.start(transport)
    try:
        assert pins.get("volume").release == "alpha"
        run = operator("service", *action, "volume", "node-2")
        assert run.code == 0 and "within pin_refresh_interval" in run.out
        wait_for_release(pins, "beta", 60.0)  # no broker: the timer did it
    finally:
        pins.stop()
        transport.cleanup()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_force_down_announces_so_pins_lift_at_once(engine, operator, rabbit_url):
    """With the transport configured, the CLI tells every process at once:
    the client's timer (600 s) plays no part."""
    report(engine, "node-1", "beta")
    report(engine, "node-2", "alpha")
    transport = make_transport(cfg.ConfigOpts(), rabbit_url)
    pins = Pins(beta.HISTORY, ServiceRegistry(engine), refresh_interval=600)
    pins.start(transport)
    try:
        assert pins.get("volume").release == "alpha"
        run = operator(
            "--transport-url", rabbit_url, "service", "force-down", "volume", "node-2"
        )
        assert run.code == 0 and "announced on the control fanout" in run.out
        wait_for_release(pins, "beta", 60.0)  # the timer would take 600 s
    finally:
        pins.stop()
        transport.cleanup()
