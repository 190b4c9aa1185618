from __future__ import annotations

import time

from rpccompat.demo.node import Node


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
