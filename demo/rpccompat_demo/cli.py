"""``rpccompat-demo``: a whole rolling upgrade of the sample service, under load.

Exit codes: 0 the upgrade lost no call and no row, every row was right and
the pins ended at the last release; 1 it did not; 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from rpccompat.scrub import one_line_usage_errors, scrub
from rpccompat_demo.cluster import RollingUpgrade
from rpccompat_demo.node import Settings, upgrade_path

MEMORY_TRANSPORT = "kombu+memory:////"
MAX_FAILURES_SHOWN = 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rpccompat-demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON report last"
    )
    parser.add_argument("--db-url", help="SQLAlchemy URL (default: a temporary SQLite)")
    parser.add_argument("--transport-url", default=MEMORY_TRANSPORT)
    parser.add_argument(
        "--processes", action="store_true", help="run one OS process per node"
    )
    parser.add_argument(
        "--releases",
        default="alpha,beta",
        help="alpha,beta (default), alpha,beta,gamma (one release at a time) "
        "or alpha,gamma (skip-level)",
    )
    parser.add_argument("--volume-nodes", type=int, default=3)
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds of load after each step"
    )
    args = parser.parse_args(argv)
    if args.processes and args.transport_url.startswith("kombu+memory"):
        parser.error(
            "--processes needs a broker all processes reach: the in-memory "
            "transport lives in one process; pass --transport-url rabbit://..."
        )
    if args.volume_nodes < 1:
        parser.error("--volume-nodes must be at least 1")
    try:
        args.releases = upgrade_path(args.releases)
    except ValueError as e:
        parser.error(f"--releases {e}")
    return args


def print_step(step: dict[str, Any]) -> None:
    print(f"== {step['step']}")
    for binary, pin in step["pins"].items():
        held = ", ".join(pin["holders"]) or "nobody"
        print(
            f"   pin {binary}: rpc {pin['rpc_version']} objects "
            f"{pin['objects_version']} ({pin['release']}, {pin['source']}), "
            f"held by {held}"
        )
    print(f"   calls {step['calls']}, failed {step['failed_calls']}")


def main(argv: list[str] | None = None) -> int:
    with one_line_usage_errors():
        args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kombu").setLevel(logging.ERROR)
    warnings.simplefilter("ignore", DeprecationWarning)
    with tempfile.TemporaryDirectory(prefix="rpccompat-demo-") as tmp:
        db_url = args.db_url or f"sqlite:///{Path(tmp) / 'demo.sqlite'}"
        if not args.json:
            print(f"database {scrub(db_url)}, transport {scrub(args.transport_url)}")
        upgrade = RollingUpgrade(
            Settings(db_url=db_url, transport_url=args.transport_url),
            releases=args.releases,
            volume_nodes=args.volume_nodes,
            processes=args.processes,
            settle=args.settle,
            report=(lambda step: None) if args.json else print_step,
        )
        result = upgrade.run()
    final = result["pins"][-1]["pins"]["volume"]["release"]
    ok = (
        result["failed_calls"] == 0
        and result["lost_rows"] == 0
        and result["wrong_rows"] == 0
        and final == args.releases[-1]
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"done in {result['elapsed_seconds']}s: {result['calls']} calls, "
            f"{result['failed_calls']} failed; {result['rows_checked']} rows "
            f"checked, {result['lost_rows']} lost, {result['wrong_rows']} wrong; "
            f"pins lifted {result['pin_lift_seconds']}s after the last older "
            "volume node stopped"
        )
        for failure in result["failures"][:MAX_FAILURES_SHOWN]:
            print(f"   failure: {failure['cause']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
