"""One node of the sample service, in this process or as its own process.

``rpccompat-demo-node --release alpha --binary volume --host n1
--config-file volumes.conf`` (or ``--db-url URL --transport-url URL``) runs a
node until SIGTERM, as a real deployment would; it prints ``READY`` once
serving (or one line on stderr and exits 3 when the database's schema does
not serve its release) and, for an ``api`` node (one that only calls), one
JSON line of its load counters when it stops - and with ``--record FILE``
writes there every call's timing, each failure with its cause and time, the
rows its calls wrote and when its pins changed, for a harness to check.  A
config file is read as a service reads its own: ``[DEFAULT] transport_url``,
``host``, ``report_interval``, ``service_down_time``,
``pin_refresh_interval`` and ``[database] connection``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from oslo_config import cfg

from rpccompat import engine as dbengine
from rpccompat import opts
from rpccompat.exceptions import ConfigurationError, SchemaRefused
from rpccompat.scrub import one_line_usage_errors, passwords, scrub_process_output
from rpccompat.service import Service, StopSignal, exit_abandoned
from rpccompat_demo import alpha, beta, gamma
from rpccompat_demo.load import Load

RELEASES: dict[str, ModuleType] = {"alpha": alpha, "beta": beta, "gamma": gamma}


def upgrade_path(text: str) -> tuple[str, ...]:
    """``alpha,beta,gamma``: the releases an upgrade goes through, from alpha
    to each newer one in turn, one may be skipped (ValueError otherwise)."""
    path = tuple(text.split(","))
    known = list(RELEASES)
    if (
        len(path) < 2
        or path[0] != known[0]
        or not set(path) <= set(known)
        or sorted(set(path), key=known.index) != list(path)
    ):
        raise ValueError(
            f"{text}: give alpha, then newer releases in order, each once, "
            f"from {', '.join(known)}"
        )
    return path


VOLUME, API = "volume", "api"
REFUSED = 3  # exit code: the schema does not serve this release


@dataclasses.dataclass(frozen=True)
class Settings:
    db_url: str
    transport_url: str
    report_interval: float = 1.0
    service_down_time: float = 10.0
    pin_refresh_interval: float = 5.0


def load_conf(config_files: list[str]) -> cfg.ConfigOpts:
    """The options of a node's config files, as every release reads them."""
    conf = cfg.ConfigOpts()
    opts.register_opts(conf, alpha.HISTORY)
    conf(
        [arg for path in config_files for arg in ("--config-file", path)],
        project="rpccompat-demo",
        default_config_files=[],
    )
    return conf


def settings_from(conf: cfg.ConfigOpts) -> Settings:
    return Settings(
        db_url=conf.database.connection,
        transport_url=conf.transport_url,
        **{
            f.name: getattr(conf, f.name)
            for f in dataclasses.fields(Settings)
            if f.default is not dataclasses.MISSING
        },
    )


def make_conf(settings: Settings, host: str) -> cfg.ConfigOpts:
    conf = load_conf([])
    conf.set_override("host", host)
    conf.set_override("connection", settings.db_url, "database")
    conf.set_override("transport_url", settings.transport_url)
    for name in ("report_interval", "service_down_time", "pin_refresh_interval"):
        conf.set_override(name, getattr(settings, name))
    return conf


class Node:
    """A node running in this process: a Service, plus load if it is an API."""

    def __init__(
        self,
        settings: Settings,
        release: str,
        binary: str,
        host: str,
        seed: int = 0,
        *,
        load_threads: int = 2,
        max_calls: int | None = None,
        call_timeout: float = 30.0,
    ) -> None:
        self.release, self.binary, self.host = release, binary, host
        self._load_threads, self._max_calls = load_threads, max_calls
        self._call_timeout = call_timeout
        self.code = RELEASES[release]
        self._engine = dbengine.create_engine(settings.db_url)
        endpoints = [self.code.VolumeManager(self._engine)] if binary == VOLUME else []
        self.service = Service(
            self.code.HISTORY,
            self.code.VolumesObject,
            binary,
            conf=make_conf(settings, host),
            endpoints=endpoints,
        )
        self._seed = seed
        self.load: Load | None = None

    @property
    def name(self) -> str:
        return f"{self.binary}@{self.host} ({self.release})"

    def start(self) -> None:
        try:
            self.service.start()
        except SchemaRefused:  # nothing started, nothing to stop
            self._engine.dispose()
            raise
        if self.binary == API:
            client = self.service.client(
                self.code.VolumeManager, timeout=self._call_timeout
            )
            self.load = Load(
                client,
                self.code.exercise,
                seed=self._seed,
                threads=self._load_threads,
                max_calls=self._max_calls,
            )
            self.load.start()

    def stop(self, timeout: float | None = None) -> dict[str, Any]:
        """Stop calling (each call ends by its timeout), then the service.

        ``stopped`` in the result is False when the service's stop missed
        ``timeout`` and was abandoned (see ``Service.stop``).
        """
        stats = self.load.stop() if self.load else {}
        stopped = self.service.stop(timeout)
        self._engine.dispose()
        return {**stats, "stopped": stopped}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        prog="rpccompat-demo-node", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--release", choices=sorted(RELEASES), required=True)
    parser.add_argument("--binary", choices=(VOLUME, API), required=True)
    parser.add_argument("--host", help="node name (default: the config's host)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load-threads", type=int, default=2)
    parser.add_argument(
        "--max-calls", type=int, help="api: stop by itself after this many calls"
    )
    parser.add_argument(
        "--call-timeout", type=float, default=30.0, help="api: seconds per call"
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=60.0,
        help="seconds a graceful stop may take before the node exits anyway",
    )
    parser.add_argument(
        "--record", type=Path, help="api: write the calls' record here at stop"
    )
    parser.add_argument(
        "--config-file", action="append", default=[], help="oslo.config file"
    )
    for field in dataclasses.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        kind = str if field.default is dataclasses.MISSING else float
        parser.add_argument(flag, type=kind, help="overrides the config file")
    args = parser.parse_args(argv)
    conf = load_conf(args.config_file)
    args.host = args.host or conf.host
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Settings)
        if getattr(args, f.name) is not None
    }
    settings = dataclasses.replace(settings_from(conf), **overrides)
    if not settings.db_url:
        require_database(parser, conf)  # exits: neither --db-url nor a config
    return args, settings


def require_database(parser: argparse.ArgumentParser, conf: cfg.ConfigOpts) -> str:
    """``[database] connection``, or exit 2 with one line: there is no default."""
    try:
        return opts.database_connection(conf)
    except ConfigurationError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> int:
    with one_line_usage_errors():
        args, settings = parse_args(argv)
    scrub_process_output(passwords(settings.db_url, settings.transport_url))
    node = Node(
        settings,
        args.release,
        args.binary,
        args.host,
        args.seed,
        load_threads=args.load_threads,
        max_calls=args.max_calls,
        call_timeout=args.call_timeout,
    )
    with StopSignal() as stop:
        try:
            node.start()
        except SchemaRefused as refused:
            print(f"rpccompat-demo-node: {refused}", file=sys.stderr, flush=True)
            return REFUSED
        pin_changes = watch_pins(node)
        print("READY", flush=True)
        while not stop.wait(0.1):
            if args.max_calls is not None and node.load and node.load.finished:
                break
        record = {**node.stop(args.stop_timeout), "pin_changes": pin_changes}
    if args.record is not None:
        args.record.write_text(json.dumps(record))
    summary = ("calls", "failed_calls", "failures", "stopped")
    print(json.dumps({k: record[k] for k in summary if k in record}), flush=True)
    if not record["stopped"]:
        exit_abandoned()
    return 0


def watch_pins(node: Node) -> list[dict[str, Any]]:
    """Each change of the node's pins, with when it happened (wall clock)."""
    assert node.service.pins is not None
    changes: list[dict[str, Any]] = []

    def record(pins: dict[str, Any]) -> None:
        versions = {binary: pin.rpc_version for binary, pin in pins.items()}
        if not changes or changes[-1]["rpc"] != versions:
            changes.append({"at": time.time(), "rpc": versions})

    node.service.pins.on_change(record)
    record(node.service.pins.current())
    return changes


if __name__ == "__main__":
    sys.exit(main())
