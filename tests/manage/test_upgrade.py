"""``upgrade check`` on oslo.upgradecheck: each check, its code, the JSON."""

from __future__ import annotations

import sqlalchemy as sa

from rpccompat.registry import ServiceRecord
from tests.manage.conftest import SERVICE_DOWN_TIME, report


def results(operator) -> tuple[int, dict[str, tuple[int, str]]]:
    run = operator("upgrade", "check", "--json")
    checks = run.json()["checks"]
    return run.code, {c["check"]: (c["result"], c["details"]) for c in checks}


def test_the_mixed_period_fails_until_the_old_nodes_are_gone(engine, operator):
    operator("db", "expand")
    operator("db", "migrate")
    report(engine, "node-1", "beta")
    report(engine, "node-2", "alpha", silent_for=SERVICE_DOWN_TIME / 3)

    code, checks = results(operator)
    assert code == 2
    assert checks["Contract readiness"][0] == 2
    assert "volume@node-2 runs alpha" in checks["Contract readiness"][1]
    assert checks["Services down but counted"][0] == 1
    assert "volume@node-2 (alpha)" in checks["Services down but counted"][1]
    assert checks["Pins held below the newest release"] == (
        1,
        "volume: rpc 1.0, objects 1.0 (alpha), held by volume@node-2 (alpha)",
    )
    assert checks["Data migrations"][0] == 0
    assert checks["Trigger privileges"][0] == 0
    assert checks["History consistency"][0] == 0

    table = operator("upgrade", "check")
    assert table.code == 2
    assert "| Check: Contract readiness" in table.out
    assert "Result: Failure" in table.out

    operator("service", "remove", "volume", "node-2")
    report(engine, "node-1", "beta")  # its heartbeat: however long the checks took
    code, checks = results(operator)
    assert code == 0, checks
    assert checks["Contract readiness"] == (
        0,
        "contract is allowed: rpccompat-manage db contract",
    )


def test_pending_work_warns(engine, operator):
    operator("db", "expand")
    code, checks = results(operator)
    assert code == 1
    assert checks["Data migrations"][0] == 1
    assert checks["Contract readiness"][0] == 1


def test_a_database_ahead_of_the_code_fails_history_consistency(engine, operator):
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE volumes_alembic_version SET version_num = 'delta_contract'")
        )
    code, checks = results(operator)
    assert code == 2
    result, details = checks["History consistency"]
    assert result == 2 and "at revision delta_contract" in details

    run = operator("db", "check")
    assert run.code == 1
    assert run.err.count("\n") == 1 and "newer code migrated it" in run.err


def test_an_unknown_release_in_the_services_table_warns(engine, operator):
    operator("db", "sync")
    report(engine, "node-1", "beta")
    with engine.begin() as conn:
        conn.execute(sa.update(ServiceRecord).values(release="omega"))
    _, checks = results(operator)
    assert checks["History consistency"][0] == 1
    assert "volume@node-1 runs unknown 'omega'" in checks["History consistency"][1]
