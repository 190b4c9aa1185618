"""rpccompat's oslo.config options, for services and oslo-config-generator."""

from __future__ import annotations

import socket

from oslo_config import cfg
from oslo_messaging import opts as messaging_opts

from rpccompat import compat
from rpccompat.exceptions import ConfigurationError
from rpccompat.history import History

service_opts = [
    cfg.StrOpt("host", default=socket.gethostname(), help="Name of this node."),
    cfg.FloatOpt(
        "report_interval",
        default=10.0,
        min=0.1,
        help="Seconds between heartbeats into the services table.",
    ),
    cfg.FloatOpt(
        "service_down_time",
        default=60.0,
        min=0.1,
        help="A service whose heartbeat is older than this many seconds is down "
        "and stops counting towards pins.",
    ),
    cfg.FloatOpt(
        "pin_refresh_interval",
        default=30.0,
        min=0.1,
        help="Seconds between pin refreshes from the services table; starts and "
        "stops announced on the control fanout refresh them at once.",
    ),
]

database_opts = [
    cfg.StrOpt(
        "connection",
        secret=True,
        help="SQLAlchemy URL of the database holding the services table. No "
        "default: a command or node must never use a database nobody named.",
    ),
    cfg.ListOpt(
        "migration_trees",
        default=[],
        help="The service's migration trees, each an entry point name of group "
        "rpccompat.migration_trees or module:attribute; expand, migrate and "
        "contract run rpccompat's own tree first, then these.",
    ),
]


def upgrade_level_opts(binaries: tuple[str, ...]) -> list[cfg.Opt]:
    return [
        cfg.StrOpt(
            binary,
            default="auto",
            help=f"Cap for RPC sent to {binary}: 'auto' (follow the services "
            "table), a release name, or an RPC version.",
        )
        for binary in binaries
    ]


def register_opts(conf: cfg.ConfigOpts, history: History) -> None:
    """Every option a node of ``history``'s project reads, on ``conf``, so a
    service can parse its configuration before it makes its Service (which
    registers them too: registering twice is harmless)."""
    register_messaging_opts(conf)
    conf.register_opts(service_opts)
    conf.register_opts(database_opts, group="database")
    conf.register_opts(upgrade_level_opts(history.binaries), group="upgrade_levels")


def register_messaging_opts(conf: cfg.ConfigOpts) -> None:
    """oslo.messaging's options, on a conf that need not be ``cfg.CONF``."""
    for group, group_opts in messaging_opts.list_opts():
        conf.register_opts(group_opts, group=group)
    for group, driver_opts in compat.driver_options():
        conf.register_opts(driver_opts, group=group)


def transport_configured(conf: cfg.ConfigOpts) -> bool:
    """Whether a transport URL was given, rather than oslo.messaging's default."""
    where = conf.get_location("transport_url")
    return where is not None and where.location is not cfg.Locations.opt_default


def database_connection(conf: cfg.ConfigOpts) -> str:
    """``[database] connection``, or a clear error when it is not set.

    There is no default: a local SQLite file would let ``db sync`` and
    ``db check`` report on a database that is not the operator's.
    """
    url = conf.database.connection
    if not url:
        raise ConfigurationError(
            "no database configured: [database] connection is not set and has "
            "no default; set it in the config file given with --config-file"
        )
    return url


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    return [(None, service_opts), ("database", database_opts)]
