"""Each backend's answers, where they can be checked without a server."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from rpccompat.db.backends import BACKENDS, DIALECTS, backend


def test_an_unsupported_database_is_named_with_the_supported_ones():
    with pytest.raises(ValueError, match="does not support the oracle database"):
        backend("oracle")
    assert backend(sa.create_engine("sqlite://")) is BACKENDS["sqlite"]
    assert set(DIALECTS) == {"sqlite", "mysql", "postgresql"}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_each_blocking_rule_is_a_regex_with_a_reason(dialect):
    for pattern, why in backend(dialect).blocking_ddl:
        re.compile(pattern)
        assert why


@pytest.mark.parametrize(("dialect", "limit"), [("postgresql", 63), ("mysql", 64)])
def test_a_fitted_name_is_stable_within_the_limit_and_unique(dialect, limit):
    names = [f"{'x' * limit}{n}" for n in ("", "a", "b", "é" * 40)]
    fit = backend(dialect).fit
    fitted = [fit(name) for name in names]
    assert fitted == [fit(name) for name in names]
    assert all(len(name.encode()) <= limit for name in fitted)
    assert len(set(fitted)) == len(names)
    assert fit("short") == "short"
