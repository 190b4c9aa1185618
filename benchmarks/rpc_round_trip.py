"""What does rpccompat add to an RPC round trip over plain oslo.messaging?

``rpc_round_trip``: a call and its reply, one at a time, through rpccompat
(``RPCClient`` with its ``Pins``, ``make_server``, an ``Endpoint`` whose method
is declared with ``@method``, the backporting ``Serializer``) against plain
oslo.messaging (``get_rpc_client`` / ``get_rpc_server``, a plain endpoint,
oslo.versionedobjects' ``VersionedObjectSerializer``).  Both sides send the
same beta ``Volume`` (with its ``Attachment``) and get it back, so both
serialize and deserialize an object each way; both run on one transport, the
in-memory one and a scratch RabbitMQ vhost, side by side in alternating
rounds.  The ratio is rpccompat's calls/s over plain's.

One JSON line and one human line per transport on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import common  # first: it silences eventlet's import-time warning
import oslo_messaging as messaging
from oslo_config import cfg
from oslo_versionedobjects.base import VersionedObjectSerializer
from sqlalchemy.engine import URL

from rpccompat.db import Database
from rpccompat.engine import create_engine
from rpccompat.objects import Serializer
from rpccompat.pins import Pins
from rpccompat.registry import ServiceRegistry
from rpccompat.rpc import Endpoint, RPCClient, make_server, make_transport, method
from rpccompat_demo import beta

MEMORY_URL = "kombu+memory:////"
# The aim: rpccompat keeps at least this share of plain's calls/s on RabbitMQ.
# The in-memory transport has none: with no network, it shows the overhead
# at its largest.
AIMS = {"memory": None, "rabbit": 0.95}
CONTEXT = {"request_id": "req-bench"}
TIMEOUT = 30
WARMUP_CALLS = 50
SERVER = "bench-server"


class RpccompatManager(Endpoint):
    """The rpccompat endpoint: one method that hands the volume back."""

    BINARY = "volume"
    RPC_API_VERSION = "1.1"

    @method(since="1.0")
    def update_volume(self, context: dict, volume: beta.Volume) -> beta.Volume:
        return volume


class PlainManager:
    """The same method as a plain oslo.messaging endpoint."""

    target = messaging.Target(version="1.1")

    def update_volume(self, context: dict, volume: beta.Volume) -> beta.Volume:
        return volume


class PlainSerializer(VersionedObjectSerializer):
    """oslo.versionedobjects' serializer, reading beta's classes like rpccompat."""

    OBJ_BASE_CLASS = beta.VolumesObject


def beta_pins(db_url: URL) -> Pins:
    """Pins that follow a services table holding one beta volume node.

    A real row, not an ``[upgrade_levels]`` cap, so the client takes the
    path it takes in production: the pin computed once, then cached.
    """
    engine = create_engine(db_url)
    Database(engine).expand()  # the services table
    registry = ServiceRegistry(engine)
    release = beta.HISTORY.current
    registry.report(
        host=SERVER,
        binary="volume",
        release=release.name,
        rpc_version=release.rpc["volume"],
        objects_version=release.objects_version,
    )
    return Pins(beta.HISTORY, registry, refresh_interval=3600)


@contextlib.contextmanager
def running(server: Any) -> Iterator[None]:
    server.start()
    try:
        yield
    finally:
        server.stop()
        server.wait()


@contextlib.contextmanager
def callers(
    transport: messaging.Transport, pins: Pins
) -> Iterator[dict[str, Callable[[], Any]]]:
    """One round trip per side, each to its own server on ``transport``."""
    volume = common.sample_volume()
    rpccompat_server = make_server(
        transport,
        "bench-rpccompat",
        SERVER,
        [RpccompatManager()],
        Serializer(beta.VolumesObject, beta.HISTORY),
    )
    plain_server = messaging.get_rpc_server(
        transport,
        messaging.Target(topic="bench-plain", server=SERVER),
        [PlainManager()],
        serializer=PlainSerializer(),
    )
    rpccompat_client = RPCClient(
        transport,
        RpccompatManager,
        pins,
        beta.VolumesObject,
        topic="bench-rpccompat",
        timeout=TIMEOUT,
    )
    plain_client = messaging.get_rpc_client(
        transport,
        messaging.Target(topic="bench-plain", version="1.1"),
        serializer=PlainSerializer(),
        timeout=TIMEOUT,
    )
    with running(rpccompat_server), running(plain_server):
        yield {
            "rpccompat": lambda: rpccompat_client.call(
                CONTEXT, "update_volume", volume=volume
            ),
            "plain": lambda: plain_client.call(CONTEXT, "update_volume", volume=volume),
        }


def timed_calls(call: Callable[[], Any], count: int) -> list[float]:
    """Seconds of each of ``count`` round trips."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        reply = call()
        latencies.append(time.perf_counter() - started)
        if not isinstance(reply, beta.Volume):
            raise common.BenchError(f"the reply is a {type(reply).__name__}")
    return latencies


def measure(
    label: str, url: str, pins: Pins, rounds: int, calls: int
) -> dict[str, list[list[float]]]:
    """Per side, its rounds, measured side by side."""
    transport = make_transport(cfg.ConfigOpts(), url)
    try:
        with callers(transport, pins) as sides:
            for call in sides.values():
                timed_calls(call, WARMUP_CALLS)
            common.log(f"{label}: {rounds} rounds of {calls} calls per side")
            return common.interleaved(
                rounds,
                {
                    name: functools.partial(timed_calls, c, calls)
                    for name, c in sides.items()
                },
            )
    finally:
        transport.cleanup()


def summary(rounds: list[list[float]]) -> dict[str, float]:
    latencies = [x for r in rounds for x in r]
    return {
        "calls_per_s": len(latencies) / sum(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
    }


def report(
    label: str, results: dict[str, list[list[float]]], aim: float | None
) -> None:
    rates = {
        name: [len(r) / sum(r) for r in rounds] for name, rounds in results.items()
    }
    low, ratio, high = common.quartiles(
        common.paired_ratios(rates["rpccompat"], rates["plain"])
    )
    ours, plain = summary(results["rpccompat"]), summary(results["plain"])
    record = {
        "benchmark": "rpc_round_trip",
        "transport": label,
        "rounds": len(results["plain"]),
        "calls_per_side": sum(len(r) for r in results["plain"]),
        **{f"rpccompat_{k}": round(v, 3) for k, v in ours.items()},
        **{f"plain_{k}": round(v, 3) for k, v in plain.items()},
        "ratio": round(ratio, 3),
        "ratio_quartiles": [round(low, 3), round(high, 3)],
        "aim": aim,
        "within_aim": None if aim is None else ratio >= aim,
    }
    verdict = ""
    if aim is not None:
        verdict = f" - {'ok' if ratio >= aim else 'UNDER'} the {aim:.2f} aim"
    common.emit(
        record,
        f"{label}: rpccompat {ours['calls_per_s']:,.0f} calls/s "
        f"(p50 {ours['p50_ms']:.2f} ms) = {ratio:.2f} x plain oslo.messaging "
        f"({plain['calls_per_s']:,.0f} calls/s, p50 {plain['p50_ms']:.2f} ms); "
        f"median of {record['rounds']} paired rounds, quartiles "
        f"{low:.2f}-{high:.2f}{verdict}",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--transports",
        default=",".join(AIMS),
        help=f"comma-separated: {', '.join(AIMS)}",
    )
    parser.add_argument("--rabbit-url", default=common.DEFAULT_RABBIT_URL)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=50, help="per side and round")
    args = parser.parse_args(argv)
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if not args.transports or set(args.transports) - set(AIMS):
        parser.error(f"--transports: choose from {', '.join(AIMS)}")
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    return args


@contextlib.contextmanager
def transport_url(label: str, rabbit_url: str) -> Iterator[str]:
    if label == "memory":
        yield MEMORY_URL
    else:
        with common.scratch_vhost(rabbit_url) as url:
            yield url


def run(args: argparse.Namespace) -> None:
    with common.scratch_database(common.SQLITE_URL) as db_url:
        pins = beta_pins(db_url)
        try:
            for label in args.transports:
                with transport_url(label, args.rabbit_url) as url:
                    results = measure(label, url, pins, args.rounds, args.calls)
                report(label, results, AIMS[label])
        finally:
            pins.registry.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return common.run_main("rpc_round_trip", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
