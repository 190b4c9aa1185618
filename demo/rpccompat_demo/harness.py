"""``rpccompat-upgrade-test``: prove a rolling upgrade loses no call and no row.

The sample service goes from alpha to beta (``--releases``: on to gamma one
release at a time, ``alpha,beta,gamma``, or skipping beta, ``alpha,gamma``,
as a skip-level upgrade does) with one OS process per node on
RabbitMQ and MariaDB or PostgreSQL, in a scratch database made for the run
and dropped after it.  Several volume nodes serve, several api nodes of both
releases call every method continuously and record what they wrote.  An
operator's steps run through ``rpccompat-manage``: expand, replace the nodes
one by one in a seeded random order (the seed is printed; the same seed
gives the same order and the same faults), ``db migrate`` while both
releases serve, a ``db contract`` that must be refused then, and the
contract once the last alpha node is gone.  ``--faults`` injects, in the
mixed period, a broker restart, a node SIGKILLed while serving, the data
migration SIGKILLed mid-batch and resumed, and every database connection
dropped.  At the end every row the clients are sure of is checked.

The report (``--json``): calls and failed calls, each failure with its
cause and the fault that explains it, lost and wrong rows, latency p50/p99
per phase against the pre-upgrade baseline, how long the pins took to lift
after the last old node left, and the seed.

Exit codes: 0 no row lost or wrong and every failed call explained by an
injected fault; 1 otherwise; 2 bad arguments or a backend out of reach.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import itertools
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat import testing
from rpccompat.db import data
from rpccompat.exceptions import first_line
from rpccompat.scrub import (
    one_line_usage_errors,
    passwords,
    scrub,
    scrub_process_output,
)
from rpccompat_demo import alpha, faults, gamma
from rpccompat_demo.cluster import ProcessNode, check_rows
from rpccompat_demo.node import API, VOLUME, upgrade_path

BAD_INPUT = 2
SERVERS = {"mysql": "MariaDB/MySQL", "postgresql": "PostgreSQL"}
# The tree each target release's package ships (the sample ships all three).
TREES = {"beta": "volumes", "gamma": "rpccompat_demo.schema:GAMMA_TREE"}
MIGRATION_BATCH = 50  # small batches, so a kill lands mid-run
# ``db contract`` once migrated, while alpha nodes serve: refused with db
# check's code for "old services still counted".
CONTRACT_REFUSED_OLD_SERVICES = 6


@dataclasses.dataclass(frozen=True)
class Options:
    db_url: str
    transport_url: str
    seed: int
    releases: tuple[str, ...] = ("alpha", "beta")
    nodes: int = 2
    new_clients: int = 1
    load_threads: int = 2
    step_seconds: float = 2.0
    seed_rows: int = 2_000
    faults: tuple[str, ...] = ()
    alpha_python: str = sys.executable
    call_timeout: float = 10.0
    broker_outage: float = 3.0
    broker_grace: float = 10.0
    report_interval: float = 1.0
    service_down_time: float = 10.0
    pin_refresh_interval: float = 5.0
    log_dir: Path | None = None


class Operator:
    """``rpccompat-manage`` as an operator runs it, each run kept for the report."""

    def __init__(self, config: Path, log: Path) -> None:
        self._argv = [str(Path(sys.executable).with_name("rpccompat-manage"))]
        self._argv += ["--config-file", str(config)]
        self.log = log
        self.runs: list[dict[str, Any]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        with self.log.open("a") as log:
            log.write(f"$ rpccompat-manage {' '.join(args)}\n")
            log.flush()
            return subprocess.Popen(
                [*self._argv, *args], stdout=log, stderr=subprocess.PIPE, text=True
            )

    def run(self, *args: str) -> int:
        started = time.monotonic()
        proc = self.start(*args)
        _, err = proc.communicate(timeout=600)
        self._note(args, proc.returncode, started, err)
        return proc.returncode

    def _note(self, args: tuple[str, ...], code: int, started: float, err: str) -> None:
        with self.log.open("a") as log:
            log.write(err)
        self.runs.append(
            {
                "command": " ".join(args),
                "exit_code": code,
                "seconds": round(time.monotonic() - started, 2),
            }
        )

    def migrate_killed_mid_batch(self, engine: sa.Engine) -> faults.Fault:
        """``db migrate`` SIGKILLed right after its first batch committed."""
        started = time.monotonic()
        proc = self.start("db", "migrate", "--batch-size", str(MIGRATION_BATCH))
        assert proc.stderr is not None
        for line in proc.stderr:  # the first progress line follows batch one
            if " rows looked at" in line:
                break
        killed_at = time.time()
        proc.kill()
        _, err = proc.communicate(timeout=60)
        self._note(("db", "migrate", "(SIGKILLed)"), proc.returncode, started, err)
        return faults.migration_killed(migration_cursor(engine), killed_at)


def migration_cursor(engine: sa.Engine) -> Any:
    """Where the backfill's cursor stands (it moves with each batch)."""
    with engine.connect() as conn:
        stored = conn.execute(sa.select(data.progress_table.c.cursor)).scalar()
    return None if stored is None else json.loads(stored)


class UpgradeTest:
    """One run of the harness; :meth:`run` returns the report, and each step
    is printed on stderr as it happens."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.faults: list[faults.Fault] = []
        self.phases: list[tuple[str, float]] = []
        self.steps: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.nodes: dict[tuple[str, str], ProcessNode] = {}
        self._started = time.time()
        self._pin_lift_from: dict[str, float] = {}  # release: its last elder left

    def run(self) -> dict[str, Any]:
        with contextlib.ExitStack() as stack:
            db_url = scratch_database(stack, self.options.db_url)
            workdir = self.options.log_dir or Path(
                stack.enter_context(tempfile.TemporaryDirectory())
            )
            workdir.mkdir(parents=True, exist_ok=True)
            self.workdir = workdir
            self.config = write_config(workdir / "volumes.conf", self.options, db_url)
            self.operator = Operator(self.config, workdir / "operator.log")
            self.engine = dbengine.create_engine(db_url)
            stack.callback(self.engine.dispose)
            stack.callback(self._stop_all)
            seeded = self._install_alpha()
            self._upgrade()
            self._stop_all()
            ledgers = [seeded, *(r["rows"] for r in self.records)]
            rows = check_rows(self.engine, ledgers, self.options.releases[-1])
            return self._report(rows)

    # -- the operator's steps ----------------------------------------------

    def _install_alpha(self) -> dict[str, dict[str, Any]]:
        """Alpha's schema and rows written before the upgrade, to backfill."""
        self._step("install alpha: db sync, seed rows")
        schema = ["-m", "rpccompat_demo.schema", "--config-file", str(self.config)]
        subprocess.run(
            [self.options.alpha_python, *schema], check=True, capture_output=True
        )
        rows = {
            str(uuid.UUID(int=self.rng.getrandbits(128))): {
                "name": f"seeded-{i}",
                "size": i % 100 + 1,
            }
            for i in range(self.options.seed_rows)
        }
        values = [
            {"id": key, "display_name": row["name"], "size": row["size"]}
            for key, row in rows.items()
        ]
        if values:
            with self.engine.begin() as conn:
                conn.execute(alpha.volumes.insert().values(status="available"), values)
        return rows

    def _upgrade(self) -> None:
        o = self.options
        for i in range(1, o.nodes + 1):
            self._start("alpha", VOLUME, f"node-{i}")
        for i in range(1, o.nodes + 1):
            self._start("alpha", API, f"api-{i}")
        self._phase("baseline")
        self._settle()
        self._phase("expand")
        self._manage("db", "expand", expect=0)
        hosts = iter(range(o.nodes + 1, o.nodes + 1 + o.new_clients * len(o.releases)))
        for release in o.releases[1:]:
            for _ in range(o.new_clients):
                self._start(release, API, f"api-{next(hosts)}")
        self._settle()
        self._phase("mixed")
        self._replace_all()
        self._phase("contract")
        self._manage("db", "contract", expect=0)
        self._settle()
        self._phase("after")
        self._settle()

    def _replace_all(self) -> None:
        """The nodes of each release by ones of the next, in the seeded
        order; the data migrations after the first, the faults between the
        other replacements of the first release."""
        releases = self.options.releases
        for step, (old, new) in enumerate(itertools.pairwise(releases)):
            order = [key for key, node in self.nodes.items() if node.release == old]
            self.rng.shuffle(order)
            injected = [f for f in self.options.faults if f != faults.KILL_MIGRATION]
            if step > 0:
                injected = []
            slots = self.rng.sample(range(1, len(order)), k=len(injected))
            scheduled = dict(zip(slots, injected, strict=True))
            for number, (binary, host) in enumerate(order):
                if number in scheduled:
                    self._inject(scheduled[number])
                self._replace(binary, host, new)
                if step == number == 0:
                    self._migrate()
                    self._manage("db", "contract", expect=CONTRACT_REFUSED_OLD_SERVICES)

    def _last_of(self, release: str, binary: str, host: str) -> bool:
        """Whether ``binary@host`` is the last volume node of ``release``."""
        others = [
            key
            for key, node in self.nodes.items()
            if key[0] == VOLUME and node.release == release and key != (binary, host)
        ]
        return binary == VOLUME and not others

    def _replace(self, binary: str, host: str, release: str) -> None:
        node = self.nodes[(binary, host)]
        if self._last_of(node.release, binary, host):
            self._pin_lift_from[release] = time.time()
        self._stop(self.nodes.pop((binary, host)))
        self._start(release, binary, host)
        self._step(f"{binary}@{host} replaced by {release}")
        self._settle()

    def _migrate(self) -> None:
        if faults.KILL_MIGRATION in self.options.faults:
            self.faults.append(self.operator.migrate_killed_mid_batch(self.engine))
            self._step(f"fault: {self.faults[-1].detail}")
        self._manage("db", "migrate", "--batch-size", str(MIGRATION_BATCH), expect=0)

    def _inject(self, fault: str) -> None:
        if fault == faults.BROKER_RESTART:
            made = faults.restart_broker(
                self.options.broker_outage, self.options.broker_grace
            )
        elif fault == faults.DROP_DB_CONNECTIONS:
            made = faults.drop_db_connections(self.engine)
        else:
            made = self._kill_a_volume_node()
        self.faults.append(made)
        self._step(f"fault: {made.detail}")
        self._settle()

    def _kill_a_volume_node(self) -> faults.Fault:
        """SIGKILL a serving volume node; restart it, as its supervisor would."""
        key = self.rng.choice(sorted(k for k in self.nodes if k[0] == VOLUME))
        node = self.nodes.pop(key)
        sent = time.time()
        node.kill()
        fault = faults.node_killed(node.name, sent, time.time())
        self._start(node.release, *key)
        return fault

    def _manage(self, *args: str, expect: int) -> None:
        code = self.operator.run(*args)
        self._step(f"rpccompat-manage {' '.join(args)}: exit {code}")
        if code != expect:
            raise HarnessError(
                f"rpccompat-manage {' '.join(args)} exited {code}, not {expect}; "
                f"see {self.operator.log}"
            )

    # -- nodes ---------------------------------------------------------------

    def _start(self, release: str, binary: str, host: str) -> None:
        o = self.options
        options = ["--config-file", str(self.config)]
        if binary == API:
            options += ["--load-threads", str(o.load_threads)]
            options += ["--call-timeout", str(o.call_timeout)]
        node = ProcessNode(
            options,
            release,
            binary,
            host,
            workdir=self.workdir,
            seed=self.rng.randrange(2**31),
            python=o.alpha_python if release == "alpha" else sys.executable,
        )
        node.start()
        self.nodes[(binary, host)] = node
        self._step(f"{node.name} serving")

    def _stop(self, node: ProcessNode) -> None:
        """Stop ``node`` gracefully and keep an api node's record."""
        record = node.stop()
        if node.binary == API:
            self.records.append({**record, "node": node.name, "release": node.release})

    def _stop_all(self) -> None:
        """Clients first, so no call is left without a server."""
        for key in sorted(self.nodes, key=lambda key: key[0] != API):
            self._stop(self.nodes.pop(key))

    # -- bookkeeping -----------------------------------------------------------

    def _phase(self, name: str) -> None:
        self.phases.append((name, time.time()))
        self._step(f"phase {name}")

    def _settle(self) -> None:
        time.sleep(self.options.step_seconds)

    def _step(self, what: str) -> None:
        at = self._since(time.time())
        self.steps.append({"at": at, "step": what})
        print(f"[{at:7.2f}s] {what}", file=sys.stderr, flush=True)

    def _report(self, rows: dict[str, int]) -> dict[str, Any]:
        failures = [
            {
                "node": record["node"],
                "cause": failure["cause"],
                "in_flight": [self._since(failure[k]) for k in ("started", "ended")],
                "explained_by": faults.explain(failure, self.faults),
            }
            for record in self.records
            for failure in record["failures"]
        ]
        return {
            "seed": self.options.seed,
            "calls": sum(r["calls"] for r in self.records),
            "failed_calls": len(failures),
            "unexplained_failures": sum(1 for f in failures if not f["explained_by"]),
            "failures": failures,
            **rows,
            "latency": latency_by_phase(self.records, self.phases),
            "pin_lift_seconds": self._pin_lift(),
            "faults": [
                {"fault": f.name, "at": self._since(f.at), "detail": f.detail}
                for f in self.faults
            ],
            "operator": self.operator.runs,
            "steps": self.steps,
            "nodes_per_binary": self.options.nodes,
            "elapsed_seconds": self._since(time.time()),
        }

    def _since(self, wall_clock: float) -> float:
        """Seconds since the run started: the time line of ``steps``."""
        return round(wall_clock - self._started, 3)

    def _pin_lift(self) -> dict[str, Any]:
        """Seconds from the stop of the last volume node older than each
        release of the upgrade until each client of that release or newer
        then running spoke its version (None: one never did, or no release
        was reached)."""
        clients = {}
        for release in self.options.releases[1:]:
            since = self._pin_lift_from.get(release)
            pin = gamma.HISTORY.rpc_version(VOLUME, release)
            newest = gamma.HISTORY.index(release)
            for record in self.records:
                changes = record["pin_changes"]
                if since is None or changes[0]["at"] > since:
                    continue  # it started after: nothing to lift
                if gamma.HISTORY.index(record["release"]) < newest:
                    continue  # it never speaks this version
                lifted = [c["at"] for c in changes if c["rpc"][VOLUME] == pin]
                seconds = round(lifted[0] - since, 3) if lifted else None
                clients[f"{record['node']} to {release}"] = seconds
        seconds = [s for s in clients.values() if s is not None]
        every = max(seconds) if seconds and len(seconds) == len(clients) else None
        return {VOLUME: every, "clients": clients}


class HarnessError(Exception):
    """The upgrade could not be driven to its end; one line for the operator."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def latency_by_phase(
    records: list[dict[str, Any]], phases: list[tuple[str, float]]
) -> dict[str, Any]:
    """p50/p99 of successful calls by the phase they started in, and each
    phase's ratio to the baseline (the cluster at alpha, before expand)."""
    starts = [start for _, start in phases]
    by_phase: dict[str, list[float]] = {name: [] for name, _ in phases}
    for record in records:
        for started, seconds in record["timings"]:
            index = bisect.bisect_right(starts, started) - 1
            if index >= 0:  # before the baseline: the cluster was starting
                by_phase[phases[index][0]].append(seconds)
    figures = {name: percentiles(values) for name, values in by_phase.items()}
    base = figures.get("baseline", {})
    for figure in figures.values():
        for q in ("p50", "p99"):
            if base.get(f"{q}_ms") and figure.get(f"{q}_ms") is not None:
                figure[f"{q}_vs_baseline"] = round(
                    figure[f"{q}_ms"] / base[f"{q}_ms"], 2
                )
    return figures


def percentiles(seconds: list[float]) -> dict[str, Any]:
    if len(seconds) < 2:
        return {"calls": len(seconds), "p50_ms": None, "p99_ms": None}
    cuts = statistics.quantiles(seconds, n=100)
    return {
        "calls": len(seconds),
        "p50_ms": round(statistics.median(seconds) * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
    }


# -- set-up ---------------------------------------------------------------------


def scratch_database(stack: contextlib.ExitStack, url: str) -> str:
    """A database made for this run on the server of ``url``, dropped when
    ``stack`` closes; the database ``url`` names is only connected to."""
    try:
        made = stack.enter_context(
            testing.scratch_database(url, prefix="rpccompat_upgrade")
        )
    except sa.exc.DBAPIError as e:
        first = first_line(e.orig)
        raise HarnessError(
            f"cannot create a database at {scrub(str(url))}: {first}", BAD_INPUT
        ) from None
    return made.render_as_string(hide_password=False)


def write_config(path: Path, options: Options, db_url: str) -> Path:
    """The config file every node and ``rpccompat-manage`` read."""
    path.write_text(
        "[DEFAULT]\n"
        f"transport_url = {options.transport_url}\n"
        f"report_interval = {options.report_interval}\n"
        f"service_down_time = {options.service_down_time}\n"
        f"pin_refresh_interval = {options.pin_refresh_interval}\n"
        "[database]\n"
        f"connection = {db_url}\n"
        f"migration_trees = {TREES[options.releases[-1]]}\n"
    )
    return path


# -- command line -----------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(
        prog="rpccompat-upgrade-test",
        description=__doc__.splitlines()[0],
        epilog="Exit codes: 0 passed, 1 failed, 2 bad arguments or no backend.",
    )
    parser.add_argument(
        "--db-url",
        required=True,
        help="MariaDB/MySQL or PostgreSQL server; the run makes its own database",
    )
    parser.add_argument("--transport-url", required=True, help="rabbit://...")
    parser.add_argument("--seed", type=int, help="default: a random one, printed")
    parser.add_argument(
        "--releases",
        default="alpha,beta",
        help="the upgrade's path, from alpha, one node at a time to each release "
        "in turn: alpha,beta (default), alpha,beta,gamma or alpha,gamma (skip-level)",
    )
    parser.add_argument("--nodes", type=int, default=2, help="per binary, at alpha")
    parser.add_argument(
        "--new-clients",
        type=int,
        default=1,
        help="api nodes of each newer release added at expand",
    )
    parser.add_argument("--load-threads", type=int, default=2, help="per api node")
    parser.add_argument(
        "--step-seconds", type=float, default=2.0, help="load after each step"
    )
    parser.add_argument(
        "--seed-rows", type=int, default=2_000, help="alpha rows to backfill"
    )
    parser.add_argument(
        "--faults",
        default="",
        help=f"comma-separated, or 'all': {', '.join(faults.ALL)}",
    )
    parser.add_argument(
        "--alpha-python",
        default=sys.executable,
        help="python of the virtualenv the alpha nodes run from (older libraries)",
    )
    parser.add_argument("--call-timeout", type=float, default=10.0)
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="keep every node's log and the operator's here (default: dropped)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    chosen = (
        faults.ALL
        if args.faults == "all"
        else tuple(filter(None, args.faults.split(",")))
    )
    unknown = sorted(set(chosen) - set(faults.ALL))
    if unknown:
        parser.error(
            f"unknown fault(s) {', '.join(unknown)}; "
            f"choose from {', '.join(faults.ALL)}"
        )
    try:
        releases = upgrade_path(args.releases)
    except ValueError as e:
        parser.error(f"--releases {e}")
    if args.nodes < 1 or args.new_clients < 1:
        parser.error("--nodes and --new-clients must be at least 1")
    between = 2 * args.nodes - 1
    if len([f for f in chosen if f != faults.KILL_MIGRATION]) > between:
        parser.error(
            f"{args.nodes} node(s) per binary leave {between} gap(s) between "
            "replacements for the faults; raise --nodes"
        )
    if faults.BROKER_RESTART in chosen and (
        why := faults.check_broker_restart_possible()
    ):
        parser.error(f"cannot inject {faults.BROKER_RESTART}: {why}")
    if faults.KILL_MIGRATION in chosen and args.seed_rows < 10 * MIGRATION_BATCH:
        parser.error(
            f"{faults.KILL_MIGRATION} needs rows to migrate: --seed-rows at least "
            f"{10 * MIGRATION_BATCH}"
        )
    try:
        backend = dbengine.parse_url(args.db_url).get_backend_name()
    except sa.exc.ArgumentError as e:
        parser.error(f"--db-url: {e}")
    if backend not in SERVERS:
        parser.error(
            f"--db-url: the harness needs {' or '.join(SERVERS.values())}, "
            "one server that every node process shares"
        )
    if not Path(args.alpha_python).exists():
        parser.error(f"--alpha-python {args.alpha_python}: no such file")
    given = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Options)
        if getattr(args, field.name, None) is not None
    }
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    return args, Options(
        **{**given, "seed": seed, "faults": chosen, "releases": releases}
    )


def passed(report: dict[str, Any]) -> bool:
    return (
        report["lost_rows"] == 0
        and report["wrong_rows"] == 0
        and report["unexplained_failures"] == 0
        and report["pin_lift_seconds"][VOLUME] is not None
    )


def print_summary(report: dict[str, Any]) -> None:
    print(
        f"seed {report['seed']}: {report['calls']} calls, {report['failed_calls']} "
        f"failed ({report['unexplained_failures']} unexplained); "
        f"{report['rows_checked']} rows checked, {report['lost_rows']} lost, "
        f"{report['wrong_rows']} wrong; pins lifted "
        f"{report['pin_lift_seconds'][VOLUME]}s after the last older volume node "
        f"left; {report['elapsed_seconds']}s"
    )
    for phase, figure in report["latency"].items():
        print(
            f"  {phase:<9} {figure['calls']:>6} calls  p50 {figure['p50_ms']} ms "
            f"(x{figure.get('p50_vs_baseline')})  p99 {figure['p99_ms']} ms "
            f"(x{figure.get('p99_vs_baseline')})"
        )
    for fault in report["faults"]:
        print(f"  fault [{fault['at']}s]: {fault['detail']}")
    for failure in report["failures"]:
        why = failure["explained_by"] or "UNEXPLAINED"
        first, last = failure["in_flight"]
        cause = failure["cause"].splitlines()[0][:100]
        print(f"  failed [{first}s-{last}s] {failure['node']}: {cause} <- {why}")


def main(argv: list[str] | None = None) -> int:
    warnings.simplefilter("ignore", DeprecationWarning)
    with one_line_usage_errors():
        args, options = parse_args(argv)
    secrets = passwords(options.db_url, options.transport_url)
    scrub_process_output(secrets)
    print(
        f"rpccompat-upgrade-test: seed {options.seed}, database "
        f"{scrub(options.db_url)}, transport {scrub(options.transport_url)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        report = UpgradeTest(options).run()
    except HarnessError as e:
        print(scrub(f"rpccompat-upgrade-test: {e}", secrets), file=sys.stderr)
        return e.code
    if args.json:
        print(json.dumps(report))
    else:
        print_summary(report)
    return 0 if passed(report) else 1


if __name__ == "__main__":
    sys.exit(main())
