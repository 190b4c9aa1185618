"""What does it cost to serialize an object for a peer of an older release?

``object_backport``: beta's ``Volume`` 1.1 (with its ``Attachment`` 1.1)
through rpccompat's ``Serializer`` pinned to alpha's manifest, so both are
backported to 1.0, against plain ``obj_to_primitive()`` of the same object.
Alongside, the same ``Serializer`` pinned to beta's own manifest, where
nothing needs backporting: the cost every call pays once pins are lifted.
The variants run side by side in alternating rounds; times are CPU time
per object.

One JSON line and one human line on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import common  # first: it silences eventlet's import-time warning

from rpccompat.objects import Serializer
from rpccompat_demo import beta

CONTEXT = {"request_id": "req-bench"}


def variants(volume: beta.Volume) -> dict[str, Callable[[], Any]]:
    """Each way of turning ``volume`` into what goes on the wire."""
    alpha, current = beta.HISTORY.releases[0], beta.HISTORY.current
    to_alpha = Serializer(beta.VolumesObject, beta.HISTORY, alpha.objects)
    to_current = Serializer(beta.VolumesObject, beta.HISTORY, current.objects)
    return {
        "plain": volume.obj_to_primitive,
        "backport": functools.partial(to_alpha.serialize_entity, CONTEXT, volume),
        "current": functools.partial(to_current.serialize_entity, CONTEXT, volume),
    }


def check_backported(primitive: dict[str, Any]) -> None:
    """The timing means something only if the backport really happened."""
    data = primitive["versioned_object.data"]
    child = data["attachment"]
    if (
        primitive["versioned_object.version"] != "1.0"
        or "description" in data
        or child["versioned_object.version"] != "1.0"
        or "mode" in child["versioned_object.data"]
    ):
        raise common.BenchError(f"the Volume was not backported to 1.0: {primitive}")


def per_object(fn: Callable[[], Any], count: int) -> float:
    """CPU seconds per call of ``fn``: this thread's CPU time, not the wall
    clock, since other processes' load would stretch the latter and the work
    timed here never waits for anything."""
    started = time.thread_time()
    for _ in range(count):
        fn()
    return (time.thread_time() - started) / count


def report(results: dict[str, list[float]], objects: int) -> None:
    micros = {name: 1e6 * statistics.median(ts) for name, ts in results.items()}
    ratios = {
        name: common.quartiles(common.paired_ratios(results[name], results["plain"]))
        for name in ("backport", "current")
    }
    low, ratio, high = ratios["backport"]
    record = {
        "benchmark": "object_backport",
        "object": "Volume 1.1 + Attachment 1.1 -> 1.0",
        "rounds": len(results["plain"]),
        "objects_per_round": objects,
        **{f"{name}_us": round(us, 2) for name, us in micros.items()},
        "ratio": round(ratio, 3),
        "ratio_quartiles": [round(low, 3), round(high, 3)],
        "current_ratio": round(ratios["current"][1], 3),
    }
    common.emit(
        record,
        f"backport Volume 1.1 -> 1.0: {micros['backport']:.1f} us CPU per object = "
        f"{ratio:.2f} x plain obj_to_primitive() ({micros['plain']:.1f} us; "
        f"quartiles {low:.2f}-{high:.2f}); with no backport needed (pinned to "
        f"beta) {micros['current']:.1f} us = {ratios['current'][1]:.2f} x",
    )


def run(args: argparse.Namespace) -> None:
    ways = variants(common.sample_volume())
    check_backported(ways["backport"]())
    for fn in ways.values():
        per_object(fn, args.objects)  # warm-up
    common.log(f"{args.rounds} rounds of {args.objects:,} objects per variant")
    results = common.interleaved(
        args.rounds,
        {
            name: functools.partial(per_object, fn, args.objects)
            for name, fn in ways.items()
        },
    )
    report(results, args.objects)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--objects", type=int, default=1_000, help="per variant and round"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.objects < 1:
        parser.error("--rounds and --objects must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return common.run_main("object_backport", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
