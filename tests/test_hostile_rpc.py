"""Hostile RPC input: a node refuses it before any work and keeps serving.

Each case sends raw messages (oslo.messaging's own client, with a context and
arguments of the test's choosing) to a real node, over the in-memory transport
and RabbitMQ, and shows that the method did not run (no row written), that a
call gets :class:`InvalidRPCInput` and a cast is dropped with a log line, and
that the node keeps its heartbeat and answers the next call.  Valid input in
hostile amounts (a new caller version per message, thousands of unknown
``future_args`` keys) is served, with bounded memory and logs.  The module
prints how many cases it tried and how many held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from rpccompat import objects
from rpccompat.exceptions import InvalidRPCInput
from rpccompat.objects import CALLER_MANIFESTS, CONTEXT_KEY
from tests.test_rpc import CTXT, _raw_client

HANG = 30  # seconds: only to detect a hang, never a measure of speed

# Versions a caller may put where a server reads one.
HOSTILE_VERSIONS = {
    "long digit run": "1." + "1" * 30000,  # froze a node for 13.5 s
    "5 MB": "1." + "1" * 5 * 2**20,  # froze a node for minutes
    "list": ["1", "0"],  # unhashable
    "dict": {"1": "0"},
    "int": 1,
    "NUL": "1.0\x00",
    "Unicode digits": "\u0661.\u0660",  # int() reads them
}


@pytest.fixture(scope="module")
def _cases(request: pytest.FixtureRequest):
    """Print the cases tried and how each ended, after the module."""
    cases: dict[str, str] = {}
    yield cases
    if not cases:
        return
    held = sum(result == "held" for result in cases.values())
    lines = [
        f"hostile RPC input: {len(cases)} cases tried, {held} held",
        *(f"  {result:6} {name}" for name, result in cases.items()),
    ]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown even without -s
        print("\n" + "\n".join(lines))


@pytest.fixture(autouse=True)
def _case(request: pytest.FixtureRequest, _cases: dict[str, str]):
    failed = request.session.testsfailed
    yield
    held = request.session.testsfailed == failed  # the call phase is reported
    _cases[request.node.name] = "held" if held else "FAILED"


def _wait_for(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, f"hung: {what}"
        time.sleep(0.1)


def _assert_keeps_serving(cluster) -> list[str]:
    """Its heartbeat goes on and it answers a good call; the volumes' names, sorted."""
    beats = cluster.registry.get("volume", "node-1").report_count
    _wait_for(
        "heartbeat",
        lambda: cluster.registry.get("volume", "node-1").report_count >= beats + 2,
    )
    client = cluster.client("beta")
    assert client.call(CTXT, "create_volume", name="next", size=1).name == "next"
    return sorted(v.name for v in client.call(CTXT, "list_volumes"))


def _refused(record: logging.LogRecord) -> bool:
    return record.exc_info is not None and isinstance(
        record.exc_info[1], InvalidRPCInput
    )


@pytest.mark.parametrize("hostile", HOSTILE_VERSIONS.values(), ids=HOSTILE_VERSIONS)
def test_a_hostile_objects_version_in_the_context_is_refused_before_the_method(
    cluster, caplog, hostile
):
    cluster.node("beta")
    raw = _raw_client(cluster)
    context = {**CTXT, CONTEXT_KEY: hostile}
    with pytest.raises(InvalidRPCInput, match=f"{CONTEXT_KEY} .* is not a version"):
        raw.prepare(timeout=HANG).call(context, "create_volume", name="hostile", size=1)
    caplog.clear()  # the call's log line
    raw.cast(context, "create_volume", name="hostile", size=1)
    _wait_for("the cast's log line", lambda: any(map(_refused, caplog.records)))
    assert _assert_keeps_serving(cluster) == ["next"]


@pytest.mark.parametrize("hostile", HOSTILE_VERSIONS.values(), ids=HOSTILE_VERSIONS)
def test_a_hostile_object_version_in_an_argument_is_refused_before_the_method(
    cluster, hostile
):
    cluster.node("beta")
    volume = cluster.client("beta").call(CTXT, "create_volume", name="good", size=1)
    primitive = volume.obj_to_primitive()
    primitive["versioned_object.version"] = hostile
    primitive["versioned_object.data"]["size"] = 99
    primitive["versioned_object.changes"] = ["size"]
    with pytest.raises(InvalidRPCInput, match=r"bad versioned_object\.version"):
        _raw_client(cluster).prepare(timeout=HANG).call(
            CTXT, "update_volume", volume=primitive
        )
    assert _assert_keeps_serving(cluster) == ["good", "next"]
    got = cluster.client("beta").call(CTXT, "get_volume", volume_id=volume.id)
    assert got.size == 1


def test_many_distinct_caller_versions_keep_the_manifest_cache_bounded(cluster):
    cluster.node("beta")
    made = cluster.client("beta").call(CTXT, "create_volume", name="good", size=1)
    raw = _raw_client(cluster).prepare(timeout=HANG)
    for i in range(3 * CALLER_MANIFESTS):
        caller = f"{i % 2}.{i}"  # 0.x predates alpha's 1.0: read as alpha
        reply = raw.call({CONTEXT_KEY: caller}, "get_volume", volume_id=made.id)
        assert reply["versioned_object.version"] == ("1.1" if i % 2 else "1.0"), caller
    # The one place a server remembers callers' versions.
    assert objects._manifest_for_version.cache_info().currsize <= CALLER_MANIFESTS
    assert _assert_keeps_serving(cluster) == ["good", "next"]


def test_hostile_future_args_keys_are_ignored_in_one_short_log_line(cluster, caplog):
    cluster.node("beta")
    future_args = {f"unknown-{i}": i for i in range(10000)}
    future_args["x" * 5 * 2**20] = 1
    future_args["description"] = "kept"
    with caplog.at_level(logging.DEBUG, logger="rpccompat.rpc"):
        made = (
            _raw_client(cluster)
            .prepare(timeout=HANG)
            .call(CTXT, "create_volume", name="v", size=1, future_args=future_args)
        )
    assert made["versioned_object.data"]["description"] == "kept"
    ignored = [m for m in caplog.messages if "ignoring future_args" in m]
    assert len(ignored) == 1 and len(ignored[0]) < 300, ignored[:1]
    assert _assert_keeps_serving(cluster) == ["next", "v"]
