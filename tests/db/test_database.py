"""Expand, migrate, contract and the gate, on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from rpccompat import engine as dbengine
from rpccompat import guard
from rpccompat.db import Check, Database, Throttle
from rpccompat.db import data as datamod
from rpccompat.db.backends import backend
from rpccompat.db.backends.mysql import trigger_refusal
from rpccompat.exceptions import ContractRefused, MigrationError
from rpccompat.registry import Base, ServiceRegistry
from rpccompat_demo import alpha, beta, gamma, schema
from tests.db import insert_alpha_volumes


def report(registry: ServiceRegistry, host: str, release: str) -> None:
    registry.report(
        host=host,
        binary="volume",
        release=release,
        rpc_version=gamma.HISTORY.rpc_version("volume", release),
        objects_version=gamma.HISTORY.release(release).objects_version,
    )


def add_alpha_rows(engine: sa.Engine, count: int) -> dict[str, str]:
    """``count`` rows as alpha writes them; their display names by id."""
    rows = {str(uuid.uuid4()): f"v{i}" for i in range(count)}
    insert_alpha_volumes(engine, rows)
    return rows


def refusal(database: Database) -> str:
    with pytest.raises(ContractRefused) as refused:
        database.contract()
    return str(refused.value)


def volume_columns(engine: sa.Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("volumes")}


def gamma_rows(engine: sa.Engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        query = sa.select(
            gamma.volumes.c.id, gamma.volumes.c.name, gamma.volumes.c.size_gib
        )
        return {row.id: (row.name, row.size_gib) for row in conn.execute(query)}


def test_the_sample_upgrades_one_release_at_a_time(engine):
    """Alpha to beta with beta's tree, then beta to gamma with gamma's."""
    database = schema.install_alpha(engine)
    names = add_alpha_rows(engine, 20)
    registry = ServiceRegistry(engine)
    report(registry, "node-1", "alpha")
    database.expand()
    database.migrate()
    assert "size_gib" not in volume_columns(engine)  # beta ships no gamma
    report(registry, "node-1", "beta")
    database.contract()

    to_gamma = Database(engine, [schema.GAMMA_TREE])
    to_gamma.expand()
    database.expand()  # beta's tree again: gamma's revisions are left alone
    with engine.connect() as conn:
        assert guard.read(conn, "volumes").ceiling.release == "gamma"
    to_gamma.migrate()
    assert "volume@node-1 runs beta" in refusal(to_gamma)
    report(registry, "node-1", "gamma")
    to_gamma.contract()
    assert [(v.expand, v.contract) for v in to_gamma.versions()][-1] == (
        "gamma_expand",
        "gamma_contract",
    )
    assert {"size", "display_name"} & volume_columns(engine) == set()
    assert gamma_rows(engine) == {key: (name, 1) for key, name in names.items()}


def test_expand_again_records_what_an_interrupted_run_applied_but_never_recorded(
    engine,
):
    """Killed after its last revision, before the guard's record: beta nodes
    were refused on a schema that serves them until another expand, which
    found nothing pending and recorded nothing (the soak of
    test_operator_mistakes found it, seed 1294247631)."""
    database = schema.install_alpha(engine)
    database.expand()
    with engine.begin() as conn:  # as the interrupted run left it
        guard.record_served(conn, "volumes", guard.Mark("alpha", "1.0"), None)
    database.expand()
    with engine.connect() as conn:
        assert guard.read(conn, "volumes").ceiling.release == "beta"


def test_a_skip_level_upgrade_expands_and_migrates_both_releases(engine):
    """Alpha straight to gamma (N-2 to N): no beta node ever runs."""
    schema.install_alpha(engine)
    names = add_alpha_rows(engine, 20)
    registry = ServiceRegistry(engine)
    report(registry, "node-1", "alpha")
    report(registry, "node-2", "alpha")
    database = Database(engine, [schema.GAMMA_TREE])
    database.expand()
    assert [v.expand for v in database.versions()][-1] == "gamma_expand"
    totals = {t.name: t.done for t in database.migrate()}
    assert totals == {
        "backfill_volumes_name_sync": 20,
        "backfill_volumes_size_gib_sync": 20,
    }
    # Contract waits for the oldest release still counted.
    report(registry, "node-1", "gamma")
    refused = refusal(database)
    assert "volume@node-2 runs alpha (up); contract beta_contract needs beta" in refused
    assert (
        "volume@node-2 runs alpha (up); contract gamma_contract needs gamma" in refused
    )
    assert "node-1" not in refused
    report(registry, "node-2", "gamma")
    database.contract()
    assert {"size", "display_name"} & volume_columns(engine) == set()
    assert gamma_rows(engine) == {key: (name, 1) for key, name in names.items()}


def test_contract_is_refused_in_each_unsafe_state_until_cleared(engine):
    database = schema.install_alpha(engine)
    registry = ServiceRegistry(engine)
    report(registry, "node-1", "alpha")
    report(registry, "node-2", "alpha")
    registry.mark_stopped("volume", "node-2")
    add_alpha_rows(engine, 20)
    assert database.status().code == Check.EXPAND_NEEDED == 3
    assert "expand head beta_expand is not applied" in refusal(database)
    assert "rpccompat-manage db expand" in refusal(database)

    database.expand()
    assert database.status().code == Check.MIGRATIONS_PENDING == 4
    message = refusal(database)
    assert "volumes/backfill_volumes_name_sync has rows left" in message
    assert "rpccompat-manage db migrate" in message

    database.migrate()
    status = database.status()
    assert status.code == Check.CONTRACT_BLOCKED == 6
    blocked = [b.reason for b in status.blockers]
    assert any(r.startswith("volume@node-1 runs alpha (up)") for r in blocked)
    assert any(r.startswith("volume@node-2 runs alpha (stopped)") for r in blocked)

    report(registry, "node-1", "beta")  # node-1 upgraded; node-2 never came back
    message = refusal(database)
    assert "node-1" not in message
    assert "rpccompat-manage service remove volume node-2" in message

    registry.remove("volume", "node-2")
    assert database.status().code == Check.CONTRACT_NEEDED == 5
    database.contract()
    status = database.status()
    assert status.code == Check.UP_TO_DATE == 0 and status.phase is None
    columns = {c["name"] for c in sa.inspect(engine).get_columns("volumes")}
    assert "display_name" not in columns and "name" in columns


def test_versions_are_composite_and_phases_follow_the_steps(engine):
    database = schema.install_alpha(engine)
    volumes = database.versions()[1]
    assert (volumes.tree, volumes.expand, volumes.contract) == (
        "volumes",
        "alpha_expand",
        "alpha_contract",
    )
    assert volumes.composite == "(alpha_expand, alpha_contract)"
    assert database.status().phase == "E"
    database.expand()
    assert database.versions()[1].expand == "beta_expand"
    assert database.status().phase == "M"
    database.migrate()
    assert database.status().phase == "C"


def test_revisions_of_a_tree_that_is_not_named_are_an_error_for_status_and_steps(
    engine,
):
    """A database half way through an upgrade of ``volumes``, seen without
    that tree: not "up to date", and contract does not say it contracted."""
    schema.install_alpha(engine).expand()
    with engine.begin() as conn:  # a tree nothing installed knows
        conn.exec_driver_sql("CREATE TABLE other_alembic_version (version_num TEXT)")
        conn.exec_driver_sql("INSERT INTO other_alembic_version VALUES ('x1')")
        conn.exec_driver_sql("CREATE TABLE empty_alembic_version (version_num TEXT)")
    framework_only = Database(engine)
    steps = {
        "status": framework_only.status,
        "expand": framework_only.expand,
        "migrate": framework_only.migrate,
        "contract": framework_only.contract,
        "sync": framework_only.sync,
    }
    for name, step in steps.items():
        with pytest.raises(MigrationError) as raised:
            step()
        message = str(raised.value)
        assert "\n" not in message, name
        assert "'volumes' (table volumes_alembic_version)" in message, name
        assert "'other_alembic_version' (table other_alembic_version)" in message
        assert "empty_alembic_version" not in message  # no revision in it
        assert "[database] migration_trees" in message, name
    with engine.connect() as conn:  # nothing contracted
        assert schema.TREE.current(conn) == {
            "expand": "beta_expand",
            "contract": "alpha_contract",
        }


def test_online_data_migrations_of_every_release_count(engine):
    """A migration of an older release left pending still blocks contract."""
    migrations = datamod.DataMigrations()
    migrations.add("beta", datamod.Backfill(beta.NAME_SYNC))
    migrations.add("alpha", lambda context, count: (0, 0), name="alpha_cleanup")
    schema.install_alpha(engine)
    add_alpha_rows(engine, 30)  # before expand: the triggers do not see them
    tree = dataclasses.replace(schema.TREE, data_migrations=migrations)
    database = Database(engine, [tree])
    database.expand()
    assert database.pending_migrations() == [
        "volumes/alpha_cleanup",
        "volumes/backfill_volumes_name_sync",
    ]
    totals = database.migrate(max_count=10)
    assert [(t.name, t.complete) for t in totals] == [
        ("alpha_cleanup", True),
        ("backfill_volumes_name_sync", False),
    ]
    assert totals[1].done == 10
    assert datamod.exit_code(totals, limited=True) == datamod.MORE_TO_DO
    assert database.status().code == Check.MIGRATIONS_PENDING
    totals = database.migrate()
    assert datamod.exit_code(totals) == datamod.DONE
    assert database.pending_migrations() == []


def test_offline_sync_installs_everything_without_triggers(engine):
    database = Database(engine, [schema.TREE])
    database.sync()
    assert database.status().code == Check.UP_TO_DATE
    # A write of the old shape is not possible any more, and none is copied.
    with engine.begin() as conn:
        conn.execute(beta.volumes.insert().values(id="x", name="n", size=1, status="s"))
        assert conn.execute(sa.select(beta.volumes.c.name)).scalar() == "n"
    assert trigger_names(engine) == set()


def test_offline_sync_is_refused_while_an_old_service_is_up(engine):
    database = schema.install_alpha(engine)
    report(ServiceRegistry(engine), "node-1", "alpha")
    with pytest.raises(ContractRefused, match="volume@node-1 runs alpha"):
        database.sync()


def trigger_names(engine: sa.Engine) -> set[str]:
    query = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
        "mysql": "SELECT trigger_name FROM information_schema.triggers "
        "WHERE trigger_schema = DATABASE()",
        "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal",
    }[engine.dialect.name]
    with engine.connect() as conn:
        return set(conn.exec_driver_sql(query).scalars())


def test_expand_installs_the_sync_triggers_and_contract_drops_them(engine):
    database = schema.install_alpha(engine)
    database.expand()
    assert trigger_names(engine)
    assert all(name.startswith("volumes_name_sync") for name in trigger_names(engine))
    database.migrate()
    database.contract()
    assert trigger_names(engine) == set()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_framework_schema_matches_the_models(request, backend):
    """(MySQL reflects a unique constraint as a unique index: Alembic then
    reports a difference that is none.)"""
    engine = dbengine.create_engine(request.getfixturevalue(f"{backend}_url"))
    Database(engine).expand()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        diff = compare_metadata(context, Base.metadata)
        diff += compare_metadata(context, datamod.metadata)
        diff += compare_metadata(context, guard.metadata)
    engine.dispose()
    assert [d for d in diff if d[0] != "remove_table"] == []


def test_trigger_refusal_names_the_fix():
    assert trigger_refusal(False, False, False, "u@%") is None
    assert trigger_refusal(True, True, False, "u@%") is None
    assert trigger_refusal(True, False, True, "u@%") is None
    message = trigger_refusal(True, False, False, "nova@%")
    assert "nova@%" in message and "log_bin_trust_function_creators=1" in message


def test_trigger_privileges_are_read_from_the_server(mysql_url):
    engine = dbengine.create_engine(mysql_url)
    with engine.connect() as conn:
        log_bin = conn.exec_driver_sql("SELECT @@log_bin").scalar()
        # root may create triggers whatever the binary log says.
        assert backend(conn).trigger_refusal(conn) is None, log_bin
    engine.dispose()


# -- concurrent writers of both shapes through expand, migrate, contract -------


class Writer(threading.Thread):
    """Inserts, renames and deletes its own rows in one release's shape."""

    def __init__(self, engine: sa.Engine, release: str, owned: list[str]) -> None:
        super().__init__(daemon=True)
        self.engine, self.release = engine, release
        self.table = alpha.volumes if release == "alpha" else beta.volumes
        self.name_column = "display_name" if release == "alpha" else "name"
        self.expected: dict[str, str | None] = dict.fromkeys(owned, "")
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.writes = 0
        self.rng = random.Random(release)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.write_once()
                self.writes += 1
            except Exception as e:  # the test fails on any
                self.errors.append(f"{self.release}: {type(e).__name__}: {e}")
                return
            time.sleep(0.002)

    def write_once(self) -> None:
        live = [k for k, v in self.expected.items() if v is not None]
        action = self.rng.random()
        with self.engine.begin() as conn:
            if action < 0.4 or not live:
                key, name = str(uuid.uuid4()), f"{self.release}-new-{self.writes}"
                conn.execute(
                    self.table.insert().values(
                        id=key, size=1, status="ok", **{self.name_column: name}
                    )
                )
            elif action < 0.85:
                key, name = self.rng.choice(live), f"{self.release}-ren-{self.writes}"
                conn.execute(
                    self.table.update()
                    .where(self.table.c.id == key)
                    .values(**{self.name_column: name})
                )
            else:
                key, name = self.rng.choice(live), None
                conn.execute(self.table.delete().where(self.table.c.id == key))
        self.expected[key] = name


def test_writers_of_both_releases_lose_and_mismatch_nothing_through_e_m_c(engine):
    database = schema.install_alpha(engine)
    names = add_alpha_rows(engine, 400)
    keys = list(names)
    old = [Writer(engine, "alpha", keys[:200])]
    new = [Writer(engine, "beta", keys[200:])]
    for writer in old + new:
        writer.expected = {k: names[k] for k in writer.expected}
    old[0].start()
    time.sleep(0.3)
    database.expand()  # while alpha writes
    new[0].start()
    time.sleep(0.3)
    totals = database.migrate(throttle=Throttle(batch_size=50))  # both write
    assert datamod.exit_code(totals) == datamod.DONE
    time.sleep(0.3)
    old[0].stop.set()
    old[0].join()
    with engine.connect() as conn:
        differing = conn.exec_driver_sql(
            "SELECT count(*) FROM volumes WHERE name IS NULL OR display_name IS NULL "
            "OR name <> display_name"
        ).scalar()
    assert differing == 0  # both shapes agree on every row before contract
    database.contract()  # while beta writes
    time.sleep(0.3)
    new[0].stop.set()
    new[0].join()

    assert [e for w in old + new for e in w.errors] == []
    assert all(w.writes > 20 for w in old + new), [w.writes for w in old + new]
    with engine.connect() as conn:
        stored = dict(
            conn.execute(sa.select(beta.volumes.c.id, beta.volumes.c.name)).all()
        )
    expected = {k: v for w in old + new for k, v in w.expected.items()}
    lost = [k for k, v in expected.items() if v is not None and k not in stored]
    wrong = [k for k, v in expected.items() if k in stored and stored[k] != v]
    assert lost == [] and wrong == []
    assert len(expected) > 400


# -- the schema guard ---------------------------------------------------------


def schema_state(engine: sa.Engine) -> guard.SchemaState:
    with engine.connect() as conn:
        state = guard.read(conn, "volumes")
    assert state is not None
    return state


def has_display_name(engine: sa.Engine) -> bool:
    columns = sa.inspect(engine).get_columns("volumes")
    return "display_name" in {c["name"] for c in columns}


class JoinedAfterTheGate(Database):
    """A contract during which an alpha node registers (from its own
    connection) right after the gate's first check, before any DDL: the race
    that finished "contracted" under a running alpha node."""

    def blockers(self, *args, **kwargs):
        found = super().blockers(*args, **kwargs)
        elsewhere = dbengine.create_engine(self.engine.url)
        try:
            report(ServiceRegistry(elsewhere), "late", "alpha")
        finally:
            elsewhere.dispose()
        return found


def test_a_node_that_joins_after_the_gate_makes_contract_refuse(engine):
    schema.install_mixed_period(engine)
    database = JoinedAfterTheGate(engine, [schema.TREE])
    database.migrate()
    message = refusal(database)
    assert "volume@late runs alpha (up); contract beta_contract needs beta" in message
    assert has_display_name(engine)  # nothing was dropped
    state = schema_state(engine)
    assert (state.floor.release, state.contracting) == ("alpha", None)


def test_contract_records_the_floor_and_clears_its_state(engine):
    schema.install_alpha(engine)
    state = schema_state(engine)
    assert (state.ceiling.release, state.floor.release) == ("alpha", "alpha")
    database = Database(engine, [schema.TREE])
    database.expand()
    assert schema_state(engine).ceiling.release == "beta"
    database.migrate()
    database.contract()
    state = schema_state(engine)
    assert (state.ceiling.release, state.floor.release) == ("beta", "beta")
    assert (state.contracting, state.contracting_since) == (None, None)


class FailsMidContract(Database):
    """A contract whose DDL fails, after its state was taken."""

    seen: guard.SchemaState | None = None

    def _upgrade(self, tree, target, **settings):
        if target.startswith("contract"):
            self.seen = schema_state(self.engine)
            raise RuntimeError("the DDL failed")
        super()._upgrade(tree, target, **settings)


def test_a_contract_failed_part_way_keeps_its_state_until_one_runs_through(engine):
    schema.install_mixed_period(engine)
    database = FailsMidContract(engine, [schema.TREE])
    database.migrate()
    with pytest.raises(RuntimeError, match="the DDL failed"):
        database.contract()
    assert database.seen is not None and database.seen.contracting.release == "beta"
    assert database.seen.contracting_since is not None
    state = schema_state(engine)  # its DDL may have dropped what alpha needs
    assert (state.floor.release, state.contracting.release) == ("alpha", "beta")
    assert state.refusal(alpha.HISTORY.current) is not None
    Database(engine, [schema.TREE]).contract()
    state = schema_state(engine)
    assert (state.floor.release, state.contracting) == ("beta", None)


def test_a_contract_run_again_after_it_stopped_clearing_its_state_clears_it(engine):
    """Stopped after its DDL, as it cleared its state: run again, it has no
    revision pending, and still clears the state it left."""
    schema.install_mixed_period(engine)
    database = Database(engine, [schema.TREE])
    database.migrate()
    database.contract()
    with engine.begin() as conn:  # what the stopped run left behind
        guard.record(
            conn, "volumes", contracting_release="beta", contracting_version="1.1"
        )
    database.contract()
    assert schema_state(engine).contracting is None
