"""``service list|remove|disable|enable|force-down``: the services table.

``service list`` answers the mixed period's first question - who runs what,
and who holds each pin back.  A node that crashed keeps counting towards the
pins until its heartbeat is ``service_down_time`` old; such a row is shown
``down`` with a warning naming the commands that release it at once.

Exit codes: 0 done; 2 no such service; 1 and 127 as every command.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
from typing import Any

import prettytable
from oslo_config import cfg

from rpccompat.manage.base import OK, Context, args, json_flag, print_json
from rpccompat.pins import Pin
from rpccompat.registry import ServiceInfo, utcnow

# A node that missed this many heartbeats in a row is shown down.
MISSED_HEARTBEATS = 2
COLUMNS = (
    "Binary",
    "Host",
    "Zone",
    "Status",
    "State",
    "Updated At",
    "Release",
    "RPC Version",
    "Object Version",
)


@dataclasses.dataclass(frozen=True)
class ServiceView:
    """One row as an operator needs to see it."""

    service: ServiceInfo
    up: bool
    counted: bool
    silent_for: float | None  # seconds since the last heartbeat
    holds: tuple[str, ...]  # the binaries whose pin this service holds

    @property
    def state(self) -> str:
        return "up" if self.up else "down"

    def as_dict(self) -> dict[str, Any]:
        s = self.service
        return {
            "binary": s.binary,
            "host": s.host,
            "zone": s.availability_zone,
            "status": "disabled" if s.disabled else "enabled",
            "disabled_reason": s.disabled_reason,
            "state": self.state,
            "counted": self.counted,
            "forced_down": s.forced_down,
            "stopped": s.stopped_at is not None,
            "updated_at": _iso(s.updated_at),
            "seconds_since_heartbeat": self.silent_for,
            "release": s.release,
            "rpc_version": s.rpc_current_version,
            "object_version": s.object_current_version,
            "holds_pins": list(self.holds),
        }


@dataclasses.dataclass(frozen=True)
class Survey:
    """The services table and the pins it implies, read once."""

    services: list[ServiceView]
    pins: dict[str, Pin]
    service_down_time: float
    prog: str

    def warnings(self) -> list[str]:
        return self.too_old() + [
            f"{v.service.name} holds the {', '.join(v.holds)} pin "
            f"({v.service.release}) but is down: no heartbeat for "
            f"{v.silent_for:.0f} s; it counts until service_down_time "
            f"({self.service_down_time:g} s) has passed. If it is gone: "
            f"{self.prog} service remove {v.service.binary} {v.service.host}; "
            f"if it is only stopped: {self.prog} service force-down "
            f"{v.service.binary} {v.service.host}"
            for v in self.services
            if v.holds and not v.up
        ]

    def too_old(self) -> list[str]:
        """The services no pin can reach, each with the commands that clear it."""
        return [
            f"{line}, or if it is gone: {self.prog} service remove "
            f"{service.binary} {service.host}"
            for pin in self.pins.values()
            for service, line in zip(pin.too_old, pin.left_out(), strict=True)
        ]


def survey(context: Context) -> Survey:
    """Who runs what, who counts, and who holds each pin, as of now.

    Now is when the read starts: a row is no older than it was then, and a
    read that takes long (a big table) must not age every heartbeat it
    returns into a false "down".
    """
    now = utcnow()
    services = context.registry.services()
    pins = context.pins(services, now)
    held: dict[int, list[str]] = collections.defaultdict(list)
    for binary, pin in pins.items():
        for holder in pin.holders:
            held[holder.id].append(binary)
    views = [
        _view(service, tuple(held[service.id]), context.conf, now)
        for service in services
    ]
    return Survey(views, pins, context.conf.service_down_time, context.prog)


def _view(
    service: ServiceInfo,
    holds: tuple[str, ...],
    conf: cfg.ConfigOpts,
    now: datetime.datetime,
) -> ServiceView:
    """Up: heard from lately.  Counted: the pins still include it, which
    lasts until its heartbeat is service_down_time old."""
    silent_for = (
        None
        if service.updated_at is None
        else max(0.0, round((now - service.updated_at).total_seconds(), 1))
    )
    late = silent_for is None or silent_for > MISSED_HEARTBEATS * conf.report_interval
    counted = service.is_up(conf.service_down_time, now)
    return ServiceView(service, counted and not late, counted, silent_for, holds)


def _iso(moment: datetime.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(sep=" ", timespec="seconds")


class ServiceCommands:
    """The services table: who runs what, and the pins it implies."""

    def __init__(self, context: Context) -> None:
        self.context = context

    @json_flag
    def list(self, json: bool = False) -> int:
        """Every service with its versions, then the pins and their holders.

        Exit codes: 0 listed; 1 the database has no services table.
        """
        found = survey(self.context)
        if json:
            print_json(
                {
                    "services": [v.as_dict() for v in found.services],
                    "pins": {b: p.as_dict() for b, p in found.pins.items()},
                    "warnings": found.warnings(),
                }
            )
            return OK
        table = prettytable.PrettyTable(COLUMNS)
        table.align = "l"
        for view in found.services:
            s = view.service
            table.add_row(
                [
                    s.binary,
                    s.host,
                    s.availability_zone or "-",
                    "disabled" if s.disabled else "enabled",
                    view.state,
                    _iso(s.updated_at) or "-",
                    s.release,
                    s.rpc_current_version or "-",
                    s.object_current_version,
                ]
            )
        print(table)
        if found.pins:
            print("Pins:")
            for pin in found.pins.values():
                print(f"  {pin.describe()}")
        else:
            print(
                "Pins: unknown: no history; list the service's migration tree "
                "in [database] migration_trees"
            )
        for warning in found.warnings():
            print(f"warning: {warning}")
        return OK

    @args("binary")
    @args("host")
    def remove(self, binary: str, host: str) -> int:
        """Delete the row of a node that is gone for good: it stops counting
        for pins and for the contract gate.

        Exit codes: 0 removed; 2 no such service.
        """
        self.context.transport  # noqa: B018 - a bad transport URL changes nothing
        service = self.context.registry.remove(binary, host)
        self._done(f"removed {service.name} ({service.release})", "removed", service)
        return OK

    @args("binary")
    @args("host")
    @args("--reason", help="why, shown in service list --json")
    def disable(self, binary: str, host: str, reason: str | None = None) -> int:
        """Take a node out of scheduling; it still counts for pins.

        Exit codes: 0 disabled; 2 no such service.
        """
        service = self.context.registry.set_disabled(binary, host, True, reason)
        print(f"disabled {service.name}" + (f": {reason}" if reason else ""))
        return OK

    @args("binary")
    @args("host")
    def enable(self, binary: str, host: str) -> int:
        """Put a disabled node back.

        Exit codes: 0 enabled; 2 no such service.
        """
        service = self.context.registry.set_disabled(binary, host, False)
        print(f"enabled {service.name}")
        return OK

    @args("binary")
    @args("host")
    @args("--unset", action="store_true", help="clear the flag: count it again")
    def force_down(self, binary: str, host: str, unset: bool = False) -> int:
        """Declare a node down now, without waiting for service_down_time:
        it stops counting for pins at once (it still blocks contract until
        removed).

        Exit codes: 0 forced down (or, with --unset, counted again); 2 no
        such service.
        """
        self.context.transport  # noqa: B018 - a bad transport URL changes nothing
        service = self.context.registry.set_forced_down(binary, host, not unset)
        what = "no longer forced down" if unset else "forced down"
        self._done(f"{service.name} {what}", "forced-down", service)
        return OK

    def _done(self, message: str, event: str, service: ServiceInfo) -> None:
        how = self.context.announce(event, service.binary, service.host)
        print(f"{message}; {how}")
