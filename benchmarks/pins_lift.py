"""How soon after the last old node stops does every client speak the new version?

``pins_lift``: a beta volume node and several beta clients (each with its
own transport, database engine and ``Pins``, as separate processes would
have them) run on a scratch RabbitMQ vhost and the sample service's database
(a scratch SQLite file, or a scratch database on ``--db-url``).  An alpha
volume node starts, which pins every client to RPC 1.0; then it stops
gracefully (``Service.stop``), and each client's time is taken from the
moment the stop begins to the moment its ``Pins.get('volume').rpc_version``
becomes 1.1, seen through ``Pins.on_change``.  The pins' timer is set to 60 s,
so only the stop announced on the control fanout can lift them in time.

One JSON line and one human line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Iterator

import common  # first: it silences eventlet's import-time warning
from sqlalchemy.engine import URL

from rpccompat.engine import create_engine
from rpccompat.pins import Pin, Pins
from rpccompat.registry import ServiceRegistry
from rpccompat.rpc import make_transport
from rpccompat_demo import beta, schema
from rpccompat_demo.node import VOLUME, Node, Settings, make_conf

# The aim: every client speaks the new version this soon after the stop.
AIM = 2.0
OLD_RPC, NEW_RPC = "1.0", "1.1"
# Far beyond the aim: a client still pinned after this has missed the fanout.
WAIT = 10.0
REFRESH_INTERVAL = 60.0


class Client:
    """A beta client's pins, and when their ``volume`` version last changed."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.transport = make_transport(make_conf(settings, name))
        self.engine = create_engine(settings.db_url)
        self.pins = Pins(
            beta.HISTORY,
            ServiceRegistry(self.engine),
            service_down_time=settings.service_down_time,
            refresh_interval=settings.pin_refresh_interval,
        )
        self.version: str | None = None
        self.since = 0.0
        self._changed = threading.Condition()
        self.pins.on_change(self._on_change)

    def _on_change(self, pins: dict[str, Pin]) -> None:
        """Runs right after a refresh, once ``Pins.get`` answers the new pin."""
        now, version = time.monotonic(), pins[VOLUME].rpc_version
        with self._changed:
            if version != self.version:
                self.version, self.since = version, now
                self._changed.notify_all()

    def wait_for(self, version: str, deadline: float) -> float | None:
        """When the pin became ``version`` (monotonic), or None by ``deadline``."""
        with self._changed:
            reached = self._changed.wait_for(
                lambda: self.version == version, deadline - time.monotonic()
            )
            return self.since if reached else None

    def close(self) -> None:
        self.pins.stop()
        self.transport.cleanup()
        self.engine.dispose()


@contextlib.contextmanager
def cluster(settings: Settings, clients: int) -> Iterator[list[Client]]:
    """A beta volume node and the started clients, stopped whatever happens."""
    with contextlib.ExitStack() as stack:
        new = Node(settings, "beta", VOLUME, "node-new")
        new.start()
        stack.callback(new.stop)
        started = []
        for number in range(1, clients + 1):
            client = Client(settings, f"client-{number}")
            stack.callback(client.close)
            client.pins.start(client.transport)
            started.append(client)
        yield started


def wait_all(clients: list[Client], version: str, since: float) -> list[float | None]:
    """Seconds from ``since`` until each client's pin became ``version``."""
    deadline = time.monotonic() + WAIT
    times = [client.wait_for(version, deadline) for client in clients]
    return [None if t is None else t - since for t in times]


def lift_once(
    settings: Settings, clients: list[Client]
) -> tuple[list[float | None], float]:
    """Start the old node, stop it: each client's lift, and the stop's length."""
    old = Node(settings, "alpha", VOLUME, "node-old")
    started = time.monotonic()
    old.start()
    pinned = wait_all(clients, OLD_RPC, started)
    stopping = time.monotonic()
    old.stop()
    stop_seconds = time.monotonic() - stopping
    if None in pinned:
        raise common.BenchError("a client never saw the alpha node start")
    return wait_all(clients, NEW_RPC, stopping), stop_seconds


def report(lifts: list[list[float | None]], stops: list[float]) -> None:
    seen = [t for rep in lifts for t in rep if t is not None]
    missed = sum(1 for rep in lifts for t in rep if t is None)
    worst = [max(t for t in rep if t is not None) for rep in lifts if None not in rep]
    record = {
        "benchmark": "pins_lift",
        "repetitions": len(lifts),
        "clients": len(lifts[0]),
        "max_seconds": round(max(seen), 3) if seen else None,
        "median_seconds": round(statistics.median(seen), 3) if seen else None,
        "max_per_repetition": [round(t, 3) for t in worst],
        "missed": missed,
        "median_stop_seconds": round(statistics.median(stops), 3),
        "aim_seconds": AIM,
        "within_aim": not missed and max(seen) <= AIM,
    }
    verdict = "ok" if record["within_aim"] else "OVER"
    misses = f", {missed} never within {WAIT:.0f} s" if missed else ""
    common.emit(
        record,
        f"pins lifted on every client within {record['max_seconds']} s of the last "
        f"old node's stop (median {record['median_seconds']} s; {record['clients']} "
        f"clients x {record['repetitions']} repetitions{misses}; the stop itself "
        f"took {record['median_stop_seconds']} s) - {verdict} the {AIM:.0f} s aim",
    )


def run(args: argparse.Namespace) -> None:
    common.check_reachable({"database": args.db_url})
    with (
        common.scratch_vhost(args.rabbit_url) as transport_url,
        common.scratch_database(args.db_url) as db_url,
    ):
        settings = mixed_period(db_url, transport_url)
        with cluster(settings, args.clients) as clients:
            lifts, stops = [], []
            for number in range(1, args.repetitions + 1):
                common.log(f"repetition {number}/{args.repetitions}")
                seconds, stop_seconds = lift_once(settings, clients)
                lifts.append(seconds)
                stops.append(stop_seconds)
    report(lifts, stops)


def mixed_period(db_url: URL, transport_url: str) -> Settings:
    """The sample database at alpha, expanded for beta: an upgrade under way."""
    url = db_url.render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        schema.install_mixed_period(engine)
    finally:
        engine.dispose()
    return Settings(
        db_url=url, transport_url=transport_url, pin_refresh_interval=REFRESH_INTERVAL
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--rabbit-url", default=common.DEFAULT_RABBIT_URL)
    parser.add_argument(
        "--db-url",
        default=common.SQLITE_URL,
        help="server to make the scratch database on (default: a SQLite file)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.repetitions < 1:
        parser.error("--clients and --repetitions must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return common.run_main("pins_lift", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
