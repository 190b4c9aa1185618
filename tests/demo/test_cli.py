"""The demo end to end: embedded defaults, and a mixed cluster on RabbitMQ."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import mixed_period_database, spawn_node


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpccompat_demo.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_on_embedded_defaults_loses_no_call_and_lifts_pins():
    done = run_demo("--json", "--settle", "0.3")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failed_calls"] == 0, report["failures"]
    assert report["calls"] > 100
    assert report["rows_checked"] > 50
    assert (report["lost_rows"], report["wrong_rows"]) == (0, 0)
    steps = [step["step"] for step in report["pins"]]
    refused = next(
        i for i, s in enumerate(steps) if s.startswith("db contract refused")
    )
    contracted = next(i for i, s in enumerate(steps) if s.startswith("db contract:"))
    expanded = next(i for i, s in enumerate(steps) if s.startswith("db expand"))
    first_beta = next(i for i, s in enumerate(steps) if "upgraded to beta" in s)
    assert expanded < first_beta < refused < contracted == len(steps) - 1
    releases = [step["pins"]["volume"]["release"] for step in report["pins"]]
    assert releases[0] == "alpha" and releases[-1] == "beta"
    assert report["pins"][0]["pins"]["volume"]["holders"] == [
        "volume@node-1",
        "volume@node-2",
        "volume@node-3",
    ]
    assert report["pin_lift_seconds"] is not None  # the figure: benchmarks/


@pytest.mark.parametrize("releases", ["alpha,beta,gamma", "alpha,gamma"])
def test_demo_goes_on_to_gamma_one_release_at_a_time_or_skipping_beta(releases):
    done = run_demo("--json", "--settle", "0.3", "--releases", releases)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["failed_calls"] == 0, report["failures"]
    assert (report["lost_rows"], report["wrong_rows"]) == (0, 0)
    assert report["rows_checked"] > 50
    pinned = [step["pins"]["volume"]["release"] for step in report["pins"]]
    path = releases.split(",")
    # The pin rises through every release of the path, in order, and no other.
    assert [r for i, r in enumerate(pinned) if r not in pinned[:i]] == path
    steps = [step["step"] for step in report["pins"]]
    assert steps[-1].startswith("db contract:")
    assert any(s.startswith("db contract refused") for s in steps)
    assert report["pin_lift_seconds"] is not None


@pytest.mark.parametrize(
    "releases", ["beta,gamma", "alpha", "alpha,gamma,beta", "alpha,omega"]
)
def test_demo_refuses_a_path_that_is_not_alpha_then_newer_releases(releases):
    done = run_demo("--releases", releases)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]  # after eventlet's notice
    assert f"--releases {releases}: give alpha, then newer releases" in last


def test_demo_refuses_processes_on_the_in_memory_transport():
    done = run_demo("--processes")
    assert done.returncode == 2
    assert "--processes needs a broker" in done.stderr


@pytest.mark.parametrize(
    ("releases", "backend"),
    [
        (("alpha", "beta"), "mysql"),
        (("alpha", "beta"), "postgresql"),
        (("alpha", "beta", "gamma"), "mysql"),
    ],
)
def test_mixed_cluster_of_processes_serves_every_call_without_failure(
    request, rabbit_url, releases, backend
):
    """A volume node and a client of each release, on RabbitMQ: every call
    of each client reaches a node of any release, gamma's update_volume
    sending back the object an older client gave it."""
    db_url = request.getfixturevalue(f"{backend}_url")
    mixed_period_database(db_url, releases[-1]).dispose()
    servers = [
        spawn_node(db_url, rabbit_url, release, "volume", f"node-{release}")
        for release in releases
    ]
    clients = []
    try:
        for server in servers:
            assert server.stdout.readline().strip() == "READY"
        clients = [
            spawn_node(db_url, rabbit_url, release, "api", f"api-{release}",
                  "--max-calls", "500")
            for release in releases
        ]  # fmt: skip
        reports = [
            json.loads(c.communicate(timeout=300)[0].splitlines()[-1]) for c in clients
        ]
    finally:
        for proc in clients + servers:
            proc.terminate()
            proc.communicate(timeout=60)
    assert sum(r["calls"] for r in reports) >= 500 * len(releases)
    assert [r["failed_calls"] for r in reports] == [0] * len(releases), [
        r["failures"] for r in reports
    ]


SECRET = "s3cr3t-7f3a9c"  # fixed: xdist workers must collect the same ids
HARNESS = ["rpccompat_demo.harness", "--transport-url", f"rabbit://g:{SECRET}@h:1/"]
NODE = ["rpccompat_demo.node", "--release", "alpha", "--binary", "volume",
        "--config-file", "/dev/null"]  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        [*HARNESS, "--db_url", f"mysql+pymysql://root:{SECRET}@127.0.0.1/db"],
        [*HARNESS, "--db-url", f"mysql+pymysql:/root:{SECRET}@127.0.0.1/db"],
        [*HARNESS, "--db-url", f"mysql+pymysql://root:p@{SECRET}@127.0.0.1/db"],
        [*HARNESS, "--db-url", f"mysql+pymysql://root:{SECRET}@127.0.0.1:1/db"],
        [*HARNESS, "--db-url", f"mysql://root@127.0.0.1:1/db?password={SECRET}",
         f"postgresql://u:{SECRET}@h/db"],
        [*NODE, f"mysql+pymysql://root:{SECRET}@127.0.0.1/db"],
        [*NODE, "--db-url", f"mysql+pymysql://root:{SECRET}@127.0.0.1:1/db",
         "--transport-url", f"rabbit://a:{SECRET}@127.0.0.1:1,b:{SECRET}@h:1/"],
    ],
)  # fmt: skip
def test_the_demo_binaries_never_show_a_password(argv):
    done = subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert SECRET not in done.stdout + done.stderr
