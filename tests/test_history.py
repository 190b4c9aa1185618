from __future__ import annotations

import random
import re

import pytest
from oslo_utils import versionutils

from rpccompat import History, Release
from rpccompat.exceptions import HistoryError, UnknownRelease, UnknownVersion
from rpccompat.history import version_tuple
from rpccompat_demo import beta

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
        [Release("a", {}, {"X": "1.2"}), Release("b", {}, {"X": "1.1"})],
        [Release("a", objects_version="1.5"), Release("b", objects_version="1.2")],
    ],
)
def test_inconsistent_histories_are_refused(releases):
    with pytest.raises(HistoryError):
        History("p", releases)


def test_object_steps_between_rpc_steps_name_only_what_they_change():
    """Cinder's shape: OBJ_VERSIONS moves once per object bump, the RPC API
    now and then; each release carries the rest over."""
    history = History(
        "cinder",
        [
            Release("1.38", {"volume": "3.0", "backup": "2.0"}, {"Volume": "1.8"}),
            Release("1.39", objects={"Volume": "1.9", "Backup": "1.7"}),
            Release("1.40", rpc={"volume": "3.1"}),
        ],
    )
    assert [
        (r.objects_version, dict(r.rpc), dict(r.objects)) for r in history.releases
    ] == [
        ("1.0", {"volume": "3.0", "backup": "2.0"}, {"Volume": "1.8"}),
        ("1.1", {"volume": "3.0", "backup": "2.0"}, {"Volume": "1.9", "Backup": "1.7"}),
        ("1.2", {"volume": "3.1", "backup": "2.0"}, {"Volume": "1.9", "Backup": "1.7"}),
    ]
    # A node of 1.39 speaks RPC 3.0, which 1.38 spoke too: the newest of
    # those is 1.39, and a pin takes the older of its two answers.
    assert history.release_for_rpc("volume", "3.0").name == "1.39"
    assert history.release_for_objects("1.0").name == "1.38"


def test_an_object_version_newer_than_every_release_is_an_error():
    with pytest.raises(UnknownVersion, match=r"1\.2 is newer than every release"):
        H.release_for_objects("1.2")


# The rule, stated as a regex: fine here, on short strings ([0-9], not \d,
# which takes Unicode digits too).
VERSION = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,2}")


def test_version_tuple_reads_exactly_short_dotted_ascii_digit_runs():
    seed = random.randrange(2**31)
    rng = random.Random(seed)
    alphabet = "0123456789" * 3 + "..." + "\x00 a-_+\u0661\u0660\uff11"
    for _ in range(20000):
        text = "".join(rng.choices(alphabet, k=rng.randrange(0, 34)))
        if VERSION.fullmatch(text):
            expected = versionutils.convert_version_to_tuple(text)
            assert version_tuple(text) == expected, f"seed {seed}: {text!r}"
        else:
            with pytest.raises(UnknownVersion):
                version_tuple(text)
                pytest.fail(f"seed {seed}: {text!r} was read as a version")


@pytest.mark.parametrize(
    "hostile",
    [
        "1." + "1" * 30000,
        "1." + "1" * 5 * 2**20,
        "1.0\x00",
        "\u0661.\u0660",
        "1.0a1",
        ["1", "0"],
        {"1": "0"},
        1,
        1.0,
        None,
        b"1.0",
    ],
    ids=[
        "long digit run",
        "5 MB",
        "NUL",
        "Unicode digits",
        "pre-release suffix",
        "list",
        "dict",
        "int",
        "float",
        "None",
        "bytes",
    ],
)
def test_version_tuple_refuses_anything_else_in_one_short_line(hostile):
    with pytest.raises(UnknownVersion, match="is not a version") as err:
        version_tuple(hostile)
    assert len(str(err.value)) < 100 and "\n" not in str(err.value)
