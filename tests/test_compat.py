"""The canary: the private parts of the oslo libraries rpccompat uses are
there, on the current libraries and on .venv-alpha's older ones."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest

from rpccompat import compat
from tests.conftest import unavailable

ALPHA_PYTHON = Path(__file__).parents[1] / ".venv-alpha" / "bin" / "python"
MISSING = (
    "import json; from rpccompat import compat; print(json.dumps(compat.missing()))"
)


def test_the_current_libraries_have_every_private_part_rpccompat_uses():
    assert compat.missing() == []


def test_the_older_libraries_of_alpha_have_them_too():
    if not ALPHA_PYTHON.exists():
        unavailable(".venv-alpha", "build it with `make alpha-venv`")
    out = subprocess.run(
        [str(ALPHA_PYTHON), "-W", "ignore", "-c", MISSING],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout.splitlines()[-1]) == []


@pytest.fixture
def without_unsubscribe(monkeypatch):
    lost, _ = compat.CAPABILITIES["unsubscribe before stopping"]
    monkeypatch.setitem(
        compat.CAPABILITIES, "unsubscribe before stopping", (lost, lambda: False)
    )
    compat.has.cache_clear()
    yield
    compat.has.cache_clear()


def test_a_missing_part_falls_back_with_one_warning_saying_what_is_lost(
    without_unsubscribe, caplog
):
    class Server:  # any use of it would fail
        pass

    with caplog.at_level(logging.WARNING, logger=compat.LOG.name):
        compat.unsubscribe_before_stopping(Server())
        compat.unsubscribe_before_stopping(Server())
    assert compat.missing() == ["unsubscribe before stopping"]
    [record] = caplog.records
    assert "callers time out" in record.getMessage()
