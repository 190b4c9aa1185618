"""Version caps: the newest RPC version and object manifest every peer reads.

Per binary, the pin is the minimum over the services that count (live, not
forced down, not stopped, heartbeat younger than ``service_down_time``),
unless ``[upgrade_levels]`` fixes it.  Pins are cached per process and
refreshed on a timer and at once when any node announces a start or a stop on
the control fanout, so clients lift their pins without a restart or a SIGHUP.
A pin computed from no peers at all is never cached (Cinder and Nova shipped
that bug three times): with nobody to ask, send at your own version and look
again next time.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

import oslo_messaging as messaging

from rpccompat.exceptions import UnknownVersion
from rpccompat.history import History, Release, version_tuple
from rpccompat.registry import ServiceInfo, ServiceRegistry, utcnow

LOG = logging.getLogger(__name__)

AUTO = "auto"
NO_SERVICES = "no services"  # a pin that must not be cached
UPGRADE_LEVELS = "upgrade_levels"  # a pin set in the configuration

# The control channel's wire format is frozen: every release must speak it.
CONTROL_VERSION = "1.0"


@dataclasses.dataclass(frozen=True)
class Pin:
    """The cap in force towards one binary, and why."""

    binary: str
    rpc_version: str
    objects_version: str
    manifest: Mapping[str, str]
    release: str
    source: str  # AUTO, UPGRADE_LEVELS or NO_SERVICES
    holders: tuple[ServiceInfo, ...] = ()
    # Services up that speak older than every release of the history: no
    # version here reaches them, so they are left out of the pin and reported.
    too_old: tuple[ServiceInfo, ...] = ()

    @property
    def holder_names(self) -> str:
        return ", ".join(f"{s.name} ({s.release})" for s in self.holders) or "-"

    def describe(self) -> str:
        """One line: the cap, and who holds it (or why nobody does)."""
        if self.source != AUTO:
            held = self.source
        else:
            held = self.holder_names if self.holders else "nobody (newest release)"
        return (
            f"{self.binary}: rpc {self.rpc_version}, objects {self.objects_version} "
            f"({self.release}), held by {held}"
        )

    def lifted_by(self) -> str:
        """Who holds this pin and what lifts it, for an error message."""
        if self.source == UPGRADE_LEVELS:
            return (
                f"set by [upgrade_levels] {self.binary} in the configuration; "
                f"raise it (or set it to {AUTO}) once every {self.binary} "
                "service runs a newer release"
            )
        return (
            f"held by {self.holder_names}; upgrade those services or remove "
            "their stale rows"
        )

    def left_out(self) -> list[str]:
        """Why each service in ``too_old`` is not in the pin, one line each."""
        return [
            f"{s.name} ({s.release}) speaks rpc {s.rpc_current_version}, objects "
            f"{s.object_current_version}, older than every release of the "
            f"history: it is left out of the {self.binary} pin and calls to it "
            "fail; upgrade it"
            for s in self.too_old
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rpc_version": self.rpc_version,
            "objects_version": self.objects_version,
            "release": self.release,
            "source": self.source,
            "holders": [s.name for s in self.holders],
        }


def compute_pin(
    history: History,
    binary: str,
    services: list[ServiceInfo],
    *,
    level: str = AUTO,
    down_time: float = 60,
    now: datetime.datetime | None = None,
) -> Pin:
    """The pin towards ``binary`` given the rows of the services table.

    ``now`` is when they were read (by default, this moment): taken before a
    read that took long, it keeps that read from aging a live node's
    heartbeat into "down", which would lift the pin above it.
    """
    own = history.current
    own_rpc, own_objects = own.rpc[binary], own.objects_version
    if level != AUTO:
        release = history.resolve_level(binary, level)
        rpc = release.rpc[binary] if level == release.name else level
        return _pin(binary, release, UPGRADE_LEVELS, rpc_version=_capped(rpc, own_rpc))
    now = now or utcnow()
    spoken, too_old = [], []
    for s in services:
        if s.binary != binary or not s.is_up(down_time, now):
            continue
        rpc = _capped(s.rpc_current_version, own_rpc)
        objects = _capped(s.object_current_version, own_objects)
        if _in_history(history, binary, rpc, objects):
            spoken.append((s, rpc, objects))
        else:
            too_old.append(s)
    if not spoken:
        return dataclasses.replace(
            _pin(binary, own, NO_SERVICES), too_old=tuple(too_old)
        )
    rpc = min((r for _, r, _ in spoken), key=version_tuple)
    objects = min((o for _, _, o in spoken), key=version_tuple)
    rpc_held, objects_held = rpc != own_rpc, objects != own_objects
    holders = tuple(
        s
        for s, r, o in spoken
        if (rpc_held and r == rpc) or (objects_held and o == objects)
    )
    release = min(
        history.release_for_rpc(binary, rpc),
        history.release_for_objects(objects),
        key=lambda r: history.index(r.name),
    )
    return dataclasses.replace(
        _pin(binary, release, AUTO, rpc_version=rpc, objects_version=objects),
        holders=holders,
        too_old=tuple(too_old),
    )


def _in_history(history: History, binary: str, rpc: str, objects: str) -> bool:
    """Whether some release speaks versions this low; a row below the oldest
    (a node of a release the history dropped) cannot be pinned to."""
    try:
        history.release_for_rpc(binary, rpc)
        history.release_for_objects(objects)
    except UnknownVersion:
        return False
    return True


def compute_pins(
    history: History,
    services: list[ServiceInfo],
    *,
    upgrade_levels: Mapping[str, str],
    down_time: float,
    now: datetime.datetime | None = None,
) -> dict[str, Pin]:
    """Every binary's pin from one read of the services table, made at
    ``now`` (see compute_pin)."""
    return {
        binary: compute_pin(
            history,
            binary,
            services,
            level=upgrade_levels.get(binary, AUTO),
            down_time=down_time,
            now=now,
        )
        for binary in history.binaries
    }


def _capped(version: str | None, own: str) -> str:
    """A peer's version as we can use it: never above our own."""
    if version is None:
        return own
    try:
        return version if version_tuple(version) < version_tuple(own) else own
    except UnknownVersion:
        LOG.warning("ignoring unparseable version %r in the services table", version)
        return own


def _pin(
    binary: str,
    release: Release,
    source: str,
    rpc_version: str | None = None,
    objects_version: str | None = None,
) -> Pin:
    return Pin(
        binary=binary,
        rpc_version=rpc_version or release.rpc[binary],
        objects_version=objects_version or release.objects_version,
        manifest=release.objects,
        release=release.name,
        source=source,
    )


class Pins:
    """The pins of one process, cached, refreshed by timer and by the fanout."""

    def __init__(
        self,
        history: History,
        registry: ServiceRegistry,
        *,
        upgrade_levels: Mapping[str, str] | None = None,
        service_down_time: float = 60,
        refresh_interval: float = 30,
    ) -> None:
        self.history = history
        self.registry = registry
        self.upgrade_levels = dict(upgrade_levels or {})
        self.service_down_time = service_down_time
        self.refresh_interval = refresh_interval
        self._cache: dict[str, Pin] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._listener: messaging.rpc.server.RPCServer | None = None
        self._listeners: list[Callable[[dict[str, Pin]], None]] = []
        for binary, level in self.upgrade_levels.items():
            if level != AUTO:
                history.resolve_level(binary, level)  # fail at start, not per call

    def get(self, binary: str) -> Pin:
        pin = self._cache.get(binary)
        if pin is None:
            self.history.rpc_version(binary)  # a clear error if it has none
            pin = self.refresh()[binary]
        return pin

    def current(self) -> dict[str, Pin]:
        """Every binary's pin now, from the cache where there is one."""
        return {b: self.get(b) for b in self.history.binaries}

    def oldest_manifest(self) -> Mapping[str, str]:
        """The objects of the oldest release any binary is pinned to: what
        a caller that names no objects version can read, if anyone can."""
        pins = list(self._cache.values()) or list(self.refresh().values())
        releases = [self.history.release(pin.release) for pin in pins]
        oldest = min(releases, key=self.history.releases.index, default=None)
        return (oldest or self.history.current).objects

    def refresh(self) -> dict[str, Pin]:
        """Recompute every pin from the services table, with one query."""
        now = utcnow()  # before the read: see compute_pin
        pins = compute_pins(
            self.history,
            self.registry.services(),
            upgrade_levels=self.upgrade_levels,
            down_time=self.service_down_time,
            now=now,
        )
        with self._lock:
            old = self._cache
            self._cache = {b: p for b, p in pins.items() if p.source != NO_SERVICES}
        for binary, pin in pins.items():
            for line in pin.left_out():
                LOG.warning("%s", line)
            before = old.get(binary)
            if before is None or (before.rpc_version, before.objects_version) != (
                pin.rpc_version,
                pin.objects_version,
            ):
                LOG.info("pin %s", pin.describe())
        for callback in self._listeners:
            callback(pins)
        return pins

    def on_change(self, callback: Callable[[dict[str, Pin]], None]) -> None:
        """Call ``callback(pins)`` after every refresh (demo, CLI, metrics)."""
        self._listeners.append(callback)

    def start(self, transport: messaging.Transport, listener: str = "") -> None:
        """Refresh now, then on the timer and on every control announcement.

        ``listener`` names this process's control queue on the broker (a
        Service passes its binary and host; by default the machine's name):
        a name that outlives the process, so that a restart uses its queue
        again instead of leaving one more behind for good.  Processes that
        share a name share that queue, which is harmless: announcements come
        on the fanout, whose queues are each consumer's own and auto-deleted.
        """
        self.refresh()
        self._listener = messaging.get_rpc_server(
            transport,
            messaging.Target(
                topic=control_topic(self.history),
                server=f"pins-{listener or socket.gethostname()}",
            ),
            [_ControlEndpoint(self)],
            access_policy=messaging.ExplicitRPCAccessPolicy,
        )
        self._listener.start()
        self._stop.clear()
        self._timer = threading.Thread(
            target=self._refresh_periodically, name="rpccompat-pins", daemon=True
        )
        self._timer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.stop()
            self._listener.wait()
            self._listener = None
        if self._timer is not None:
            self._timer.join()
            self._timer = None

    def _refresh_periodically(self) -> None:
        while not self._stop.wait(self.refresh_interval):
            self._refresh_logged()

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except Exception:
            LOG.exception("could not refresh pins; keeping the ones in force")


class _ControlEndpoint:
    target = messaging.Target(version=CONTROL_VERSION)

    def __init__(self, pins: Pins) -> None:
        self._pins = pins

    @messaging.expose
    def service_changed(self, ctxt: dict, event: str, binary: str, host: str) -> None:
        LOG.debug("control: %s %s@%s, refreshing pins", event, binary, host)
        self._pins._refresh_logged()


def control_topic(history: History) -> str:
    return f"{history.project}-rpccompat-control"


def announce(
    transport: messaging.Transport, history: History, event: str, binary: str, host: str
) -> bool:
    """Tell every process of the project to refresh its pins now; True if sent.

    Best effort: a process that misses it still refreshes on its timer.
    """
    client = messaging.get_rpc_client(
        transport,
        messaging.Target(
            topic=control_topic(history), version=CONTROL_VERSION, fanout=True
        ),
        retry=1,
    )
    try:
        client.cast({}, "service_changed", event=event, binary=binary, host=host)
    except Exception as e:  # a broker down is not the caller's failure
        LOG.warning("could not announce %s of %s@%s: %s", event, binary, host, e)
        return False
    return True
