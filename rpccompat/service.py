"""One process of a service: row, pins, RPC server, heartbeat, graceful stop.

The order matters and is fixed here so no service gets it wrong: the row is
written before any RPC client exists (Cinder regressed on exactly this), the
server starts only once pins are known, and a graceful stop drains the server,
marks the row stopped and tells every process to refresh its pins, so the
last old node's departure lifts pins everywhere within a moment.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

from oslo_config import cfg

from rpccompat import engine as dbengine
from rpccompat import opts, pins, rpc
from rpccompat.exceptions import HistoryError
from rpccompat.history import History
from rpccompat.objects import Serializer, VersionedObject
from rpccompat.registry import ServiceInfo, ServiceRegistry

LOG = logging.getLogger(__name__)


class Service:
    """A node of ``binary`` running the newest release of ``history``.

    ``endpoints`` may be empty for a node that only calls others (an API
    node): it still reports its row, so its release shows in ``service list``
    and counts for the contract gate.
    """

    def __init__(
        self,
        history: History,
        objects: type[VersionedObject],
        binary: str,
        *,
        conf: cfg.ConfigOpts,
        endpoints: Sequence[rpc.Endpoint] = (),
        topic: str | None = None,
        availability_zone: str | None = None,
    ) -> None:
        opts.register_opts(conf, history)
        for endpoint in endpoints:
            declared = history.current.rpc.get(endpoint.BINARY)
            if declared != endpoint.RPC_API_VERSION:
                raise HistoryError(
                    f"{type(endpoint).__name__} speaks {endpoint.RPC_API_VERSION} "
                    f"but release {history.current.name} declares {declared} for "
                    f"{endpoint.BINARY}; update the history or the endpoint"
                )
        self.history = history
        self.objects = objects
        self.binary = binary
        self.conf = conf
        self.endpoints = list(endpoints)
        self.topic = topic or binary
        self.availability_zone = availability_zone
        self.host: str = conf.host
        self.transport: Any = None
        self.registry: ServiceRegistry | None = None
        self.pins: pins.Pins | None = None
        self._server: Any = None
        self._stopping = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def start(self) -> None:
        self.registry = ServiceRegistry(
            dbengine.create_engine(self.conf.database.connection)
        )
        self.report()  # before any client is built
        self.transport = rpc.make_transport(self.conf)
        self.pins = pins.Pins(
            self.history,
            self.registry,
            upgrade_levels=dict(self.conf.upgrade_levels.items()),
            service_down_time=self.conf.service_down_time,
            refresh_interval=self.conf.pin_refresh_interval,
        )
        self.pins.start(self.transport)
        if self.endpoints:
            self._server = rpc.make_server(
                self.transport,
                self.topic,
                self.host,
                self.endpoints,
                Serializer(self.objects, self.history),
            )
            self._server.start()
        self._stopping.clear()
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"rpccompat-heartbeat-{self.binary}", daemon=True
        )
        self._heartbeat.start()
        pins.announce(self.transport, self.history, "start", self.binary, self.host)
        LOG.info(
            "%s@%s started (%s)", self.binary, self.host, self.history.current.name
        )

    def client(self, endpoint: type[rpc.Endpoint], **kwargs: Any) -> rpc.RPCClient:
        """A client of another binary, pinned by this node's pins."""
        if self.pins is None:
            raise RuntimeError("start the service before building clients")
        return rpc.RPCClient(
            self.transport, endpoint, self.pins, self.objects, **kwargs
        )

    def report(self) -> ServiceInfo:
        """Write this node's row: its release and versions, and a heartbeat."""
        assert self.registry is not None
        release = self.history.current
        return self.registry.report(
            host=self.host,
            binary=self.binary,
            topic=self.topic,
            availability_zone=self.availability_zone,
            release=release.name,
            rpc_version=release.rpc.get(self.binary),
            objects_version=release.objects_version,
        )

    def _beat(self) -> None:
        while not self._stopping.wait(self.conf.report_interval):
            try:
                self.report()
            except Exception:
                LOG.exception("heartbeat of %s@%s failed", self.binary, self.host)

    def stop(self) -> None:
        """Graceful stop: drain, stop counting, tell everyone, let go."""
        self._stopping.set()
        if self._server is not None:
            rpc.stop_server(self._server)
            self._server = None
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        if self.registry is not None:
            self.registry.mark_stopped(self.binary, self.host)
        if self.transport is not None:
            pins.announce(self.transport, self.history, "stop", self.binary, self.host)
        if self.pins is not None:
            self.pins.stop()
        if self.transport is not None:
            self.transport.cleanup()
        if self.registry is not None:
            self.registry.engine.dispose()
        LOG.info("%s@%s stopped", self.binary, self.host)

    def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        done = stop_requested()
        self.start()
        try:
            done.wait()
        finally:
            self.stop()


def stop_requested() -> threading.Event:
    """An event set by SIGTERM or SIGINT: the cue for a graceful stop."""
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    return done
