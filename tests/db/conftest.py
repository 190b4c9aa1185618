"""The database tests' engine: one per test, on each backend of db_url."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from rpccompat import engine as dbengine


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    made = dbengine.create_engine(db_url)
    yield made
    made.dispose()
