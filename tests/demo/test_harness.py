"""``rpccompat-upgrade-test``: the rolling upgrade under load, and its faults."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.version import Version

from rpccompat_demo import faults
from rpccompat_demo.harness import latency_by_phase
from tests.conftest import unavailable

ALPHA_PYTHON = Path(__file__).parents[2] / ".venv-alpha" / "bin" / "python"
OLD_LIBRARIES = ("oslo.messaging", "oslo.versionedobjects")


def upgrade_test(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpccompat_demo.harness", "--json", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


def report_of(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.stdout.strip(), done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["mysql", "postgresql"])
def test_rolling_upgrade_under_load_loses_no_call_and_no_row(
    request, rabbit_url, backend
):
    server = request.getfixturevalue(f"{backend}_url")
    done = upgrade_test(
        "--db-url", server, "--transport-url", rabbit_url, "--seed", "7",
        "--seed-rows", "1000", "--step-seconds", "2",
    )  # fmt: skip
    report = report_of(done)
    assert (report["failed_calls"], report["failures"]) == (0, [])
    assert (report["lost_rows"], report["wrong_rows"]) == (0, 0)
    assert report["rows_checked"] > 1000  # the seeded rows and the clients'
    assert report["calls"] > 500
    assert done.returncode == 0
    assert report["seed"] == 7
    assert set(report["latency"]) == {
        "baseline",
        "expand",
        "mixed",
        "contract",
        "after",
    }
    assert all(phase["calls"] > 0 for phase in report["latency"].values())
    lifted = report["pin_lift_seconds"]
    assert lifted["clients"] and lifted["volume"] is not None  # figure: pins_lift
    commands = [(run["command"], run["exit_code"]) for run in report["operator"]]
    assert commands == [
        ("db expand", 0),
        ("db migrate --batch-size 50", 0),
        ("db contract", 6),  # refused while alpha nodes serve
        ("db contract", 0),
    ]


@pytest.mark.parametrize(
    ("releases", "backend"),
    [("alpha,beta,gamma", "mysql"), ("alpha,gamma", "postgresql")],
)
def test_three_releases_one_at_a_time_or_skipping_one_lose_no_call(
    request, rabbit_url, releases, backend
):
    """All three releases serve at once (alpha,beta,gamma) and the pins rise
    release by release; or beta is skipped, as a skip-level upgrade does,
    with both releases' expands, backfills and contracts."""
    server = request.getfixturevalue(f"{backend}_url")
    done = upgrade_test(
        "--db-url", server, "--transport-url", rabbit_url, "--seed", "5",
        "--releases", releases, "--seed-rows", "500", "--step-seconds", "2",
    )  # fmt: skip
    report = report_of(done)
    assert (report["failed_calls"], report["failures"]) == (0, [])
    assert (report["lost_rows"], report["wrong_rows"]) == (0, 0)
    assert report["rows_checked"] > 500
    assert done.returncode == 0
    steps = [step["step"] for step in report["steps"]]
    served = {s.split("(")[1].split(")")[0] for s in steps if s.endswith("serving")}
    assert served == set(releases.split(","))
    targets = releases.split(",")[1:]
    lifted = report["pin_lift_seconds"]
    assert lifted["volume"] is not None
    assert {client.split(" to ")[1] for client in lifted["clients"]} == set(targets)
    commands = [(run["command"], run["exit_code"]) for run in report["operator"]]
    assert commands == [
        ("db expand", 0),
        ("db migrate --batch-size 50", 0),
        ("db contract", 6),  # refused while alpha nodes serve
        ("db contract", 0),
    ]


def test_faults_lose_no_row_and_explain_every_failed_call(postgresql_url, rabbit_url):
    done = upgrade_test(
        "--db-url", postgresql_url, "--transport-url", rabbit_url, "--seed", "3",
        "--faults", "kill-node,kill-migration,drop-db-connections",
        "--seed-rows", "2000", "--step-seconds", "2",
    )  # fmt: skip
    report = report_of(done)
    assert (report["lost_rows"], report["wrong_rows"]) == (0, 0)
    assert report["unexplained_failures"] == 0, report["failures"]
    assert all(f["explained_by"].startswith("kill-node") for f in report["failures"])
    injected = sorted(f["fault"] for f in report["faults"])
    assert injected == [
        faults.DROP_DB_CONNECTIONS,
        faults.KILL_MIGRATION,
        faults.KILL_NODE,
    ]
    killed = next(f for f in report["faults"] if f["fault"] == faults.KILL_MIGRATION)
    assert "cursor {'after'" in killed["detail"]  # it stopped mid-way
    assert ("db migrate (SIGKILLed)", -9) in [
        (run["command"], run["exit_code"]) for run in report["operator"]
    ]
    assert done.returncode == 0


def versions_in(python: Path) -> dict[str, str]:
    script = (
        "import json, sys; from importlib import metadata; "
        "print(json.dumps({n: metadata.version(n) for n in sys.argv[1:]}))"
    )
    done = subprocess.run(
        [str(python), "-c", script, *OLD_LIBRARIES], capture_output=True, text=True
    )
    return json.loads(done.stdout)


def test_alpha_nodes_on_a_year_older_oslo_libraries_lose_no_call(mysql_url, rabbit_url):
    if not ALPHA_PYTHON.exists():
        unavailable(".venv-alpha", "build it with `make alpha-venv`")
    old = versions_in(ALPHA_PYTHON)
    for name in OLD_LIBRARIES:
        assert Version(old[name]) < Version(metadata.version(name)), name
    done = upgrade_test(
        "--db-url", mysql_url, "--transport-url", rabbit_url, "--seed", "11",
        "--alpha-python", str(ALPHA_PYTHON), "--seed-rows", "500",
    )  # fmt: skip
    report = report_of(done)
    assert (report["failed_calls"], report["failures"]) == (0, [])
    assert (report["lost_rows"], report["wrong_rows"]) == (0, 0)
    assert report["calls"] > 500
    assert done.returncode == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--faults", "flood"], "unknown fault(s) flood"),
        (
            ["--nodes", "1", "--faults", "kill-node,drop-db-connections"],
            "raise --nodes",
        ),
        (["--faults", "kill-migration", "--seed-rows", "10"], "--seed-rows at least"),
        (["--alpha-python", "/nonexistent/python"], "no such file"),
        (["--releases", "beta,gamma"], "give alpha, then newer releases in order"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, says):
    server = "mysql+pymysql://root@127.0.0.1/test"  # never reached
    done = upgrade_test("--db-url", server, "--transport-url", "rabbit://", *args)
    assert done.returncode == 2
    assert says in done.stderr.strip().splitlines()[-1]


def test_sqlite_is_refused_before_anything_starts():
    done = upgrade_test("--db-url", "sqlite:///x.db", "--transport-url", "rabbit://")
    assert done.returncode == 2
    assert "needs MariaDB/MySQL or PostgreSQL" in done.stderr.splitlines()[-1]


def test_latency_is_counted_in_the_phase_a_call_started_and_set_against_baseline():
    phases = [("baseline", 100.0), ("mixed", 200.0)]
    records = [
        {"timings": [(50.0, 9.0), (101.0, 0.010), (150.0, 0.020), (199.0, 0.030)]},
        {"timings": [(201.0, 0.040), (250.0, 0.060), (300.0, 0.080)]},
    ]
    figures = latency_by_phase(records, phases)
    assert figures["baseline"]["calls"] == 3  # the call before baseline is left out
    assert figures["baseline"]["p50_ms"] == 20.0
    assert figures["mixed"]["p50_ms"] == 60.0
    assert figures["mixed"]["p50_vs_baseline"] == 3.0


def test_a_failure_is_explained_only_by_a_fault_it_overlaps():
    kill = faults.node_killed("volume@n1 (alpha)", 100.0, 100.5)
    dropped = faults.Fault(faults.DROP_DB_CONNECTIONS, 100.0, "3 dropped")
    in_flight = {"started": 99.0, "ended": 109.0}
    after = {"started": 101.0, "ended": 111.0}
    assert faults.explain(in_flight, [dropped, kill]).startswith("kill-node")
    assert faults.explain(after, [dropped, kill]) is None
