"""``rpccompat-demo-client``: one call to the sample service, for upgrade jobs.

Grenade's resource checks create a volume before the upgrade and verify it
after, with the API up (over RPC, pinned like any client) or down
(``--direct``: the release's own code reads the database).  A one-shot client
serves nothing, so it writes no services row and holds no pin.

Exit codes: 0 done, 1 the volume does not exist, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import oslo_messaging as messaging
import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat.pins import Pins
from rpccompat.registry import ServiceRegistry
from rpccompat.rpc import RPCClient, make_transport
from rpccompat_demo.node import RELEASES, load_conf, require_database

NOT_FOUND = 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rpccompat-demo-client", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config-file", action="append", default=[])
    parser.add_argument("--release", choices=sorted(RELEASES), default="beta")
    parser.add_argument("--timeout", type=float, default=30.0)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a volume, print its id")
    create.add_argument("name")
    create.add_argument("--size", type=int, default=1)
    for name in ("show", "delete"):
        command = commands.add_parser(name, help=f"{name} a volume")
        command.add_argument("volume_id")
        command.add_argument(
            "--direct",
            action="store_true",
            help="through the database, without RPC (the API may be down)",
        )
    args = parser.parse_args(argv)
    args.conf = load_conf(args.config_file)
    args.db_url = require_database(parser, args.conf)
    return args


def call(args: argparse.Namespace, method: str, **kwargs: Any) -> Any:
    conf = args.conf
    code = RELEASES[args.release]
    engine = dbengine.create_engine(args.db_url)
    try:
        if getattr(args, "direct", False):
            return getattr(code.VolumeManager(engine), method)({}, **kwargs)
        transport = make_transport(conf)
        pins = Pins(
            code.HISTORY,
            ServiceRegistry(engine),
            upgrade_levels=dict(conf.upgrade_levels.items()),
            service_down_time=conf.service_down_time,
        )
        client = RPCClient(
            transport,
            code.VolumeManager,
            pins,
            code.VolumesObject,
            timeout=args.timeout,
        )
        try:
            return client.call({}, method, **kwargs)
        finally:
            transport.cleanup()
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "create":
        print(call(args, "create_volume", name=args.name, size=args.size).id)
    elif args.command == "delete":
        call(args, "delete_volume", volume_id=args.volume_id)
    else:
        try:
            volume = call(args, "get_volume", volume_id=args.volume_id)
        except (ValueError, sa.exc.NoResultFound, messaging.RemoteError) as e:
            print(f"volume {args.volume_id}: not found ({e})", file=sys.stderr)
            return NOT_FOUND
        print(json.dumps({"id": volume.id, "name": volume.name, "size": volume.size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
