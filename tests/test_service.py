from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat import guard, testing
from rpccompat.db import Database
from rpccompat.exceptions import SchemaRefused
from rpccompat.registry import ServiceRegistry
from rpccompat_demo import beta, schema
from rpccompat_demo.load import Load
from rpccompat_demo.node import REFUSED, Node, Settings, make_conf
from tests.conftest import Cluster, mixed_period_database, spawn_node

# A lost call fails by this timeout; an answered one, however slow, passes.
CALL_TIMEOUT = 20.0
# Longer than any stop takes on a loaded machine: past it, a process hangs.
HANG = 120.0


def test_row_is_written_before_clients_and_refreshed_by_heartbeats(cluster):
    node = cluster.node("beta", host="n1")
    first = cluster.registry.get("volume", "n1")
    assert (first.release, first.rpc_current_version, first.object_current_version) == (
        "beta",
        "1.1",
        "1.1",
    )
    time.sleep(node.service.conf.report_interval * 2.5)
    assert cluster.registry.get("volume", "n1").report_count > first.report_count


def test_graceful_stop_marks_the_row_stopped(cluster):
    node = Node(cluster.settings, "alpha", "volume", "n2")
    node.start()
    node.stop()
    row = cluster.registry.get("volume", "n2")
    assert row.stopped_at is not None and row.state(60) == "stopped"


def queues(rabbit_url: str) -> list[str]:
    """The queues on the test's vhost."""
    vhost = rabbit_url.rsplit("/", 1)[1]
    return sorted(testing.rabbitmqctl("list_queues", "-p", vhost, "name").split())


def test_restarting_a_node_leaves_no_queue_behind_on_the_broker(sqlite_url, rabbit_url):
    """Its control queue is named after its binary and host, not after each
    run: ten restarts, and the broker holds the same queues as after one."""
    cluster = Cluster(sqlite_url, rabbit_url)
    try:
        after_one = None
        for _ in range(10):
            node = Node(cluster.settings, "beta", "volume", "n1")
            node.start()
            node.stop()
            after_one = after_one or queues(rabbit_url)
            assert queues(rabbit_url) == after_one
        assert any("pins-volume-n1" in q for q in after_one), after_one
    finally:
        cluster.close()


def list_volumes(client: Any, context: dict, *_: Any) -> int:
    """A round of one call, the cheapest: the densest load on the stops."""
    client.call(context, "list_volumes")
    return 1


def started(cluster: Cluster, host: str) -> Node:
    """A beta volume node serving as ``host``."""
    node = Node(cluster.settings, "beta", "volume", host)
    node.start()
    return node


def test_graceful_replacements_under_load_lose_no_call(sqlite_url, rabbit_url):
    """Each volume node is stopped and started again while calls stream in.

    RabbitMQ pushes requests to a consumer ahead of its reads, so a stopping
    node always holds some it has not read; a graceful stop must serve them
    or leave them to another node, never drop them: their callers would wait
    for a reply until their timeout.
    """
    cluster = Cluster(sqlite_url, rabbit_url)
    nodes = {host: started(cluster, host) for host in ("n1", "n2", "n3")}
    load = Load(cluster.client("beta", timeout=CALL_TIMEOUT), list_volumes, threads=4)
    load.start()
    try:
        for host in nodes:
            time.sleep(0.5)
            nodes[host].stop()
            nodes[host] = started(cluster, host)
    finally:
        stats = load.stop()  # waits for the calls in flight, lost ones included
        for node in nodes.values():
            node.stop()
        cluster.close()
    assert stats["failed_calls"] == 0, stats["failures"]
    assert stats["calls"] > 100, stats["calls"]  # the stops happened under load


# Signals land between any two bytecodes of the waiting thread, so they are
# sent in bursts at random moments while the main thread waits in a tight
# loop, in a process of its own: a handler that takes a lock the waiter holds
# (threading.Event.set did) hangs it for good, and the test must not hang too.
STOP_ANYWHERE = """
import os, random, signal, sys, threading, time
from rpccompat.service import StopSignal

seed, rounds = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)

def burst(count):
    for _ in range(count):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0)  # let the main thread run on between two signals

for _ in range(rounds):
    with StopSignal() as stop:
        sender = threading.Thread(target=burst, args=(rng.randint(1, 20),))
        sender.start()
        while sender.is_alive() or not stop.wait(rng.choice((None, 0, 1e-5))):
            stop.wait(rng.choice((0, 1e-5)))
        sender.join()
        assert stop.signum == signal.SIGTERM
print(rounds)
"""


def test_a_stop_signal_wakes_the_waiter_whenever_it_lands():
    seed, rounds = random.randrange(2**31), 100
    done = subprocess.run(
        [sys.executable, "-c", STOP_ANYWHERE, str(seed), str(rounds)],
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert (done.returncode, done.stdout.strip()) == (0, str(rounds)), (
        f"seed {seed}: {done.stderr[-2000:]}"
    )


@pytest.mark.timeout(900)  # eight node processes on a busy machine
def test_nodes_exit_whenever_sigterm_lands(sqlite_url, rabbit_url):
    """Nodes as processes, each sent SIGTERM at a random moment of its life:
    while importing, starting, serving or calling.  Each exits by itself,
    cleanly (0) once its handler is in place, or by the default action
    (-SIGTERM) before."""
    mixed_period_database(sqlite_url).dispose()
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    plan = [
        (rng.choice(("alpha", "beta")), rng.choice(("volume", "api")), rng.random())
        for _ in range(8)
    ]
    for batch in range(0, len(plan), 4):
        nodes = []
        for i, (release, binary, moment) in enumerate(plan[batch : batch + 4]):
            host = f"n{batch + i}"
            proc = spawn_node(sqlite_url, rabbit_url, release, binary, host)
            nodes.append((proc, moment))
        try:
            for proc, moment in nodes:
                if moment > 0.5:  # serving: wait for READY, then a while longer
                    assert proc.stdout is not None
                    proc.stdout.readline()
                    time.sleep((moment - 0.5) * 2)
                else:  # somewhere in its start
                    time.sleep(moment * 4)
                proc.terminate()
            codes = [proc.wait(timeout=HANG) for proc, _ in nodes]
        finally:
            for proc, _ in nodes:
                proc.kill()
                proc.communicate()
        assert set(codes) <= {0, -signal.SIGTERM}, f"seed {seed}: exit codes {codes}"


def test_a_drain_that_misses_its_deadline_is_abandoned_and_logged(sqlite_url, caplog):
    from rpccompat import rpc
    from rpccompat.service import Service
    from rpccompat_demo import beta

    class StuckManager(rpc.Endpoint):
        BINARY, RPC_API_VERSION = "volume", beta.HISTORY.current.rpc["volume"]

        def __init__(self) -> None:
            self.entered, self.release = threading.Event(), threading.Event()

        @rpc.method("1.0")
        def hang(self, context: dict) -> None:
            self.entered.set()
            self.release.wait()

    mixed_period_database(sqlite_url).dispose()
    settings = Settings(db_url=sqlite_url, transport_url="kombu+memory:////")
    endpoint = StuckManager()
    service = Service(
        beta.HISTORY,
        beta.VolumesObject,
        "volume",
        conf=make_conf(settings, "stuck"),
        endpoints=[endpoint],
    )
    service.start()
    try:
        caller = service.client(StuckManager)
        caller.cast({}, "hang")
        assert endpoint.entered.wait(HANG)
        assert service.stop(timeout=0.5) is False
        assert "abandoned it while draining the RPC server" in caplog.text
    finally:
        endpoint.release.set()


# -- the schema guard ---------------------------------------------------------

MEMORY = "kombu+memory:////"


def contracted_database(db_url: str) -> sa.Engine:
    """The sample's database after a whole upgrade: alpha's column is gone."""
    engine = mixed_period_database(db_url)
    database = Database(engine, [schema.TREE])
    database.migrate()
    database.contract()
    return engine


def refused_start(db_url: str, release: str, host: str = "n1") -> str:
    """The one line a node of ``release`` refuses to start with, in-process."""
    node = Node(Settings(db_url=db_url, transport_url=MEMORY), release, "volume", host)
    with pytest.raises(SchemaRefused) as refused:
        node.start()
    return str(refused.value)


def test_an_alpha_node_refuses_to_start_after_contract_and_is_never_counted(db_url):
    engine = contracted_database(db_url)
    try:
        line = refused_start(db_url, "alpha")
        assert "volume@n1 (alpha) refused to start" in line, line
        assert "upgrade this node to beta" in line, line
        assert ServiceRegistry(engine).services() == []
    finally:
        engine.dispose()


def test_an_alpha_node_process_exits_non_zero_with_one_line(sqlite_url):
    contracted_database(sqlite_url).dispose()
    proc = spawn_node(
        sqlite_url, MEMORY, "alpha", "volume", "n1", stderr=subprocess.PIPE
    )
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == REFUSED != 0, (out, err)
    assert "READY" not in out
    ours = [line for line in err.splitlines() if "rpccompat-demo-node" in line]
    assert ours == [
        "rpccompat-demo-node: volume@n1 (alpha) refused to start: contract "
        "removed what alpha needs (the oldest release allowed is beta); upgrade "
        "this node to beta or newer"
    ], err


def test_a_beta_node_refuses_to_start_before_expand(db_url):
    engine = dbengine.create_engine(db_url)
    schema.install_alpha(engine)
    try:
        line = refused_start(db_url, "beta")
        assert "not expanded for beta yet (it serves up to alpha)" in line, line
        assert "rpccompat-manage db expand" in line, line
        assert ServiceRegistry(engine).services() == []
    finally:
        engine.dispose()


def test_a_node_below_a_running_contract_refuses_and_a_new_one_starts(db_url):
    engine = mixed_period_database(db_url)
    beta_floor = guard.Mark.of(beta.HISTORY.release("beta"))
    try:
        with guard.contracting(engine, {"volumes": beta_floor}):
            line = refused_start(db_url, "alpha")
            node = Node(Settings(db_url, MEMORY), "beta", "volume", "n2")
            node.start()
            node.stop()
        assert "a contract to beta has been running since" in line, line
        assert [s.host for s in ServiceRegistry(engine).services()] == ["n2"]
        with engine.connect() as conn:
            assert guard.read(conn, "volumes").contracting is None  # over
    finally:
        engine.dispose()


def test_a_running_alpha_node_left_behind_by_a_contract_stops_counting(db_url, caplog):
    """A contract that ran while the node was down (``db sync``, or an
    offline contract) and a node that comes back: it held every client's pin
    at alpha, for calls that fail."""
    engine = mixed_period_database(db_url)
    node = Node(Settings(db_url, MEMORY, report_interval=0.1), "alpha", "volume", "n1")
    node.start()
    try:
        with engine.connect() as conn:  # a contract that ran while it was down
            floor = guard.Mark.of(beta.HISTORY.release("beta"))
            guard.record_served(conn, "volumes", floor, floor)
        deadline = time.monotonic() + HANG  # only to detect a hang
        while node.service.stopped_counting is None:
            assert time.monotonic() < deadline, "the heartbeat never saw the floor"
            time.sleep(0.05)
        row = ServiceRegistry(engine).get("volume", "n1")
        assert row.state(60) == "stopped", row
        line = "volume@n1 (alpha) stops counting: contract removed what alpha needs"
        assert line in node.service.stopped_counting
        assert line in caplog.text
    finally:
        node.stop()
        engine.dispose()
