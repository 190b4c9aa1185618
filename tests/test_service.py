from __future__ import annotations

import time
from typing import Any

from rpccompat.demo.load import Load
from rpccompat.demo.node import Node
from tests.conftest import Cluster

# A lost call fails by this timeout; an answered one, however slow, passes.
CALL_TIMEOUT = 20.0


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
