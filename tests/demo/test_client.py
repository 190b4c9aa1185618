"""The node and the one-shot client as an upgrade job runs them: config files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import mixed_period_database, write_config


def client(config, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpccompat_demo.client", "--config-file",
         str(config), *argv],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_volume_outlives_its_client_over_rpc_and_direct(
    sqlite_url, rabbit_url, tmp_path
):
    mixed_period_database(sqlite_url).dispose()
    config = write_config(tmp_path / "v.conf", sqlite_url, transport_url=rabbit_url)
    node = subprocess.Popen(
        [sys.executable, "-m", "rpccompat_demo.node", "--config-file", str(config),
         "--release", "beta", "--binary", "volume", "--host", "node-1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert node.stdout.readline().strip() == "READY"
        created = client(config, "--release", "alpha", "create", "grenade-vol")
        assert created.returncode == 0, created.stderr
        volume_id = created.stdout.strip()
        for how in ([], ["--direct"]):
            shown = client(config, "show", volume_id, *how)
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout)["name"] == "grenade-vol"
        assert client(config, "delete", volume_id).returncode == 0
        gone = client(config, "show", volume_id, "--direct")
        assert gone.returncode == 1 and "not found" in gone.stderr
    finally:
        node.terminate()
        node.wait(timeout=60)


@pytest.mark.parametrize(
    "module", ["rpccompat_demo.node", "rpccompat_demo.client", "rpccompat_demo.schema"]
)
def test_without_a_database_the_tools_exit_2_with_one_line(module, tmp_path):
    """No implicit ./rpccompat.sqlite for the node, the client or the schema."""
    config = write_config(tmp_path / "v.conf", "sqlite://")
    config.write_text(config.read_text().replace("connection = sqlite://\n", ""))
    argv = {
        "rpccompat_demo.node": ["--release", "beta", "--binary", "volume"],
        "rpccompat_demo.client": ["show", "vol-1"],
        "rpccompat_demo.schema": [],
    }[module]
    run = subprocess.run(
        [sys.executable, "-m", module, "--config-file", str(config), *argv],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2
    assert "no database configured" in run.stderr.splitlines()[-1]
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.conf"]
