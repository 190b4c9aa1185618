"""Run ``rpccompat-manage`` as an operator would, on a config file of the test's."""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from rpccompat import engine as dbengine
from rpccompat.manage import Manage
from rpccompat.registry import ServiceRecord, ServiceRegistry, utcnow
from rpccompat_demo import schema
from tests.conftest import write_config

SERVICE_DOWN_TIME = 30.0  # as write_config sets it
VERSIONS = {"alpha": ("1.0", "1.0"), "beta": ("1.1", "1.1")}


@dataclasses.dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Operator:
    """The CLI in this process (fast), reading the test's config file."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys

    def __call__(self, *argv: str, manage: Manage | None = None) -> Run:
        self.capsys.readouterr()
        code = (manage or Manage()).main(["--config-file", str(self.config), *argv])
        captured = self.capsys.readouterr()
        return Run(code, captured.out, captured.err)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """The sample service's database as alpha left it."""
    made = dbengine.create_engine(db_url)
    schema.install_alpha(made, SERVICE_DOWN_TIME)
    yield made
    made.dispose()


@pytest.fixture
def operator(tmp_path: Path, db_url: str, capsys) -> Operator:
    return Operator(write_config(tmp_path / "volumes.conf", db_url), capsys)


def report(
    engine: sa.Engine, host: str, release: str, *, silent_for: float = 0.0
) -> None:
    """A volume node's row, as its heartbeat writes it ``silent_for`` s ago."""
    rpc, objects = VERSIONS[release]
    registry = ServiceRegistry(engine)
    registry.report(
        host=host, binary="volume", release=release, rpc_version=rpc,
        objects_version=objects,
    )  # fmt: skip
    if silent_for:
        with engine.begin() as conn:
            conn.execute(
                sa.update(ServiceRecord)
                .where(ServiceRecord.host == host)
                .values(updated_at=utcnow() - datetime.timedelta(seconds=silent_for))
            )
