"""Who counts towards a pin, on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import datetime
import json
import time

import pytest
import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat.db import Database
from rpccompat.exceptions import UnknownRelease
from rpccompat.pins import Pins, compute_pin
from rpccompat.registry import ServiceRecord, ServiceRegistry
from rpccompat_demo import beta, gamma
from tests.conftest import mixed_period_database, spawn_node


@pytest.fixture
def registry(db_url):
    engine = dbengine.create_engine(db_url)
    Database(engine).expand()
    made = ServiceRegistry(engine)
    yield made
    made.engine.dispose()


def report(registry, host, release, binary="volume"):
    rel = beta.HISTORY.release(release)
    return registry.report(
        host=host,
        binary=binary,
        release=rel.name,
        rpc_version=rel.rpc["volume"],
        objects_version=rel.objects_version,
    )


def pin(registry, **kwargs):
    return compute_pin(beta.HISTORY, "volume", registry.services(), **kwargs)


def test_empty_table_gives_own_version_and_is_not_cached(registry):
    pins = Pins(beta.HISTORY, registry)
    first = pins.get("volume")
    assert (first.release, first.source) == ("beta", "no services")
    report(registry, "old", "alpha")
    assert pins.get("volume").release == "alpha"  # looked again: nothing cached


def test_lowest_live_service_holds_the_pin(registry):
    report(registry, "new", "beta")
    report(registry, "old", "alpha")
    got = pin(registry)
    assert (got.rpc_version, got.objects_version, got.release) == (
        "1.0",
        "1.0",
        "alpha",
    )
    assert got.manifest == {"Volume": "1.0", "Attachment": "1.0"}
    assert [s.host for s in got.holders] == ["old"]


def test_all_new_lifts_the_pin_with_no_holders(registry):
    report(registry, "a", "beta")
    report(registry, "b", "beta")
    got = pin(registry)
    assert (got.rpc_version, got.release, got.holders) == ("1.1", "beta", ())


def test_dead_row_does_not_count(registry):
    report(registry, "new", "beta")
    report(registry, "old", "alpha")
    stale = datetime.datetime(2000, 1, 1)
    with registry.engine.begin() as conn:
        conn.execute(
            sa.update(ServiceRecord)
            .where(ServiceRecord.host == "old")
            .values(updated_at=stale)
        )
    assert pin(registry, down_time=60).release == "beta"
    assert registry.get("volume", "old").state(60) == "down"


def test_forced_down_row_does_not_count(registry):
    report(registry, "new", "beta")
    report(registry, "old", "alpha")
    registry.set_forced_down("volume", "old", True)
    assert pin(registry).release == "beta"
    registry.set_forced_down("volume", "old", False)
    assert pin(registry).release == "alpha"


def test_stopped_row_does_not_count_until_it_reports_again(registry):
    report(registry, "new", "beta")
    report(registry, "old", "alpha")
    registry.mark_stopped("volume", "old")
    assert pin(registry).release == "beta"
    report(registry, "old", "alpha")
    assert pin(registry).release == "alpha"


def test_deleted_row_does_not_count(registry):
    report(registry, "new", "beta")
    report(registry, "old", "alpha")
    registry.remove("volume", "old")
    assert pin(registry).release == "beta"
    assert [s.host for s in registry.services()] == ["new"]
    assert len(registry.services(include_deleted=True)) == 2


def test_disabled_row_still_counts(registry):
    report(registry, "old", "alpha")
    registry.set_disabled("volume", "old", True, reason="maintenance")
    assert pin(registry).release == "alpha"


def test_other_binaries_do_not_count(registry):
    report(registry, "new", "beta")
    report(registry, "api-old", "alpha", binary="api")
    assert pin(registry).release == "beta"


def test_a_row_older_than_every_release_is_left_out_and_reported_not_a_crash(
    registry, caplog
):
    """A node of a release the history dropped (rpc 0.9): every new node
    crashed at start computing its pins."""
    report(registry, "new", "beta")
    registry.report(
        host="ancient", binary="volume", release="zeta", rpc_version="0.9",
        objects_version="0.9",
    )  # fmt: skip
    pins = Pins(beta.HISTORY, registry)
    with caplog.at_level("WARNING", logger="rpccompat.pins"):
        got = pins.refresh()["volume"]
    assert (got.rpc_version, got.release, got.holders) == ("1.1", "beta", ())
    assert [s.host for s in got.too_old] == ["ancient"]
    assert got.left_out() == [
        "volume@ancient (zeta) speaks rpc 0.9, objects 0.9, older than every "
        "release of the history: it is left out of the volume pin and calls to "
        "it fail; upgrade it"
    ]
    assert got.left_out()[0] in caplog.messages
    alone = registry.remove("volume", "new")  # nobody else: own version, reported
    assert alone.host == "new"
    got = pins.refresh()["volume"]
    assert (got.release, got.source) == ("beta", "no services")
    assert [s.host for s in got.too_old] == ["ancient"]


@pytest.mark.parametrize(
    ("level", "rpc", "release"),
    [("alpha", "1.0", "alpha"), ("1.0", "1.0", "alpha"), ("beta", "1.1", "beta")],
)
def test_upgrade_levels_release_or_version_overrides_the_table(
    registry, level, rpc, release
):
    report(registry, "new", "beta")
    report(registry, "old", "alpha")
    got = pin(registry, level=level)
    assert (got.rpc_version, got.release, got.source) == (
        rpc,
        release,
        "upgrade_levels",
    )


@pytest.mark.parametrize(
    ("level", "rpc"), [("alpha", "1.0"), ("beta", "1.1"), ("gamma", "1.2")]
)
def test_upgrade_levels_take_every_release_of_a_three_release_history(
    registry, level, rpc
):
    """Gamma's history names all three; a level caps the pin even with every
    service at gamma."""
    for host in ("a", "b"):
        registry.report(
            host=host,
            binary="volume",
            release="gamma",
            rpc_version="1.2",
            objects_version=gamma.HISTORY.current.objects_version,
        )
    pins = Pins(gamma.HISTORY, registry, upgrade_levels={"volume": level})
    got = pins.get("volume")
    assert (got.rpc_version, got.release, got.source) == (rpc, level, "upgrade_levels")


class SlowRead(ServiceRegistry):
    """A services table whose read takes longer than service_down_time:
    the clock of ``rpccompat.pins`` moves on while it runs."""

    def __init__(self, registry: ServiceRegistry, monkeypatch, down_time: float):
        super().__init__(registry.engine)
        self._clock = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        self._late = datetime.timedelta(seconds=down_time * 2)
        self.read = False
        monkeypatch.setattr("rpccompat.pins.utcnow", self.utcnow)

    def utcnow(self) -> datetime.datetime:
        return self._clock + (self._late if self.read else datetime.timedelta())

    def services(self, *args, **kwargs):
        found = super().services(*args, **kwargs)
        self.read = True
        return found


def test_a_slow_read_of_the_table_does_not_lift_the_pin_over_a_live_node(
    registry, monkeypatch
):
    """Judged by the clock after the read, the alpha node's fresh heartbeat
    would look down and the pin would lift to beta while it still serves."""
    report(registry, "old", "alpha")
    report(registry, "new", "beta")
    slow = SlowRead(registry, monkeypatch, down_time=60)
    got = Pins(beta.HISTORY, slow, service_down_time=60).refresh()["volume"]
    assert slow.read
    assert (got.release, [h.host for h in got.holders]) == ("alpha", ["old"])


def test_upgrade_levels_unknown_value_fails_at_start(registry):
    with pytest.raises(UnknownRelease, match="gamma"):
        Pins(beta.HISTORY, registry, upgrade_levels={"volume": "gamma"})


def test_cached_pin_refreshes_on_the_timer(registry, transport_url):
    from rpccompat.rpc import make_transport
    from rpccompat_demo.node import Settings, make_conf

    report(registry, "old", "alpha")
    pins = Pins(beta.HISTORY, registry, refresh_interval=0.2)
    transport = make_transport(
        make_conf(Settings(db_url="sqlite://", transport_url=transport_url), "t")
    )
    pins.start(transport)
    try:
        assert pins.get("volume").release == "alpha"
        registry.remove("volume", "old")
        report(registry, "new", "beta")
        deadline = time.monotonic() + 5
        while pins.get("volume").release != "beta" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pins.get("volume").release == "beta"
    finally:
        pins.stop()
        transport.cleanup()


# Timer far away, no load of their own: only the fanout can lift the pin.
QUIET = ("--pin-refresh-interval", "600", "--load-threads", "0")


@pytest.mark.parametrize("backend", ["mysql", "postgresql"])
def test_pins_lift_in_other_processes_at_the_last_graceful_stop(
    request, rabbit_url, backend, tmp_path
):
    """No restart, no signal to the clients, timer far away: the fanout does it."""
    db_url = request.getfixturevalue(f"{backend}_url")
    registry = ServiceRegistry(mixed_period_database(db_url))
    nodes = {
        name: spawn_node(
            db_url,
            rabbit_url,
            release,
            binary,
            name,
            *QUIET,
            "--record",
            str(tmp_path / f"{name}.json"),
        )
        for name, release, binary in [
            ("old-volume", "alpha", "volume"),
            ("new-volume", "beta", "volume"),
            ("api-beta", "beta", "api"),
        ]
    }
    try:
        for node in nodes.values():
            assert node.stdout.readline().strip() == "READY"
        time.sleep(0.5)
        nodes["old-volume"].terminate()
        assert nodes["old-volume"].wait(timeout=60) == 0
        time.sleep(5)  # a lift in it is the fanout's: the timer is at 600 s
    finally:
        for name in ("api-beta", "new-volume", "old-volume"):  # clients first
            nodes[name].terminate()
            nodes[name].communicate(timeout=60)
        registry.engine.dispose()
    api = json.loads((tmp_path / "api-beta.json").read_text())
    lifted = [c["at"] for c in api["pin_changes"] if c["rpc"]["volume"] == "1.1"]
    assert lifted, f"pin never lifted: {api['pin_changes']}"
