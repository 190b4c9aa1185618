from __future__ import annotations

import pytest

from rpccompat import History, Release
from rpccompat.demo import beta
from rpccompat.exceptions import HistoryError, UnknownRelease, UnknownVersion

H = beta.HISTORY


def test_releases_are_numbered_and_looked_up_by_name_or_version():
    assert [r.objects_version for r in H.releases] == ["1.0", "1.1"]
    assert H.current.name == "beta" and H.index("alpha") == 0
    assert H.release_for_rpc("volume", "1.0").name == "alpha"
    assert H.release_for_objects("1.1").name == "beta"
    assert H.resolve_level("volume", "alpha").name == "alpha"
    assert H.resolve_level("volume", "1.1").name == "beta"


def test_unknown_release_and_version_are_clear_errors():
    with pytest.raises(UnknownRelease, match=r"no release 'gamma'.*alpha, beta"):
        H.release("gamma")
    with pytest.raises(UnknownVersion, match="older than every release"):
        H.release_for_rpc("volume", "0.9")
    with pytest.raises(UnknownVersion, match="not a version"):
        H.release_for_objects("one")


@pytest.mark.parametrize(
    "releases",
    [
        [],
        [Release("a", {"x": "1.0"}, {}), Release("a", {"x": "1.1"}, {})],
        [Release("a", {"x": "1.1"}, {}), Release("b", {"x": "1.0"}, {})],
        [Release("a", {"x": "1.0"}, {}), Release("b", {}, {})],
    ],
)
def test_inconsistent_histories_are_refused(releases):
    with pytest.raises(HistoryError):
        History("p", releases)
