"""The rolling upgrade of a small cluster, under continuous load.

Nodes run in this process (threads; each knows only its own release) or, with
``processes=True``, one OS process per node.  The steps are an operator's:
start the cluster at alpha, expand the database, replace the first volume
node (graceful stop, start beta on the same host), run the data migrations
while both releases serve, replace the other volume nodes and the API nodes,
and contract once no alpha node is left (contract is tried once before, to
show the gate refusing it).  ``releases`` goes on to gamma the same way, one
release at a time (``alpha, beta, gamma``) or skipping beta (``alpha,
gamma``).  After each step it records the pins a client of the last release
sees and who holds them, and the calls made and failed so far; at the end
every row the clients wrote is checked against what they recorded.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat.db import Throttle
from rpccompat.exceptions import ContractRefused
from rpccompat.pins import Pins
from rpccompat.registry import ServiceRegistry
from rpccompat.rpc import make_transport
from rpccompat_demo import schema
from rpccompat_demo.node import API, RELEASES, VOLUME, Node, Settings, make_conf

PIN_LIFT_TIMEOUT = 10.0
# A node's own stop deadline (rpccompat-demo-node --stop-timeout) plus room.
STOP_TIMEOUT = 90.0


class ProcessNode:
    """A node as its own OS process, stopped with SIGTERM like a real one.

    ``options`` say where the node finds its database and broker (a config
    file, or ``settings_options``); ``python`` may be another virtualenv's,
    so old nodes can run old libraries.  The node's log and, for an api node,
    its record of calls go to ``workdir``.
    """

    def __init__(
        self,
        options: list[str],
        release: str,
        binary: str,
        host: str,
        *,
        workdir: Path,
        seed: int = 0,
        python: str = sys.executable,
    ) -> None:
        self.release, self.binary, self.host = release, binary, host
        stem = workdir / f"{binary}-{host}-{release}-{seed}"
        self.record, self.log = stem.with_suffix(".json"), stem.with_suffix(".log")
        self._argv = [
            python, "-m", "rpccompat_demo.node", *options,
            "--release", release, "--binary", binary, "--host", host,
            "--seed", str(seed), "--record", str(self.record),
        ]  # fmt: skip
        self._proc: subprocess.Popen[str] | None = None

    @property
    def name(self) -> str:
        return f"{self.binary}@{self.host} ({self.release})"

    def start(self) -> None:
        with self.log.open("a") as log:
            self._proc = subprocess.Popen(
                self._argv, stdout=subprocess.PIPE, stderr=log, text=True
            )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if line != "READY":
            self._proc.kill()
            raise RuntimeError(
                f"{self.name} did not start (exit {self._proc.wait()}); see {self.log}"
            )

    def stop(self, timeout: float = STOP_TIMEOUT) -> dict[str, Any]:
        """Graceful stop; an api node's record of its calls.

        A node still running ``timeout`` seconds after SIGTERM is killed, as
        systemd would, and its record says so (``killed_at_stop``).
        """
        assert self._proc is not None
        self._proc.terminate()
        try:
            self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            killed_at = time.time()
            self.kill()
            return {"killed_at_stop": killed_at}
        return json.loads(self.record.read_text()) if self.record.exists() else {}

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is drained, the row stays up."""
        assert self._proc is not None
        self._proc.kill()
        self._proc.communicate(timeout=60)


def settings_options(settings: Settings) -> list[str]:
    """A node's command-line options for ``settings``."""
    return [
        f"--{field.name.replace('_', '-')}={getattr(settings, field.name)}"
        for field in dataclasses.fields(Settings)
    ]


def check_rows(
    engine: sa.Engine,
    ledgers: Sequence[Mapping[str, dict[str, Any] | None]],
    release: str = "beta",
) -> dict[str, int]:
    """Every row the clients are sure of, as ``release`` reads it after
    contract.

    A row that must exist but does not is lost; one that differs, or that
    was deleted but is still there, is wrong.
    """
    expected = {k: v for ledger in ledgers for k, v in ledger.items()}
    code = RELEASES[release]
    table = code.volumes
    found: dict[str, Any] = {}
    with engine.connect() as conn:
        ids = list(expected)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for row in conn.execute(sa.select(table).where(table.c.id.in_(chunk))):
                volume = code.Volume.from_row(row)
                found[volume.id] = {"name": volume.name, "size": volume.size}
    lost = sum(1 for k, v in expected.items() if v is not None and k not in found)
    wrong = sum(1 for k, v in expected.items() if k in found and found[k] != v)
    return {"rows_checked": len(expected), "lost_rows": lost, "wrong_rows": wrong}


class RollingUpgrade:
    """Runs the upgrade; ``report(step)`` is called after every step."""

    def __init__(
        self,
        settings: Settings,
        *,
        releases: tuple[str, ...] = ("alpha", "beta"),
        volume_nodes: int = 3,
        processes: bool = False,
        settle: float = 1.0,
        report: Callable[[dict[str, Any]], None] = lambda step: None,
    ) -> None:
        self.settings = settings
        self.releases = releases
        self.volume_nodes = volume_nodes
        self.processes = processes
        self.settle = settle
        self.report = report
        self.steps: list[dict[str, Any]] = []
        self.stats: list[dict[str, Any]] = []
        self._api_nodes: list[Any] = []

    def run(self) -> dict[str, Any]:
        engine = dbengine.create_engine(self.settings.db_url)
        self.database = schema.install_alpha(
            engine,
            self.settings.service_down_time,
            schema.TREES[self.releases[-1]],
        )
        self.registry = ServiceRegistry(engine)
        conf = make_conf(self.settings, "demo-observer")
        transport = make_transport(conf)
        # What a client of the last release sees: the pins that must lift
        # by themselves.
        self.observer = Pins(
            RELEASES[self.releases[-1]].HISTORY,
            self.registry,
            service_down_time=self.settings.service_down_time,
            refresh_interval=self.settings.pin_refresh_interval,
        )
        self.observer.start(transport)
        started = time.monotonic()
        workdir = tempfile.TemporaryDirectory(prefix="rpccompat-demo-nodes-")
        self._workdir = Path(workdir.name)
        try:
            result = self._upgrade(engine)
        finally:
            workdir.cleanup()
            self.observer.stop()
            transport.cleanup()
            engine.dispose()
        result["elapsed_seconds"] = round(time.monotonic() - started, 2)
        return result

    def _upgrade(self, engine: Any) -> dict[str, Any]:
        volumes = {
            f"node-{i}": self._start("alpha", VOLUME, f"node-{i}")
            for i in range(1, self.volume_nodes + 1)
        }
        self._start_api("alpha", "api-1")
        self._step("cluster at alpha, an alpha client calling")
        self.database.expand()
        newer = self.releases[1:]
        for number, release in enumerate(newer, start=2):  # their code needs it
            self._start_api(release, f"api-{number}")
        self._step(
            f"db expand for {', '.join(newer)}: new columns and sync triggers; "
            f"a client of each release calling"
        )
        pin_lift_seconds = None
        for step, release in enumerate(newer):
            for number, host in enumerate(list(volumes)):
                volumes[host].stop()
                stopped_at = time.monotonic()
                volumes[host] = self._start(release, VOLUME, host)
                if host == list(volumes)[-1]:
                    pin_lift_seconds = self._wait_for_release(release, stopped_at)
                self._step(f"{VOLUME}@{host} upgraded to {release}")
                if step == number == 0:
                    self._migrate_and_try_contract()
            self._upgrade_api_nodes(release)
        self.database.contract()
        self._step("db contract: the old columns and their triggers dropped")
        for node in self._api_nodes:
            self.stats.append(node.stop())
        for node in volumes.values():
            node.stop()
        rows = [s.get("rows", {}) for s in self.stats]
        return {
            "calls": sum(s.get("calls", 0) for s in self.stats),
            "failed_calls": sum(s.get("failed_calls", 0) for s in self.stats),
            "failures": [f for s in self.stats for f in s.get("failures", [])],
            **check_rows(engine, rows, self.releases[-1]),
            "pin_lift_seconds": pin_lift_seconds,
            "pins": self.steps,
        }

    def _upgrade_api_nodes(self, release: str) -> None:
        """Every API node older than ``release`` replaced by one of it."""
        history = RELEASES[self.releases[-1]].HISTORY
        for node in list(self._api_nodes):
            if history.index(node.release) < history.index(release):
                self.stats.append(node.stop())
                self._api_nodes.remove(node)
                self._start_api(release, node.host)
                self._step(f"{API}@{node.host} upgraded to {release}")

    def _migrate_and_try_contract(self) -> None:
        """Backfill while both releases serve; contract must still be refused."""
        totals = self.database.migrate(throttle=Throttle(batch_size=500))
        found, done = sum(t.found for t in totals), sum(t.done for t in totals)
        self._step(
            f"db migrate while old and new releases serve: the backfills looked "
            f"at {found} rows and converted {done}; triggers and reads converted "
            "the others"
        )
        try:
            self.database.contract()
        except ContractRefused as refused:
            blockers = len(refused.blockers)
            self._step(
                f"db contract refused, {blockers} blocker(s): {refused.blockers[0]}"
            )
        else:
            raise AssertionError("contract was allowed while alpha nodes still run")

    def _start(self, release: str, binary: str, host: str) -> Any:
        seed = len(self.steps)
        node: Node | ProcessNode
        if self.processes:
            options = settings_options(self.settings)
            node = ProcessNode(
                options, release, binary, host, workdir=self._workdir, seed=seed
            )
        else:
            node = Node(self.settings, release, binary, host, seed=seed)
        node.start()
        return node

    def _start_api(self, release: str, host: str) -> Any:
        node = self._start(release, API, host)
        self._api_nodes.append(node)
        return node

    def _wait_for_release(self, release: str, since: float) -> float | None:
        """Seconds until the observer's pin reached ``release`` (None: never)."""
        while time.monotonic() - since < PIN_LIFT_TIMEOUT:
            if self.observer.get(VOLUME).release == release:
                return round(time.monotonic() - since, 3)
            time.sleep(0.01)
        return None

    def _step(self, what: str) -> None:
        time.sleep(self.settle)
        stats = [
            n.load.client.stats() for n in self._api_nodes if getattr(n, "load", None)
        ]
        step = {
            "step": what,
            "pins": {b: p.as_dict() for b, p in self.observer.current().items()},
            "services": [
                f"{s.name} {s.release} {s.state(self.settings.service_down_time)}"
                for s in self.registry.services()
            ],
            "calls": sum(s["calls"] for s in self.stats + stats),
            "failed_calls": sum(s["failed_calls"] for s in self.stats + stats),
        }
        self.steps.append(step)
        self.report(step)
