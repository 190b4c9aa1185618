"""The package root: each name it exports is imported when first used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import rpccompat

HEAVY = ("oslo_messaging", "kombu", "oslo_versionedobjects")


def test_every_exported_name_is_where_the_root_says():
    assert sorted(rpccompat._HOMES) == sorted(rpccompat.__all__)
    for name in rpccompat.__all__:
        assert getattr(rpccompat, name).__module__.startswith(rpccompat._HOMES[name])
    assert set(rpccompat.__all__) <= set(dir(rpccompat))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        rpccompat.nothing  # noqa: B018


def test_the_database_half_loads_without_the_rpc_stack():
    """What every revision script imports, and the errors its steps raise."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from rpccompat.db import ddl, MigrationError, "
            "ContractRefused, LockNotGranted; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(loaded.stdout) == []
