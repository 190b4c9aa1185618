"""One process of a service: row, pins, RPC server, heartbeat, graceful stop.

The order matters and is fixed here so no service gets it wrong: the row is
written before any RPC client exists (Cinder regressed on exactly this), the
server starts only once pins are known, and a graceful stop drains the server,
marks the row stopped and tells every process to refresh its pins, so the
last old node's departure lifts pins everywhere within a moment.

A stop always stops: the signal handler takes no lock (a flag and a byte
down a pipe), and a drain that misses its deadline is abandoned, logged, and
the process exits anyway, as systemd would have killed it.

A node obeys the schema guard (rpccompat.guard): it refuses to start on a
schema that does not serve its release - the row is never written, so it is
never counted - and stops counting once a contract leaves its release behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from oslo_config import cfg
from sqlalchemy import orm

from rpccompat import engine as dbengine
from rpccompat import guard, opts, pins, rpc
from rpccompat.exceptions import HistoryError, SchemaRefused
from rpccompat.history import History
from rpccompat.objects import Serializer, VersionedObject
from rpccompat.registry import ServiceInfo, ServiceRegistry

LOG = logging.getLogger(__name__)
# The schema guard's check of a report: (session, history, node name).
Guard = Callable[[orm.Session, History, str], None]


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
        self._stop_step = "not stopping"
        self._heartbeat: threading.Thread | None = None
        self.stopped_counting: str | None = None  # why, once its row is marked

    def start(self) -> None:
        self.registry = ServiceRegistry(
            dbengine.create_engine(opts.database_connection(self.conf))
        )
        try:  # before any client is built; a refused node writes no row
            self.report(guard.admit)
        except SchemaRefused:
            self._close_database()
            raise
        self.transport = rpc.make_transport(self.conf)
        self.pins = pins.Pins(
            self.history,
            self.registry,
            upgrade_levels=dict(self.conf.upgrade_levels.items()),
            service_down_time=self.conf.service_down_time,
            refresh_interval=self.conf.pin_refresh_interval,
        )
        self.pins.start(self.transport, listener=f"{self.binary}-{self.host}")
        if self.endpoints:
            self._server = rpc.make_server(
                self.transport,
                self.topic,
                self.host,
                self.endpoints,
                Serializer(
                    self.objects, self.history, unversioned=self.pins.oldest_manifest
                ),
            )
            self._server.start()
        self._stopping.clear()
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"rpccompat-heartbeat-{self.binary}", daemon=True
        )
        self._heartbeat.start()
        self._announce("start")
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

    def report(self, check: Guard = guard.still_served) -> ServiceInfo:
        """Write this node's row: its release and versions, and a heartbeat,
        unless ``check`` (the schema guard) says the schema does not serve
        this release: then SchemaRefused, and the row is left as it was."""
        assert self.registry is not None
        release = self.history.current
        node = f"{self.binary}@{self.host} ({release.name})"
        return self.registry.report(
            check=lambda session: check(session, self.history, node),
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
            except SchemaRefused as refused:
                self._stop_counting(refused)
                return
            except Exception:
                LOG.exception("heartbeat of %s@%s failed", self.binary, self.host)

    def _stop_counting(self, refused: SchemaRefused) -> None:
        """A contract removed what this release needs: leave the pins as a
        graceful stop does, so no client is held back for a node whose calls
        fail; the operator stops and upgrades it."""
        LOG.error("%s", refused)
        self._mark_stopped()
        self._announce("stop")
        self.stopped_counting = str(refused)

    def stop(self, timeout: float | None = None) -> bool:
        """Graceful stop: drain, stop counting, tell everyone, let go.

        With a ``timeout``, a stop still running after that many seconds (a
        method that never returns holds the drain) is abandoned and logged
        with the step it was at; False then, and the row stops counting when
        its heartbeat ages past ``service_down_time``.
        """
        if timeout is None:
            self._stop_steps()
            return True
        stopper = threading.Thread(
            target=self._stop_steps, name=f"rpccompat-stop-{self.binary}", daemon=True
        )
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            LOG.error(
                "%s@%s did not stop within %ss; abandoned it while %s",
                self.binary,
                self.host,
                timeout,
                self._stop_step,
            )
            return False
        return True

    def _stop_steps(self) -> None:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("stopping the heartbeat", self._stopping.set),
            ("draining the RPC server", self._drain),
            ("joining the heartbeat", self._join_heartbeat),
            ("marking the row stopped", self._mark_stopped),
            ("announcing the stop", lambda: self._announce("stop")),
            ("stopping the pins", self._stop_pins),
            ("closing the transport", self._close_transport),
            ("closing the database", self._close_database),
        ]
        for self._stop_step, step in steps:
            step()
        LOG.info("%s@%s stopped", self.binary, self.host)

    def _drain(self) -> None:
        if self._server is not None:
            rpc.stop_server(self._server)
            self._server = None

    def _join_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None

    def _mark_stopped(self) -> None:
        if self.registry is not None:
            self.registry.mark_stopped(self.binary, self.host)

    def _announce(self, event: str) -> None:
        if self.transport is not None:
            pins.announce(self.transport, self.history, event, self.binary, self.host)

    def _stop_pins(self) -> None:
        if self.pins is not None:
            self.pins.stop()

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.cleanup()

    def _close_database(self) -> None:
        if self.registry is not None:
            self.registry.engine.dispose()

    def run(self, stop_timeout: float = 60.0) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully.

        A stop that misses ``stop_timeout`` ends the process at once (exit
        1): a thread stuck in a method would otherwise keep it alive.
        """
        with StopSignal() as stop:
            self.start()
            try:
                stop.wait()
            finally:
                if not self.stop(stop_timeout):
                    exit_abandoned()


def exit_abandoned() -> None:
    """End the process now, past threads that would keep it alive."""
    logging.shutdown()
    os._exit(1)


class StopSignal:
    """Set by SIGTERM or SIGINT: the cue for a graceful stop.

    The handler runs in the main thread between two bytecodes, possibly in
    the middle of a lock operation of the very thing that waits for it (a
    ``threading.Event`` hung a node forever that way), so it takes no lock:
    it sets a flag and writes a byte to a pipe that ``wait`` selects on.
    Install it in the main thread; ``close`` (or leaving the ``with``)
    restores the previous handlers.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        with contextlib.suppress(BlockingIOError):  # full: wait() wakes anyway
            os.write(self._write, b"\0")

    def is_set(self) -> bool:
        return self.signum is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Whether a stop was requested, waiting up to ``timeout`` seconds."""
        if not self.is_set():
            # A signal arriving after the check writes to the pipe, so
            # select returns at once; PEP 475 resumes it after the handler.
            select.select([self._read], [], [], timeout)
        return self.is_set()

    def close(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        os.close(self._read)
        os.close(self._write)

    def __enter__(self) -> StopSignal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
