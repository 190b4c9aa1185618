from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from rpccompat import testing
from rpccompat_demo import alpha, beta
from tests.conftest import RABBIT_URL, unavailable


def test_history_check_passes_for_each_release_of_the_demo():
    assert (
        testing.check_history(alpha.HISTORY, alpha.OBJECTS, [alpha.VolumeManager]) == []
    )
    assert testing.check_history(beta.HISTORY, beta.OBJECTS, [beta.VolumeManager]) == []


def test_history_check_names_every_mismatch():
    problems = testing.check_history(alpha.HISTORY, beta.OBJECTS, [beta.VolumeManager])
    assert any("object Volume is at 1.1" in p for p in problems)
    assert any("VolumeManager (volume) is at 1.1" in p for p in problems)


def test_fingerprints_regenerate_then_catch_a_change(tmp_path, monkeypatch):
    expected = tmp_path / "hashes.json"
    monkeypatch.setenv(testing.REGENERATE_ENV, "1")
    assert testing.check_fingerprints(beta.OBJECTS, expected) == []
    monkeypatch.delenv(testing.REGENERATE_ENV)
    assert testing.check_fingerprints(beta.OBJECTS, expected) == []
    problems = testing.check_fingerprints(alpha.OBJECTS, expected)
    assert any(p.startswith("Volume: fingerprint 1.0-") for p in problems)


@pytest.mark.parametrize("backend", ["mysql", "postgresql", "sqlite"])
def test_a_scratch_database_is_made_and_dropped_even_when_its_user_fails(
    request, backend
):
    server = request.getfixturevalue(f"{backend}_url")  # any database to connect to
    with (
        pytest.raises(RuntimeError),
        testing.scratch_database(server, "rpccompat_t") as made,
    ):
        engine = sa.create_engine(made)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id INTEGER)")
        engine.dispose()
        raise RuntimeError("the test failed")
    assert "rpccompat_t_" in made.database
    if backend == "sqlite":
        assert not Path(made.database).exists()
    else:
        engine = sa.create_engine(made)
        with pytest.raises(sa.exc.OperationalError):
            engine.connect()
        engine.dispose()


def test_a_scratch_vhost_is_made_and_deleted_even_when_its_user_fails():
    try:
        testing.rabbitmqctl("list_vhosts")
    except testing.RabbitMQError as e:
        unavailable("RabbitMQ", e)
    with (
        pytest.raises(RuntimeError, match="the test failed"),
        testing.scratch_vhost(RABBIT_URL, "rpccompat-t") as url,
    ):
        vhost = url.rsplit("/", 1)[1]
        assert vhost in testing.rabbitmqctl("list_vhosts").split()
        raise RuntimeError("the test failed")
    assert vhost.startswith("rpccompat-t-")
    assert vhost not in testing.rabbitmqctl("list_vhosts").split()
