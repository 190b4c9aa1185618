"""The sample service's database: its migration tree, syncs and backfills.

From alpha to beta the ``volumes`` table renames ``display_name`` to
``name`` (kept in sync by triggers while both releases write, backfilled by a
data migration, the old column dropped at contract) and gains
``description`` and ``attach_mode``; from beta to gamma it widens ``size``
to ``size_gib`` the same way and gains ``bootable`` and
``attach_device_type``.  Each change is declared once (``beta.NAME_SYNC``,
``gamma.SIZE_SYNC``) and the revision scripts in ``migrations/`` import it.

One package ships all three releases, so the tree comes in two cuts:
``GAMMA_TREE``, every revision, and ``TREE``, the tree as beta ships it
(``as_of``), which the default upgrade (alpha to beta) runs.  An upgrade to
gamma names ``rpccompat_demo.schema:GAMMA_TREE`` in ``[database]
migration_trees``; from alpha it is a skip-level upgrade: both releases'
expands, both backfills, and a contract that waits for every node to run
gamma.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat.db import (
    FRAMEWORK,
    Backfill,
    Database,
    DataMigrations,
    MigrationTree,
)
from rpccompat_demo import beta, gamma
from rpccompat_demo.node import load_conf, require_database

DATA_MIGRATIONS = DataMigrations()
DATA_MIGRATIONS.add("beta", Backfill(beta.NAME_SYNC))
DATA_MIGRATIONS.add("gamma", Backfill(gamma.SIZE_SYNC))

GAMMA_TREE = MigrationTree(
    "volumes",
    Path(__file__).parent / "migrations",
    history=gamma.HISTORY,
    data_migrations=DATA_MIGRATIONS,
    version_table="volumes_alembic_version",
)
TREE = GAMMA_TREE.as_of("beta")
TREES = {"beta": TREE, "gamma": GAMMA_TREE}  # by the release an upgrade ends at
ALPHA_SCHEMA = "alpha_contract"  # the whole of alpha's schema


def install_alpha(
    engine: sa.Engine, service_down_time: float = 60.0, tree: MigrationTree = TREE
) -> Database:
    """A database as alpha left it: where the demo's upgrade starts; the
    database steps of an upgrade to ``tree``'s release."""
    database = Database(engine, [tree], service_down_time=service_down_time)
    with engine.connect() as conn:
        FRAMEWORK.upgrade(conn, "heads")
        TREE.upgrade(conn, ALPHA_SCHEMA)
    return database


def install_mixed_period(
    engine: sa.Engine, service_down_time: float = 60.0, tree: MigrationTree = TREE
) -> Database:
    """A database at alpha, expanded for ``tree``'s release (beta): an
    upgrade under way."""
    database = install_alpha(engine, service_down_time, tree)
    database.expand()
    return database


def main(argv: list[str] | None = None) -> int:
    """``python -m rpccompat_demo.schema --config-file F``: alpha's ``db sync``.

    Both releases of the sample ship in one package, so the newest tree holds
    beta's revisions too; an upgrade job's base install at alpha uses this, as
    a real alpha package's ``<service>-manage db sync`` would stop there.
    """
    parser = argparse.ArgumentParser(description=(main.__doc__ or "").split("\n")[0])
    parser.add_argument("--config-file", action="append", default=[])
    conf = load_conf(parser.parse_args(argv).config_file)
    engine = dbengine.create_engine(require_database(parser, conf))
    try:
        install_alpha(engine, conf.service_down_time)
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
